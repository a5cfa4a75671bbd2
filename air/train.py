r"""Trains Attend, Infer, Repeat on 50x50 multi-MNIST.

  python -m air.train --config=air/configs/air.py:cpu
  python -m air.train --config=air/configs/air.py:reference --config.seed=1
  python -m air.train --config=air/configs/air.py:vimco
  python -m air.train --config=air/configs/air.py:cpu --resume   # continue the newest run

Each run goes to <results_dir>/<run_name>/<N>/ (config, checkpoints, TensorBoard
events); when training ends the held-out test split is evaluated (air.evaluate):
count accuracy and confusion matrix, ELBO and IWAE bound, KL terms, mean number
of steps and gradient variance, printed and written to metrics.json.
"""

from absl import app, flags

from air import evaluation as air_evaluation
from air import experiment as air_experiment
from common import cli

_CONFIG = cli.define_config(
    "air/configs/air.py:cpu",
    "Config file and variant (paper, vimco, cpu, smoke), e.g. air/configs/air.py:reference. "
    "Override any field with --config.<field>=<value>, e.g. --config.objective.centering=False.",
)
cli.define_run_flags("air")
flags.adopt_module_key_flags(cli)  # list --results_dir, --run_name, ... under --help


main = cli.train_main(
    _CONFIG,
    cli.task_trainer(air_experiment.build_task),
    air_evaluation.evaluate_run,
    air_evaluation.format_metrics,
)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

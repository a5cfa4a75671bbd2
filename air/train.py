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
from common import cli, training

_CONFIG = cli.define_config(
    "air/configs/air.py:cpu",
    "Config file and variant (paper, vimco, cpu, smoke), e.g. air/configs/air.py:reference. "
    "Override any field with --config.<field>=<value>, e.g. --config.objective.centering=False.",
)
cli.define_run_flags("air")
flags.adopt_module_key_flags(cli)  # list --results_dir, --run_name, ... under --help
FLAGS = flags.FLAGS


def _train_and_evaluate():
    config, run_dir, resume_from = cli.prepare_run(
        _CONFIG.value, FLAGS.results_dir, FLAGS.run_name, FLAGS.resume, FLAGS.checkpoint
    )
    result = training.train(config, run_dir, air_experiment.build_task, resume_from)
    if result.interrupted or not config.eval.after_training:
        return None
    return run_dir, air_evaluation.evaluate_run(run_dir)


def main(argv):
    cli.no_extra_args(argv)
    out = cli.run_or_fail(_train_and_evaluate)
    if out is not None:
        print(air_evaluation.format_metrics(*out))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

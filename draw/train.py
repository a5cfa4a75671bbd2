r"""Trains DRAW on binarized MNIST (Gregor et al. 2015).

  python -m draw.train --config=draw/configs/mnist.py:cpu
  python -m draw.train --config=draw/configs/mnist.py:cpu --config.model.attention=False
  python -m draw.train --config=draw/configs/mnist.py:paper
  python -m draw.train --config=draw/configs/mnist.py:cpu --resume   # continue the newest run

Each run goes to <results_dir>/<run_name>/<N>/ (config, checkpoints, TensorBoard events: the
negative ELBO and its terms L^x and L^z on training batches and, every `loop.eval_every` steps,
on validation images; images: reconstructions with the read and write windows of every step,
and samples being drawn). When training ends the test split is evaluated (draw.evaluate).
"""

from absl import app, flags

from common import cli
from draw import experiment as draw_experiment

_CONFIG = cli.define_config(
    "draw/configs/mnist.py:cpu",
    "Config file and variant (paper, no_attention, cpu, smoke), e.g. draw/configs/mnist.py:cpu. "
    "Override any field with --config.<field>=<value>, e.g. --config.model.num_steps=16 or "
    "--config.model.attention=False; every field is listed with a comment in "
    "draw/configs/mnist.py, and an unknown field is an error.",
)
cli.define_run_flags("draw")
flags.adopt_module_key_flags(cli)  # list --results_dir, --run_name, ... under --help


main = cli.train_main(
    _CONFIG,
    cli.task_trainer(draw_experiment.build_task),
    draw_experiment.evaluate_run,
    draw_experiment.format_metrics,
)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

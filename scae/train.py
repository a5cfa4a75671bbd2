r"""Trains a Stacked Capsule Autoencoder on 40x40 shifted MNIST.

  python -m scae.train --config=scae/configs/mnist.py:cpu
  python -m scae.train --config=scae/configs/mnist.py:reference    # the released script's setup
  python -m scae.train --config=scae/configs/mnist.py:cpu --resume  # continue the newest run

Each run goes to <results_dir>/<run_name>/<N>/ (config, checkpoints, TensorBoard events: the
likelihoods, sparsity terms, probe accuracies, and every `loop.eval_every` steps the validation
k-means accuracy; images: inputs, reconstructions, differences, templates). When training ends
the test figures are computed (scae.evaluate) and printed.
"""

from absl import app, flags

from common import cli
from scae import evaluation as scae_evaluation
from scae import experiment as scae_experiment

_CONFIG = cli.define_config(
    "scae/configs/mnist.py:cpu",
    "Config file and variant (paper, reference, cpu, smoke), e.g. scae/configs/mnist.py:cpu. "
    "Override any field with --config.<field>=<value>, e.g. --config.model.num_parts=40; every "
    "field is listed with a comment in scae/configs/mnist.py, and an unknown field is an error.",
)
cli.define_run_flags("scae")
flags.adopt_module_key_flags(cli)  # list --results_dir, --run_name, ... under --help


main = cli.train_main(
    _CONFIG,
    cli.task_trainer(scae_experiment.build_task),
    scae_evaluation.evaluate_run,
    scae_evaluation.format_metrics,
)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

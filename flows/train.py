r"""Trains a normalizing flow: density estimation on MNIST or UCI / BSDS300 (MAF paper), or a 2-D
toy target.

  python -m flows.train --config=flows/configs/mnist.py:maf5
  python -m flows.train --config=flows/configs/uci.py:power   # the MAF authors' files, docs/uci.md
  python -m flows.train --config=flows/configs/mnist.py:cpu --resume   # continue the newest run
  python -m flows.train --config=flows/configs/toy.py:two_moons
  python -m flows.train --config=flows/configs/toy.py:u3 --config.model.flow=radial

Each run goes to <results_dir>/<run_name>/<N>/ (config, checkpoints, TensorBoard events). MNIST
runs stop early on the validation log-likelihood (early_stopping.json, best model in best/);
then the best model is evaluated on the test split (flows.evaluate) and the figures are printed
and written to metrics.json (toys: also density.png and samples.png).
"""

from absl import app, flags

from common import cli
from flows import evaluation as flows_evaluation
from flows import experiment as flows_experiment
from flows.configs import mnist as mnist_configs
from flows.configs import uci as uci_configs

_CONFIG = cli.define_config(
    "flows/configs/mnist.py:maf5",
    "Config file and variant, e.g. flows/configs/mnist.py:maf5 "
    f"({', '.join(mnist_configs.VARIANTS)}), flows/configs/uci.py:power "
    f"({', '.join(uci_configs.VARIANTS)}) or flows/configs/toy.py:two_moons (see that file). "
    "Override any field with --config.<field>=<value>, e.g. "
    "--config.early_stopping.patience_epochs=10.",
)
cli.define_run_flags("flows")
flags.adopt_module_key_flags(cli)  # list --results_dir, --run_name, ... under --help


main = cli.train_main(
    _CONFIG,
    flows_experiment.train_run,
    flows_experiment.evaluate_run,
    flows_evaluation.format_metrics,
)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

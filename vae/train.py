r"""Trains a VAE / IWAE / MIWAE / CIWAE / PIWAE on MNIST.

  python -m vae.train --config=vae/configs/iwae.py:cpu
  python -m vae.train --config=vae/configs/iwae.py:paper --config.objective.num_samples=5
  python -m vae.train --config=vae/configs/iwae.py:cpu --resume   # continue the newest run
  python -m vae.train --config=vae/configs/iwae.py:cpu --config.model.posterior=planar  # K = 10
  python -m vae.train --config=vae/configs/iwae.py:cpu --config.model.posterior=iaf \
      --config.model.num_flows=2

Each run goes to <results_dir>/<run_name>/<N>/ (config, checkpoints, TensorBoard
events); when training ends the test split is evaluated (vae.evaluate) and the
figures are printed and written to metrics.json.
"""

from absl import app, flags

from common import cli
from vae import experiment as vae_experiment

_CONFIG = cli.define_config(
    "vae/configs/iwae.py:default",
    "Config file and variant (paper, cpu, default, smoke), e.g. vae/configs/iwae.py:cpu. "
    "Override any field with --config.<field>=<value>, e.g. --config.objective.num_samples=50 "
    "or --config.model.posterior=planar (gaussian | planar | radial | iaf; "
    "--config.model.num_flows sets K); "
    "every field is listed with a comment in vae/configs/iwae.py, and an unknown field is an "
    "error.",
)
cli.define_run_flags("vae")
flags.adopt_module_key_flags(cli)  # list --results_dir, --run_name, ... under --help


main = cli.train_main(
    _CONFIG,
    cli.task_trainer(vae_experiment.build_task),
    vae_experiment.evaluate_run,
    vae_experiment.format_metrics,
)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

r"""Evaluates a trained VAE/IWAE run on the MNIST test split.

  python -m vae.evaluate --run_dir=results/vae/1

Reports the test log-likelihood estimated with k = 5000 importance samples
(Burda et al. 2016, sec. 5), the ELBO and IWAE-k bounds, the number of active
latent units (sec. 5.2) and, with --gradient_snr_repeats, the gradient
signal-to-noise ratio of Rainforth et al. (2018, eq. 13). Results go to
<run_dir>/metrics.json and to TensorBoard under <run_dir>/test.
"""

from absl import app, flags

from common import cli
from vae import experiment as vae_experiment

flags.DEFINE_string("run_dir", None, "Run folder written by vae.train, e.g. results/vae/1.")
flags.DEFINE_string(
    "checkpoint", "", "Checkpoint prefix to evaluate; default the newest in --run_dir."
)
flags.DEFINE_integer(
    "num_samples",
    0,
    "Importance samples per image for the log-likelihood; 0 uses the run's eval.num_samples "
    "(5000 except in the default and smoke configs).",
    lower_bound=0,
)
flags.DEFINE_integer(
    "gradient_snr_repeats",
    0,
    "If > 0 (>= 2), also estimate the gradient SNR per data point (Rainforth et al. eq. 13): this "
    "many gradient draws on each of 100 test images, averaged over parameters and images.",
    lower_bound=0,
)
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.mark_flag_as_required("run_dir")
FLAGS = flags.FLAGS


def main(argv):
    cli.no_extra_args(argv)
    metrics = cli.run_or_fail(
        vae_experiment.evaluate_run,
        FLAGS.run_dir,
        FLAGS.checkpoint or None,
        FLAGS.num_samples or None,
        FLAGS.gradient_snr_repeats,
        FLAGS.progress,
    )
    print(vae_experiment.format_metrics(FLAGS.run_dir, metrics))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

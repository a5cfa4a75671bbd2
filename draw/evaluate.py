r"""Evaluates a DRAW run on the binarized MNIST test split.

  python -m draw.evaluate --run_dir=results/draw/1
  python -m draw.evaluate --run_dir=results/draw/1 --num_samples=1000

Reports, per test image in nats: the negative ELBO (the bound of Gregor et al. 2015, Table 2)
split into L^x and L^z, and the importance-sampled bound with k samples (Burda et al. 2016,
eq. 8), a tighter upper bound of the NLL. Results go to <run_dir>/metrics.json and TensorBoard.
"""

from absl import app, flags

from common import cli
from draw import experiment as draw_experiment

flags.DEFINE_string("run_dir", None, "Run folder written by draw.train, e.g. results/draw/1.")
flags.DEFINE_string("checkpoint", "", "Checkpoint prefix; default the newest in --run_dir.")
flags.DEFINE_integer(
    "num_samples", 0, "Importance samples per test image (k); 0 uses the run's eval.num_samples."
)
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.mark_flag_as_required("run_dir")
FLAGS = flags.FLAGS


def main(argv):
    cli.no_extra_args(argv)
    if FLAGS.num_samples < 0:
        cli.fail(ValueError(f"--num_samples must be >= 0, got {FLAGS.num_samples}."))
    metrics = cli.run_or_fail(
        draw_experiment.evaluate_run,
        FLAGS.run_dir,
        FLAGS.checkpoint or None,
        FLAGS.num_samples or None,
        FLAGS.progress,
    )
    print(draw_experiment.format_metrics(FLAGS.run_dir, metrics))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

r"""Evaluates a trained AIR run on the held-out multi-MNIST test split.

  python -m air.evaluate --run_dir=results/air/1

Reports the count accuracy (sampled n, as the reference's `num_step_accuracy`,
and the mode of q(n | x)) with the confusion matrix of true vs inferred counts,
the ELBO and the IWAE-k bound (k = eval.num_particles), the KL terms, the mean
number of steps and the variance of the stochastic gradient (with and without
the baseline). Results go to <run_dir>/metrics.json and to TensorBoard under
<run_dir>/test (scalars, the confusion matrix and glimpse-box images).
"""

from absl import app, flags

from air import evaluation as air_evaluation
from common import cli

flags.DEFINE_string("run_dir", None, "Run folder written by air.train, e.g. results/air/1.")
flags.DEFINE_string(
    "checkpoint", "", "Checkpoint prefix to evaluate; default the newest in --run_dir."
)
flags.mark_flag_as_required("run_dir")
FLAGS = flags.FLAGS


def main(argv):
    cli.no_extra_args(argv)
    metrics = cli.run_or_fail(air_evaluation.evaluate_run, FLAGS.run_dir, FLAGS.checkpoint or None)
    print(air_evaluation.format_metrics(FLAGS.run_dir, metrics))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

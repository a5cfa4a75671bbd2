r"""Evaluates a trained flows run.

  python -m flows.evaluate --run_dir=results/flows/1

MNIST: the best checkpoint of early stopping (or --checkpoint), batch-norm statistics from the
training split, test log-likelihood in nats in logit space (+- 2 standard errors, MAF paper
Table 2) and bits/pixel on [0, 256) (MAF paper, sec. 4.3). Toys: held-out log-likelihood or
KL(q || p), and density.png / samples.png. Results go to <run_dir>/metrics.json and to
TensorBoard under <run_dir>/test.
"""

from absl import app, flags

from common import cli
from flows import evaluation as flows_evaluation

flags.DEFINE_string("run_dir", None, "Run folder written by flows.train, e.g. results/flows/1.")
flags.DEFINE_string(
    "checkpoint",
    "",
    "Checkpoint prefix to evaluate; default the best of early stopping, else the newest.",
)
flags.mark_flag_as_required("run_dir")
FLAGS = flags.FLAGS


def main(argv):
    cli.no_extra_args(argv)
    metrics = cli.run_or_fail(
        flows_evaluation.evaluate_run, FLAGS.run_dir, FLAGS.checkpoint or None
    )
    print(flows_evaluation.format_metrics(FLAGS.run_dir, metrics))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

r"""Evaluates a SCAE run: unsupervised (k-means + Hungarian) and linear-probe accuracy of object
presences on train and test, written to metrics.json.

  python -m scae.evaluate --run_dir=results/scae/1
  python -m scae.evaluate --run_dir=results/scae/1 --split=validation --presence_noise=on
"""

from absl import app, flags

from common import cli
from scae import evaluation as scae_evaluation

flags.DEFINE_string("run_dir", None, "Run folder to evaluate, e.g. results/scae/1.")
flags.DEFINE_string("checkpoint", "", "Checkpoint prefix; default the newest in --run_dir.")
flags.DEFINE_bool(
    "plot",
    True,
    "Also write templates.png, reconstructions.png, accuracy_curve.png, presences.png (object "
    "presences of 8 test images), tsne.png (t-SNE of the test posterior presences) and "
    "object_reconstructions.png (what each object capsule draws for 4 test images).",
)
flags.DEFINE_enum(
    "split",
    "test",
    list(scae_evaluation.SPLITS),
    "Held-out images to score: test (the reported figures, metrics.json) or validation (the "
    "last training images, for choices such as the quirk switches; metrics_validation.json).",
)
flags.DEFINE_enum(
    "presence_noise",
    "run",
    ["run", "on", "off"],
    "Presence noise at evaluation (the reference code's quirk, U(-2, 2) on presence logits): "
    "run = the run's eval.presence_noise; on / off override it (the metrics go to "
    "metrics_<split>_noise_<on|off>.json).",
)
flags.mark_flag_as_required("run_dir")
FLAGS = flags.FLAGS


def main(argv):
    cli.no_extra_args(argv)
    noise = {"run": None, "on": True, "off": False}[FLAGS.presence_noise]
    metrics = cli.run_or_fail(
        scae_evaluation.evaluate_run, FLAGS.run_dir, FLAGS.checkpoint or None, FLAGS.plot,
        FLAGS.split, noise,
    )  # fmt: skip
    print(scae_evaluation.format_metrics(FLAGS.run_dir, metrics))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

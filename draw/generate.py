r"""Draws samples from a trained DRAW and shows them being drawn.

  python -m draw.generate --run_dir=results/draw/1 --num_samples=64

Writes, under <run_dir>/generated/ (or --output_dir): `step_001.png` ... `step_<T>.png` (the
grid of all samples after each step), `canvas.gif` (the canvas being drawn, write windows as
green boxes) and `steps.png` (one row per sample, eight steps across); the same go to
TensorBoard (<run_dir>/test) as images.
"""

import math
import os

import numpy as np
import tensorflow as tf
from absl import app, flags

from common import cli, experiment
from draw import plots

flags.DEFINE_string("run_dir", None, "Run folder written by draw.train, e.g. results/draw/1.")
flags.DEFINE_string("checkpoint", "", "Checkpoint prefix; default the newest in --run_dir.")
flags.DEFINE_integer("num_samples", 64, "Number of samples (>= 1).")
flags.DEFINE_integer("seed", 0, "Seed of the prior draws.")
flags.DEFINE_bool("boxes", True, "Draw the write windows as green boxes.")
flags.DEFINE_integer("scale", 3, "Upsampling factor of the 28-pixel canvases (>= 1).")
flags.DEFINE_string("output_dir", "", "Where to write; default <run_dir>/generated.")
flags.mark_flag_as_required("run_dir")
FLAGS = flags.FLAGS


def generate(run_dir, checkpoint, num_samples, seed, boxes, scale, output_dir):
    """Writes the PNGs and the GIF; returns their paths.

    Raises:
      ValueError: `num_samples` or `scale` < 1.
      common.experiment.RunError: bad run folder or checkpoint.
    """
    if num_samples < 1 or scale < 1:
        raise ValueError(f"--num_samples and --scale must be >= 1, got {num_samples}, {scale}.")
    restored = experiment.load_from_checkpoint(run_dir, checkpoint)
    model = restored.model
    gen = model.generate(num_samples, tf.constant([seed, 2015], tf.int32))
    probs = tf.sigmoid(gen.canvas_logits).numpy()
    writes = plots.window_boxes(gen.write_windows, model.write_size) if boxes else None
    frames = plots.render_frames(probs, None, writes, scale)
    columns = int(math.ceil(math.sqrt(num_samples)))
    output_dir = output_dir or os.path.join(run_dir, "generated")
    os.makedirs(output_dir, exist_ok=True)
    paths = plots.save_step_grids(frames, output_dir, columns)
    steps = plots.shown_steps(model.num_steps)
    paths.append(plots.save_gif(frames, os.path.join(output_dir, "canvas.gif"), columns))
    paths.append(
        plots.save_strip(
            frames[:, : min(num_samples, 8)], steps, os.path.join(output_dir, "steps.png")
        )
    )
    writer = tf.summary.create_file_writer(os.path.join(run_dir, "test"))
    with writer.as_default():
        final = plots.tile(frames[-1], columns)[None].astype(np.float32) / 255.0
        tf.summary.image("generated/final_canvas", final, step=restored.step)
        for t in steps:
            grid = plots.tile(frames[t], columns)[None].astype(np.float32) / 255.0
            tf.summary.image(f"generated/step_{t + 1:03d}", grid, step=restored.step)
    writer.flush()
    return paths


def main(argv):
    cli.no_extra_args(argv)
    paths = cli.run_or_fail(
        generate,
        FLAGS.run_dir,
        FLAGS.checkpoint or None,
        FLAGS.num_samples,
        FLAGS.seed,
        FLAGS.boxes,
        FLAGS.scale,
        FLAGS.output_dir,
    )
    print(
        f"Wrote {len(paths)} files to {os.path.dirname(paths[0])}: "
        f"{', '.join(os.path.basename(p) for p in paths[-2:])} and step_*.png"
    )


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

"""TensorBoard helpers shared by every package."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np
import tensorflow as tf


def image_grid(images: tf.Tensor | np.ndarray, columns: int | None = None) -> tf.Tensor:
    """Tiles `[N, H, W, C]` images into one `[1, rows*H, columns*W, C]` image.

    Missing cells (when N is not a multiple of `columns`) are black.
    """
    images = tf.convert_to_tensor(images)
    n, h, w, c = images.shape
    columns = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / columns))
    pad = rows * columns - n
    if pad:
        images = tf.concat([images, tf.zeros([pad, h, w, c], images.dtype)], axis=0)
    grid = tf.reshape(images, [rows, columns, h, w, c])
    grid = tf.transpose(grid, [0, 2, 1, 3, 4])  # [rows, H, columns, W, C]
    return tf.reshape(grid, [1, rows * h, columns * w, c])


def write_test_metrics(
    run_dir: str,
    metrics: Mapping[str, object],
    step: int,
    images: Mapping[str, tf.Tensor] | None = None,
) -> None:
    """Writes an evaluation's figures to TensorBoard under `<run_dir>/test`.

    Every int or float value of `metrics` (not bools, not `step`) becomes a scalar at `step`;
    `images` (`[1, H, W, C]` tensors, e.g. from `image_grid`) become images.
    """
    writer = tf.summary.create_file_writer(os.path.join(run_dir, "test"))
    with writer.as_default():
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "step":
                tf.summary.scalar(name, value, step=step)
        for name, image in (images or {}).items():
            tf.summary.image(name, image, step=step)
    writer.flush()


def drop_events_after(log_dir: str, step: int) -> int:
    """Removes, from every event file in `log_dir`, the events of steps after `step`; returns how
    many were removed.

    A run that resumes from its step-`step` checkpoint recomputes and rewrites the later steps,
    so the events a killed process wrote after that checkpoint are superseded: without this,
    TensorBoard (which, for TF2 event files, purges nothing on a restart) would show those steps
    twice. Each file is rewritten atomically (a temporary file, then `os.replace`), and only when
    it holds something to remove; a record the kill cut short is not copied (reading stops there).
    """
    if not tf.io.gfile.isdir(log_dir):
        return 0
    removed = 0
    for path in sorted(tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        records, dropped = [], 0
        try:
            for record in tf.data.TFRecordDataset(path):
                record = record.numpy()
                if tf.compat.v1.Event.FromString(record).step > step:
                    dropped += 1
                else:
                    records.append(record)
        except tf.errors.DataLossError:  # a damaged last record: stop reading there
            dropped += 1
        if not dropped:
            continue
        tmp = path + ".tmp"
        with tf.io.TFRecordWriter(tmp) as writer:
            for record in records:
                writer.write(record)
        os.replace(tmp, path)
        removed += dropped
    return removed


def validation_curve(run_dir: str, tag: str) -> list[tuple[int, float]]:
    """`(step, value)` pairs of the scalar `tag` in `<run_dir>/validation` (the events the
    training loop writes at every validation); empty when the run has none."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(
        os.path.join(run_dir, "validation"), size_guidance={"tensors": 0}
    )
    acc.Reload()
    if tag not in acc.Tags()["tensors"]:
        return []
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]

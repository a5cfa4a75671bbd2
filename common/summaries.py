"""TensorBoard helpers shared by every package."""

from __future__ import annotations

import math
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


def write_scalars(values: Mapping[str, float], step: int, prefix: str = "") -> None:
    """Writes every value as a scalar to the default summary writer."""
    for name, value in values.items():
        tf.summary.scalar(prefix + name, value, step=step)

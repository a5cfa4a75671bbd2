"""MNIST as continuous data for density estimation (Papamakarios et al. 2017, sec. 4.3).

Pixels k in {0..255} become x = (k + u) / 256 in [0, 1), u ~ U(0, 1) drawn *once* with a fixed
seed (static dequantization, stored on disk like static binarization); models see
y = logit(alpha + (1 - 2 alpha) x) with alpha = 1e-6 for MNIST (the MAF code's `datasets/mnist.py`).
A log-density of y converts to the pixel space [0, 1]^D with the Jacobian of the transform, and
to bits/pixel on [0, 256)^D. Symbols: B batch, D pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import ml_collections
import numpy as np
import tensorflow as tf

from common.data import mnist as mnist_data
from common.data import transforms

LOGIT_ALPHA = 1e-6  # MNIST (MAF code); CIFAR-10 uses 0.05.


def static_dequantize(
    images: np.ndarray, seed: int | tuple[int, ...], data_dir: str | None = None
) -> np.ndarray:
    """One fixed dequantization x = (k + u) / 256, u ~ U(0, 1), computed once and stored on disk.

    The uniforms come from `np.random.default_rng(seed)` over the images in row-major order; the
    result is stored as `<data_dir>/mnist/dequantized_<fingerprint>_<seed>.npy` (float32; the
    fingerprint hashes the images), so later calls and runs get the same draw even if NumPy's
    streams change. Stored draws are checked against `images` (`floor(256 x) == k`). Draw the
    splits of one data set with different seeds (e.g. `(42, 0)`, `(42, 1)`, ...): equal seeds give
    equal noise for equally placed pixels.

    Args:
      images: uint8 `[N, ...]` in {0..255}.
      seed: non-negative int or tuple of ints (a `np.random.default_rng` seed).
      data_dir: root data directory; default `common.data.mnist.default_data_dir()`. If it
        is not writable the draw is computed but not stored (with a warning).

    Returns:
      float32 array of the shape of `images`, with `k / 256 <= x < (k + 1) / 256` exactly.

    Raises:
      ValueError: `images` is not uint8.
      DataError: a stored draw has the wrong shape/dtype or contradicts `images`; it is left
        untouched.
    """

    def draw(rows, rng):
        k = rows.astype(np.float64)
        x = ((k + rng.random(k.shape)) / 256).astype(np.float32)
        # Rounding to float32 may reach (k + 1) / 256 (exact in float32): stay below it.
        return np.minimum(x, np.nextafter(((k + 1) / 256).astype(np.float32), np.float32(0)))

    def matches(x, images):
        return not np.any(np.floor(x * 256) != images)  # x * 256 is exact in float32.

    return transforms.stored_draw(
        images,
        "static_dequantize",
        "dequantization",
        "dequantized",
        transforms.seed_tag(seed),
        [int(v) for v in np.atleast_1d(seed)],
        np.float32,
        data_dir,
        draw,
        matches,
    )


def logit_transform(x, alpha: float = LOGIT_ALPHA) -> tf.Tensor:
    """y = logit(alpha + (1 - 2 alpha) x), elementwise (float32 for non-float64 input).

    Args:
      x: dequantized pixels in [0, 1] (float, any shape).
      alpha: keeps the logit finite at x = 0 and x = 1.

    Raises:
      ValueError: for integer input (dequantize first: `static_dequantize`).
    """
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(f"logit_transform expects dequantized float pixels, got {x.dtype}.")
    if x.dtype != tf.float64:
        x = tf.cast(x, tf.float32)
    p = alpha + (1 - 2 * alpha) * x
    return tf.math.log(p) - tf.math.log1p(-p)


def inverse_logit_transform(y, alpha: float = LOGIT_ALPHA) -> tf.Tensor:
    """x = (sigmoid(y) - alpha) / (1 - 2 alpha), the inverse of `logit_transform`."""
    return (tf.sigmoid(y) - alpha) / (1 - 2 * alpha)


def logit_log_det_jacobian(y, alpha: float = LOGIT_ALPHA) -> tf.Tensor:
    """log |det dy/dx| per example of y = logit(alpha + (1 - 2 alpha) x).

    With s = sigmoid(y): dy_i/dx_i = (1 - 2 alpha) / (s_i (1 - s_i)), so the sum over the D
    pixels is `D log(1 - 2 alpha) - sum_i [log s_i + log(1 - s_i)]`
    (`log s = -softplus(-y)`, `log(1 - s) = -softplus(y)`, stable for large |y|).

    Args:
      y: `[B, ...]`; every axis after the first is part of the event.

    Returns:
      `[B]`.
    """
    y = tf.convert_to_tensor(y)
    axes = list(range(1, y.shape.rank))
    num_pixels = tf.cast(tf.reduce_prod(tf.shape(y)[1:]), y.dtype)
    log_s_one_minus_s = -tf.nn.softplus(-y) - tf.nn.softplus(y)
    log_slope = tf.math.log1p(tf.constant(-2 * alpha, y.dtype))  # log(1 - 2 alpha)
    return num_pixels * log_slope - tf.reduce_sum(log_s_one_minus_s, axes)


def pixel_log_prob(log_prob_y, y, alpha: float = LOGIT_ALPHA) -> tf.Tensor:
    """log p(x) on [0, 1]^D from a logit-space log-density: log p(y) + log |det dy/dx|.

    Args:
      log_prob_y: `[B]` log p(y) in nats (the MAF paper's Table 2 unit).
      y: `[B, ...]` the logit-space points.

    Returns:
      `[B]` in nats.
    """
    return log_prob_y + logit_log_det_jacobian(y, alpha)


def bits_per_pixel(log_prob_y, y, alpha: float = LOGIT_ALPHA) -> tf.Tensor:
    """Bits per pixel on [0, 256)^D: -log p_[0,1](x) / (D ln 2) + 8 (rescaling [0, 1] to
    [0, 256) divides the density by 256^D). A uniform model scores exactly 8.

    Args:
      log_prob_y: `[B]` log p(y) in nats.
      y: `[B, ...]` the logit-space points.

    Returns:
      `[B]`.
    """
    y = tf.convert_to_tensor(y)
    num_pixels = tf.cast(tf.reduce_prod(tf.shape(y)[1:]), y.dtype)
    return -pixel_log_prob(log_prob_y, y, alpha) / (num_pixels * np.log(2.0)) + 8.0


def _logit_batch(images, seed=None) -> tf.Tensor:
    """Dequantized float pixels -> logit space with `LOGIT_ALPHA` (MNIST)."""
    del seed
    return logit_transform(images, LOGIT_ALPHA)


# The per-batch logit transform of pixels already dequantized by `static_dequantize` (the flows
# tasks dequantize each whole split once, then batch).
LOGIT = transforms.Transform(_logit_batch)


class MnistData(NamedTuple):
    """Dequantized pixels x in [0, 1), float32 `[N, 28, 28]` per split."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def load_mnist_data(config: ml_collections.ConfigDict) -> MnistData:
    """MAF-paper MNIST: 50k / 10k / 10k, statically dequantized, split i with seed `[seed, i]`.

    Each whole split is dequantized (and stored) before the prefixes of `data.num_train_images`,
    `eval.num_validation_images` and `eval.num_test_images` are taken, so a prefix sees the same
    noise as the full split.

    Raises:
      ValueError: bad sizes. mnist_data.DataError: MNIST cannot be loaded.
    """
    if config.data.dataset != "mnist":
        raise ValueError(f"data.dataset must be 'mnist', got {config.data.dataset!r}.")
    data_dir = config.data.data_dir or None
    mnist = mnist_data.load_mnist(data_dir, config.data.source, config.data.validation_size)
    seed = config.data.dequantization_seed
    out = []
    for i, (split, prefix) in enumerate(
        (
            (mnist.train, config.data.num_train_images),
            (mnist.validation, config.eval.num_validation_images),
            (mnist.test, config.eval.num_test_images),
        )
    ):
        if not len(split.images):
            raise ValueError("data.validation_size must be positive: early stopping needs it.")
        x = static_dequantize(split.images, (seed, i), data_dir)
        out.append(x[:prefix] if prefix else x)
    return MnistData(*out)


def num_train_images(config: ml_collections.ConfigDict) -> int:
    full = mnist_data.NUM_TRAIN - config.data.validation_size
    return min(config.data.num_train_images, full) if config.data.num_train_images else full


def flat_logits(x: np.ndarray) -> tf.Tensor:
    """Dequantized `[N, 28, 28]` -> logit space `[N, D]`."""
    return logit_transform(np.reshape(x, [len(x), -1]))


def pixel_images(y: tf.Tensor) -> tf.Tensor:
    """Logit-space `[N, D]` -> `[N, 28, 28, 1]` pixels in [0, 1] (non-finite -> 0)."""
    x = inverse_logit_transform(y)
    x = tf.where(tf.math.is_finite(x), tf.clip_by_value(x, 0.0, 1.0), 0.0)
    return tf.reshape(x, [-1, 28, 28, 1])

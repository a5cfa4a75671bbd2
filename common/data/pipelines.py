"""Step-indexed, resumable `tf.data` pipelines over in-memory uint8 images.

The batch of global step s is a pure function of (seed, s), so a run resumed at step s
continues the exact trajectory without checkpointing iterator state. Symbols: N examples,
B batch size.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from common.data import transforms as transforms_lib

# ------------------------------------------------------------------------------------------------
# Pipelines.

# Domain separation: permutations and per-step transforms derive independent seed streams.
_PERMUTATION_STREAM = 0
_TRANSFORM_STREAM = 1


def _derived_seed(seed: int, stream: int, index) -> tf.Tensor:
    """int64 `[2]` stateless seed for (seed, stream, index)."""
    base = tf.constant([seed, stream], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder is dropped): `num_examples // batch_size`.

    Raises:
      ValueError: `batch_size` < 1 or larger than `num_examples`.
    """
    if batch_size < 1 or batch_size > num_examples:
        raise ValueError(f"batch_size must be in [1, {num_examples}], got {batch_size}.")
    return num_examples // batch_size


def _element(images: tf.Tensor, labels: tf.Tensor | None, index: tf.Tensor) -> dict:
    element = {"image": images[..., tf.newaxis]}  # [B, 28, 28, 1]
    if labels is not None:
        element["label"] = tf.gather(labels, index)
    return element


def _labels_tensor(labels, num: int) -> tf.Tensor | None:
    if labels is None:
        return None
    labels = np.asarray(labels, np.int64)
    if labels.shape != (num,):
        raise ValueError(f"labels must have shape [{num}], got {labels.shape}.")
    return tf.constant(labels)


def train_dataset(
    images: np.ndarray,
    batch_size: int,
    seed: int,
    transform: str | transforms_lib.Transform = "dynamic_binarize",
    start_step: int = 0,
    labels: np.ndarray | None = None,
    data_dir: str | None = None,
) -> tf.data.Dataset:
    """Infinite, step-indexed training batches: the batch of step s depends only on (seed, s).

    With P = N // B steps per epoch, step s is in epoch e = s // P at position p = s % P and holds
    rows `perm(seed, e)[p * B : (p + 1) * B]`, `perm` a stateless permutation of range(N); the
    per-batch transform (dynamic binarization) uses a stateless seed derived from (seed, s). So
    `train_dataset(..., start_step=k)` yields exactly what an uninterrupted pipeline yields from
    step k on, with no iterator state to checkpoint. Each epoch visits P * B distinct rows.

    Args:
      images: uint8 `[N, 28, 28]`, kept in memory as one constant tensor.
      batch_size: B, in [1, N].
      seed: int; also the seed of a 'static_binarize' draw.
      transform: a `common.data.transforms.Transform`, or the name of one in
        `TRANSFORMS`.
      start_step: first global step to yield (>= 0).
      labels: optional int `[N]`.
      data_dir: where 'static_binarize' stores its draw; default
        `common.data.mnist.default_data_dir()`.

    Returns:
      `tf.data.Dataset` of dicts `{"image": float32 [B, 28, 28, 1], "label": int64 [B]}` (label
      only if `labels` is given), prefetched.

    Raises:
      ValueError: bad batch size, negative `start_step`, unknown transform or mis-shaped labels.
    """
    fn = transforms_lib.get(transform)
    images = np.asarray(images)
    num = len(images)
    per_epoch = steps_per_epoch(num, batch_size)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}.")
    if fn.prepare is not None:
        images = fn.prepare(images, int(seed), data_dir)
    images_t = tf.constant(images)
    labels_t = _labels_tensor(labels, num)
    start_epoch, start_position = divmod(int(start_step), per_epoch)

    def epoch_batches(epoch):
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(num, dtype=tf.int64), _derived_seed(seed, _PERMUTATION_STREAM, epoch)
        )
        first = tf.where(epoch == start_epoch, tf.constant(start_position, tf.int64), 0)

        def batch(position):
            # [B]; the reshape gives the batch a static shape (XLA/TPU friendly).
            index = tf.reshape(
                perm[position * batch_size : (position + 1) * batch_size], [batch_size]
            )
            step = epoch * per_epoch + position
            x = fn.batch(tf.gather(images_t, index), _derived_seed(seed, _TRANSFORM_STREAM, step))
            return _element(x, labels_t, index)

        return tf.data.Dataset.range(first, per_epoch).map(batch)

    dataset = tf.data.Dataset.counter(start_epoch, dtype=tf.int64).flat_map(epoch_batches)
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_dataset(
    images: np.ndarray,
    batch_size: int,
    transform: str | transforms_lib.Transform = "intensity",
    seed: int = 123,
    labels: np.ndarray | None = None,
    data_dir: str | None = None,
) -> tf.data.Dataset:
    """One pass over `images` in order, without shuffling; the last partial batch is kept.

    For binarized evaluation use 'static_binarize': the images are binarized once with `seed`
    (IWAE convention: the test set with seed 123) and the draw is stored under `data_dir`.

    Args:
      images: uint8 `[N, 28, 28]`.
      batch_size: B >= 1.
      transform: a `common.data.transforms.Transform`, or the name of one in
        `TRANSFORMS`.
      seed: seed of the transform ('dynamic_binarize' draws batch i with (seed, i)).
      labels: optional int `[N]`.
      data_dir: where 'static_binarize' stores its draw; default
        `common.data.mnist.default_data_dir()`.

    Returns:
      `tf.data.Dataset` of ceil(N / B) dicts `{"image": float32 [b, 28, 28, 1],
      "label": int64 [b]}` with b = B except possibly in the last one.

    Raises:
      ValueError: `batch_size` < 1, unknown transform or mis-shaped labels.
    """
    fn = transforms_lib.get(transform)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    images = np.asarray(images)
    num = len(images)
    if fn.prepare is not None:
        images = fn.prepare(images, int(seed), data_dir)
    images_t = tf.constant(images)
    labels_t = _labels_tensor(labels, num)

    def batch(i):
        index = tf.range(i * batch_size, tf.minimum((i + 1) * batch_size, num))
        x = fn.batch(tf.gather(images_t, index), _derived_seed(seed, _TRANSFORM_STREAM, i))
        return _element(x, labels_t, index)

    num_batches = -(-num // batch_size)
    return tf.data.Dataset.range(num_batches).map(batch).prefetch(tf.data.AUTOTUNE)

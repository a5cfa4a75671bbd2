"""Image transforms shared by the packages: intensities, dynamic and static binarization.

A transform is `Transform(batch, prepare)`: an optional one-off `prepare` of the whole uint8
array in NumPy (a fixed random draw, stored on disk next to the data so that every run sees the
same one), then `batch(images, seed)` on every batch with a stateless seed. Packages build their
own transforms from these pieces (e.g. `flows.data` for the MAF paper's dequantization) and hand
them to `common.data.pipelines`.

Dynamic binarization redraws x_bin ~ Bernoulli(x / 255) every time an image is used; static
binarization draws once with a fixed seed (the IWAE convention binarizes the test set once with
seed 123; Burda et al. 2016, sec. 5).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from absl import logging

from common.data.mnist import DataError, default_data_dir, write_atomic

# ------------------------------------------------------------------------------------------------
# Transforms.


def as_seed(seed) -> tf.Tensor:
    """A stateless seed: int64 `[2]` tensor (from an int `s` -> `[s, 0]`, or a pair)."""
    seed = tf.convert_to_tensor(seed, dtype=tf.int64)
    return tf.stack([seed, tf.constant(0, tf.int64)]) if seed.shape.rank == 0 else seed


def intensity(images, seed=None) -> tf.Tensor:
    """Grey levels in [0, 1]: uint8 images are divided by 255; float images are kept as they are.

    Args:
      images: uint8 in {0..255} or float in [0, 1], any shape.
      seed: unused (all transforms share the signature `fn(images, seed)`).

    Returns:
      float32 tensor of the same shape.
    """
    del seed
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def dynamic_binarize(images, seed) -> tf.Tensor:
    """A fresh draw x_bin ~ Bernoulli(x / 255), deterministic given `seed` (Burda et al. 2016,
    sec. 5: dynamic binarization).

    Args:
      images: uint8 in {0..255} or float intensities in [0, 1], any shape.
      seed: stateless seed, int64/int32 `[2]` (or an int `s`, meaning `[s, 0]`).

    Returns:
      float32 tensor in {0, 1}, same shape as `images`.
    """
    probs = intensity(images)
    uniform = tf.random.stateless_uniform(tf.shape(probs), seed=as_seed(seed))
    return tf.cast(uniform < probs, tf.float32)


def fingerprint(images: np.ndarray) -> str:
    digest = hashlib.md5(str((images.shape, images.dtype.str)).encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()[:16]


def static_binarize(images: np.ndarray, seed: int, data_dir: str | None = None) -> np.ndarray:
    """One fixed Bernoulli(x / 255) draw of `images`, computed once and stored on disk.

    The draw uses `np.random.default_rng(seed)` (uniforms over the images in row-major order) and
    is saved as `<data_dir>/mnist/static_binarized_<fingerprint>_<seed>.npy`, where the
    fingerprint is a hash of the images, so every later call (and run) gets the same draw even
    if NumPy's generator streams change. Stored draws are checked for consistency with `images`.

    Args:
      images: uint8 `[N, ...]` in {0..255}.
      seed: non-negative int.
      data_dir: root data directory; default `default_data_dir()`. If it is not writable the
        draw is computed but not stored (with a warning).

    Returns:
      uint8 array in {0, 1}, same shape as `images`.

    Raises:
      ValueError: `images` is not uint8.
      DataError: a stored draw has the wrong shape/dtype or contradicts `images` (a pixel 0 drawn
        as 1 or a pixel 255 drawn as 0); it is left untouched.
    """

    def draw(rows, rng):
        return rng.random(rows.shape) < rows / 255.0

    def matches(binary, images):
        return not (np.any(binary[images == 0] != 0) or np.any(binary[images == 255] != 1))

    return stored_draw(
        images,
        "static_binarize",
        "static binarization",
        "static_binarized",
        seed_tag(seed),
        int(seed),
        np.uint8,
        data_dir,
        draw,
        matches,
    )


def stored_draw(images, fn_name, what, stem, seed_tag, rng_seed, dtype, data_dir, draw, matches):
    """A fixed random draw derived from uint8 `images`, computed once and stored.

    Loads `<data_dir>/mnist/<stem>_<fingerprint of images>_<seed_tag>.npy` when it exists and is
    consistent (`shape`, `dtype`, `matches(stored, images)`); otherwise draws it with
    `np.random.default_rng(rng_seed)`, `draw(rows, rng)` on chunks of 10,000 flattened images
    (the same stream as one call), and writes it atomically. An inconsistent stored file raises
    `DataError` and is left untouched; an unwritable data dir only logs a warning.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"{fn_name} expects uint8 images, got {images.dtype}.")
    mnist_dir = os.path.join(data_dir or default_data_dir(), "mnist")
    path = os.path.join(mnist_dir, f"{stem}_{fingerprint(images)}_{seed_tag}.npy")
    if os.path.isfile(path):
        stored = np.load(path)
        if stored.shape != images.shape or stored.dtype != dtype or not matches(stored, images):
            raise DataError(
                f"Stored {what} {path} does not match the images (shape {stored.shape} "
                f"{stored.dtype} vs {images.shape} {np.dtype(dtype)}); delete it to redraw."
            )
        return stored
    rng = np.random.default_rng(rng_seed)
    flat = images.reshape(len(images), -1)
    out = np.empty(flat.shape, dtype)
    for start in range(0, len(flat), 10_000):
        out[start : start + 10_000] = draw(flat[start : start + 10_000], rng)
    out = out.reshape(images.shape)
    buffer = io.BytesIO()
    np.save(buffer, out)
    try:
        os.makedirs(mnist_dir, exist_ok=True)
        write_atomic(path, buffer.getvalue())
    except OSError as e:
        logging.warning("Could not store the %s in %s: %s", what, path, e)
    return out


def _binary_to_float(images, seed=None) -> tf.Tensor:
    """A stored {0, 1} uint8 draw -> float32 {0, 1} (a cast: `intensity` would divide by 255)."""
    del seed
    return tf.cast(images, tf.float32)


class Transform(NamedTuple):
    """An image transform: an optional one-off `prepare` of the whole array, then a per-batch fn.

    `prepare(images_uint8 [N, ...], seed: int, data_dir) -> np.ndarray` runs once in NumPy before
    batching (a fixed draw such as static binarization or, later, static dequantization);
    `batch(images [B, ...], seed int64 [2]) -> float32 [B, ...]` runs on every batch with a
    stateless seed (dynamic binarization; `flows.data` adds a logit transform). Calling a
    `Transform` applies both to a whole array: `TRANSFORMS[name](images, seed)`.
    """

    batch: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
    prepare: Callable[[np.ndarray, int, str | None], np.ndarray] | None = None

    def __call__(self, images, seed: int, data_dir: str | None = None) -> tf.Tensor:
        if self.prepare is not None:
            images = self.prepare(np.asarray(images), int(seed), data_dir)
        return self.batch(images, as_seed(seed))


def seed_tag(seed: int | tuple[int, ...]) -> str:
    return "-".join(str(int(s)) for s in np.atleast_1d(seed))


TRANSFORMS: dict[str, Transform] = {
    "intensity": Transform(intensity),
    "dynamic_binarize": Transform(dynamic_binarize),
    "static_binarize": Transform(_binary_to_float, prepare=static_binarize),
    "binary": Transform(_binary_to_float),  # images already in {0, 1} (e.g. draw.data)
}


def get(transform: str | Transform) -> Transform:
    """`transform` itself, or the entry of `TRANSFORMS` it names.

    Raises:
      ValueError: an unknown name.
    """
    if isinstance(transform, Transform):
        return transform
    if transform not in TRANSFORMS:
        raise ValueError(
            f"Unknown transform {transform!r}; expected one of {sorted(TRANSFORMS)} or a Transform."
        )
    return TRANSFORMS[transform]

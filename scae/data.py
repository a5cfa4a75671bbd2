"""MNIST on a 40x40 canvas with the digit shifted at random, the data of SCAE's MNIST experiments
(Kosiorek et al. 2019, sec. 4; the reference code's `capsules/data/preprocess.py:pad_and_shift`).

Each 28x28 digit is placed on a 40x40 black canvas at a top-left offset `(t_y, t_x)`; per image
and axis the reference code draws `s ~ U{-12, ..., 12}` and pads `t = ceil((12 - s) / 2)` pixels
before the digit, so `t` is in `{0, ..., 12}` with `P(t = 0) = 1/25` and `P(t = k) = 2/25` for
`k >= 1`: the digit sits within 6 pixels of the centre. Training images get a fresh draw every
time they are used (a stateless seed per step, so a resumed run sees the same batches); validation
and test images get one fixed draw per image (seeded), so evaluations are repeatable (the
reference code redraws the test shifts too).

Splits: the last `validation_size` MNIST training images validate (choices and the accuracy
curve during training), the rest train; the 10,000 test images give the reported figures only.

Symbols: B batch, N images, H = W = 40 canvas, 28 digit size.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf
from scipy import ndimage

from common.data import mnist as mnist_data
from common.data import pipelines, transforms

CANVAS_SIZE = 40
DIGIT_SIZE = 28
MAX_OFFSET = CANVAS_SIZE - DIGIT_SIZE  # 12
TEST_SHIFT_SEED = 2019  # the fixed draw of the validation and test shifts


def offsets_from_draws(s):
    """Top/left padding `t = ceil((12 - s) / 2)` from draws `s` in `{-12..12}` (any shape, int)."""
    return (MAX_OFFSET - s + 1) // 2


def draw_offsets(seed, num: int) -> tf.Tensor:
    """`[num, 2]` int32 offsets `(t_y, t_x)` from a stateless seed (module docstring)."""
    s = tf.random.stateless_uniform(
        [num, 2],
        seed=transforms.as_seed(seed),
        minval=-MAX_OFFSET,
        maxval=MAX_OFFSET + 1,
        dtype=tf.int32,
    )
    return offsets_from_draws(s)


def place_on_canvas(digits: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
    """Puts `[B, 28, 28]` digits on `[B, 40, 40]` black canvases at `[B, 2]` offsets `(t_y, t_x)`.

    Exact for integer offsets: `out = R digit C^T` with one-hot placement matrices `R, C`
    (`[B, 40, 28]`), a batched matmul instead of a loop over images.
    """
    digits = tf.convert_to_tensor(digits)
    offsets = tf.cast(offsets, tf.int32)
    rows = tf.range(CANVAS_SIZE)[tf.newaxis, :, tf.newaxis]  # [1, 40, 1]
    src = tf.range(DIGIT_SIZE)[tf.newaxis, tf.newaxis, :]  # [1, 1, 28]
    place_y = tf.cast(tf.equal(rows, src + offsets[:, 0, None, None]), digits.dtype)  # [B, 40, 28]
    place_x = tf.cast(tf.equal(rows, src + offsets[:, 1, None, None]), digits.dtype)
    return tf.linalg.matmul(tf.linalg.matmul(place_y, digits), place_x, transpose_b=True)


def _random_shift_batch(images, seed) -> tf.Tensor:
    """A training batch: intensities in [0, 1], shifted with offsets drawn from the step's seed."""
    x = transforms.intensity(images)  # [B, 28, 28]
    return place_on_canvas(x, draw_offsets(seed, tf.shape(x)[0]))


def fixed_shift(images: np.ndarray, seed: int = TEST_SHIFT_SEED) -> np.ndarray:
    """uint8 `[N, 28, 28]` -> uint8 `[N, 40, 40]` with one fixed draw of offsets per image
    (`np.random.default_rng(seed)`: the same images always land in the same place)."""
    images = np.asarray(images)
    s = np.random.default_rng(seed).integers(-MAX_OFFSET, MAX_OFFSET + 1, size=(len(images), 2))
    t = offsets_from_draws(s)
    out = np.zeros([len(images), CANVAS_SIZE, CANVAS_SIZE], images.dtype)
    for i, (ty, tx) in enumerate(t):
        out[i, ty : ty + DIGIT_SIZE, tx : tx + DIGIT_SIZE] = images[i]
    return out


# Training: a fresh shift per use; evaluation: the fixed draw, then intensities.
RANDOM_SHIFT = transforms.Transform(_random_shift_batch)
FIXED_SHIFT = transforms.Transform(
    transforms.intensity, prepare=lambda images, seed, data_dir: fixed_shift(images, seed)
)


class Split(NamedTuple):
    """uint8 digits `[N, 28, 28]` and int64 labels `[N]`."""

    images: np.ndarray
    labels: np.ndarray


class ShiftedMnist(NamedTuple):
    train: Split
    validation: Split
    test: Split


def prefix(split: Split, num: int) -> Split:
    """The first `num` images of `split` (0: all of it)."""
    return Split(split.images[:num], split.labels[:num]) if num else split


def load(data_dir: str | None = None, source: str = "auto", validation_size: int = 5_000):
    """MNIST with the last `validation_size` training images as validation (module docstring).

    Raises:
      ValueError: `validation_size` outside [1, 59,999].
      common.data.mnist.DataError: MNIST cannot be obtained.
    """
    if not 1 <= validation_size < mnist_data.NUM_TRAIN:
        raise ValueError(
            f"validation_size must be in [1, {mnist_data.NUM_TRAIN - 1}], got {validation_size}."
        )
    m = mnist_data.load_mnist(data_dir, source, validation_size)
    return ShiftedMnist(*(Split(s.images, s.labels) for s in (m.train, m.validation, m.test)))


def train_dataset(split: Split, batch_size: int, seed: int, start_step: int = 0):
    """Infinite step-indexed batches `{"image": float32 [B, 40, 40, 1], "label": int64 [B]}`, a
    fresh shift per use (the batch of step s depends only on (seed, s))."""
    ds = pipelines.train_dataset(
        split.images, batch_size, seed, RANDOM_SHIFT, start_step, labels=split.labels
    )
    shape = [batch_size, CANVAS_SIZE, CANVAS_SIZE, 1]
    return ds.map(lambda e: {"image": tf.ensure_shape(e["image"], shape), "label": e["label"]})


def eval_dataset(split: Split, batch_size: int, seed: int = TEST_SHIFT_SEED):
    """One in-order pass `{"image": float32 [b, 40, 40, 1], "label": int64 [b]}` with the fixed
    shifts of `fixed_shift(images, seed)`."""
    return pipelines.eval_dataset(
        split.images, batch_size, FIXED_SHIFT, seed=seed, labels=split.labels
    )


# ------------------------------------------------------------------------------------------------
# Viewpoint robustness: MNIST test digits under random affine transforms in affNIST's ranges
# (Tieleman 2013; the SCAE blog post reports 92.2% on affine-transformed digits).

AFFINE_ROTATION_DEG = 20.0  # rotation within +-20 degrees
AFFINE_SHEAR = 0.2  # shear within +-0.2
AFFINE_SCALE = (0.8, 1.2)  # per-axis scale
AFFINE_SEED = 2013


class AffineParams(NamedTuple):
    """Per-image transform parameters, each `[N]`: rotation (radians), shear, x / y scales and
    the digit centre's offset from the canvas centre (pixels)."""

    rotation: np.ndarray
    shear: np.ndarray
    scale_x: np.ndarray
    scale_y: np.ndarray
    shift_x: np.ndarray
    shift_y: np.ndarray


def _linear(p: AffineParams, i: int) -> np.ndarray:
    """The 2x2 map of image i in (row, column) order: rotation, then shear and scales."""
    c, s = np.cos(p.rotation[i]), np.sin(p.rotation[i])
    rotation = np.array([[c, -s], [s, c]])
    shear_scale = np.array([[p.scale_y[i], 0.0], [p.shear[i] * p.scale_y[i], p.scale_x[i]]])
    return shear_scale @ rotation


def draw_affine_params(num: int, seed: int = AFFINE_SEED) -> AffineParams:
    """Random rotation, shear and scales in the affNIST ranges, and a placement that keeps the
    whole transformed 28x28 box on the 40x40 canvas (centred when it cannot move)."""
    rng = np.random.default_rng(seed)
    p = AffineParams(
        rotation=np.deg2rad(rng.uniform(-AFFINE_ROTATION_DEG, AFFINE_ROTATION_DEG, num)),
        shear=rng.uniform(-AFFINE_SHEAR, AFFINE_SHEAR, num),
        scale_x=rng.uniform(*AFFINE_SCALE, num),
        scale_y=rng.uniform(*AFFINE_SCALE, num),
        shift_x=np.zeros(num),
        shift_y=np.zeros(num),
    )
    half = (DIGIT_SIZE - 1) / 2
    corners = np.array([[-half, -half], [-half, half], [half, -half], [half, half]])
    u = rng.uniform(-1.0, 1.0, size=(num, 2))
    for i in range(num):
        extent = np.abs(corners @ _linear(p, i).T).max(axis=0)  # (rows, columns) half-extents
        room = np.maximum((CANVAS_SIZE - 1) / 2 - extent, 0.0)
        p.shift_y[i], p.shift_x[i] = u[i] * room
    return p


def affine_transform(images: np.ndarray, params: AffineParams) -> np.ndarray:
    """uint8 `[N, 28, 28]` digits -> float32 `[N, 40, 40]` intensities in [0, 1], each digit
    transformed about its centre by `params` and placed on the canvas (bilinear,
    `scipy.ndimage.affine_transform`)."""
    out = np.zeros([len(images), CANVAS_SIZE, CANVAS_SIZE], np.float32)
    centre_in = np.full(2, (DIGIT_SIZE - 1) / 2)
    centre_out = np.full(2, (CANVAS_SIZE - 1) / 2)
    for i, image in enumerate(np.asarray(images, np.float32) / 255.0):
        inverse = np.linalg.inv(_linear(params, i))
        shift = np.array([params.shift_y[i], params.shift_x[i]])
        offset = centre_in - inverse @ (
            centre_out + shift
        )  # output pixel o reads inverse o + offset
        out[i] = ndimage.affine_transform(
            image, inverse, offset=offset, output_shape=(CANVAS_SIZE, CANVAS_SIZE), order=1
        )
    return np.clip(out, 0.0, 1.0)


def affine_eval_dataset(split: Split, batch_size: int, seed: int = AFFINE_SEED):
    """One in-order pass over `split` under `draw_affine_params(len, seed)` transforms:
    `{"image": float32 [b, 40, 40, 1], "label": int64 [b]}`."""
    images = affine_transform(split.images, draw_affine_params(len(split.images), seed))
    ds = tf.data.Dataset.from_tensor_slices(
        {"image": images[..., np.newaxis], "label": np.asarray(split.labels, np.int64)}
    )
    return ds.batch(batch_size)

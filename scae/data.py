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


# ------------------------------------------------------------------------------------------------
# SVHN and CIFAR-10 (paper sec. 4): 32x32 colour images through TFDS (`svhn_cropped`, `cifar10`).
# The encoder reads the raw image; the template decoder explains its Sobel edges (the reference
# code's `normalized_sobel_edges`), which removes the flat colour of backgrounds.

COLOUR_DATASETS = ("svhn_cropped", "cifar10")
COLOUR_SIZE = 32


class ColourData(NamedTuple):
    """uint8 `[N, 32, 32, 3]` images and int64 labels per split."""

    train: Split
    validation: Split
    test: Split


def load_colour(name: str, data_dir: str | None = None, validation_size: int = 5_000):
    """`name`'s training split minus its last `validation_size` images (train), those images
    (validation), and its test split, from TFDS (`tfds.load`, `data_dir` None: TFDS' default).

    Raises:
      ValueError: an unknown `name` or a `validation_size` that leaves no training images.
      common.data.mnist.DataError: TFDS cannot provide the data (e.g. no download possible).
    """
    import tensorflow_datasets as tfds

    if name not in COLOUR_DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {COLOUR_DATASETS}.")

    def read(split):
        ds = tfds.load(name, split=split, as_supervised=True, data_dir=data_dir).batch(4096)
        parts = list(tfds.as_numpy(ds))
        return (
            np.concatenate([x for x, _ in parts]).astype(np.uint8),
            np.concatenate([y for _, y in parts]).astype(np.int64),
        )

    try:
        (train_x, train_y), (test_x, test_y) = read("train"), read("test")
    except Exception as e:  # download / preparation failures come in many types
        raise mnist_data.DataError(
            f"TFDS could not provide {name!r} ({type(e).__name__}: {str(e).splitlines()[0]}). "
            f"Prepare it where TFDS looks (`tfds build {name}` on a machine with internet, then "
            "copy the tensorflow_datasets folder to --config.data.data_dir)."
        ) from e
    if not 1 <= validation_size < len(train_x):
        raise ValueError(
            f"validation_size must be in [1, {len(train_x) - 1}] for {name}, got {validation_size}."
        )
    cut = len(train_x) - validation_size
    return ColourData(
        Split(train_x[:cut], train_y[:cut]),
        Split(train_x[cut:], train_y[cut:]),
        Split(test_x, test_y),
    )


def sobel_target(images: tf.Tensor) -> tf.Tensor:
    """`[B, H, W, C]` in [0, 1] -> the normalized Sobel edges the decoder explains: per channel
    the sum of the vertical and horizontal Sobel responses (`tf.image.sobel_edges`, reflected
    borders), minus its median over the image, in absolute value, then min-max scaled to [0, 1]
    per image and channel (the reference code's `normalized_sobel_edges`)."""
    edges = tf.reduce_sum(tf.image.sobel_edges(images), -1)  # [B, H, W, C]
    flat = tf.reshape(tf.transpose(edges, [0, 3, 1, 2]), [tf.shape(edges)[0], edges.shape[3], -1])
    n = tf.shape(flat)[-1]
    ordered = tf.sort(flat, axis=-1)
    # The median of an even count: the mean of the two middle values.
    median = 0.5 * (ordered[..., (n - 1) // 2] + ordered[..., n // 2])
    edges = tf.abs(edges - median[:, tf.newaxis, tf.newaxis, :])
    low = tf.reduce_min(edges, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(edges, axis=[1, 2], keepdims=True)
    return (edges - low) / (high - low + 1e-8)


def _colour_element(e):
    image = e["image"][..., 0]  # the shared pipeline adds a channel axis
    return {"image": image, "target": sobel_target(image), "label": e["label"]}


def colour_train_dataset(split: Split, batch_size: int, seed: int, start_step: int = 0):
    """Infinite step-indexed batches `{"image": float32 [B, 32, 32, 3] in [0, 1], "target": its
    `sobel_target`, "label": int64 [B]}` (no augmentation)."""
    ds = pipelines.train_dataset(
        split.images, batch_size, seed, "intensity", start_step, labels=split.labels
    )
    return ds.map(_colour_element)


def colour_eval_dataset(split: Split, batch_size: int):
    """One in-order pass of `colour_train_dataset`'s elements over `split`."""
    return pipelines.eval_dataset(split.images, batch_size, "intensity", labels=split.labels).map(
        _colour_element
    )


# ------------------------------------------------------------------------------------------------
# One interface over both kinds of data, chosen by `config.data.dataset`.

DATASETS = ("mnist", *COLOUR_DATASETS)


def dataset_name(config) -> str:
    """`config.data.dataset` (`mnist` when absent, for runs stored before it existed).

    Raises:
      ValueError: an unknown name.
    """
    name = config.data.get("dataset", "mnist")
    if name not in DATASETS:
        raise ValueError(f"Unknown data.dataset {name!r}; expected one of {', '.join(DATASETS)}.")
    return name


def image_shape(config) -> tuple[int, int, int]:
    """`(H, W, C)` of the model's input: 40x40x1 shifted MNIST, 32x32x3 SVHN / CIFAR-10."""
    if dataset_name(config) == "mnist":
        return CANVAS_SIZE, CANVAS_SIZE, 1
    return COLOUR_SIZE, COLOUR_SIZE, 3


def load_splits(config) -> ShiftedMnist | ColourData:
    """The train / validation / test splits of `config.data` (`load` or `load_colour`)."""
    name, d = dataset_name(config), config.data
    if name == "mnist":
        return load(d.data_dir or None, d.source, d.validation_size)
    return load_colour(name, d.data_dir or None, d.validation_size)


def train_batches(config, split: Split, start_step: int = 0) -> tf.data.Dataset:
    """`config.batch_size` training batches of `split` from `start_step` on."""
    args = (split, config.batch_size, config.seed, start_step)
    if dataset_name(config) == "mnist":
        return train_dataset(*args)
    return colour_train_dataset(*args)


def eval_batches(config, split: Split, batch_size: int) -> tf.data.Dataset:
    """One in-order pass over `split` (MNIST: the fixed shifts)."""
    if dataset_name(config) == "mnist":
        return eval_dataset(split, batch_size)
    return colour_eval_dataset(split, batch_size)

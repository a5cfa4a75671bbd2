"""Multi-MNIST for AIR (Eslami et al. 2016, sec. 3.1): generated from MNIST once, stored, served
by the step-indexed pipelines of `common.data.pipelines`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from typing import NamedTuple

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from common.data.mnist import IMAGE_SHAPE, DataError, default_data_dir, load_mnist, write_atomic
from common.data.pipelines import eval_dataset, train_dataset
from common.data.transforms import fingerprint

# ------------------------------------------------------------------------------------------------
# Multi-MNIST (Attend, Infer, Repeat; Eslami et al. 2016, sec. 3.1).
#
# Each image is a `canvas_size` x `canvas_size` canvas holding 0..`max_digits` MNIST digits (the
# count uniform), each cropped to its tight bounding box (KAIR; optionally resized first, PYRO
# style) and pasted at a uniformly random position so that the boxes of one image are pairwise
# disjoint (rejection: at most `MULTI_MNIST_MAX_TRIES` placements per digit, else the digits of the
# image are redrawn with the same count, which keeps the counts exactly uniform). Training images
# use digits of the MNIST *train* split (all 60,000), test images digits of the *test* split, so
# the test set is held out at the digit level. Generation is a pure function of the parameters,
# the seed and the MNIST digits; the result is stored once as an npz keyed by all of them.

MULTI_MNIST_VERSION = 2  # Part of the stored file's key: bump when the generator changes.
# Version 2: a validation split from held-out MNIST training digits (version 1 had none).
MULTI_MNIST_MAX_TRIES = 5  # Placements tried per digit before the image is redrawn (KAIR).
MULTI_MNIST_SPLITS = ("train", "validation", "test")
_MULTI_MNIST_FIELDS = ("images", "counts", "boxes", "labels", "digit_index")


class MultiMnistSplit(NamedTuple):
    """One multi-MNIST split. Symbols: N images, S canvas size, D = max_digits.

    Attributes:
      images: uint8 `[N, S, S]`; overlapping is impossible, so each pixel belongs to at most one
        digit.
      counts: int64 `[N]`, the number of digits, uniform on {0..D}.
      boxes: int32 `[N, D, 4]` tight boxes `(top, left, bottom, right)` in pixels (bottom/right
        exclusive) of the digits in placement order; rows `>= counts` are all zero.
      labels: int64 `[N, D]` digit classes; -1 for absent digits.
      digit_index: int64 `[N, D]` index of each digit in its source digits (see
        `load_multi_mnist`); -1 for absent digits.
    """

    images: np.ndarray
    counts: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    digit_index: np.ndarray


class MultiMnist(NamedTuple):
    """Multi-MNIST `train` and `validation` (from disjoint sets of MNIST training digits) and
    `test` (from MNIST test digits)."""

    train: MultiMnistSplit
    validation: MultiMnistSplit
    test: MultiMnistSplit


def _resize_digits(digits: np.ndarray, digit_scale: float) -> np.ndarray:
    """uint8 `[N, 28, 28]` -> uint8 `[N, s, s]`, s = round(28 * digit_scale) (area-preserving
    antialiased bilinear resize); the identity for `digit_scale == 1`."""
    if digit_scale == 1.0:
        return digits
    size = max(1, int(round(IMAGE_SHAPE[0] * digit_scale)))
    resized = tf.image.resize(
        tf.constant(digits[..., None], tf.float32), [size, size], method="bilinear", antialias=True
    )
    return np.clip(np.round(resized.numpy()[..., 0]), 0, 255).astype(np.uint8)


def _tight_boxes(digits: np.ndarray) -> np.ndarray:
    """int32 `[N, 4]` `(top, left, bottom, right)` of the nonzero pixels of each `[N, h, w]` digit
    (bottom/right exclusive). An empty digit gets an empty box at the origin."""
    rows, cols = digits.any(axis=2), digits.any(axis=1)  # [N, h], [N, w]

    def span(mask):
        first = mask.argmax(axis=1)
        last = mask.shape[1] - mask[:, ::-1].argmax(axis=1)
        empty = ~mask.any(axis=1)
        return np.where(empty, 0, first), np.where(empty, 0, last)

    top, bottom = span(rows)
    left, right = span(cols)
    return np.stack([top, left, bottom, right], axis=1).astype(np.int32)


def _disjoint(box: np.ndarray, others: list[np.ndarray]) -> bool:
    """True when the half-open pixel box `box` shares no pixel with any box in `others`."""
    top, left, bottom, right = box
    return all(
        bottom <= o_top or o_bottom <= top or right <= o_left or o_right <= left
        for o_top, o_left, o_bottom, o_right in others
    )


def generate_multi_mnist(
    digits: np.ndarray,
    labels: np.ndarray,
    num_images: int,
    seed: int | tuple[int, ...],
    canvas_size: int = 50,
    max_digits: int = 2,
    digit_scale: float = 1.0,
) -> MultiMnistSplit:
    """Draws a multi-MNIST split from `digits` (pure NumPy; deterministic given the arguments).

    Per image: the count `c ~ U{0..max_digits}`; then `c` digits are drawn uniformly (with
    replacement) from `digits`, resized by `digit_scale` and cropped to their tight bounding box;
    each is placed at a uniform position where it fits on the canvas and its box is disjoint
    from the boxes already placed (up to `MULTI_MNIST_MAX_TRIES` tries per digit, else the image's
    digits and positions are redrawn, keeping `c`). Pixels are copied (boxes are disjoint, so
    nothing is summed or clipped).

    Args:
      digits: uint8 `[M, 28, 28]` source digits.
      labels: int `[M]` their classes.
      num_images: N.
      seed: seed of `np.random.default_rng` (an int or a tuple of ints).
      canvas_size: S, the canvas height and width (50 in Eslami et al.).
      max_digits: D, the largest number of digits per image (2 in Eslami et al.).
      digit_scale: resize factor of the 28x28 digits before cropping (1: KAIR's full-size digits;
        PYRO shrinks them by about 1/1.3).

    Returns:
      A `MultiMnistSplit`.

    Raises:
      ValueError: bad sizes, or digits that cannot fit on the canvas.
    """
    digits = np.asarray(digits)
    labels = np.asarray(labels)
    if (
        digits.ndim != 3
        or digits.dtype != np.uint8
        or len(labels) != len(digits)
        or not len(digits)
    ):
        raise ValueError(
            f"digits must be a non-empty uint8 [M, H, W] array with [M] labels; got {digits.shape} "
            f"{digits.dtype} and labels {labels.shape}."
        )
    if num_images < 0 or max_digits < 0 or canvas_size < 1 or not digit_scale > 0:
        raise ValueError(
            f"Need num_images >= 0, max_digits >= 0, canvas_size >= 1 and digit_scale > 0; got "
            f"{num_images}, {max_digits}, {canvas_size}, {digit_scale}."
        )
    resized = _resize_digits(digits, float(digit_scale))
    crop_boxes = _tight_boxes(resized)  # [M, 4]
    heights = crop_boxes[:, 2] - crop_boxes[:, 0]
    widths = crop_boxes[:, 3] - crop_boxes[:, 1]
    if heights.max() > canvas_size or widths.max() > canvas_size:
        raise ValueError(
            f"Digits up to {heights.max()}x{widths.max()} px do not fit a {canvas_size} px canvas; "
            "lower digit_scale or enlarge the canvas."
        )
    rng = np.random.default_rng(seed)
    images = np.zeros([num_images, canvas_size, canvas_size], np.uint8)
    counts = rng.integers(0, max_digits + 1, size=num_images)
    boxes = np.zeros([num_images, max_digits, 4], np.int32)
    out_labels = np.full([num_images, max_digits], -1, np.int64)
    digit_index = np.full([num_images, max_digits], -1, np.int64)
    for i, count in enumerate(counts):
        while True:
            chosen = rng.integers(0, len(digits), size=count)
            placed: list[np.ndarray] = []
            for j in chosen:
                h, w = heights[j], widths[j]
                for _ in range(MULTI_MNIST_MAX_TRIES):
                    top = rng.integers(0, canvas_size - h + 1)
                    left = rng.integers(0, canvas_size - w + 1)
                    box = np.array([top, left, top + h, left + w], np.int32)
                    if _disjoint(box, placed):
                        placed.append(box)
                        break
                else:
                    break  # This digit found no free spot: redraw the whole image.
            if len(placed) == count:
                break
        for k, (j, box) in enumerate(zip(chosen, placed, strict=True)):
            ct, cl, cb, cr = crop_boxes[j]
            top, left, bottom, right = box
            images[i, top:bottom, left:right] = resized[j, ct:cb, cl:cr]
            boxes[i, k] = box
            out_labels[i, k] = labels[j]
            digit_index[i, k] = j
    return MultiMnistSplit(images, counts.astype(np.int64), boxes, out_labels, digit_index)


def _multi_mnist_key(params: dict, fingerprints: dict[str, str]) -> str:
    blob = json.dumps({"params": params, "digits": fingerprints}, sort_keys=True)
    return hashlib.md5(blob.encode()).hexdigest()[:16]


def _read_multi_mnist(path: str, params: dict) -> MultiMnist:
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = json.loads(str(f["params"]))
            splits = {
                split: MultiMnistSplit(*(f[f"{split}_{field}"] for field in _MULTI_MNIST_FIELDS))
                for split in MULTI_MNIST_SPLITS
            }
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(
            f"Stored multi-MNIST {path} is unreadable ({type(e).__name__}: {e}); delete it to "
            "regenerate."
        ) from e
    if stored != params:
        raise DataError(
            f"Stored multi-MNIST {path} was made with {stored}, not {params}; delete it to "
            "regenerate."
        )
    for split in MULTI_MNIST_SPLITS:
        expected = params[f"num_{split}"]
        data = splits[split]
        size = params["canvas_size"]
        if data.images.shape != (expected, size, size) or len(data.counts) != expected:
            raise DataError(
                f"Stored multi-MNIST {path} has a {split} split of shape {data.images.shape}, "
                f"expected ({expected}, {size}, {size}); delete it to regenerate."
            )
    return MultiMnist(**splits)


def load_multi_mnist(
    data_dir: str | None = None,
    source: str = "auto",
    canvas_size: int = 50,
    max_digits: int = 2,
    digit_scale: float = 1.0,
    num_train: int = 60_000,
    num_test: int = 10_000,
    seed: int = 0,
    cache_dir: str | None = None,
    num_validation: int = 1_000,
    validation_digits: int = 5_000,
) -> MultiMnist:
    """The multi-MNIST data set of AIR, generated once and then read from disk.

    The first call generates the three splits with `generate_multi_mnist` and stores them
    atomically as `<cache_dir>/multi_mnist_<key>.npz`, the key a
    hash of every parameter, `MULTI_MNIST_VERSION` and fingerprints of the source digits; later
    calls (and runs) read the stored file. Sources of the digits (`digit_index` indexes them):

    - train, seed `[seed, 0]`: the first `60,000 - validation_digits` MNIST training digits;
    - validation, seed `[seed, 2]`: the last `validation_digits` MNIST training digits, which no
      training image uses (hyperparameters and early stopping look only at this split);
    - test, seed `[seed, 1]`: the 10,000 MNIST test digits (touched only for reported figures).

    Args:
      data_dir: root data directory of MNIST (see `load_mnist`).
      source: MNIST source (see `load_mnist`).
      canvas_size, max_digits, digit_scale: see `generate_multi_mnist` (defaults: Eslami et al.
        and KAIR: 50 px, 0-2 digits, full-size digits).
      num_train, num_test: numbers of images (KAIR: 60,000 and 10,000).
      num_validation: number of validation images.
      validation_digits: MNIST training digits held out for the validation images.
      seed: generation seed.
      cache_dir: where the npz lives; default `<data_dir>/multi_mnist`. If it is not writable
        the data are generated but not stored (with a warning).

    Returns:
      `MultiMnist(train, validation, test)`.

    Raises:
      ValueError: bad parameters.
      DataError: MNIST cannot be loaded, or a stored file is unreadable or inconsistent (it is
        left untouched).
    """
    if min(num_train, num_validation, num_test) < 1:
        raise ValueError(
            "num_train, num_validation and num_test must be >= 1; got "
            f"{num_train}, {num_validation}, {num_test}."
        )
    if not 1 <= validation_digits < 60_000:
        raise ValueError(f"validation_digits must be in [1, 60000), got {validation_digits}.")
    params = dict(
        version=MULTI_MNIST_VERSION,
        canvas_size=int(canvas_size),
        max_digits=int(max_digits),
        digit_scale=float(digit_scale),
        num_train=int(num_train),
        num_test=int(num_test),
        seed=int(seed),
        num_validation=int(num_validation),
        validation_digits=int(validation_digits),
    )
    mnist = load_mnist(data_dir, source, validation_size=validation_digits)
    sources = {"train": mnist.train, "validation": mnist.validation, "test": mnist.test}
    nums = {"train": num_train, "validation": num_validation, "test": num_test}
    seed_streams = {"train": 0, "test": 1, "validation": 2}  # train and test as in version 1
    fingerprints = {
        name: fingerprint(split.images) + fingerprint(split.labels)
        for name, split in sources.items()
    }
    cache_dir = cache_dir or os.path.join(data_dir or default_data_dir(), "multi_mnist")
    path = os.path.join(cache_dir, f"multi_mnist_{_multi_mnist_key(params, fingerprints)}.npz")
    if os.path.isfile(path):
        return _read_multi_mnist(path, params)
    logging.info("Generating multi-MNIST %s into %s.", params, path)
    splits = {
        name: generate_multi_mnist(
            sources[name].images,
            sources[name].labels,
            nums[name],
            seed=(int(seed), seed_streams[name]),
            canvas_size=canvas_size,
            max_digits=max_digits,
            digit_scale=digit_scale,
        )
        for name in MULTI_MNIST_SPLITS
    }
    arrays = {
        f"{split}_{field}": getattr(data, field)
        for split, data in splits.items()
        for field in _MULTI_MNIST_FIELDS
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, params=np.array(json.dumps(params, sort_keys=True)), **arrays)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        write_atomic(path, buffer.getvalue())
    except OSError as e:
        logging.warning("Could not store multi-MNIST in %s: %s", path, e)
    return MultiMnist(**splits)


def _multi_mnist_element(element: dict) -> dict:
    return {"image": element["image"], "count": element["label"]}


def multi_mnist_train_dataset(
    split: MultiMnistSplit, batch_size: int, seed: int, start_step: int = 0
) -> tf.data.Dataset:
    """Infinite, step-indexed batches `{"image": float32 [B, S, S, 1] in [0, 1], "count": int64
    [B]}` of a multi-MNIST split; step s's batch depends only on (seed, s) (see `train_dataset`).

    Raises:
      ValueError: bad batch size or negative `start_step`.
    """
    size = split.images.shape[1]
    return train_dataset(
        split.images, batch_size, seed, "intensity", start_step, labels=split.counts
    ).map(
        lambda e: {
            "image": tf.ensure_shape(e["image"], [batch_size, size, size, 1]),
            "count": e["label"],
        }
    )


def multi_mnist_eval_dataset(split: MultiMnistSplit, batch_size: int) -> tf.data.Dataset:
    """One in-order pass over a multi-MNIST split: `{"image": float32 [b, S, S, 1], "count": int64
    [b]}`, the last batch possibly partial.

    Raises:
      ValueError: `batch_size` < 1.
    """
    return eval_dataset(split.images, batch_size, "intensity", labels=split.counts).map(
        _multi_mnist_element
    )


def load_from_config(config: ml_collections.ConfigDict) -> MultiMnist:
    """The multi-MNIST of a config's `data` block (`load_multi_mnist` with its fields)."""
    d = config.data
    return load_multi_mnist(
        d.data_dir or None,
        d.source,
        canvas_size=d.canvas_size,
        max_digits=d.max_digits,
        digit_scale=d.digit_scale,
        num_train=d.num_train,
        num_test=d.num_test,
        seed=d.seed,
        num_validation=d.num_validation,
        validation_digits=d.validation_digits,
    )


def prefix(split: MultiMnistSplit, num: int) -> MultiMnistSplit:
    """The first `num` images of `split` (0: all of it)."""
    if not num:
        return split
    return MultiMnistSplit(*(a[:num] for a in split))

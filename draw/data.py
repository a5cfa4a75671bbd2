"""Binarized MNIST for DRAW: 50,000 training, 10,000 validation and 10,000 test images.

Gregor et al. (2015, sec. 4.2) use the binarized MNIST of Salakhutdinov & Murray (2008), one fixed
binarization split 50,000 / 10,000 / 10,000, as the Larochelle `.amat` files distribute it. Two
sources:

* `static` (default): a fixed-seed Bernoulli(x / 255) draw of real MNIST
  (`common.data.transforms.static_binarize`, stored on disk). The 60,000 training images are
  drawn once and split into the first 50,000 (training) and the last 10,000 (validation); the
  10,000 test images are drawn with the seed + 1. Same protocol, different draw from the paper's.
* `larochelle`: the three files `binarized_mnist_train.amat`, `binarized_mnist_valid.amat` and
  `binarized_mnist_test.amat` (one image per line, 784 values 0 or 1), placed by the user in
  `<data_dir>/binarized_mnist/`; this machine cannot download them.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from common.data import mnist as mnist_data
from common.data import transforms

SOURCES = ("static", "larochelle")
LAROCHELLE_FILES = {
    "train": "binarized_mnist_train.amat",
    "validation": "binarized_mnist_valid.amat",
    "test": "binarized_mnist_test.amat",
}
SIZES = {"train": 50_000, "validation": 10_000, "test": 10_000}


class BinarizedMnist(NamedTuple):
    """uint8 `[N, 28, 28]` images in {0, 1} per split, and where they came from."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    source: str


def larochelle_dir(data_dir: str | None) -> str:
    return os.path.join(data_dir or mnist_data.default_data_dir(), "binarized_mnist")


def read_amat(path: str, expected_rows: int | None = None) -> np.ndarray:
    """Reads one `.amat` file: uint8 `[N, 28, 28]` in {0, 1}.

    Raises:
      DataError: the file is missing, has rows of another length, values other than 0/1, or
        not `expected_rows` rows. Nothing is written.
    """
    if not os.path.isfile(path):
        raise mnist_data.DataError(f"Binarized MNIST file {path} does not exist.")
    with open(path, "rb") as f:
        text = f.read()
    try:
        values = np.array(text.split(), dtype=np.float32)
    except ValueError as e:
        raise mnist_data.DataError(f"{path} holds something other than numbers ({e}).") from e
    num_lines = len(text.strip().splitlines())
    if values.size != num_lines * 784:
        raise mnist_data.DataError(
            f"{path}: expected 784 values per line, got {values.size} values on {num_lines} lines."
        )
    if not np.all((values == 0) | (values == 1)):
        raise mnist_data.DataError(f"{path}: values must be 0 or 1.")
    if expected_rows is not None and num_lines != expected_rows:
        raise mnist_data.DataError(f"{path}: expected {expected_rows} images, got {num_lines}.")
    return values.astype(np.uint8).reshape(-1, 28, 28)


def load(
    source: str = "static",
    data_dir: str | None = None,
    seed: int = 0,
    mnist_source: str = "auto",
) -> BinarizedMnist:
    """The three binarized splits (module docstring).

    Args:
      source: 'static' or 'larochelle'.
      data_dir: root data directory; default `common.data.mnist.default_data_dir()`.
      seed: binarization seed of the 'static' source (the test split uses seed + 1).
      mnist_source: how raw MNIST is found ('auto', 'idx', 'npm' or 'tfds'; see
        `common.data.mnist.load_mnist`).

    Raises:
      ValueError: unknown `source`.
      DataError: the Larochelle files are missing (naming them and the folder) or corrupt, or
        MNIST cannot be read.
    """
    if source == "larochelle":
        folder = larochelle_dir(data_dir)
        missing = [
            n for n in LAROCHELLE_FILES.values() if not os.path.isfile(os.path.join(folder, n))
        ]
        if missing:
            raise mnist_data.DataError(
                f"data.source=larochelle needs {', '.join(LAROCHELLE_FILES.values())} in {folder}; "
                f"missing: {', '.join(missing)}. Place the files there, or use data.source=static."
            )
        splits = {
            k: read_amat(os.path.join(folder, n), SIZES[k]) for k, n in LAROCHELLE_FILES.items()
        }
        return BinarizedMnist(**splits, source="larochelle")
    if source != "static":
        raise ValueError(f"Unknown data.source {source!r}; expected one of {', '.join(SOURCES)}.")
    raw = mnist_data.load_mnist(data_dir, mnist_source, validation_size=SIZES["validation"])
    train_all = np.concatenate([raw.train.images, raw.validation.images])  # MNIST order
    binary = transforms.static_binarize(train_all, seed, data_dir)
    test = transforms.static_binarize(raw.test.images, seed + 1, data_dir)
    cut = SIZES["train"]
    return BinarizedMnist(binary[:cut], binary[cut:], test, source=f"static (seed {seed})")

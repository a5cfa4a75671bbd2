"""Tests for draw/data.py: the static binarization of real MNIST and the Larochelle files."""

import os
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf

from common.data import mnist as mnist_data
from draw import data


class StaticBinarizationTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.binary = data.load("static", seed=0)
        cls.raw = mnist_data.load_mnist(validation_size=10_000)

    def test_split_sizes_and_values(self):
        b = self.binary
        self.assertEqual(
            (b.train.shape, b.validation.shape, b.test.shape),
            ((50_000, 28, 28), (10_000, 28, 28), (10_000, 28, 28)),
        )
        for split in (b.train, b.validation, b.test):
            self.assertEqual(split.dtype, np.uint8)
            self.assertTrue(set(np.unique(split)) <= {0, 1})

    def test_validation_is_carved_from_training_digits_and_test_from_test_digits(self):
        # A pixel of intensity 0 is always drawn 0 and 255 always 1, so each binary image can only
        # come from its own raw digit.
        pairs = (
            (self.binary.train, self.raw.train.images),
            (self.binary.validation, self.raw.validation.images),
            (self.binary.test, self.raw.test.images),
        )
        for binary, raw in pairs:
            self.assertFalse(np.any(binary[raw == 0]))
            self.assertTrue(np.all(binary[raw == 255]))
        # ... and the mean of the draw is the mean intensity (Bernoulli(x / 255)).
        self.assertAllClose(self.binary.test.mean(), self.raw.test.images.mean() / 255, atol=2e-3)

    def test_the_draw_is_fixed_by_its_seed(self):
        again = data.load("static", seed=0)
        self.assertAllEqual(again.validation, self.binary.validation)
        other = data.load("static", seed=1)
        self.assertGreater(np.mean(other.validation != self.binary.validation), 0.01)


def _write_amat(path, images):
    with open(path, "w") as f:
        for row in images.reshape(len(images), -1):
            f.write(" ".join(str(int(v)) for v in row) + "\n")


class LarochelleTest(tf.test.TestCase):
    def test_missing_files_are_named(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaisesRegex(mnist_data.DataError, "binarized_mnist_valid.amat") as cm:
                data.load("larochelle", data_dir=d)
            self.assertIn(os.path.join(d, "binarized_mnist"), str(cm.exception))

    @mock.patch.dict(data.SIZES, {"train": 7, "validation": 3, "test": 4})  # small files
    def test_reads_the_three_files(self):
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory() as d:
            folder = data.larochelle_dir(d)
            os.makedirs(folder)
            want = {}
            for split, name in data.LAROCHELLE_FILES.items():
                want[split] = (rng.uniform(size=[data.SIZES[split], 28, 28]) < 0.2).astype(np.uint8)
                _write_amat(os.path.join(folder, name), want[split])
            got = data.load("larochelle", data_dir=d)
        self.assertEqual(got.source, "larochelle")
        for split in want:
            self.assertAllEqual(getattr(got, split), want[split])

    def test_corrupt_files_raise(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "x.amat")
            _write_amat(path, np.ones([3, 28, 28], np.uint8))
            with self.assertRaisesRegex(mnist_data.DataError, "expected 5 images"):
                data.read_amat(path, 5)
            with open(path, "a") as f:
                f.write("0 1 0\n")
            with self.assertRaisesRegex(mnist_data.DataError, "784 values per line"):
                data.read_amat(path)
            with open(path, "w") as f:
                f.write(" ".join(["0.5"] * 784) + "\n")
            with self.assertRaisesRegex(mnist_data.DataError, "0 or 1"):
                data.read_amat(path)
            with self.assertRaisesRegex(mnist_data.DataError, "does not exist"):
                data.read_amat(os.path.join(d, "missing.amat"))

    def test_unknown_source(self):
        with self.assertRaisesRegex(ValueError, "static, larochelle"):
            data.load("binarized")

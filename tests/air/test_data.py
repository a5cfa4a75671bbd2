"""Tests for air/data.py: multi-MNIST generation, storage and pipelines (Eslami et al. 2016,
sec. 3.1)."""

import functools
import os
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from scipy import stats

from air import data as multi_mnist
from common.data import mnist


@functools.cache
def _mnist() -> mnist.Mnist:
    return mnist.load_mnist(validation_size=0)


@functools.cache
def _split(num: int = 3000, seed: int = 0) -> multi_mnist.MultiMnistSplit:
    mnist = _mnist()
    return multi_mnist.generate_multi_mnist(mnist.train.images, mnist.train.labels, num, seed)


def _tight_box(image: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(image.any(1))[0], np.nonzero(image.any(0))[0]
    return rows[0], cols[0], rows[-1] + 1, cols[-1] + 1


class GenerateTest(tf.test.TestCase, parameterized.TestCase):
    def test_shapes_and_dtypes(self):
        split = _split()
        self.assertEqual(split.images.shape, (3000, 50, 50))
        self.assertEqual(split.images.dtype, np.uint8)
        self.assertEqual(split.counts.shape, (3000,))
        self.assertEqual(split.boxes.shape, (3000, 2, 4))
        self.assertEqual(split.labels.shape, (3000, 2))
        self.assertEqual(split.digit_index.shape, (3000, 2))

    def test_counts_are_uniform(self):
        observed = np.bincount(_split().counts, minlength=3)
        self.assertLen(observed, 3)
        _, p_value = stats.chisquare(observed)  # H0: uniform on {0, 1, 2}
        self.assertGreater(p_value, 1e-3, observed)

    def test_boxes_are_disjoint_inside_the_canvas_and_absent_rows_are_empty(self):
        split = _split()
        for count, boxes, labels in zip(split.counts, split.boxes, split.labels, strict=True):
            present = boxes[:count]
            self.assertTrue(np.all(present[:, :2] >= 0) and np.all(present[:, 2:] <= 50))
            self.assertTrue(np.all(present[:, 2:] > present[:, :2]))
            self.assertAllEqual(boxes[count:], np.zeros_like(boxes[count:]))
            self.assertTrue(np.all(labels[count:] == -1) and np.all(labels[:count] >= 0))
            if count == 2:
                (t0, l0, b0, r0), (t1, l1, b1, r1) = present
                self.assertTrue(b0 <= t1 or b1 <= t0 or r0 <= l1 or r1 <= l0, present)

    def test_boxes_contain_exactly_the_digit_pixels(self):
        mnist, split = _mnist(), _split()
        for i in range(300):
            image, count = split.images[i], split.counts[i]
            covered = np.zeros_like(image, bool)
            for k in range(count):
                top, left, bottom, right = split.boxes[i, k]
                covered[top:bottom, left:right] = True
                source = mnist.train.images[split.digit_index[i, k]]
                self.assertEqual(split.labels[i, k], mnist.train.labels[split.digit_index[i, k]])
                st, sl, sb, sr = _tight_box(source)
                # The box holds the source digit's tight crop, copied exactly, and is tight.
                digit = image[top:bottom, left:right]
                self.assertAllEqual(digit, source[st:sb, sl:sr])
                self.assertEqual(_tight_box(digit), (0, 0, bottom - top, right - left))
            self.assertFalse(np.any(image[~covered]), f"pixels outside the boxes in image {i}")
            if count == 0:
                self.assertFalse(np.any(image))

    def test_same_seed_same_data_other_seed_other_data(self):
        mnist = _mnist()
        make = lambda seed: multi_mnist.generate_multi_mnist(
            mnist.train.images[:500], mnist.train.labels[:500], 200, seed
        )
        a, b, c = make(3), make(3), make(4)
        for x, y in zip(a, b, strict=True):
            self.assertAllEqual(x, y)
        self.assertNotAllEqual(a.images, c.images)

    def test_digit_scale_shrinks_digits(self):
        mnist = _mnist()
        small = multi_mnist.generate_multi_mnist(
            mnist.train.images[:2000], mnist.train.labels[:2000], 500, 0, digit_scale=0.75
        )
        heights = (small.boxes[..., 2] - small.boxes[..., 0])[small.labels >= 0]
        self.assertLessEqual(heights.max(), 21)  # round(28 * 0.75) = 21
        self.assertGreater(heights.max(), 15)

    def test_larger_canvas_and_more_digits(self):
        mnist = _mnist()
        split = multi_mnist.generate_multi_mnist(
            mnist.train.images[:300], mnist.train.labels[:300], 100, 0, canvas_size=64, max_digits=4
        )
        self.assertEqual(split.images.shape, (100, 64, 64))
        self.assertEqual(split.boxes.shape, (100, 4, 4))
        self.assertLessEqual(split.counts.max(), 4)

    @parameterized.parameters(
        dict(num_images=-1),
        dict(canvas_size=15),  # MNIST digits are up to 20 px: they do not fit
        dict(digit_scale=0.0),
    )
    def test_bad_arguments(self, **kwargs):
        mnist = _mnist()
        args = dict(num_images=5, seed=0)
        args.update(kwargs)
        with self.assertRaises(ValueError):
            multi_mnist.generate_multi_mnist(
                mnist.train.images[:50], mnist.train.labels[:50], **args
            )


class LoadTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.cache = tempfile.mkdtemp()
        self.kwargs = dict(
            num_train=400, num_test=100, num_validation=50, seed=5, cache_dir=self.cache
        )

    def test_generated_once_then_read_from_disk(self):
        first = multi_mnist.load_multi_mnist(**self.kwargs)
        files = os.listdir(self.cache)
        self.assertLen(files, 1)
        self.assertRegex(files[0], r"^multi_mnist_[0-9a-f]{16}\.npz$")
        with mock.patch.object(multi_mnist, "generate_multi_mnist", side_effect=AssertionError):
            second = multi_mnist.load_multi_mnist(**self.kwargs)
        for a, b in zip(first, second, strict=True):
            for x, y in zip(a, b, strict=True):
                self.assertAllEqual(x, y)
        # Other parameters are another file.
        multi_mnist.load_multi_mnist(**{**self.kwargs, "seed": 6})
        self.assertLen(os.listdir(self.cache), 2)

    def test_validation_uses_held_out_training_digits_only(self):
        data = multi_mnist.load_multi_mnist(**self.kwargs, validation_digits=3000)
        held_out = mnist.load_mnist(validation_size=3000)
        self.assertEqual(data.validation.images.shape, (50, 50, 50))
        # Training images use only the first 57,000 training digits.
        self.assertLess(data.train.digit_index.max(), 57_000)
        # Validation digits are the last 3,000: labels and pixels match that tail.
        present = data.validation.digit_index >= 0
        self.assertLess(data.validation.digit_index.max(), 3000)
        self.assertAllEqual(
            data.validation.labels[present],
            held_out.validation.labels[data.validation.digit_index[present]],
        )
        for i in np.nonzero(data.validation.counts > 0)[0][:20]:
            top, left, bottom, right = data.validation.boxes[i, 0]
            digit = held_out.validation.images[data.validation.digit_index[i, 0]]
            st, sl, sb, sr = _tight_box(digit)
            self.assertAllEqual(
                data.validation.images[i, top:bottom, left:right], digit[st:sb, sl:sr]
            )
        # No validation image equals a test image.
        test_rows = {row.tobytes() for row in data.test.images}
        self.assertFalse(
            any(v.tobytes() in test_rows for v in data.validation.images[present.any(1)])
        )

    def test_train_uses_train_digits_and_test_uses_test_digits(self):
        data = multi_mnist.load_multi_mnist(**self.kwargs)
        mnist = _mnist()
        self.assertEqual(data.train.images.shape, (400, 50, 50))
        self.assertEqual(data.test.images.shape, (100, 50, 50))
        for split, source in ((data.train, mnist.train), (data.test, mnist.test)):
            present = split.digit_index >= 0
            self.assertLess(split.digit_index.max(), len(source.images))
            self.assertAllEqual(split.labels[present], source.labels[split.digit_index[present]])
        # The test split's digits are test digits: their pixels match the test images.
        i = int(np.argmax(data.test.counts > 0))
        top, left, bottom, right = data.test.boxes[i, 0]
        digit = mnist.test.images[data.test.digit_index[i, 0]]
        st, sl, sb, sr = _tight_box(digit)
        self.assertAllEqual(data.test.images[i, top:bottom, left:right], digit[st:sb, sl:sr])

    def test_corrupt_file_raises_and_is_kept(self):
        multi_mnist.load_multi_mnist(**self.kwargs)
        (name,) = os.listdir(self.cache)
        path = os.path.join(self.cache, name)
        with open(path, "wb") as f:
            f.write(b"not an npz")
        with self.assertRaisesRegex(mnist.DataError, "delete it"):
            multi_mnist.load_multi_mnist(**self.kwargs)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"not an npz")

    def test_pipelines(self):
        data = multi_mnist.load_multi_mnist(**self.kwargs)
        ds = multi_mnist.multi_mnist_train_dataset(data.train, 8, seed=1)
        batches = [b for _, b in zip(range(3), ds, strict=False)]
        self.assertEqual(batches[0]["image"].shape, (8, 50, 50, 1))
        self.assertEqual(batches[0]["image"].dtype, tf.float32)
        self.assertBetween(float(tf.reduce_max(batches[0]["image"])), 0.5, 1.0)
        # Step-indexed: resuming at step 2 yields the third batch.
        resumed = next(iter(multi_mnist.multi_mnist_train_dataset(data.train, 8, 1, start_step=2)))
        self.assertAllEqual(resumed["image"], batches[2]["image"])
        self.assertAllEqual(resumed["count"], batches[2]["count"])
        # The counts travel with their images.
        images = data.train.images.reshape(400, -1)
        for x, count in zip(batches[1]["image"].numpy(), batches[1]["count"].numpy(), strict=True):
            (row,) = np.nonzero(np.all(images == np.round(x[..., 0] * 255).reshape(1, -1), 1))[:1]
            self.assertIn(count, data.train.counts[row])
        evaluation = list(multi_mnist.multi_mnist_eval_dataset(data.test, 30))
        self.assertEqual([len(b["count"]) for b in evaluation], [30, 30, 30, 10])
        self.assertAllEqual(np.concatenate([b["count"] for b in evaluation]), data.test.counts)


if __name__ == "__main__":
    tf.test.main()

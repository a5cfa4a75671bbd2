"""scae/data.py: the reference code's shift distribution (exact enumeration), exact placement
against NumPy, fixed evaluation shifts, and the step-indexed pipelines on real MNIST."""

import collections
import functools

import numpy as np
import tensorflow as tf

from scae import data


@functools.cache
def _mnist():
    return data.load(validation_size=5_000)


class ShiftTest(tf.test.TestCase):
    def test_offset_distribution_of_the_reference_code(self):
        # Enumerate s in {-12..12}: t = ceil((12 - s) / 2) takes 0 once and 1..12 twice each.
        counts = collections.Counter(int(data.offsets_from_draws(s)) for s in range(-12, 13))
        self.assertEqual(counts, {0: 1, **{k: 2 for k in range(1, 13)}})
        offsets = data.draw_offsets([3, 4], 50_000).numpy()
        freq = np.bincount(offsets.ravel(), minlength=13) / offsets.size
        expected = np.array([1] + [2] * 12) / 25
        self.assertAllClose(freq, expected, atol=0.005)

    def test_placement_matches_numpy_and_keeps_the_whole_digit(self):
        digits = np.random.default_rng(0).random((6, 28, 28)).astype(np.float32)
        offsets = np.array([[0, 0], [12, 12], [3, 7], [12, 0], [0, 12], [6, 6]])
        out = data.place_on_canvas(tf.constant(digits), tf.constant(offsets)).numpy()
        for d, (ty, tx), o in zip(digits, offsets, out, strict=True):
            expected = np.zeros((40, 40), np.float32)
            expected[ty : ty + 28, tx : tx + 28] = d
            self.assertAllEqual(o, expected)

    def test_fixed_shift_is_repeatable_and_loses_no_pixel(self):
        images = _mnist().test.images[:200]
        a, b = data.fixed_shift(images), data.fixed_shift(images)
        self.assertAllEqual(a, b)
        self.assertEqual(a.shape, (200, 40, 40))
        self.assertAllEqual(a.reshape(200, -1).sum(1), images.reshape(200, -1).astype(int).sum(1))
        self.assertNotAllEqual(a, data.fixed_shift(images, seed=1))


class PipelineTest(tf.test.TestCase):
    def test_splits_carve_validation_from_training(self):
        m = _mnist()
        self.assertEqual((len(m.train.images), len(m.validation.images)), (55_000, 5_000))
        self.assertEqual(len(m.test.images), 10_000)

    def test_train_batches_are_step_indexed_and_shifted_afresh(self):
        train = _mnist().train
        ds = data.train_dataset(train, 8, seed=3)
        first = [b for _, b in zip(range(3), ds, strict=False)]
        self.assertEqual(first[0]["image"].shape, (8, 40, 40, 1))
        resumed = next(iter(data.train_dataset(train, 8, seed=3, start_step=2)))
        self.assertAllEqual(resumed["image"], first[2]["image"])
        # Every canvas holds its digit's whole mass (intensity / 255), wherever it landed.
        totals = first[0]["image"].numpy().reshape(8, -1).sum(1)
        self.assertTrue(np.all(totals > 10))

    def test_eval_batches_use_the_fixed_shift(self):
        test = _mnist().test
        batches = list(data.eval_dataset(data.Split(test.images[:50], test.labels[:50]), 20))
        self.assertEqual([len(b["label"]) for b in batches], [20, 20, 10])
        images = np.concatenate([b["image"].numpy()[..., 0] for b in batches])
        self.assertAllClose(images, data.fixed_shift(test.images[:50]) / 255.0)


class AffineTest(tf.test.TestCase):
    def _params(self, n, **overrides):
        base = dict(
            rotation=np.zeros(n),
            shear=np.zeros(n),
            scale_x=np.ones(n),
            scale_y=np.ones(n),
            shift_x=np.zeros(n),
            shift_y=np.zeros(n),
        )
        base.update(overrides)
        return data.AffineParams(**base)

    def test_identity_centres_the_digit(self):
        images = _mnist().test.images[:5]
        out = data.affine_transform(images, self._params(5))
        expected = np.zeros([5, 40, 40], np.float32)
        expected[:, 6:34, 6:34] = images / 255.0
        self.assertAllClose(out, expected, atol=1e-6)

    def test_quarter_turn_and_integer_shift_against_numpy(self):
        images = _mnist().test.images[:3]
        turned = data.affine_transform(images, self._params(3, rotation=np.full(3, np.pi / 2)))
        shifted = data.affine_transform(
            images, self._params(3, shift_x=np.full(3, 4.0), shift_y=np.full(3, -2.0))
        )
        for i in range(3):
            canvas = np.zeros([40, 40])
            canvas[6:34, 6:34] = images[i] / 255.0
            # In (row, column) coordinates [[0, -1], [1, 0]] sends the pixel right of the centre
            # to the one above it: a counterclockwise quarter turn on screen, numpy's rot90.
            self.assertAllClose(turned[i], np.rot90(canvas, k=1), atol=1e-5)
            self.assertAllClose(shifted[i], np.roll(np.roll(canvas, -2, 0), 4, 1), atol=1e-6)

    def test_random_transforms_stay_in_range_and_on_the_canvas(self):
        images = _mnist().test.images[:300]
        p = data.draw_affine_params(300)
        self.assertAllInRange(np.rad2deg(p.rotation), -20.0, 20.0)
        self.assertAllInRange(p.shear, -0.2, 0.2)
        self.assertAllInRange(p.scale_x, 0.8, 1.2)
        out = data.affine_transform(images, p)
        # Bilinear resampling keeps the ink up to the area change |det A| = s_x s_y: nothing
        # falls off the canvas.
        ratio = out.reshape(300, -1).sum(1) / (images.reshape(300, -1).sum(1) / 255.0)
        self.assertAllClose(ratio, p.scale_x * p.scale_y, rtol=0.06)
        batches = list(
            data.affine_eval_dataset(data.Split(images, _mnist().test.labels[:300]), 128)
        )
        self.assertEqual([len(b["label"]) for b in batches], [128, 128, 44])
        self.assertAllClose(np.concatenate([b["image"][..., 0] for b in batches]), out)


if __name__ == "__main__":
    tf.test.main()

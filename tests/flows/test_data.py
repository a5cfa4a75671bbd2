"""Tests for flows/data.py: static dequantization, the logit
transform and the conversion of logit-space log-densities to bits/pixel (Papamakarios et al.
2017, sec. 4.3)."""

import functools
import os
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats

from common.data import mnist, pipelines
from flows import data as flows_data

tfb = tfp.bijectors
tfd = tfp.distributions

ALPHA = flows_data.LOGIT_ALPHA
D = 784


@functools.cache
def _test_images() -> np.ndarray:
    """The real MNIST test split, uint8 `[10000, 28, 28]`."""
    return mnist.load_mnist(validation_size=0).test.images


def _tmpdir(test: tf.test.TestCase) -> str:
    tmp = tempfile.TemporaryDirectory(prefix="test_dequantization_")
    test.addCleanup(tmp.cleanup)
    return tmp.name


def _uniform_pixel_density(alpha: float, dtype) -> tfd.Distribution:
    """The logit-space density of x ~ U(0, 1)^D, built with TFP's own bijectors."""
    base = tfd.Independent(tfd.Uniform(tf.zeros([D], dtype), tf.ones([D], dtype)), 1)
    return tfd.TransformedDistribution(base, _to_logit(alpha, dtype))


def _to_logit(alpha: float, dtype) -> tfb.Bijector:
    """y = logit(alpha + (1 - 2 alpha) x) from TFP bijectors (Chain applies its last first)."""
    return tfb.Chain(
        [
            tfb.Invert(tfb.Sigmoid()),
            tfb.Shift(tf.constant(alpha, dtype)),
            tfb.Scale(tf.constant(1 - 2 * alpha, dtype)),
        ]
    )


class StaticDequantizeTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.images = _test_images()
        self.data_dir = _tmpdir(self)

    def test_pixels_stay_in_their_bin_and_the_noise_is_uniform(self):
        x = flows_data.static_dequantize(self.images, (42, 2), self.data_dir)
        self.assertEqual(x.dtype, np.float32)
        self.assertEqual(x.shape, self.images.shape)
        k = self.images.astype(np.float64)
        self.assertTrue(np.all(x >= k / 256) and np.all(x < (k + 1) / 256))
        u = (256.0 * x - k).ravel()  # [N * D], should be U(0, 1)
        n = len(u)
        self.assertAllClose(u.mean(), 0.5, atol=5 * np.sqrt(1 / 12 / n))
        self.assertAllClose(u.var(), 1 / 12, atol=5 * np.sqrt(1 / 180 / n))
        # Kolmogorov-Smirnov on a fixed subsample (the draw is deterministic, so is the p-value).
        self.assertGreater(stats.kstest(u[::97], "uniform").pvalue, 1e-3)
        # The noise does not depend on the pixel value.
        self.assertAllClose(u[k.ravel() == 0].mean(), u[k.ravel() == 255].mean(), atol=0.01)

    def test_drawn_once_stored_and_reused(self):
        x = flows_data.static_dequantize(self.images[:500], 42, self.data_dir)
        files = os.listdir(os.path.join(self.data_dir, "mnist"))
        self.assertLen(files, 1)
        self.assertStartsWith(files[0], "dequantized_")
        path = os.path.join(self.data_dir, "mnist", files[0])
        mtime = os.path.getmtime(path)
        again = flows_data.static_dequantize(self.images[:500], 42, self.data_dir)
        np.testing.assert_array_equal(x, again)
        self.assertEqual(os.path.getmtime(path), mtime)
        # Another seed (or split stream) gives independent noise.
        other = flows_data.static_dequantize(self.images[:500], (42, 1), self.data_dir)
        u, v = (256.0 * a - self.images[:500] for a in (x, other))
        self.assertLess(abs(np.corrcoef(u.ravel(), v.ravel())[0, 1]), 0.01)

    def test_a_stored_draw_that_contradicts_the_images_is_an_error_and_kept(self):
        x = flows_data.static_dequantize(self.images[:100], 7, self.data_dir)
        (name,) = os.listdir(os.path.join(self.data_dir, "mnist"))
        path = os.path.join(self.data_dir, "mnist", name)
        np.save(path, np.minimum(x + 1 / 256, 0.999).astype(np.float32))  # the next bin
        with open(path, "rb") as f:
            before = f.read()
        with self.assertRaisesRegex(mnist.DataError, "does not match"):
            flows_data.static_dequantize(self.images[:100], 7, self.data_dir)
        with open(path, "rb") as f:
            self.assertEqual(before, f.read())

    def test_rejects_non_uint8_images(self):
        with self.assertRaisesRegex(ValueError, "uint8"):
            flows_data.static_dequantize(self.images[:2].astype(np.float32), 0, self.data_dir)


class LogitTransformTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.data_dir = _tmpdir(self)
        self.images = _test_images()[:1000]
        self.x = flows_data.static_dequantize(self.images, 42, self.data_dir)

    def test_round_trip_on_real_mnist(self):
        y = flows_data.logit_transform(self.x)
        self.assertEqual(y.dtype, tf.float32)
        x = flows_data.inverse_logit_transform(y).numpy()
        self.assertAllClose(x, self.x, rtol=0, atol=2e-7)
        # float64: exact to round-off; the range is [logit(alpha), logit(1 - alpha)].
        y64 = flows_data.logit_transform(self.x.astype(np.float64))
        self.assertAllClose(flows_data.inverse_logit_transform(y64), self.x, rtol=0, atol=1e-14)
        bound = np.log((1 - ALPHA) / ALPHA)
        self.assertAllInRange(y64, -bound, bound)

    def test_logit_pipeline_transform_matches_the_function(self):
        y = flows_data.logit_transform(self.x)
        batches = list(pipelines.eval_dataset(self.x, 300, flows_data.LOGIT))
        self.assertEqual(batches[0]["image"].shape, [300, 28, 28, 1])
        stacked = tf.concat([b["image"][..., 0] for b in batches], 0)
        self.assertAllEqual(stacked, y)

    def test_logit_of_integer_pixels_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "dequantized"):
            flows_data.logit_transform(self.images)


class BitsPerPixelTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.data_dir = _tmpdir(self)
        x = flows_data.static_dequantize(_test_images()[:200], 3, self.data_dir)
        self.x = x.reshape(-1, D).astype(np.float64)
        self.y = flows_data.logit_transform(self.x)  # [200, D] float64

    def test_a_uniform_pixel_model_scores_exactly_8_bits_per_pixel(self):
        # The uniform density on [0, 256)^D is 256^-D: 8 bits/pixel, 0 nats on [0, 1]^D.
        log_p_y = _uniform_pixel_density(ALPHA, tf.float64).log_prob(self.y)
        self.assertAllClose(flows_data.pixel_log_prob(log_p_y, self.y), tf.zeros([200]), atol=1e-8)
        self.assertAllClose(
            flows_data.bits_per_pixel(log_p_y, self.y), 8 * np.ones(200), atol=1e-12
        )
        # In float32 (|log p(y)| ~ 4600 nats): to 1e-5 bits/pixel.
        y32 = tf.cast(self.y, tf.float32)
        log_p_y32 = _uniform_pixel_density(ALPHA, tf.float32).log_prob(y32)
        self.assertAllClose(flows_data.bits_per_pixel(log_p_y32, y32), 8 * np.ones(200), atol=1e-5)
        # Images as [B, 28, 28, 1]: every axis after the first is the event.
        self.assertAllClose(
            flows_data.bits_per_pixel(log_p_y, tf.reshape(self.y, [-1, 28, 28, 1])),
            8 * np.ones(200),
            atol=1e-12,
        )

    def test_pixel_log_prob_of_a_non_uniform_model(self):
        # x ~ Beta(2, 5)^D: the logit-space density from TFP, converted back, gives the Beta
        # log-density of the pixels.
        beta = tfd.Independent(tfd.Beta(2.0 * tf.ones([D], tf.float64), 5.0), 1)
        log_p_y = tfd.TransformedDistribution(beta, _to_logit(ALPHA, tf.float64)).log_prob(self.y)
        self.assertAllClose(
            flows_data.pixel_log_prob(log_p_y, self.y), beta.log_prob(self.x), rtol=1e-10
        )
        expected_bits = -beta.log_prob(self.x) / (D * np.log(2)) + 8
        self.assertAllClose(flows_data.bits_per_pixel(log_p_y, self.y), expected_bits, rtol=1e-10)

    def test_extreme_logits_give_finite_values(self):
        y = tf.constant([[-60.0, 60.0, 0.0]], tf.float32)
        self.assertTrue(np.isfinite(flows_data.logit_log_det_jacobian(y).numpy()).all())
        self.assertAllClose(
            flows_data.logit_log_det_jacobian(y),
            [3 * np.log1p(-2 * ALPHA) + 60 + 60 + 2 * np.log(2)],
            rtol=1e-6,
        )

    def test_the_papers_nats_and_bits_per_pixel_agree_on_the_real_test_set(self):
        # MAF paper (Table 2 and appendix): MAF(5) -1300.5 nats <-> 1.89 bits/pixel,
        # MADE MoG -1038.5 <-> 1.41, Gaussian -1366.9 <-> 2.01. The conversion depends on the
        # data only through the Jacobian term, so the mean bits/pixel of a constant log p(y) over
        # the test split must match each pair up to the rounding of the bits (0.005) plus the
        # noise of the dequantization draw (~0.003 at 2 standard errors).
        x = flows_data.static_dequantize(_test_images(), (42, 2), self.data_dir)
        y = flows_data.logit_transform(x.reshape(-1, D).astype(np.float64))
        for nats, bits in ((-1300.5, 1.89), (-1038.5, 1.41), (-1366.9, 2.01)):
            mean_bits = float(tf.reduce_mean(flows_data.bits_per_pixel(nats, y)))
            self.assertAllClose(mean_bits, bits, atol=0.008, msg=f"{nats} nats")


if __name__ == "__main__":
    tf.test.main()

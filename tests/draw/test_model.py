"""Tests for draw/model.py against independent maths: NumPy Bernoulli and Gaussian densities,
Monte-Carlo estimates of the KL and of the ELBO, and a model small enough for its likelihood
to be computed by quadrature and its images enumerated."""

import itertools

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from draw.model import DRAW


def _np_normal_log_pdf(z, mu, sigma):
    return -0.5 * np.log(2 * np.pi) - np.log(sigma) - 0.5 * ((z - mu) / sigma) ** 2


def _np_bernoulli_log_pmf(x, logits):
    # log sigmoid(l) = -log(1 + exp(-l)), computed stably with logaddexp.
    return -(x * np.logaddexp(0, -logits) + (1 - x) * np.logaddexp(0, logits))


def _perturb(model, scale, seed):
    """Random weights large enough that posteriors and canvases are far from trivial."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(v + rng.normal(size=v.shape).astype(np.float32) * scale)


def _images(batch, shape, seed):
    return tf.cast(tf.random.stateless_uniform([batch, *shape], [seed, 0]) < 0.3, tf.float32)


class DRAWTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(True, False)
    def test_losses_match_numpy_densities(self, use_attention):
        model = DRAW((12, 10), num_steps=4, lstm_size=16, latent_size=3, attention=use_attention,
                     read_size=3, write_size=4)  # fmt: skip
        x = _images(5, (12, 10), 1)
        model(x, tf.constant([0, 0]))
        _perturb(model, 0.2, 0)
        out = model(x, tf.constant([3, 4]))
        xs, logits = x.numpy(), out.canvas_logits[-1].numpy()
        self.assertAllClose(
            out.reconstruction_loss, -_np_bernoulli_log_pmf(xs, logits).sum((1, 2)), rtol=1e-5
        )
        mu, sigma, z = out.mu.numpy(), out.sigma.numpy(), out.z.numpy()
        kl = 0.5 * (mu**2 + sigma**2 - 2 * np.log(sigma) - 1)  # per unit, per step
        self.assertAllClose(out.latent_loss, kl.sum((0, 2)), rtol=1e-5)
        log_ratio = _np_normal_log_pdf(z, 0, 1) - _np_normal_log_pdf(z, mu, sigma)
        self.assertAllClose(
            out.log_weight, -out.reconstruction_loss.numpy() + log_ratio.sum((0, 2)), rtol=1e-4
        )

    def test_kl_and_elbo_agree_with_monte_carlo(self):
        model = DRAW((8, 8), num_steps=3, lstm_size=12, latent_size=2, read_size=2, write_size=3)
        x = tf.repeat(_images(1, (8, 8), 2), 4000, axis=0)  # one image, 4000 independent draws
        model(x[:1], tf.constant([0, 0]))
        _perturb(model, 0.3, 1)
        out = model(x, tf.constant([5, 6]))
        mu, sigma, z = out.mu.numpy(), out.sigma.numpy(), out.z.numpy()
        # KL_t = E_{z_t ~ q_t}[log q_t(z_t) - log p(z_t)] given the history; z_t ~ q_t here.
        mc = (_np_normal_log_pdf(z, mu, sigma) - _np_normal_log_pdf(z, 0, 1)).sum((0, 2))
        closed = out.latent_loss.numpy()
        stderr = mc.std() / np.sqrt(len(mc))
        self.assertLess(abs(mc.mean() - closed.mean()), 4 * stderr + 1e-3)
        # ELBO = E_q[log w], so -mean(log w) estimates L^x + L^z.
        neg_elbo = out.reconstruction_loss.numpy() + closed
        diff = -out.log_weight.numpy() - neg_elbo
        self.assertLess(abs(diff.mean()), 4 * diff.std() / np.sqrt(len(diff)) + 1e-3)

    @parameterized.parameters(True, False)
    def test_canvas_is_the_bias_plus_the_sum_of_writes(self, use_attention):
        model = DRAW((9, 11), num_steps=5, lstm_size=8, latent_size=2, attention=use_attention)
        out = model(_images(3, (9, 11), 3), tf.constant([1, 1]))
        writes = out.writes.numpy()
        for t in range(5):
            self.assertAllClose(
                out.canvas_logits[t], model.canvas_bias.numpy() + writes[: t + 1].sum(0), atol=1e-5
            )

    def test_noise_is_fresh_at_every_step(self):
        model = DRAW((8, 8), num_steps=4, lstm_size=8, latent_size=5)
        out = model(_images(2, (8, 8), 4), tf.constant([2, 2]))
        eps = ((out.z - out.mu) / out.sigma).numpy()  # [T, B, Z]
        for s, t in itertools.combinations(range(4), 2):
            self.assertGreater(np.abs(eps[s] - eps[t]).max(), 0.1)

    def test_generate_decodes_given_latents_and_draws_from_the_prior(self):
        model = DRAW((8, 8), num_steps=3, lstm_size=8, latent_size=2, write_size=3)
        gen = model.generate(4, tf.constant([0, 1]))
        self.assertEqual(gen.canvas_logits.shape, (3, 4, 8, 8))
        self.assertEqual(gen.write_windows.center_x.shape, (3, 4))
        z = tf.random.stateless_normal([3, 4, 2], [0, 1])
        self.assertAllClose(model.generate(4, z=z).canvas_logits, gen.canvas_logits)
        with self.assertRaisesRegex(ValueError, "exactly one"):
            model.generate(4)
        with self.assertRaisesRegex(ValueError, r"\(T, N, Z\)"):
            model.generate(4, z=tf.zeros([3, 4, 3]))

    def test_read_window_starts_at_its_bias(self):
        # Learned initial decoder state h_0 = 0: the first read window is the bias itself, so the
        # first step's stride and centre follow DRAW eqs. 22-23 from it.
        x = tf.cast(tf.random.stateless_uniform([3, 28, 28], [5, 6]) < 0.5, tf.float32)
        for bias, stride in (((0.0,) * 5, 27.0), ((0.0, 0.0, 0.0, -1.1, 0.0), 27 * np.exp(-1.1))):
            model = DRAW(num_steps=2, lstm_size=8, latent_size=2, read_window_bias=bias)
            window = model(x, tf.constant([1, 2])).windows.read
            self.assertAllClose(window.delta[0], [stride] * 3, rtol=1e-5)
            self.assertAllClose(window.center_x[0], [14.5] * 3)
        with self.assertRaisesRegex(ValueError, "read_window_bias"):
            DRAW(read_window_bias=(0.0, 0.0))

    @parameterized.parameters(True, False)
    def test_zero_write_init_starts_the_canvas_at_c0(self, use_attention):
        x = _images(3, (9, 11), 6)
        for zero, want_zero in ((True, True), (False, False)):
            model = DRAW((9, 11), num_steps=4, lstm_size=8, latent_size=2,
                         attention=use_attention, zero_write_init=zero)  # fmt: skip
            out = model(x, tf.constant([3, 3]))
            size = np.abs(out.writes.numpy()).max()
            self.assertEqual(size == 0.0, want_zero, size)
            if zero:  # the canvas is c_0 at every step, yet the patch weights get a gradient
                self.assertAllEqual(out.canvas_logits[-1], np.broadcast_to(
                    model.canvas_bias.numpy(), (3, 9, 11)))  # fmt: skip
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(model(x, tf.constant([3, 3])).loss)
                grad = tape.gradient(loss, model.patch_head.w)
                self.assertGreater(float(tf.reduce_max(tf.abs(grad))), 0.0)

    def test_bad_sizes_and_images_raise(self):
        with self.assertRaisesRegex(ValueError, "num_steps"):
            DRAW(num_steps=0)
        with self.assertRaisesRegex(ValueError, "expects"):
            DRAW((8, 8), num_steps=1, lstm_size=4, latent_size=1)(tf.zeros([2, 9, 8]), [0, 0])

    def test_xla_matches_eager(self):
        # XLA draws other normals from the same stateless seed, so compare what the noise does
        # not touch (step 1's posterior) and decoding of given latents.
        model = DRAW((10, 10), num_steps=3, lstm_size=8, latent_size=2)
        x, seed = _images(4, (10, 10), 5), tf.constant([7, 7])
        want = model(x, seed)
        got = tf.function(lambda x, s: model(x, s), jit_compile=True)(x, seed)
        self.assertAllClose(got.mu[0], want.mu[0], atol=1e-5)
        self.assertAllClose(got.sigma[0], want.sigma[0], atol=1e-5)
        z = tf.random.stateless_normal([3, 4, 2], [1, 2])
        decode = lambda z: model.generate(4, z=z).canvas_logits
        self.assertAllClose(tf.function(decode, jit_compile=True)(z), decode(z), atol=1e-4)


class ImportanceSamplingTest(tf.test.TestCase):
    """T = 1, one latent unit, 2x2 images: log p(x) = log integral N(z; 0, 1) p(x | z) dz by
    quadrature, for all 16 images."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = DRAW((2, 2), num_steps=1, lstm_size=6, latent_size=1, attention=False)
        cls.model(tf.zeros([1, 2, 2]), tf.constant([0, 0]))
        _perturb(cls.model, 0.8, 2)
        cls.images = np.array(list(itertools.product([0, 1], repeat=4)), np.float32)
        cls.images = cls.images.reshape(16, 2, 2)
        grid = np.linspace(-9, 9, 6001, dtype=np.float32)
        logits = cls.model.generate(len(grid), z=grid[None, :, None]).canvas_logits[0].numpy()
        log_px_z = _np_bernoulli_log_pmf(cls.images[:, None], logits[None]).sum((2, 3))
        log_prior = _np_normal_log_pdf(grid.astype(np.float64), 0, 1)
        dz = grid[1] - grid[0]
        joint = log_px_z + log_prior[None]  # [16, G]
        top = joint.max(1, keepdims=True)
        cls.log_px = (top[:, 0] + np.log(np.exp(joint - top).sum(1) * dz)).astype(np.float64)

    def test_quadrature_is_a_distribution(self):
        self.assertAllClose(np.exp(self.log_px).sum(), 1.0, atol=1e-4)

    def test_bound_tightens_with_k_towards_log_px(self):
        x = tf.constant(self.images)
        repeats = 200
        means = {}
        for k in (1, 10, 500):
            log_w = self.model.log_weights(
                tf.repeat(x, repeats, axis=0), k, tf.constant([k, 9])
            ).numpy()  # [k, 16 * repeats]
            top = log_w.max(0)
            bound = top + np.log(np.exp(log_w - top).mean(0))
            means[k] = bound.reshape(16, repeats).mean(1)
        gap = {k: self.log_px - v for k, v in means.items()}
        # In expectation: ELBO <= IWAE_10 <= IWAE_500 <= log p(x), the gap shrinking.
        self.assertTrue(np.all(gap[1] > gap[10]), gap)
        self.assertTrue(np.all(gap[10] > gap[500] - 1e-3), gap)
        self.assertTrue(np.all(gap[500] > -0.01), gap[500])
        self.assertLess(gap[500].max(), 0.05 * gap[1].max() + 0.01, gap)

"""Tests for vae.estimators against NumPy/SciPy and a model with a known log p(x)."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from scipy import special, stats

from vae import estimators


def _np_iwae(log_w):
    return special.logsumexp(log_w, axis=0) - np.log(log_w.shape[0])


def _np_miwae(log_w, m):
    # Manual loop over groups: rows m*K .. (m+1)*K - 1 belong to group m.
    k = log_w.shape[0] // m
    return np.mean([_np_iwae(log_w[g * k : (g + 1) * k]) for g in range(m)], axis=0)


def _gaussian_logpdf(z, cov):
    """log N(z; 0, cov) over the last axis (scipy's logpdf squeezes size-1 axes)."""
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol, z.reshape(-1, z.shape[-1]).T)  # [D, N]
    maha = np.sum(white**2, 0).reshape(z.shape[:-1])
    log_det = 2 * np.sum(np.log(np.diag(chol)))
    return -0.5 * (maha + log_det + cov.shape[0] * np.log(2 * np.pi))


class EstimatorsTest(tf.test.TestCase, parameterized.TestCase):
    def _log_w(self, k, b, offset=0.0, scale=3.0, seed=0):
        rng = np.random.default_rng(seed)
        return offset + scale * rng.standard_normal((k, b))

    @parameterized.product(offset=[0.0, -1e4, 1e3], dtype=[np.float32, np.float64])
    def test_against_numpy(self, offset, dtype):
        log_w = self._log_w(12, 5, offset)
        tf_log_w = tf.constant(log_w, dtype)
        # Float32 spacing near 1e4 is ~1e-3; TF float64 exp on CPU is good to ~1e-10.
        tol = dict(rtol=1e-6, atol=4e-3) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-7)
        expected = {
            "elbo": log_w.mean(0),
            "iwae": _np_iwae(log_w),
            "miwae": _np_miwae(log_w, 3),
            "ciwae": 0.3 * log_w.mean(0) + 0.7 * _np_iwae(log_w),
        }
        got = {
            "elbo": estimators.elbo(tf_log_w),
            "iwae": estimators.iwae_bound(tf_log_w),
            "miwae": estimators.miwae_bound(tf_log_w, num_groups=3),
            "ciwae": estimators.ciwae_bound(tf_log_w, beta=0.3),
        }
        for name, value in got.items():
            self.assertEqual(value.shape, (5,), name)
            self.assertEqual(value.dtype, dtype, name)
            self.assertTrue(np.all(np.isfinite(value)), name)
            self.assertAllClose(value, expected[name], **tol, msg=name)

    def test_iwae_stable_where_naive_underflows(self):
        log_w = self._log_w(50, 4, offset=-1e4, scale=1.0).astype(np.float32)
        with np.errstate(divide="ignore"):
            naive = np.log(np.mean(np.exp(log_w), axis=0))
        self.assertTrue(np.all(np.isneginf(naive)))  # The test is meaningful.
        self.assertAllClose(estimators.iwae_bound(log_w), _np_iwae(log_w.astype(np.float64)))

    @parameterized.parameters(1, 2, 7)
    def test_miwae_one_group_is_iwae(self, k):
        log_w = tf.constant(self._log_w(k, 3))
        self.assertAllClose(estimators.miwae_bound(log_w, 1), estimators.iwae_bound(log_w))

    @parameterized.parameters(1, 4, 9)
    def test_miwae_groups_of_one_is_elbo(self, m):
        log_w = tf.constant(self._log_w(m, 3))
        self.assertAllClose(estimators.miwae_bound(log_w, m), estimators.elbo(log_w))

    def test_ciwae_endpoints(self):
        log_w = tf.constant(self._log_w(6, 3))
        self.assertAllClose(estimators.ciwae_bound(log_w, 1.0), estimators.elbo(log_w))
        self.assertAllClose(estimators.ciwae_bound(log_w, 0.0), estimators.iwae_bound(log_w))
        # A tensor beta (e.g. annealed) works too.
        self.assertAllClose(
            estimators.ciwae_bound(log_w, tf.constant(0.0, tf.float64)),
            estimators.iwae_bound(log_w),
        )

    @parameterized.parameters((2, 3), (3, 2), (4, 4))
    def test_miwae_group_major_layout(self, m, k):
        # Groups on very different scales: one group dominates the pooled
        # logsumexp, so any axis mix-up (e.g. normalizing over M) is visible.
        rng = np.random.default_rng(1)
        log_w = np.concatenate(
            [rng.standard_normal((k, 2)) + 10.0 * g for g in range(m)], axis=0
        )  # [M*K, B], group g in rows g*K .. g*K + K - 1
        expected = np.zeros(2)
        for g in range(m):
            for b in range(2):
                w = log_w[g * k : (g + 1) * k, b]
                expected[b] += (np.log(np.sum(np.exp(w))) - np.log(k)) / m
        self.assertAllClose(estimators.miwae_bound(tf.constant(log_w), m), expected)
        # The transposed ("sample-major") layout gives a different number.
        wrong = _np_miwae(log_w.reshape(k, m, 2).transpose(1, 0, 2).reshape(m * k, 2), m)
        self.assertNotAllClose(wrong, expected)

    def test_miwae_rejects_indivisible(self):
        with self.assertRaisesRegex(ValueError, "does not divide"):
            estimators.miwae_bound(tf.zeros([10, 2]), num_groups=3)
        with self.assertRaisesRegex(ValueError, "positive"):
            estimators.miwae_bound(tf.zeros([10, 2]), num_groups=0)

    def test_ciwae_rejects_beta_out_of_range(self):
        with self.assertRaisesRegex(ValueError, "beta"):
            estimators.ciwae_bound(tf.zeros([3, 2]), beta=1.5)

    def test_piwae_pair(self):
        log_w = self._log_w(12, 4)
        out = estimators.piwae_objectives(tf.constant(log_w), num_groups=3)
        self.assertAllClose(out.generative, _np_iwae(log_w))
        self.assertAllClose(out.inference, _np_miwae(log_w, 3))

    def test_dispatchers(self):
        log_w = tf.constant(self._log_w(8, 3))
        self.assertAllClose(estimators.bound("elbo", log_w), estimators.elbo(log_w))
        self.assertAllClose(estimators.bound("iwae", log_w), estimators.iwae_bound(log_w))
        self.assertAllClose(
            estimators.bound("miwae", log_w, num_groups=2), estimators.miwae_bound(log_w, 2)
        )
        self.assertAllClose(
            estimators.bound("ciwae", log_w, beta=0.5), estimators.ciwae_bound(log_w, 0.5)
        )
        for name, kwargs in [("elbo", {}), ("iwae", {}), ("miwae", dict(num_groups=4))]:
            gen, inf = estimators.training_objectives(name, log_w, **kwargs)
            self.assertAllEqual(gen, inf)
            self.assertAllClose(gen, estimators.bound(name, log_w, **kwargs))
        gen, inf = estimators.training_objectives("ciwae", log_w, beta=0.2)
        self.assertAllClose(gen, estimators.ciwae_bound(log_w, 0.2))
        self.assertAllEqual(gen, inf)
        gen, inf = estimators.training_objectives("piwae", log_w, num_groups=2)
        self.assertAllClose(gen, estimators.iwae_bound(log_w))
        self.assertAllClose(inf, estimators.miwae_bound(log_w, 2))

    def test_dispatchers_reject_bad_arguments(self):
        log_w = tf.zeros([4, 2])
        with self.assertRaisesRegex(ValueError, "Unknown bound"):
            estimators.bound("vae", log_w)
        with self.assertRaisesRegex(ValueError, "takes parameters"):
            estimators.bound("iwae", log_w, num_groups=2)
        with self.assertRaisesRegex(ValueError, "takes parameters"):
            estimators.bound("ciwae", log_w)
        with self.assertRaisesRegex(ValueError, "Unknown estimator"):
            estimators.training_objectives("dreg", log_w)
        with self.assertRaisesRegex(ValueError, "num_groups"):
            estimators.training_objectives("iwae", log_w, num_groups=2)
        with self.assertRaisesRegex(ValueError, "beta"):
            estimators.training_objectives("iwae", log_w, beta=0.5)
        with self.assertRaisesRegex(ValueError, "beta"):
            estimators.training_objectives("ciwae", log_w)

    def test_tf_function_and_gradient(self):
        log_w = tf.Variable(self._log_w(6, 2))

        @tf.function
        def objectives(lw):
            return estimators.training_objectives("piwae", lw, num_groups=2)

        eager = estimators.training_objectives("piwae", log_w, num_groups=2)
        graph = objectives(log_w)
        self.assertAllClose(eager, graph)
        # IWAE gradient w.r.t. log w_k is the normalized weight w~_k (Burda sec. 3).
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(estimators.iwae_bound(log_w))
        grad = tape.gradient(total, log_w)
        self.assertAllClose(grad, special.softmax(log_w.numpy(), axis=0))


class LinearGaussianTest(tf.test.TestCase):
    """IWAE_K on a model with a closed-form marginal.

    z ~ N(0, I_dz), x | z ~ N(W z + b, s^2 I_dx), so x ~ N(b, W W^T + s^2 I)
    and p(z | x) = N(S W^T (x - b) / s^2, S) with S = (I + W^T W / s^2)^-1.
    """

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(42)
        self.dz, self.dx, self.s = 2, 3, 0.7
        self.w = rng.standard_normal((self.dx, self.dz))
        self.b = rng.standard_normal(self.dx)
        self.x = rng.standard_normal((4, self.dx))  # B = 4 observations.
        self.log_px = stats.multivariate_normal(
            self.b, self.w @ self.w.T + self.s**2 * np.eye(self.dx)
        ).logpdf(self.x)
        self.post_cov = np.linalg.inv(np.eye(self.dz) + self.w.T @ self.w / self.s**2)
        self.post_mean = (self.x - self.b) @ self.w @ self.post_cov / self.s**2  # [B, dz]

    def _log_w(self, rng, shape, loc, cov):
        """log p(x, z) - log q(z) for z ~ N(loc, cov), `shape` = (..., K)."""
        chol = np.linalg.cholesky(cov)
        z = loc + rng.standard_normal(shape + loc.shape) @ chol.T  # [..., K, B, dz]
        log_q = _gaussian_logpdf(z - loc, cov)
        log_prior = _gaussian_logpdf(z, np.eye(self.dz))
        resid = self.x - z @ self.w.T - self.b
        log_lik = -0.5 * np.sum(resid**2, -1) / self.s**2 - self.dx * np.log(
            np.sqrt(2 * np.pi) * self.s
        )
        return log_lik + log_prior - log_q  # [..., K, B]

    def test_exact_posterior_gives_zero_variance(self):
        rng = np.random.default_rng(0)
        log_w = self._log_w(rng, (7,), self.post_mean, self.post_cov)
        self.assertAllClose(log_w, np.broadcast_to(self.log_px, log_w.shape), atol=1e-10)
        for value in [
            estimators.elbo(log_w),
            estimators.iwae_bound(log_w),
            estimators.miwae_bound(log_w, 7),
        ]:
            self.assertAllClose(value, self.log_px, atol=1e-10)

    def test_iwae_monotone_in_k_and_converges_to_log_px(self):
        rng = np.random.default_rng(1)
        # An imperfect but wider proposal (bounded weights): shifted mean,
        # inflated isotropic covariance.
        loc = self.post_mean + 0.5
        cov = 2.0 * np.max(np.linalg.eigvalsh(self.post_cov)) * np.eye(self.dz)
        repeats = 1000
        means, ses = [], []
        for k in (1, 2, 5, 20, 100, 1000):
            log_w = self._log_w(rng, (repeats, k), loc, cov)
            self.assertEqual(log_w.shape, (repeats, k, len(self.x)))  # [R, K, B]
            # [R, K, B] -> [K, R*B]: repeats are extra batch columns.
            stacked = np.transpose(log_w, (1, 0, 2)).reshape(k, -1)
            bounds = estimators.iwae_bound(stacked).numpy().reshape(repeats, -1)  # [R, B]
            self.assertAllClose(bounds[0], _np_iwae(log_w[0]))
            means.append(bounds.mean(0))  # [B]
            ses.append(bounds.std(0, ddof=1) / np.sqrt(repeats))
        means, ses = np.array(means), np.array(ses)  # [num_K, B]
        # Below log p(x) up to Monte-Carlo error.
        self.assertTrue(np.all(means <= self.log_px + 4 * ses), (means, self.log_px))
        # Monotone in K up to Monte-Carlo error (independent estimates).
        diffs = np.diff(means, axis=0)
        diff_ses = np.sqrt(ses[1:] ** 2 + ses[:-1] ** 2)
        self.assertTrue(np.all(diffs > -4 * diff_ses), diffs)
        # The test has power: the ELBO is far below log p(x) and IWAE_1000 is close.
        self.assertTrue(np.all(self.log_px - means[0] > 10 * ses[0] + 0.1))
        self.assertAllClose(means[-1], self.log_px, atol=0.02)
        self.assertTrue(np.all(means[-1] - means[0] > 0.1))


if __name__ == "__main__":
    tf.test.main()

"""Tests for air/estimators.py on toy discrete models with exact gradients.

The toy latent is AIR's own number of steps, `n ~ NumStepsDistribution(logits)`
with N = 2 (three outcomes), so exact expectations are sums over n (or over all
3^K particle configurations for VIMCO). Every estimator is drawn M times with
its own copy of the parameters, which gives M independent per-replica gradients
in one backward pass; unbiasedness is checked as |mean - exact| < 5 standard
errors, and variance reduction by comparing per-replica variances.
"""

import itertools

import numpy as np
import tensorflow as tf
import tf_keras
from absl.testing import parameterized
from scipy import special

from air import NumStepsDistribution, estimators, modules

THETA = np.array([0.3, -0.4], np.float64)  # step logits, N = 2
COSTS = np.array([3.0, -1.0, 5.0]) + 20.0  # cost of n = 0, 1, 2; the offset makes b matter
M = 20_000  # replicas


def _exact_cost_gradient():
    theta = tf.Variable(THETA)
    with tf.GradientTape() as tape:
        q = NumStepsDistribution(step_logits=theta).probs_table()
        expected = tf.reduce_sum(q * COSTS)
    return float(expected), tape.gradient(expected, theta).numpy()


def _reinforce_draws(baseline_fn, seed=0):
    """Per-replica REINFORCE gradients `[M, 2]`; `baseline_fn(n) -> [M]`."""
    theta = tf.Variable(np.tile(THETA, [M, 1]))
    with tf.GradientTape() as tape:
        q = NumStepsDistribution(step_logits=theta)
        n = q.sample(seed=tf.constant([seed, 1]))
        cost = tf.gather(tf.constant(COSTS), n)
        surrogate = estimators.score_function_surrogate(q.log_prob(n), cost, baseline_fn(n))
        total = tf.reduce_sum(surrogate)
    return tape.gradient(total, theta).numpy()


class ScoreFunctionTest(tf.test.TestCase, parameterized.TestCase):
    def assertUnbiased(self, draws, exact):
        mean = draws.mean(0)
        stderr = draws.std(0, ddof=1) / np.sqrt(len(draws))
        self.assertTrue(np.all(np.abs(mean - exact) < 5 * stderr + 1e-9), (mean, exact, stderr))

    def test_reinforce_is_unbiased_with_and_without_baseline_and_baseline_lowers_variance(self):
        expected, exact = _exact_cost_gradient()
        plain = _reinforce_draws(lambda n: tf.zeros_like(n, tf.float64))
        with_baseline = _reinforce_draws(
            lambda n: tf.fill(tf.shape(n), tf.constant(expected, tf.float64))
        )
        self.assertUnbiased(plain, exact)
        self.assertUnbiased(with_baseline, exact)
        self.assertLess(with_baseline.var(0).sum(), 0.05 * plain.var(0).sum())

    def test_learned_baseline_converges_to_the_expected_cost(self):
        expected, exact = _exact_cost_gradient()
        b = tf.Variable(0.0, dtype=tf.float64)
        q = NumStepsDistribution(step_logits=tf.constant(THETA))
        for i in range(150):  # SGD on the regression loss
            n = q.sample(256, seed=tf.constant([i, 2]))
            with tf.GradientTape() as tape:
                target = tf.gather(tf.constant(COSTS), n)
                loss = tf.reduce_mean(estimators.baseline_loss(target, b * tf.ones_like(target)))
            b.assign_sub(0.2 * tape.gradient(loss, b))
        self.assertAllClose(float(b), expected, atol=0.3)
        learned = _reinforce_draws(lambda n: tf.fill(tf.shape(n), b))
        plain = _reinforce_draws(lambda n: tf.zeros_like(n, tf.float64))
        self.assertUnbiased(learned, exact)
        self.assertLess(learned.var(0).sum(), 0.05 * plain.var(0).sum())

    def test_air_neural_baseline_learns_the_image_dependent_cost_and_lowers_variance(self):
        """`air.modules.Baseline` itself (as AIR trains it, with `baseline_loss`): the expected
        cost depends on the image (+-20 nats for dark / bright images), which a constant
        baseline cannot remove; the learned network does, and REINFORCE stays unbiased."""
        bright = (np.arange(M) % 2).astype(np.float64)  # replica i's image: dark or bright
        offsets = 40.0 * bright - 20.0  # [M]
        images = tf.constant(np.tile(bright[:, None, None, None], [1, 4, 4, 1]), tf.float32)
        latents = [tf.zeros([M, 3])]  # AIR also feeds z_what / z_where; uninformative here
        expected_cost, exact = _exact_cost_gradient()
        baseline = modules.Baseline([16])
        opt = tf_keras.optimizers.Adam(0.05)
        q = NumStepsDistribution(step_logits=tf.constant(np.tile(THETA, [256, 1])))
        for i in range(300):
            rows = np.random.default_rng(i).integers(0, M, 256)
            n = q.sample(seed=tf.constant([i, 3]))
            with tf.GradientTape() as tape:
                cost = tf.gather(tf.constant(COSTS), n) + offsets[rows]
                x, z = tf.gather(images, rows), tf.gather(latents[0], rows)
                b = tf.cast(baseline(x, [z]), tf.float64)
                loss = tf.reduce_mean(estimators.baseline_loss(cost, b))
            variables = baseline.trainable_variables
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        learned = tf.cast(baseline(images, latents), tf.float64)  # [M]
        self.assertAllClose(learned, expected_cost + offsets, atol=1.0)

        def draws(b):
            theta = tf.Variable(np.tile(THETA, [M, 1]))
            with tf.GradientTape() as tape:
                q = NumStepsDistribution(step_logits=theta)
                n = q.sample(seed=tf.constant([7, 1]))
                cost = tf.gather(tf.constant(COSTS), n) + offsets
                total = tf.reduce_sum(estimators.score_function_surrogate(q.log_prob(n), cost, b))
            return tape.gradient(total, theta).numpy()

        with_network = draws(learned)
        constant = draws(tf.fill([M], tf.constant(expected_cost, tf.float64)))
        self.assertUnbiased(with_network, exact)
        self.assertLess(with_network.var(0).sum(), 0.2 * constant.var(0).sum())

    def test_a_baseline_that_sees_n_is_biased(self):
        # b(n) = cost(n) cancels the signal: the estimate is 0, not the gradient. This is why
        # air.modules.Baseline never sees n or z_pres.
        _, exact = _exact_cost_gradient()
        draws = _reinforce_draws(lambda n: tf.gather(tf.constant(COSTS), n))
        self.assertAllClose(draws.mean(0), [0.0, 0.0])
        self.assertGreater(np.abs(exact).max(), 0.1)

    def test_surrogate_stops_gradients_into_cost_and_baseline(self):
        cost, base, log_q = tf.Variable([2.0]), tf.Variable([1.0]), tf.Variable([-0.5])
        with tf.GradientTape() as tape:
            s = estimators.score_function_surrogate(log_q, cost, base)
        g_cost, g_base, g_log_q = tape.gradient(s, [cost, base, log_q])
        self.assertIsNone(g_cost)
        self.assertIsNone(g_base)
        self.assertAllClose(g_log_q, [1.0])

    @parameterized.parameters(True, False)
    def test_nvil_centring_is_unbiased_and_normalization_rescales(self, normalize):
        expected, exact = _exact_cost_gradient()
        nvil = estimators.NVILNormalizer(decay=0.9, normalize_variance=normalize)
        nvil.mean.assign(expected - 1.0)
        nvil.variance.assign(16.0)
        theta = tf.Variable(np.tile(THETA, [M, 1]))
        with tf.GradientTape() as tape:
            q = NumStepsDistribution(step_logits=theta)
            n = q.sample(seed=tf.constant([0, 3]))
            cost = tf.cast(tf.gather(tf.constant(COSTS), n), tf.float32)
            signal = nvil(cost, update=False)
            total = tf.reduce_sum(
                estimators.score_function_surrogate(q.log_prob(n), tf.cast(signal, tf.float64))
            )
        draws = tape.gradient(total, theta).numpy()
        self.assertUnbiased(draws, exact / (4.0 if normalize else 1.0))

    def test_nvil_statistics_update_after_use_and_are_debiased(self):
        nvil = estimators.NVILNormalizer(decay=0.75)
        signal = tf.constant([1.0, 3.0, 8.0, 0.0])
        out = nvil(signal)
        # Normalized with the initial statistics (mean 0, variance 1): max(1, 1) = 1.
        self.assertAllClose(out, signal)
        # Zero-debiased: the first update sets the batch moments exactly.
        mean, var = signal.numpy().mean(), signal.numpy().var()
        self.assertAllClose(nvil.mean, mean)
        self.assertAllClose(nvil.variance, var)
        out = nvil(signal + 2.0, update=False)
        self.assertAllClose(out, (signal + 2.0 - mean) / np.sqrt(var))
        self.assertAllClose(nvil.mean, mean)  # not updated
        nvil(signal + 2.0)
        # Second update: the debiased EMA (0.75 * 0.25 * m1 + 0.25 * m2) / (1 - 0.75^2).
        self.assertAllClose(nvil.mean, (0.1875 * mean + 0.25 * (mean + 2.0)) / 0.4375)
        self.assertAllClose(nvil.variance, var)

    def test_nvil_moments_plain_ema(self):
        mean, var = estimators.nvil_moments(tf.constant([1.0, 3.0]), 4.0, 2.0, rate=0.1)
        self.assertAllClose(mean, 0.9 * 4.0 + 0.1 * 2.0)
        self.assertAllClose(var, 0.9 * 2.0 + 0.1 * 1.0)

    def test_nvil_under_tf_function_matches_eager(self):
        eager, graph = estimators.NVILNormalizer(0.5), estimators.NVILNormalizer(0.5)
        fn = tf.function(graph.__call__)
        for i in range(3):
            x = tf.constant([float(i), 2.0 * i + 1.0, -3.0])
            self.assertAllClose(eager(x), fn(x))
        self.assertAllClose(eager.mean, graph.mean)
        self.assertAllClose(eager.variance, graph.variance)

    def test_bad_decay(self):
        with self.assertRaisesRegex(ValueError, "decay"):
            estimators.NVILNormalizer(decay=1.0)


K = 3
LOG_P = np.log(np.array([0.2, 0.5, 0.3])) + 10.0  # log p(x, n); the offset makes baselines matter


def _exact_iwae_gradient():
    """d/dtheta E[log (1/K) sum_k p(x, n_k) / q(n_k)] by enumerating all 3^K configurations."""
    combos = np.array(list(itertools.product(range(3), repeat=K)))  # [27, K]
    theta = tf.Variable(THETA)
    with tf.GradientTape() as tape:
        log_q = NumStepsDistribution(step_logits=theta).log_probs_table()  # [3]
        log_q_k = tf.gather(log_q, combos)  # [27, K]
        log_w = tf.gather(tf.constant(LOG_P), combos) - log_q_k
        bound = tf.reduce_logsumexp(log_w, axis=1) - np.log(K)
        expected = tf.reduce_sum(tf.exp(tf.reduce_sum(log_q_k, 1)) * bound)
    return float(expected), tape.gradient(expected, theta).numpy()


def _iwae_draws(loss_fn, seed=0):
    theta = tf.Variable(np.tile(THETA, [M, 1]))
    with tf.GradientTape() as tape:
        q = NumStepsDistribution(step_logits=theta)
        n = q.sample(K, seed=tf.constant([seed, 4]))  # [K, M]
        log_q = q.log_prob(n)
        log_w = tf.gather(tf.constant(LOG_P), n) - log_q
        total = tf.reduce_sum(loss_fn(log_w, log_q))
    return tape.gradient(total, theta).numpy()


class VIMCOTest(tf.test.TestCase):
    def test_iwae_bound_against_numpy(self):
        log_w = np.random.default_rng(0).normal(size=[5, 4]) * 30 - 1e3
        self.assertAllClose(
            estimators.iwae_bound(tf.constant(log_w)), special.logsumexp(log_w, 0) - np.log(5)
        )

    def test_leave_one_out_bounds_against_a_loop(self):
        log_w = np.random.default_rng(1).normal(size=[4, 6]) * 5
        expected = []
        for j in range(4):
            replaced = log_w.copy()
            replaced[j] = np.delete(log_w, j, axis=0).mean(0)
            expected.append(special.logsumexp(replaced, 0) - np.log(4))
        self.assertAllClose(estimators.leave_one_out_bounds(tf.constant(log_w)), expected)
        signals = estimators.vimco_signals(tf.constant(log_w))
        self.assertAllClose(signals, special.logsumexp(log_w, 0) - np.log(4) - np.array(expected))

    def test_vimco_is_unbiased_and_beats_the_plain_score_function(self):
        expected, exact = _exact_iwae_gradient()
        vimco = _iwae_draws(estimators.vimco_loss)

        def plain(log_w, log_q):
            bound = estimators.iwae_bound(log_w)
            return -(bound + tf.stop_gradient(bound) * tf.reduce_sum(log_q, 0))

        naive = _iwae_draws(plain)
        for draws in (vimco, naive):
            mean = -draws.mean(0)  # losses are minimized: the gradient of -E[L]
            stderr = draws.std(0, ddof=1) / np.sqrt(M)
            self.assertTrue(np.all(np.abs(mean - exact) < 5 * stderr), (mean, exact, stderr))
        self.assertLess(vimco.var(0).sum(), 0.01 * naive.var(0).sum())

    def test_vimco_loss_value_is_minus_the_bound(self):
        log_w = tf.constant(np.random.default_rng(2).normal(size=[3, 2]))
        log_q = tf.constant(np.random.default_rng(3).normal(size=[3, 2]))
        self.assertAllClose(estimators.vimco_loss(log_w, log_q), -estimators.iwae_bound(log_w))

    def test_vimco_needs_two_particles(self):
        with self.assertRaisesRegex(ValueError, "K >= 2"):
            estimators.leave_one_out_bounds(tf.zeros([1, 3]))


if __name__ == "__main__":
    tf.test.main()

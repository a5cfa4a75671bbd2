"""Tests for air/num_steps.py: NumStepsDistribution and the truncated geometric prior."""

import itertools

import numpy as np
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized

from air import NumStepsDistribution, truncated_geometric_prior

tfd = tfp.distributions

# Rows with exact zeros and ones, where a naive cumprod/log gives NaN gradients.
_EDGE_PROBS = [[0.0, 0.5, 1.0], [1.0, 1.0, 0.0], [1.0, 0.3, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


def _brute_force_table(probs):
    """q(n) by enumerating all 2^N Bernoulli sequences; n = number of leading ones."""
    probs = np.asarray(probs, np.float64)
    num_steps = probs.shape[-1]
    table = np.zeros(probs.shape[:-1] + (num_steps + 1,))
    for bits in itertools.product([0, 1], repeat=num_steps):
        bits = np.array(bits)
        weight = np.prod(np.where(bits == 1, probs, 1.0 - probs), axis=-1)
        n = num_steps if bits.all() else int(np.argmin(bits))
        table[..., n] += weight
    return table


class NumStepsDistributionTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.rng = np.random.default_rng(0)

    @parameterized.parameters(1, 2, 3, 4)
    def test_table_matches_enumeration(self, num_steps):
        probs = self.rng.uniform(size=[5, num_steps])
        expected = _brute_force_table(probs)
        dist = NumStepsDistribution(step_probs=tf.constant(probs))
        self.assertAllClose(dist.probs_table(), expected, atol=1e-12)
        logits = np.log(probs) - np.log1p(-probs)
        from_logits = NumStepsDistribution(step_logits=tf.constant(logits))
        self.assertAllClose(from_logits.probs_table(), expected, atol=1e-12)
        n = np.arange(num_steps + 1)[:, None]  # [N + 1, 1] broadcasts against batch [5]
        self.assertAllClose(dist.prob(n), expected.T, atol=1e-12)
        self.assertAllClose(dist.log_prob(n), np.log(expected.T), atol=1e-10)
        self.assertAllClose(dist.log_probs_table(), np.log(expected), atol=1e-10)

    def test_edge_probabilities(self):
        dist = NumStepsDistribution(step_probs=tf.constant(_EDGE_PROBS, tf.float64))
        table = dist.probs_table()
        self.assertAllClose(table, _brute_force_table(_EDGE_PROBS))
        self.assertAllClose(table[1], [0.0, 0.0, 1.0, 0.0])  # the reference's unit-test case
        self.assertAllClose(tf.reduce_sum(table, -1), tf.ones([5], tf.float64))

    @parameterized.parameters(tf.float32, tf.float64)
    def test_sums_to_one(self, dtype):
        dist = NumStepsDistribution(
            step_logits=tf.constant(self.rng.normal(size=[7, 4]) * 5, dtype)
        )
        self.assertEqual(dist.probs_table().dtype, dtype)
        self.assertAllClose(tf.reduce_sum(dist.probs_table(), -1), tf.ones([7], dtype))

    def test_sample_frequencies_match_table(self):
        probs = [0.7, 0.6, 0.5]
        dist = NumStepsDistribution(step_probs=probs)
        samples = dist.sample(20000, seed=(1, 2)).numpy()
        self.assertEqual(samples.dtype, np.int32)
        observed = np.bincount(samples, minlength=4)
        expected = _brute_force_table(probs) * samples.size
        self.assertGreater(scipy.stats.chisquare(observed, expected).pvalue, 1e-3)

    def test_sample_shapes_and_edges(self):
        dist = NumStepsDistribution(step_probs=tf.constant(_EDGE_PROBS))
        samples = dist.sample([2, 3], seed=(3, 4))
        self.assertEqual(samples.shape, (2, 3, 5))
        # Rows whose table is one-hot are deterministic: n = 0, 2, 3, 0.
        self.assertAllEqual(samples[..., 0], tf.zeros([2, 3], tf.int32))
        self.assertAllEqual(samples[..., 1], tf.fill([2, 3], 2))
        self.assertAllEqual(samples[..., 3], tf.fill([2, 3], 3))
        self.assertAllEqual(samples[..., 4], tf.zeros([2, 3], tf.int32))
        self.assertAllInSet(samples[..., 2], [1, 3])

    def test_log_prob_and_gradients_at_zero_and_one(self):
        probs = tf.constant(_EDGE_PROBS, tf.float64)
        table = _brute_force_table(_EDGE_PROBS)
        for n in range(4):
            with tf.GradientTape() as tape:
                tape.watch(probs)
                log_prob = NumStepsDistribution(step_probs=probs).log_prob(n)
            grad = tape.gradient(log_prob, probs)
            self.assertAllEqual(np.isfinite(log_prob), table[:, n] > 0)  # else -inf
            self.assertAllEqual(np.isfinite(grad), np.ones_like(grad, bool))

    def test_other_gradients_are_finite_at_zero_and_one(self):
        probs = tf.constant(_EDGE_PROBS, tf.float64)
        prior = truncated_geometric_prior(tf.constant(0.3, tf.float64), 3)
        with tf.GradientTape() as tape:
            tape.watch(probs)
            dist = NumStepsDistribution(step_probs=probs)
            stats = [
                dist.probs_table(),
                dist.mean(),
                dist.entropy(),
                tfd.kl_divergence(dist, prior),
            ]
            stats.append(dist.presence_probs())
            loss = sum(tf.reduce_sum(s) for s in stats)
        self.assertTrue(np.isfinite(loss.numpy()))
        self.assertAllEqual(np.isfinite(tape.gradient(loss, probs)), np.ones([5, 3], bool))

    def test_mean_entropy_mode_presence_against_direct_sums(self):
        probs = np.concatenate([self.rng.uniform(size=[4, 3]), _EDGE_PROBS])
        table = _brute_force_table(probs)
        dist = NumStepsDistribution(step_probs=tf.constant(probs))
        self.assertAllClose(dist.mean(), table @ np.arange(4))
        plogp = np.where(table > 0, table * np.log(np.where(table > 0, table, 1.0)), 0.0)
        self.assertAllClose(dist.entropy(), -plogp.sum(-1))
        self.assertAllEqual(dist.mode(), np.argmax(table, -1))
        # P(n >= t) for t = 1..N.
        self.assertAllClose(dist.presence_probs(), np.cumsum(table[:, ::-1], -1)[:, ::-1][:, 1:])

    def test_truncated_geometric_prior(self):
        s = 0.3
        prior = truncated_geometric_prior(s, num_steps=4)
        expected = [(1 - s), s * (1 - s), s**2 * (1 - s), s**3 * (1 - s), s**4]
        self.assertAllClose(prior.probs_table(), expected)
        batched = truncated_geometric_prior([0.1, 0.9], num_steps=2)
        self.assertEqual(batched.batch_shape, (2,))

    def test_kl_against_direct_sum(self):
        probs = np.concatenate([self.rng.uniform(size=[4, 3]), _EDGE_PROBS])
        q_table = _brute_force_table(probs)
        for s in [1e-5, 0.4, 1.0 - 1e-7]:
            p_table = _brute_force_table([s] * 3)
            terms = q_table * (np.log(np.where(q_table > 0, q_table, 1.0)) - np.log(p_table))
            expected = np.where(q_table > 0, terms, 0.0).sum(-1)
            q = NumStepsDistribution(step_probs=tf.constant(probs))
            prior = truncated_geometric_prior(tf.constant(s, tf.float64), num_steps=3)
            self.assertAllClose(tfd.kl_divergence(q, prior), expected, rtol=1e-10)
        self.assertAllClose(tfd.kl_divergence(q, q), np.zeros(9), atol=1e-12)
        # q puts mass where the prior (s = 0: always n = 0) has none.
        kl = tfd.kl_divergence(q, truncated_geometric_prior(tf.constant(0.0, tf.float64), 3))
        self.assertAllEqual(np.isinf(kl), q_table[:, 0] < 1)

    def test_tf_function_matches_eager(self):
        logits = tf.constant(self.rng.normal(size=[6, 3]), tf.float32)
        n = tf.constant([0, 1, 2, 3, 3, 1])

        def stats(logits, n):
            dist = NumStepsDistribution(step_logits=logits)
            prior = truncated_geometric_prior(0.2, 3)
            sample = dist.sample(2, seed=(5, 6))
            return (dist.log_prob(n), dist.entropy(), tfd.kl_divergence(dist, prior), sample)

        eager = stats(logits, n)
        graph = tf.function(stats)(logits, n)
        for e, g in zip(eager, graph, strict=True):
            self.assertAllClose(e, g)

    def test_shapes_and_slicing(self):
        dist = NumStepsDistribution(step_probs=tf.fill([2, 3, 4], 0.5))
        self.assertEqual(dist.batch_shape, (2, 3))
        self.assertEqual(dist.event_shape, ())
        self.assertAllEqual(dist.batch_shape_tensor(), [2, 3])
        self.assertEqual(dist.num_steps, 4)
        self.assertEqual(dist.sample(5, seed=(0, 1)).shape, (5, 2, 3))
        self.assertEqual(dist[1].batch_shape, (3,))
        self.assertEqual(dist.log_prob(2).shape, (2, 3))
        self.assertAllEqual(dist.log_prob(5), tf.fill([2, 3], -np.inf))  # outside the support

    def test_validation(self):
        with self.assertRaisesRegex(ValueError, "exactly one"):
            NumStepsDistribution()
        with self.assertRaisesRegex(ValueError, "exactly one"):
            NumStepsDistribution(step_probs=[0.5], step_logits=[0.0])
        with self.assertRaisesOpError("step_probs"):
            NumStepsDistribution(step_probs=[0.5, 1.5], validate_args=True).probs_table()
        dist = NumStepsDistribution(step_probs=[0.5, 0.5], validate_args=True)
        with self.assertRaisesOpError("<= N"):
            dist.log_prob(3)
        with self.assertRaisesRegex(ValueError, "equal N"):
            tfd.kl_divergence(dist, truncated_geometric_prior(0.5, 3))


if __name__ == "__main__":
    tf.test.main()

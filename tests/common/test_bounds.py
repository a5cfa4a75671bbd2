"""common/bounds.py against SciPy: log-mean-exp on any axis, static and dynamic lengths."""

import numpy as np
import tensorflow as tf
from scipy import special

from common import bounds


class BoundsTest(tf.test.TestCase):
    def test_log_mean_exp_against_scipy_on_every_axis(self):
        x = np.random.default_rng(0).normal(size=[3, 4, 5]) * 40 - 1e4
        for axis in range(3):
            expected = special.logsumexp(x, axis=axis) - np.log(x.shape[axis])
            self.assertAllClose(bounds.log_mean_exp(tf.constant(x), axis=axis), expected)

    def test_dynamic_length_under_tf_function(self):
        fn = tf.function(
            lambda x: bounds.iwae_bound(x),
            input_signature=[tf.TensorSpec([None, 2], tf.float64)],
        )
        log_w = np.array([[0.0, -3.0], [np.log(3.0), -1.0], [-50.0, 2.0]])
        expected = np.log(np.exp(log_w).mean(axis=0))
        self.assertAllClose(fn(tf.constant(log_w)), expected)

    def test_one_sample_is_the_log_weight(self):
        log_w = tf.constant([[-7.25, 3.5]], tf.float32)
        self.assertAllEqual(bounds.iwae_bound(log_w), log_w[0])

    def test_gradient_is_the_normalized_weights(self):
        log_w = tf.Variable(np.random.default_rng(1).normal(size=[6, 3]))
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(bounds.iwae_bound(log_w))
        expected = special.softmax(log_w.numpy(), axis=0)
        self.assertAllClose(tape.gradient(total, log_w), expected)


if __name__ == "__main__":
    tf.test.main()

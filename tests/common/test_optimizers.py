"""common/optimizers.py: the optimizer and learning-rate schedule of a config block, against
closed forms (cosine decay, Adam's first step, global-norm clipping)."""

import ml_collections
import numpy as np
import tensorflow as tf

from common import optimizers


def _block(**fields):
    base = dict(learning_rate=0.1, epsilon=1e-8, schedule="constant", final_fraction=0.05)
    base.update(fields)
    return ml_collections.ConfigDict(base)


class ScheduleTest(tf.test.TestCase):
    def test_constant_is_the_float(self):
        self.assertEqual(optimizers.learning_rate_schedule(_block(), 100), 0.1)

    def test_cosine_against_the_closed_form(self):
        schedule = optimizers.learning_rate_schedule(_block(schedule="cosine"), 100)
        for t in (0, 13, 50, 99, 100):
            expected = 0.1 * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * t / 100)))
            self.assertAllClose(float(schedule(t)), expected, rtol=1e-6)

    def test_unknown_schedule(self):
        with self.assertRaisesRegex(ValueError, "'linear'.*constant, cosine"):
            optimizers.learning_rate_schedule(_block(schedule="linear"), 100)


class OptimizerTest(tf.test.TestCase):
    def test_adam_first_step_moves_each_parameter_by_the_learning_rate(self):
        # After one step Adam's bias-corrected update is lr * g / (|g| + eps) = lr * sign(g).
        v = tf.Variable([1.0, -2.0])
        opt = optimizers.make_optimizer(_block(name="adam"))
        opt.apply_gradients([(tf.constant([3.0, -0.5]), v)])
        self.assertAllClose(v.numpy(), [1.0 - 0.1, -2.0 + 0.1], atol=1e-6)

    def test_global_clipnorm_rescales_all_gradients_together(self):
        # Keras' Adam, first step: lr * g / (|g| + eps / sqrt(1 - beta_2)); with a large eps the
        # step is proportional to the (clipped) gradient g' = g * 1 / ||g||.
        a, b = tf.Variable([0.0]), tf.Variable([0.0])
        opt = optimizers.make_optimizer(
            _block(name="adam", global_clipnorm=1.0, learning_rate=1.0, epsilon=10.0)
        )
        g_a, g_b = tf.constant([30.0]), tf.constant([40.0])  # global norm 50 -> clipped to 1
        opt.apply_gradients([(g_a, a), (g_b, b)])
        eps = 10.0 / np.sqrt(1 - 0.999)
        for var, g in ((a, 0.6), (b, 0.8)):  # g' = g / 50
            self.assertAllClose(var.numpy(), [-g / (g + eps)], rtol=1e-5)

    def test_unknown_optimizer(self):
        with self.assertRaisesRegex(ValueError, "sgd"):
            optimizers.make_optimizer(_block(name="sgd"))


if __name__ == "__main__":
    tf.test.main()

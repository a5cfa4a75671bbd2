"""The plain Keras DRAW of benchmarks/_keras_draw.py computes what `draw.DRAW` computes: given
the same weights and noise both give the same negative ELBO and the same gradients, so the
benchmark's step-time comparison is between two codes for one model, not two models."""

import os
import sys

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from common import distribute
from draw.model import DRAW
from tests import binaries

sys.path.insert(0, os.path.join(binaries.ROOT, "benchmarks"))
import _keras_draw  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

SHAPE = (9, 7)  # height != width: a swapped axis would show


def _pair(attention):
    sizes = dict(num_steps=3, lstm_size=6, latent_size=4, attention=attention, read_size=2,
                 write_size=3)  # fmt: skip
    ours = DRAW(SHAPE, **sizes)
    keras = _keras_draw.KerasDRAW(image_shape=SHAPE, **sizes)
    x = tf.cast(tf.random.stateless_uniform([5, *SHAPE], [3, 0]) < 0.4, tf.float32)
    seed = tf.constant([4, 2])
    ours(x, seed)
    eps = distribute.global_batch_normal([3, 5, 4], seed, batch_axis=1)
    keras(x, eps)
    rng = np.random.default_rng(0)
    # Random weights, large enough that posteriors and canvases are far from their initial
    # values. The learned initial LSTM states stay 0 (the port has none).
    for v in ours.trainable_variables:
        if "initial_state" not in v.name:
            scale = 0.1 if "window" in v.name else 0.5
            v.assign(v + rng.normal(size=v.shape).astype(np.float32) * scale)
    if attention:
        # Windows inside the image (stride delta~ = e^-1 of the full span): where all filters
        # of a row lie outside, the port's `F / (sum F + 1e-8)` and the softmax of
        # `common.attention` part (draw/README.md, Deviations), which is not what is compared.
        for head in (ours.read_head, ours.write_head):
            head.b.assign(head.b - [0.0, 0.0, 0.0, 1.0, 0.0])
    pairs = [
        (keras.canvas_bias, ours.canvas_bias),
        (keras.posterior.kernel, ours.posterior_head.w),
        (keras.posterior.bias, ours.posterior_head.b),
        (keras.patch.kernel, ours.patch_head.w),
        (keras.patch.bias, ours.patch_head.b),
    ]
    for k_cell, s_lstm in ((keras.encoder, ours.encoder), (keras.decoder, ours.decoder)):
        # Both order the gates (input, forget, cell, output).
        pairs += [(k_cell.kernel, s_lstm._w_i), (k_cell.recurrent_kernel, s_lstm._w_h),
                  (k_cell.bias, s_lstm.b)]  # fmt: skip
    if attention:
        pairs += [
            (keras.read_window.kernel, ours.read_head.w),
            (keras.read_window.bias, ours.read_head.b),
            (keras.write_window.kernel, ours.write_head.w),
            (keras.write_window.bias, ours.write_head.b),
        ]
    for k_var, s_var in pairs:
        k_var.assign(s_var)
    shared = [s for _, s in pairs]
    return ours, keras, x, seed, eps, [k for k, _ in pairs], shared


class KerasDRAWTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(True, False)
    def test_same_negative_elbo_and_gradients(self, attention):
        ours, keras, x, seed, eps, keras_vars, our_vars = _pair(attention)
        self.assertLen(keras.trainable_variables, len(keras_vars))  # every weight is copied
        with tf.GradientTape(persistent=True) as tape:
            out = ours(x, seed)
            ours_loss = out.reconstruction_loss + out.latent_loss
            keras_loss = keras(x, eps)
            ours_sum, keras_sum = tf.reduce_sum(ours_loss), tf.reduce_sum(keras_loss)
        self.assertAllClose(keras_loss, ours_loss, rtol=1e-5, atol=1e-4)
        ours_grads = tape.gradient(ours_sum, our_vars)
        keras_grads = tape.gradient(keras_sum, keras_vars)
        for g_ours, g_keras, v in zip(ours_grads, keras_grads, our_vars, strict=True):
            scale = float(tf.reduce_max(tf.abs(g_ours))) + 1e-3
            self.assertAllClose(g_keras, g_ours, atol=1e-4 * scale, rtol=1e-4, msg=v.name)

    def test_one_step_of_noise_changes_the_bound(self):
        # The noise reaches the bound: the comparison above is not between two models that
        # ignore eps (e.g. a broken reparameterization in both).
        _, keras, x, _, eps, _, _ = _pair(True)
        shifted = tf.tensor_scatter_nd_add(eps, [[1]], tf.ones([1, *eps.shape[1:]]))
        self.assertNotAllClose(keras(x, eps), keras(x, shifted))


if __name__ == "__main__":
    tf.test.main()

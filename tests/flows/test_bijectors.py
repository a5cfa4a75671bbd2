"""Tests for common/bijectors.py (re-exported by flows): planar and radial flows."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized

import flows
from tests.flows import flow_test_util

tfd = tfp.distributions


def _softplus(x):
    return np.logaddexp(0.0, x)


def _planar_numpy(z, w, u, b):
    """Eqs. (10)-(12) and App. A.1 of Rezende & Mohamed (2015), in NumPy."""
    wu = np.sum(w * u, -1, keepdims=True)
    u_hat = u + (-1.0 + _softplus(wu) - wu) * w / np.sum(w * w, -1, keepdims=True)
    s = np.sum(w * z, -1) + b
    y = z + u_hat * np.tanh(s)[..., None]
    log_det = np.log(np.abs(1.0 + (1.0 - np.tanh(s) ** 2) * np.sum(u_hat * w, -1)))
    return y, log_det, u_hat


def _radial_numpy(z, z0, alpha_raw, beta_raw):
    """Eq. (14) of Rezende & Mohamed (2015), in NumPy."""
    alpha = _softplus(alpha_raw)
    beta = -alpha + _softplus(beta_raw)
    r = np.linalg.norm(z - z0, axis=-1)
    h = 1.0 / (alpha + r)
    y = z + (beta * h)[..., None] * (z - z0)
    d = z.shape[-1]
    log_det = (d - 1) * np.log1p(beta * h) + np.log1p(beta * h - beta * r * h**2)
    return y, log_det


def _planar_with_wu(rng, d, wu, w_scale=1.0, b=0.3):
    """Planar parameters with w^T u = wu (so 1 + w^T u_hat = softplus(wu))."""
    w = rng.normal(size=d) * w_scale
    u = rng.normal(size=d)
    u += (wu - w @ u) * w / (w @ w)
    return w, u, b


class PlanarTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        tf.random.set_seed(0)
        self.rng = np.random.default_rng(0)

    @parameterized.parameters(2, 5, 8)
    def test_matches_numpy_and_autodiff(self, d):
        w, u, b = self.rng.normal(size=d), self.rng.normal(size=d), 0.7
        z = self.rng.normal(size=(16, d)) * 2
        bijector = flows.Planar(w, u, np.float64(b))
        y_np, log_det_np, u_hat = _planar_numpy(z, w, u, b)
        self.assertGreater(w @ u_hat, -1.0)
        self.assertAllClose(bijector.forward(tf.constant(z)), y_np)
        self.assertAllClose(
            bijector.forward_log_det_jacobian(tf.constant(z), event_ndims=1), log_det_np
        )
        flow_test_util.check_bijector(self, bijector, z)

    @parameterized.parameters(2, 5)
    def test_batched_parameters_match_per_example(self, d):
        batch = 6
        w, u = self.rng.normal(size=(batch, d)), self.rng.normal(size=(batch, d))
        b = self.rng.normal(size=batch)
        z = self.rng.normal(size=(batch, d))
        bijector = flows.Planar(w, u, b)
        y = bijector.forward(tf.constant(z)).numpy()
        fldj = bijector.forward_log_det_jacobian(tf.constant(z), event_ndims=1).numpy()
        for i in range(batch):
            one = flows.Planar(w[i], u[i], b[i])
            self.assertAllClose(y[i], one.forward(tf.constant(z[i])))
            self.assertAllClose(fldj[i], one.forward_log_det_jacobian(tf.constant(z[i]), 1))
        flow_test_util.check_bijector(self, bijector, z)
        self.assertEqual(bijector.experimental_batch_shape(), [batch])

    @parameterized.product(wu=[-40.0, -16.0, -8.0, -1.0, 0.0, 3.0, 1e3], w_scale=[0.1, 1.0, 10.0])
    def test_inverse_tolerance_float64(self, wu, w_scale):
        """Documented tolerance: forward(inverse(y)) = y to 1e-12 relative to
        1 + |y| + |u_hat|, and inverse(forward(z)) = z to that divided by the
        slope 1 + (w^T u_hat) h'(s), including next to the edge
        w^T u_hat = -1 (1 + w^T u_hat = softplus(-40) = 4e-18)."""
        d = 5
        w, u, b = _planar_with_wu(self.rng, d, wu, w_scale)
        z = self.rng.normal(size=(256, d)) * 3
        # Half the points next to the hyperplane s = 0, where the slope is
        # smallest (1 + w^T u_hat) and the inverse hardest.
        s = z[:128] @ w + b
        z[:128] -= (s - 1e-3 * self.rng.normal(size=128))[:, None] * w / (w @ w)
        bijector = flows.Planar(w, u, np.float64(b))
        y = bijector.forward(tf.constant(z)).numpy()
        z_back = bijector.inverse(tf.constant(y)).numpy()
        y_again = bijector.forward(tf.constant(z_back)).numpy()
        _, u_hat, _ = bijector.constrained_parameters()
        scale = 1.0 + np.abs(y).max(-1) + np.abs(u_hat.numpy()).max()
        residual = np.abs(y_again - y).max(-1) / scale
        self.assertAllLessEqual(residual, 1e-12)
        slope = np.exp(bijector.forward_log_det_jacobian(tf.constant(z), 1).numpy())
        bound = 1e-12 * scale / slope + 1e-12
        self.assertAllLessEqual(np.abs(z_back - z).max(-1) / bound, 1.0)
        self.assertTrue(np.all(np.isfinite(bijector.inverse_log_det_jacobian(tf.constant(y), 1))))

    @parameterized.parameters(-16.0, 0.0, 3.0)
    def test_inverse_tolerance_float32(self, wu):
        """float32: forward(inverse(y)) = y to 1e-5 relative (|w^T u_hat| <= 10)."""
        w, u, b = _planar_with_wu(self.rng, 4, wu)
        z = self.rng.normal(size=(256, 4)).astype(np.float32) * 3
        bijector = flows.Planar(w.astype(np.float32), u.astype(np.float32), np.float32(b))
        y = bijector.forward(tf.constant(z)).numpy()
        y_again = bijector.forward(bijector.inverse(tf.constant(y))).numpy()
        _, u_hat, _ = bijector.constrained_parameters()
        scale = 1.0 + np.abs(y).max(-1) + np.abs(u_hat.numpy()).max()
        self.assertAllLessEqual(np.abs(y_again - y).max(-1) / scale, 1e-5)

    def test_zero_w_is_a_shift(self):
        bijector = flows.Planar(np.zeros(3), np.ones(3), np.float64(0.5))
        z = self.rng.normal(size=(4, 3))
        self.assertAllClose(bijector.forward(tf.constant(z)), z + np.tanh(0.5))
        self.assertAllClose(bijector.inverse(tf.constant(z + np.tanh(0.5))), z)
        self.assertAllClose(bijector.forward_log_det_jacobian(tf.constant(z), 1), np.zeros(4))

    def test_inverse_under_xla(self):
        w, u, b = _planar_with_wu(self.rng, 3, -8.0)
        bijector = flows.Planar(w, u, np.float64(b))
        y = self.rng.normal(size=(32, 3))
        eager = bijector.inverse(tf.constant(y))
        compiled = tf.function(bijector.inverse, jit_compile=True)(tf.constant(y))
        self.assertAllClose(compiled, eager, rtol=1e-12, atol=1e-12)

    def test_inverse_gradients_match_finite_differences(self):
        """Implicit-function gradients of the iterative inverse."""
        d = 3
        w0, u0 = self.rng.normal(size=d), self.rng.normal(size=d)
        y = tf.constant(self.rng.normal(size=(5, d)))
        weights = tf.constant(self.rng.normal(size=(5, d)))

        def loss(w, u, b):
            x = flows.Planar(w, u, b).inverse(tf.identity(y))
            return tf.reduce_sum(weights * x)

        params = [tf.constant(w0), tf.constant(u0), tf.constant(0.4, tf.float64)]
        with tf.GradientTape() as tape:
            tape.watch(params)
            value = loss(*params)
        grads = tape.gradient(value, params)
        eps = 1e-6
        for i, param in enumerate(params):
            flat = param.numpy().reshape(-1)
            numeric = np.zeros_like(flat)
            for j in range(flat.size):
                up, down = flat.copy(), flat.copy()
                up[j] += eps
                down[j] -= eps
                args_up = [*params]
                args_down = [*params]
                args_up[i] = tf.constant(up.reshape(param.shape))
                args_down[i] = tf.constant(down.reshape(param.shape))
                numeric[j] = (loss(*args_up) - loss(*args_down)).numpy() / (2 * eps)
            self.assertAllClose(grads[i].numpy().reshape(-1), numeric, rtol=1e-6, atol=1e-6)

    def test_layer_variables_init_and_tracking(self):
        layer = flows.PlanarLayer(event_size=8, dtype=tf.float64)
        self.assertLen(layer.trainable_variables, 3)
        self.assertAllLessEqual(np.abs(layer.w.numpy()), np.sqrt(2.0 / 8))
        self.assertAllLessEqual(np.abs(layer.u.numpy()), np.sqrt(2.0))
        self.assertEqual(layer.b.numpy(), 0.0)
        bijector = layer()
        self.assertLen(bijector.trainable_variables, 3)
        z = tf.constant(self.rng.normal(size=(2, 8)))
        before = bijector.forward(z).numpy()
        layer.b.assign(1.0)  # The bijector reads the variables at every call.
        self.assertNotAllClose(bijector.forward(tf.identity(z)), before)
        with self.assertRaises(ValueError):
            flows.PlanarLayer(event_size=0)


class RadialTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        tf.random.set_seed(0)
        self.rng = np.random.default_rng(0)

    @parameterized.product(d=[2, 5, 8], beta_raw=[-3.0, 0.5, 2.0])
    def test_matches_numpy_and_autodiff(self, d, beta_raw):
        z0 = self.rng.normal(size=d)
        alpha_raw = self.rng.normal()
        z = z0 + self.rng.normal(size=(16, d)) * self.rng.choice([0.1, 1.0, 5.0], size=(16, 1))
        bijector = flows.Radial(z0, np.float64(alpha_raw), np.float64(beta_raw))
        y_np, log_det_np = _radial_numpy(z, z0, alpha_raw, beta_raw)
        self.assertAllClose(bijector.forward(tf.constant(z)), y_np)
        self.assertAllClose(
            bijector.forward_log_det_jacobian(tf.constant(z), event_ndims=1), log_det_np
        )
        flow_test_util.check_bijector(self, bijector, z)

    @parameterized.parameters(-40.0, -20.0, -5.0, 0.0, 5.0)
    def test_inverse_tolerance_near_edge(self, beta_raw):
        """Documented tolerance: the closed-form inverse is exact to ~1e-13
        relative (float64), including beta -> -alpha (alpha + beta =
        softplus(-40) = 4e-18), near and at the centre, and far away.

        `z0 = 0` so that `y - z0` is exact: at the edge the flow contracts the
        ball of radius ~alpha around z0 by ~r / alpha, so with z0 != 0 the
        rounding of `y` itself limits any inverse (ill-conditioning, not
        solver error)."""
        d = 4
        z0 = np.zeros(d)
        bijector = flows.Radial(z0, np.float64(0.3), np.float64(beta_raw))
        radii = np.array([0.0, 1e-12, 1e-6, 1e-3, 0.1, 1.0, 10.0, 1e4])
        directions = self.rng.normal(size=(radii.size, d))
        directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
        z = z0 + radii[:, None] * directions
        y = bijector.forward(tf.constant(z)).numpy()
        z_back = bijector.inverse(tf.constant(y)).numpy()
        self.assertAllClose(z_back - z0, z - z0, rtol=1e-13, atol=1e-15)
        ildj = bijector.inverse_log_det_jacobian(tf.constant(y), 1).numpy()
        fldj = bijector.forward_log_det_jacobian(tf.constant(z), 1).numpy()
        self.assertAllClose(ildj, -fldj, rtol=1e-10)
        self.assertTrue(np.all(np.isfinite(fldj[1:])))

    def test_inverse_tolerance_float32(self):
        """float32: relative error 1e-5 of the closed-form inverse."""
        z0 = self.rng.normal(size=3).astype(np.float32)
        bijector = flows.Radial(z0, np.float32(-1.0), np.float32(-8.0))
        z = (z0 + self.rng.normal(size=(64, 3)) * 2).astype(np.float32)
        z_back = bijector.inverse(bijector.forward(tf.constant(z)) + 0.0).numpy()
        self.assertAllClose(z_back - z0, z - z0, rtol=1e-5, atol=1e-5)

    def test_gradients_finite_at_centre(self):
        z0 = tf.Variable(tf.zeros([3], tf.float64))
        alpha_raw = tf.Variable(tf.constant(0.1, tf.float64))
        beta_raw = tf.Variable(tf.constant(0.2, tf.float64))
        bijector = flows.Radial(z0, alpha_raw, beta_raw)
        x = tf.zeros([2, 3], tf.float64)
        with tf.GradientTape() as tape:
            loss = (
                tf.reduce_sum(bijector.inverse(x))
                + tf.reduce_sum(bijector.inverse_log_det_jacobian(x, 1))
                + tf.reduce_sum(bijector.forward_log_det_jacobian(tf.zeros([2, 3], tf.float64), 1))
            )
        grads = tape.gradient(loss, [z0, alpha_raw, beta_raw])
        for grad in grads:
            self.assertIsNotNone(grad)
            self.assertTrue(np.all(np.isfinite(grad.numpy())))

    def test_layer_variables_and_constraint(self):
        layer = flows.RadialLayer(event_size=4, dtype=tf.float64)
        self.assertLen(layer.trainable_variables, 3)
        _, alpha, s = layer().constrained_parameters()
        self.assertGreater(alpha.numpy(), 0.0)
        self.assertLessEqual(alpha.numpy(), 0.25)
        self.assertGreaterEqual(s.numpy(), 0.0)  # beta >= -alpha.
        self.assertLen(layer().trainable_variables, 3)


if __name__ == "__main__":
    tf.test.main()

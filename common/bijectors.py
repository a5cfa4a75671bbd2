"""Planar and radial flows (Rezende & Mohamed 2015) as TFP bijectors.

Symbols: B batch, D event size. Both bijectors take *unconstrained* parameter
tensors (variables of a `PlanarLayer`/`RadialLayer`, or per-example outputs of
an encoder, batched like `[B, D]`) and apply the invertibility constraints
themselves, so any real parameter value gives an invertible map.

Both have a numerically exact inverse, so they can score external data.
Documented tolerances (checked in tests/flows/test_bijectors.py):
- planar: the inverse reduces to a strictly increasing scalar equation along
  `w`, solved by safeguarded Newton with a fixed number of iterations
  (`PLANAR_INVERSE_ITERATIONS`), so it runs under `tf.function` and XLA.
  `|forward(inverse(y)) - y| <= tol * (1 + |y|_inf + |u_hat|_inf)` with
  tol = 1e-12 in float64 (for `1 + w^T u_hat` from 4e-18 to 1e3) and 1e-5 in
  float32 (`|w^T u_hat| <= 10`); `|inverse(forward(z)) - z|` is within the
  same bound divided by the slope `1 + (w^T u_hat) h'(w^T z + b)`, which is
  small only next to the edge `w^T u_hat -> -1` (the inverse is then
  ill-conditioned along `w`, whatever the solver).
- radial: closed form (a quadratic in r): `inverse(forward(z)) - z0` equals
  `z - z0` to 1e-13 relative in float64 (1e-5 in float32), down to
  `beta + alpha = 4e-18`. Next to that edge the flow contracts the ball of
  radius ~alpha around `z0` by ~r / alpha, so rounding of `y` itself (not the
  formula) limits the inverse there.
Gradients of the planar inverse come from the implicit function theorem (one
differentiable Newton step at the solution), not from the iterations.
"""

from __future__ import annotations

import math

import numpy as np
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

# Fixed iteration count of the planar inverse. Measured: round-off is reached
# within 40 iterations from `1 + w^T u_hat = 4e-18` (a near-triple root, where
# Newton is only linear until it reaches the scale sqrt(1 + w^T u_hat)) to
# `w^T u_hat = 1e3` (a wide bracket and flat tanh tails, where the safeguard
# bisects); 50 leaves a margin. The cost is ~10 elementwise ops on `[B]` per
# iteration.
PLANAR_INVERSE_ITERATIONS = 50


def _dtype_of(values, hint=tf.float32) -> tf.DType:
    """The dtype of the first tensor/variable/NumPy float array in `values`."""
    for value in values:
        if tf.is_tensor(value) or isinstance(value, tf.Variable):
            return value.dtype.base_dtype
    for value in values:
        if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
            return tf.as_dtype(value.dtype)
    return hint


def _as_parameter(value, dtype: tf.DType, name: str):
    """Keeps tensors and `tf.Variable`s as they are (variables stay references
    and are read at every call, so training updates are seen); converts the
    rest."""
    if tf.is_tensor(value) or isinstance(value, tf.Variable):
        if value.dtype.base_dtype != dtype:
            raise TypeError(f"`{name}` has dtype {value.dtype}, expected {dtype}.")
        return value
    return tf.convert_to_tensor(value, dtype=dtype, name=name)


def _sech_squared(x: tf.Tensor) -> tf.Tensor:
    """h'(x) for h = tanh, without the cancellation of 1 - tanh(x)^2."""
    return tf.math.reciprocal(tf.square(tf.cosh(x)))


class Planar(tfb.Bijector):
    """Planar flow `f(z) = z + u_hat h(w^T z + b)`, `h = tanh`.

    Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows":
    eq. (10) for `f`, eqs. (11)-(12) for
    `log|det df/dz| = log|1 + u_hat^T psi(z)|`, `psi(z) = h'(w^T z + b) w`.
    The map is invertible iff `w^T u_hat >= -1` (their appendix A.1); the
    unconstrained `u` is mapped to
    `u_hat = u + [m(w^T u) - w^T u] w / ||w||^2`, `m(a) = -1 + softplus(a)`,
    so `w^T u_hat = m(w^T u) > -1`.

    With `s = w^T z + b` and `c = w^T u_hat`, the log-determinant is computed as
    `log(tanh(s)^2 + (1 + c) sech(s)^2)` (two non-negative terms: no
    cancellation near the edge `c -> -1`). The inverse solves
    `s + c tanh(s) = w^T y + b` (strictly increasing in `s`; the root lies in
    `[w^T y + b - |c|, w^T y + b + |c|]`) by safeguarded Newton, then
    `z = y - u_hat tanh(s)`. See the module docstring for its tolerance.

    Example:
      ```python
      layer = flows.PlanarLayer(event_size=2)
      flow = layer()   # a Planar bijector reading the layer's variables
      q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(2)), flow)
      ```
    """

    def __init__(self, w, u, b, validate_args: bool = False, name: str = "planar"):
        """Creates the bijector.

        Args:
          w: `[..., D]` direction.
          u: `[..., D]` unconstrained `u` (mapped to `u_hat`, see above).
          b: `[...]` bias.
          validate_args: passed to `tfb.Bijector`.
          name: name of the bijector.
        """
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype = _dtype_of([w, u, b])
            self._w = _as_parameter(w, dtype, "w")
            self._u = _as_parameter(u, dtype, "u")
            self._b = _as_parameter(b, dtype, "b")
            super().__init__(
                forward_min_event_ndims=1,
                validate_args=validate_args,
                dtype=dtype,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        del dtype, num_classes
        return dict(
            w=tfp.util.ParameterProperties(event_ndims=1),
            u=tfp.util.ParameterProperties(event_ndims=1),
            b=tfp.util.ParameterProperties(event_ndims=0),
        )

    @property
    def w(self):
        return self._w

    @property
    def u(self):
        return self._u

    @property
    def b(self):
        return self._b

    def constrained_parameters(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Returns `(w, u_hat, 1 + w^T u_hat)`, shapes `[..., D]`, `[..., D]`,
        `[..., 1]`; the last is computed as `softplus(w^T u)` (exactly 1 when
        `w = 0`), accurate near the edge `w^T u_hat -> -1`."""
        w = tf.convert_to_tensor(self._w)
        u = tf.convert_to_tensor(self._u)
        wu = tf.reduce_sum(w * u, axis=-1, keepdims=True)
        w_sq = tf.reduce_sum(tf.square(w), axis=-1, keepdims=True)
        one_plus_c = tf.nn.softplus(wu)  # 1 + m(w^T u), App. A.1.
        u_hat = u + tf.math.divide_no_nan(one_plus_c - 1.0 - wu, w_sq) * w
        one_plus_c = tf.where(w_sq > 0, one_plus_c, tf.ones_like(one_plus_c))
        return w, u_hat, one_plus_c

    def _forward(self, x):
        w, u_hat, _ = self.constrained_parameters()
        s = tf.reduce_sum(w * x, axis=-1, keepdims=True) + self._b[..., tf.newaxis]
        return x + u_hat * tf.tanh(s)  # Eq. (10).

    def _forward_log_det_jacobian(self, x):
        w, _, one_plus_c = self.constrained_parameters()
        s = tf.reduce_sum(w * x, axis=-1) + self._b
        return self._log_slope(s, one_plus_c[..., 0])

    @staticmethod
    def _log_slope(s, one_plus_c):
        """log(1 + c h'(s)) = log(tanh(s)^2 + (1 + c) sech(s)^2), eq. (12)."""
        return tf.math.log(tf.square(tf.tanh(s)) + one_plus_c * _sech_squared(s))

    def _inverse(self, y):
        w, u_hat, one_plus_c = self.constrained_parameters()
        k = tf.reduce_sum(w * y, axis=-1) + self._b  # [...]: w^T y + b.
        s = self._solve(k, one_plus_c[..., 0])
        return y - u_hat * tf.tanh(s)[..., tf.newaxis]

    @staticmethod
    def _solve(k, one_plus_c):
        """Solves `s + c tanh(s) = k` for `s`, elementwise, given `1 + c > 0`."""
        shape = tf.shape(k + one_plus_c)
        k, one_plus_c = tf.broadcast_to(k, shape), tf.broadcast_to(one_plus_c, shape)
        k0, one_plus_c0 = tf.stop_gradient(k), tf.stop_gradient(one_plus_c)
        abs_c = tf.abs(one_plus_c0 - 1.0)

        def residual_and_slope(s, k, one_plus_c):
            t = tf.tanh(s)
            slope = tf.square(t) + one_plus_c * _sech_squared(s)  # 1 + c h'(s) > 0.
            return s + (one_plus_c - 1.0) * t - k, slope

        def body(s, lo, hi, last_step):
            g, dg = residual_and_slope(s, k0, one_plus_c0)
            lo = tf.where(g < 0, s, lo)
            hi = tf.where(g > 0, s, hi)
            step = g / dg
            newton = s - step
            mid = 0.5 * (lo + hi)
            # Safeguarded Newton ("rtsafe", Numerical Recipes sec. 9.4): take the
            # Newton point only if it stays in the bracket (non-strict bounds
            # keep a converged iterate) and the step at least halves; otherwise
            # bisect. This stops Newton cycling on the flat tails of tanh.
            # NaN/inf steps (dg = 0) fail the tests and bisect.
            use_newton = (newton >= lo) & (newton <= hi) & (2.0 * tf.abs(step) <= last_step)
            s_next = tf.where(use_newton, newton, mid)
            last_step = tf.abs(s_next - s)
            s = tf.where(g == 0, s, s_next)
            return s, lo, hi, last_step

        s, _, _, _ = tf.while_loop(
            lambda *_: True,
            body,
            (k0, k0 - abs_c, k0 + abs_c, 4.0 * abs_c + 1.0),
            maximum_iterations=PLANAR_INVERSE_ITERATIONS,
        )
        # One differentiable Newton step at the root: gives the implicit-function
        # gradients ds/dk = 1/g', ds/dc = -tanh(s)/g' (the iteration itself is
        # outside the tape), and a last refinement of the value.
        s = tf.stop_gradient(s)
        g, dg = residual_and_slope(s, k, one_plus_c)
        return s - tf.math.divide_no_nan(g, dg)  # dg = 0 only if 1 + c underflows.

    # No `_inverse_log_det_jacobian`: TFP then returns `-fldj(inverse(y))`,
    # reusing the cached inverse instead of solving twice.


class Radial(tfb.Bijector):
    """Radial flow `f(z) = z + beta h(alpha, r) (z - z0)`, `h = 1 / (alpha + r)`,
    `r = ||z - z0||`.

    Rezende & Mohamed (2015), eq. (14) for `f` and the determinant
    `det df/dz = [1 + beta h]^(D-1) [1 + beta h + beta h'(alpha, r) r]`.
    Invertibility needs `alpha > 0`, `beta >= -alpha` (their appendix A.2); the
    unconstrained parameters are mapped to `alpha = softplus(alpha_raw)` and
    `alpha + beta = softplus(beta_raw)` (so `beta = -alpha + softplus(beta_raw)`,
    as in the normalizing-flows package of Stimper et al.).

    With `s = alpha + beta >= 0` every factor is a ratio of non-negative terms
    (no cancellation as `beta -> -alpha`): `1 + beta h = (s + r) / (alpha + r)`
    and `1 + beta h + beta h' r = (r (2 alpha + r) + alpha s) / (alpha + r)^2`.
    Inverse in closed form: `r_y = ||y - z0|| = r (s + r) / (alpha + r)` gives
    `r^2 + (s - r_y) r - alpha r_y = 0`, whose non-negative root is computed
    without cancellation, then `z = z0 + (y - z0) (alpha + r) / (s + r)`.
    """

    def __init__(self, z0, alpha_raw, beta_raw, validate_args: bool = False, name: str = "radial"):
        """Creates the bijector.

        Args:
          z0: `[..., D]` centre.
          alpha_raw: `[...]` unconstrained; `alpha = softplus(alpha_raw)`.
          beta_raw: `[...]` unconstrained; `beta = -alpha + softplus(beta_raw)`.
          validate_args: passed to `tfb.Bijector`.
          name: name of the bijector.
        """
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype = _dtype_of([z0, alpha_raw, beta_raw])
            self._z0 = _as_parameter(z0, dtype, "z0")
            self._alpha_raw = _as_parameter(alpha_raw, dtype, "alpha_raw")
            self._beta_raw = _as_parameter(beta_raw, dtype, "beta_raw")
            super().__init__(
                forward_min_event_ndims=1,
                validate_args=validate_args,
                dtype=dtype,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        del dtype, num_classes
        return dict(
            z0=tfp.util.ParameterProperties(event_ndims=1),
            alpha_raw=tfp.util.ParameterProperties(event_ndims=0),
            beta_raw=tfp.util.ParameterProperties(event_ndims=0),
        )

    @property
    def z0(self):
        return self._z0

    def constrained_parameters(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Returns `(z0, alpha, alpha + beta)`, shapes `[..., D]`, `[...]`, `[...]`."""
        alpha = tf.nn.softplus(tf.convert_to_tensor(self._alpha_raw))
        s = tf.nn.softplus(tf.convert_to_tensor(self._beta_raw))
        return tf.convert_to_tensor(self._z0), alpha, s

    @staticmethod
    def _norm(v):
        """`||v||` over the last axis, with a zero (not NaN) gradient at 0."""
        sq = tf.reduce_sum(tf.square(v), axis=-1)
        positive = sq > 0
        return tf.where(positive, tf.sqrt(tf.where(positive, sq, tf.ones_like(sq))), 0.0)

    @staticmethod
    def _log_det(r, alpha, s, event_size):
        log_alpha_r = tf.math.log(alpha + r)
        return (event_size - 1.0) * (tf.math.log(s + r) - log_alpha_r) + (
            tf.math.log(r * (2.0 * alpha + r) + alpha * s) - 2.0 * log_alpha_r
        )

    def _event_size(self, x):
        size = x.shape[-1]
        if size is None:
            return tf.cast(tf.shape(x)[-1], x.dtype)
        return tf.constant(size, x.dtype)

    def _forward(self, x):
        z0, alpha, s = self.constrained_parameters()
        dz = x - z0
        r = self._norm(dz)
        return z0 + dz * ((s + r) / (alpha + r))[..., tf.newaxis]

    def _forward_log_det_jacobian(self, x):
        z0, alpha, s = self.constrained_parameters()
        return self._log_det(self._norm(x - z0), alpha, s, self._event_size(x))

    def _radius_from_output(self, r_y, alpha, s):
        """Non-negative root of `r^2 + (s - r_y) r - alpha r_y = 0`."""
        q = r_y - s
        root = tf.sqrt(tf.square(q) + 4.0 * alpha * r_y)
        q_neg = q < 0
        # Each branch avoids subtracting nearly equal numbers; the unused branch
        # gets a safe denominator so that its gradient is not NaN.
        denominator = tf.where(q_neg, root - q, tf.ones_like(q))
        return tf.where(q_neg, 2.0 * alpha * r_y / denominator, 0.5 * (q + root))

    def _inverse(self, y):
        z0, alpha, s = self.constrained_parameters()
        dy = y - z0
        r = self._radius_from_output(self._norm(dy), alpha, s)
        return z0 + dy * ((alpha + r) / (s + r))[..., tf.newaxis]

    def _inverse_log_det_jacobian(self, y):
        z0, alpha, s = self.constrained_parameters()
        r = self._radius_from_output(self._norm(y - z0), alpha, s)
        return -self._log_det(r, alpha, s, self._event_size(y))


class PlanarLayer(snt.Module):
    """Owns the variables of one planar flow; calling it returns the bijector.

    Initialization as in Stimper et al.'s normalizing-flows package:
    `u ~ U(-sqrt(2), sqrt(2))`, `w ~ U(-sqrt(2 / D), sqrt(2 / D))`, `b = 0`.
    """

    def __init__(self, event_size: int, dtype: tf.DType = tf.float32, name: str | None = None):
        """Creates the variables.

        Args:
          event_size: D.
          dtype: variable dtype.
          name: module name.

        Raises:
          ValueError: if `event_size < 1`.
        """
        super().__init__(name=name)
        if event_size < 1:
            raise ValueError(f"`event_size` must be positive, got {event_size}.")
        self.event_size = event_size
        lim_w = math.sqrt(2.0 / event_size)
        lim_u = math.sqrt(2.0)
        self.w = tf.Variable(tf.random.uniform([event_size], -lim_w, lim_w, dtype), name="w")
        self.u = tf.Variable(tf.random.uniform([event_size], -lim_u, lim_u, dtype), name="u")
        self.b = tf.Variable(tf.zeros([], dtype), name="b")

    def __call__(self) -> Planar:
        """Returns a `Planar` bijector that reads this layer's variables."""
        return Planar(self.w, self.u, self.b, name=self.name)


class RadialLayer(snt.Module):
    """Owns the variables of one radial flow; calling it returns the bijector.

    Initialization after Stimper et al.'s normalizing-flows package:
    `z0 ~ N(0, I)`, `alpha ~ U(0, 1/D)`, `beta_raw ~ U(-1 - 1/D, -1 + 1/D)`
    (`alpha` is drawn in the constrained space and mapped back through the
    inverse softplus; that package uses `alpha = |alpha_raw|` instead).
    """

    def __init__(self, event_size: int, dtype: tf.DType = tf.float32, name: str | None = None):
        """Creates the variables.

        Args:
          event_size: D.
          dtype: variable dtype.
          name: module name.

        Raises:
          ValueError: if `event_size < 1`.
        """
        super().__init__(name=name)
        if event_size < 1:
            raise ValueError(f"`event_size` must be positive, got {event_size}.")
        self.event_size = event_size
        lim = 1.0 / event_size
        alpha = tf.random.uniform([], 0.0, lim, dtype)
        alpha = tf.maximum(alpha, tf.constant(1e-3 * lim, dtype))  # Keep alpha > 0.
        self.z0 = tf.Variable(tf.random.normal([event_size], dtype=dtype), name="z0")
        self.alpha_raw = tf.Variable(tfp.math.softplus_inverse(alpha), name="alpha_raw")
        self.beta_raw = tf.Variable(
            tf.random.uniform([], -1.0 - lim, -1.0 + lim, dtype), name="beta_raw"
        )

    def __call__(self) -> Radial:
        """Returns a `Radial` bijector that reads this layer's variables."""
        return Radial(self.z0, self.alpha_raw, self.beta_raw, name=self.name)

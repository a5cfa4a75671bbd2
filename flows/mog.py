"""MADE MoG: an autoregressive density with mixture-of-Gaussians conditionals.

Symbols: B batch, D event size, C mixture components per conditional.

Papamakarios, Pavlakou & Murray (2017), sec. 4 and Tables 1-2, and their code ("MADE MoG",
C = 10); the MADE itself is Germain et al. (2015). One MADE pass gives, for every
dimension i, the logits, means and log-scales of a C-component mixture, so

    p(x) = prod_i p(x_i | x_<i),
    p(x_i | x_<i) = sum_c pi_ic N(x_i; mu_ic, sigma_ic^2),

with `pi_i = softmax(alpha_i(x_<i))`, `mu_i = mu_i(x_<i)` and
`sigma_i = exp(s_i(x_<i))`, "<" in the MADE's input order. The density is one
MADE pass; sampling is D sequential passes.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

from common.made import MADE

tfd = tfp.distributions

_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


class MoGParams(NamedTuple):
    """Parameters of the D mixture conditionals, each `[..., D, C]`."""

    logits: tf.Tensor  # unnormalized log mixture weights, log pi up to a constant
    loc: tf.Tensor  # component means mu
    log_scale: tf.Tensor  # log standard deviations s = log sigma


class MADEMoG(tfd.Distribution):
    """Autoregressive density whose conditionals are Gaussian mixtures (MADE MoG).

    Papamakarios et al. (2017), sec. 4 ("MADE MoG", C = 10 in all their
    experiments) on a MADE of Germain et al. (2015). The MADE has
    `num_params = 3 * C` outputs per dimension, laid out parameter-major
    (`flows.MADE`): outputs `[0, C)` are the mixture logits `alpha`,
    `[C, 2C)` the means `mu`, `[2C, 3C)` the log-scales `s`, with
    `sigma = exp(s)` (optionally soft-clipped: `s -> b tanh(s / b)`). The MAF
    code outputs log precisions `-2 s` instead: the same model family.

    `log_prob(x) = sum_i log sum_c softmax(alpha_i)_c N(x_i; mu_ic, sigma_ic^2)`
    is one MADE pass. It is computed in log space from `s` directly, not with
    the TFP mixture `conditional_distribution` (`Independent(MixtureSameFamily(
    Categorical, Normal), 1)`, equal wherever both are finite): `tfd.Normal`
    takes `sigma = exp(s)`, and one component whose `exp(s)` underflows to 0
    (far from the data, `s < -745` in float64) makes its log-density
    `-inf + inf = NaN`, which the mixture's logsumexp spreads to the whole
    log-density; here that component is just `-inf`. Sampling is the
    fixed-point iteration of `tfd.Autoregressive`: starting from zeros, draw
    the whole vector from `conditional_distribution(x)` with the *same* seed D
    times; after pass t every dimension of order <= t is exact, since its
    conditional depends only on dimensions of lower order, which were already
    final, and the noise is the same at every pass. Unlike
    `tfd.Autoregressive` (a Python loop for a static D, i.e. D MADE copies in a
    `tf.function` graph; for MNIST 784) the passes run in one `tf.while_loop`,
    and the MADE is an attribute, so its variables are tracked.

    Example:
      ```python
      made = flows.MADE(event_size=5, hidden_units=[64], num_params=3 * 10,
                        output_bias_stddev=1.0)
      density = flows.MADEMoG(made, num_components=10)
      loss = -tf.reduce_mean(density.log_prob(x))  # x: [B, 5]
      samples = density.sample(16, seed=(1, 2))  # [16, 5]
      ```
    """

    def __init__(
        self,
        made: MADE,
        num_components: int,
        log_scale_bound: float | None = None,
        validate_args: bool = False,
        name: str = "MADEMoG",
    ):
        """Wraps a MADE.

        Args:
          made: an unconditional `flows.MADE` with `num_params = 3 * num_components`
            (output biases from `N(0, 1)`, `output_bias_stddev=1.0`, as in the MAF
            code, break the symmetry between components).
          num_components: C >= 1.
          log_scale_bound: if set, log-scales are soft-clipped to
            `(-bound, bound)` with `bound * tanh(s / bound)`; `None` (the paper)
            leaves them unbounded.
          validate_args: TFP's flag (checks nothing extra here).
          name: distribution name.

        Raises:
          ValueError: if `num_components < 1`, the MADE has the wrong number of
            outputs or a context, or `log_scale_bound <= 0`.
        """
        parameters = dict(locals())
        if num_components < 1:
            raise ValueError(f"`num_components` must be positive, got {num_components}.")
        if made.num_params != 3 * num_components:
            raise ValueError(
                f"The MADE must have num_params = 3 * num_components = {3 * num_components} "
                f"(logits, means, log-scales), got {made.num_params}."
            )
        if made.conditional:
            raise ValueError("MADEMoG supports unconditional MADEs only.")
        if log_scale_bound is not None and log_scale_bound <= 0:
            raise ValueError(f"`log_scale_bound` must be positive, got {log_scale_bound}.")
        with tf.name_scope(name) as name:
            self._made = made
            self._num_components = num_components
            self._log_scale_bound = log_scale_bound
            super().__init__(
                dtype=made.weights[0].dtype,
                reparameterization_type=tfd.NOT_REPARAMETERIZED,
                validate_args=validate_args,
                allow_nan_stats=True,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}  # The only parameters are the MADE's variables.

    @property
    def made(self) -> MADE:
        return self._made

    @property
    def num_components(self) -> int:
        return self._num_components

    @property
    def event_size(self) -> int:
        return self._made.event_size

    def conditional_parameters(self, x: tf.Tensor) -> MoGParams:
        """One MADE pass: the parameters of every `p(x_i | x_<i)`.

        Args:
          x: `[..., D]`; entry i of the result depends only on the entries of `x`
            before i in the MADE's input order.

        Returns:
          `MoGParams` of `[..., D, C]` tensors.
        """
        c = self._num_components
        out = self._made(tf.convert_to_tensor(x, self.dtype))  # 3C tensors [..., D]
        logits = tf.stack(out[:c], axis=-1)  # [..., D, C]
        loc = tf.stack(out[c : 2 * c], axis=-1)
        log_scale = tf.stack(out[2 * c :], axis=-1)
        if self._log_scale_bound is not None:
            bound = self._log_scale_bound
            log_scale = bound * tf.tanh(log_scale / bound)
        return MoGParams(logits, loc, log_scale)

    def conditional_distribution(self, x: tf.Tensor) -> tfd.Independent:
        """The product of the conditionals given `x`: batch `[...]`, event `[D]`.

        Its `log_prob(x)` is `log p(x)`; its log_prob of another `x'` is
        `sum_i log p(x'_i | x_<i)`.
        """
        params = self.conditional_parameters(x)
        mixture = tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=params.logits),
            components_distribution=tfd.Normal(params.loc, tf.exp(params.log_scale)),
        )  # batch [..., D]
        return tfd.Independent(mixture, reinterpreted_batch_ndims=1)

    def conditional_log_probs(self, x: tf.Tensor) -> tf.Tensor:
        """`[..., D]`: `log p(x_i | x_<i)` for every i (one MADE pass)."""
        x = tf.convert_to_tensor(x, self.dtype)
        params = self.conditional_parameters(x)
        z = (x[..., None] - params.loc) * tf.exp(-params.log_scale)  # [..., D, C]
        log_normal = -0.5 * tf.square(z) - params.log_scale - _HALF_LOG_TWO_PI
        log_weights = tf.nn.log_softmax(params.logits, axis=-1)
        return tf.reduce_logsumexp(log_weights + log_normal, axis=-1)

    def _log_prob(self, x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(self.conditional_log_probs(x), axis=-1)

    def _sample_n(self, n, seed=None) -> tf.Tensor:
        seed = tfp.random.sanitize_seed(seed, salt="MADEMoG")
        d = self.event_size

        def body(i, x):  # The same seed every pass: a fixed-point iteration.
            return i + 1, self.conditional_distribution(x).sample(seed=seed)

        x0 = tf.zeros([n, d], self.dtype)  # [n, D]
        _, x = tf.while_loop(lambda i, _: i < d, body, (tf.constant(0), x0))
        return tf.ensure_shape(x, [None, d])

    def _event_shape(self):
        return tf.TensorShape([self.event_size])

    def _event_shape_tensor(self):
        return tf.constant([self.event_size], tf.int32)

    def _batch_shape(self):
        return tf.TensorShape([])

    def _batch_shape_tensor(self):
        return tf.constant([], tf.int32)

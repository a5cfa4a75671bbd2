"""Distribution over AIR's number of steps, and the truncated geometric prior.

Attend, Infer, Repeat (Eslami et al. 2016, Sec. 2.1 and App. A) infers the
number of objects `n` as a chain of presence variables: at step `t = 1..N` a
Bernoulli `b_t ~ Bernoulli(p_t)` is drawn, `z_pres_t = prod_{i<=t} b_i` (the
first 0 switches off every later step) and `n = sum_t z_pres_t`. The induced
distribution over `n in {0, ..., N}` is

    q(0) = 1 - p_1,
    q(k) = (prod_{i<=k} p_i) (1 - p_{k+1}),   0 < k < N,
    q(N) = prod_{i<=N} p_i,

(KAIR `prior.py`). With a constant `p_t = p` this is the truncated geometric
distribution `q(k) = p^k (1 - p)` for `k < N` and `q(N) = p^N`.

Numerics: everything is computed in float64 and in log space,
`log q(k) = sum_{i<=k} log p_i + log(1 - p_{k+1})` (a cumulative sum instead of
the reference code's custom cumulative product). `log p` and `log(1 - p)` are
"safe": they are `-inf` at `p = 0` (resp. `p = 1`) but have zero instead of
infinite gradients there, so no NaN gradient reaches the parameters when some
`p_t` is exactly 0 or 1. Logits use `log_sigmoid`, which is finite everywhere.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

_NEG_INF = -np.inf


def _safe_log(x: tf.Tensor, is_positive: tf.Tensor) -> tf.Tensor:
    """`log(x)` where `is_positive`, else `-inf`; the gradient there is 0, not NaN/inf."""
    safe_x = tf.where(is_positive, x, tf.ones_like(x))
    return tf.where(is_positive, tf.math.log(safe_x), tf.constant(_NEG_INF, x.dtype))


def _mask_log(log_x: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """`log_x` where `keep`, else 0, so that `0 * log 0` terms vanish without NaN gradients."""
    return tf.where(keep, log_x, tf.zeros_like(log_x))


class NumStepsDistribution(tfd.Distribution):
    """AIR's distribution over the number of steps `n in {0, ..., N}`.

    Parametrized by per-step presence probabilities `p_t = P(b_t = 1)` (or
    their logits) of shape `[..., N]`; the leading axes are the batch shape
    and the event is scalar. See the module docstring for the table `q(n)`
    (Eslami et al. 2016, Sec. 2.1; reference code `prior.py`).

    `log_prob(n)` is `-inf` outside the support and where `q(n) = 0` (with
    finite gradients). `probs_table()` gives the whole `[..., N + 1]` table,
    `presence_probs()` gives `P(n >= t) = P(z_pres_t = 1)`, the weights of the
    analytic per-step KL terms (KAIR `air_model.py`). `sample()` draws the
    Bernoulli chain and counts the leading ones; it is not reparameterized
    (AIR uses score-function gradients for `n`). The KL divergence between two
    instances with the same `N` is registered with `tfd.kl_divergence`.

    Example:

    ```python
    q = NumStepsDistribution(step_logits=logits)  # logits: [B, 3]
    prior = truncated_geometric_prior(1e-5, num_steps=3)
    n = q.sample(seed=seed)  # [B] int32
    kl_n = tfd.kl_divergence(q, prior)  # [B]
    ```
    """

    def __init__(
        self,
        step_probs=None,
        step_logits=None,
        dtype: tf.DType = tf.int32,
        validate_args: bool = False,
        allow_nan_stats: bool = True,
        name: str = "NumStepsDistribution",
    ):
        """Constructs the distribution from exactly one of `step_probs`, `step_logits`.

        Args:
          step_probs: `[..., N]` presence probabilities `p_t` in `[0, 1]`
            (exact 0 and 1 are allowed). `N` must be known statically.
          step_logits: `[..., N]` logits of `p_t`.
          dtype: dtype of samples (an integer or floating dtype).
          validate_args: check `0 <= p_t <= 1` and that values passed to
            `log_prob` are integers in `[0, N]`.
          allow_nan_stats: kept for the TFP interface; no statistic is NaN.
          name: name scope.

        Raises:
          ValueError: if not exactly one of `step_probs` and `step_logits` is
            given, or `N` is not a static positive integer.
        """
        parameters = dict(locals())
        if (step_probs is None) == (step_logits is None):
            raise ValueError("Pass exactly one of `step_probs` and `step_logits`.")
        with tf.name_scope(name) as name:
            param = step_probs if step_logits is None else step_logits
            param = tf.convert_to_tensor(param, dtype_hint=tf.float32)
            if not param.dtype.is_floating:
                raise ValueError(f"Step parameters must be floating point; got {param.dtype}.")
            if param.shape.rank is None or param.shape.rank < 1 or not param.shape[-1]:
                raise ValueError(
                    "Step parameters must have a static, positive last axis N; "
                    f"got shape {param.shape}."
                )
            self._step_probs = param if step_logits is None else None
            self._step_logits = param if step_probs is None else None
            self._num_steps = int(param.shape[-1])
            super().__init__(
                dtype=dtype,
                reparameterization_type=tfd.NOT_REPARAMETERIZED,
                validate_args=validate_args,
                allow_nan_stats=allow_nan_stats,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(
            step_logits=tfp.util.ParameterProperties(event_ndims=1),
            step_probs=tfp.util.ParameterProperties(
                event_ndims=1,
                default_constraining_bijector_fn=tfp.bijectors.Sigmoid,
                is_preferred=False,
            ),
        )

    @property
    def step_probs(self) -> tf.Tensor | None:
        """The `step_probs` argument (None when built from logits)."""
        return self._step_probs

    @property
    def step_logits(self) -> tf.Tensor | None:
        """The `step_logits` argument (None when built from probabilities)."""
        return self._step_logits

    @property
    def num_steps(self) -> int:
        """`N`, the largest number of steps."""
        return self._num_steps

    @property
    def _param(self) -> tf.Tensor:
        return self._step_probs if self._step_logits is None else self._step_logits

    @property
    def _float_dtype(self) -> tf.DType:
        return self._param.dtype

    # -- Internals, all float64. --------------------------------------------

    def _log_step_probs64(self) -> tuple[tf.Tensor, tf.Tensor]:
        """`(log p_t, log(1 - p_t))`, each `[..., N]` float64 (see module docstring)."""
        if self._step_logits is not None:
            logits = tf.cast(self._step_logits, tf.float64)
            return tf.math.log_sigmoid(logits), tf.math.log_sigmoid(-logits)
        probs = tf.cast(self._step_probs, tf.float64)
        log_p = _safe_log(probs, probs > 0)
        log_1mp = _safe_log(1.0 - probs, probs < 1)
        return log_p, log_1mp

    def _log_table64(self) -> tf.Tensor:
        """`log q(k)` for `k = 0..N`, `[..., N + 1]` float64."""
        log_p, log_1mp = self._log_step_probs64()
        zeros = tf.zeros_like(log_p[..., :1])
        log_survival = tf.concat([zeros, tf.cumsum(log_p, axis=-1)], axis=-1)  # sum_{i<=k} log p_i
        log_stop = tf.concat([log_1mp, zeros], axis=-1)  # log(1 - p_{k+1}); 0 at k = N
        return log_survival + log_stop

    def _cast_out(self, x: tf.Tensor) -> tf.Tensor:
        return tf.cast(x, self._float_dtype)

    # -- Public extras. ------------------------------------------------------

    def log_probs_table(self) -> tf.Tensor:
        """`log q(n)` for every `n = 0..N`: `[..., N + 1]`, the parameters' dtype."""
        return self._cast_out(self._log_table64())

    def probs_table(self) -> tf.Tensor:
        """`q(n)` for every `n = 0..N`: `[..., N + 1]`, sums to 1 over the last axis."""
        return self._cast_out(tf.exp(self._log_table64()))

    def presence_probs(self) -> tf.Tensor:
        """`P(n >= t) = P(z_pres_t = 1) = prod_{i<=t} p_i` for `t = 1..N`: `[..., N]`."""
        log_p, _ = self._log_step_probs64()
        return self._cast_out(tf.exp(tf.cumsum(log_p, axis=-1)))

    # -- tfd.Distribution interface. ------------------------------------------

    def _batch_shape(self):
        return self._param.shape[:-1]

    def _batch_shape_tensor(self):
        return tf.shape(self._param)[:-1]

    def _event_shape(self):
        return tf.TensorShape([])

    def _event_shape_tensor(self):
        return tf.constant([], dtype=tf.int32)

    def _log_prob(self, n):
        log_table = self._log_table64()  # [..., N + 1]
        n = tf.cast(n, tf.float64)[..., None]  # [..., 1]
        support = tf.range(self._num_steps + 1, dtype=tf.float64)
        hit = tf.equal(n, support)  # [..., N + 1], broadcast over sample axes
        # `where` (not a one-hot product) so that `-inf` entries of other n
        # leave neither NaN values nor NaN gradients.
        log_prob = tf.reduce_sum(tf.where(hit, log_table, tf.zeros_like(log_table)), axis=-1)
        in_support = tf.reduce_any(hit, axis=-1)
        return self._cast_out(tf.where(in_support, log_prob, _NEG_INF))

    def _sample_n(self, n, seed=None):
        seed = tfp.random.sanitize_seed(seed, salt="NumStepsDistribution")
        shape = tf.concat([[n], tf.shape(self._param)], axis=0)  # [n, ..., N]
        uniform = tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float64)
        if self._step_logits is not None:
            probs = tf.sigmoid(tf.cast(self._step_logits, tf.float64))
        else:
            probs = tf.cast(self._step_probs, tf.float64)
        draws = tf.cast(uniform < probs, tf.int32)  # b_t ~ Bernoulli(p_t)
        z_pres = tf.math.cumprod(draws, axis=-1)  # prod_{i<=t} b_i
        return tf.cast(tf.reduce_sum(z_pres, axis=-1), self.dtype)

    def _mean(self):
        # E[n] = sum_t P(n >= t).
        return tf.reduce_sum(self.presence_probs(), axis=-1)

    def _entropy(self):
        log_table = self._log_table64()
        positive = log_table > _NEG_INF
        plogp = tf.exp(log_table) * _mask_log(log_table, positive)
        return self._cast_out(0.0 - tf.reduce_sum(plogp, axis=-1))  # 0.0 - x: no -0.0

    def _mode(self):
        return tf.cast(tf.argmax(self._log_table64(), axis=-1), self.dtype)

    def _default_event_space_bijector(self):
        return None

    def _parameter_control_dependencies(self, is_init):
        if not self.validate_args or self._step_probs is None:
            return []
        probs = self._step_probs
        return [
            tf.debugging.assert_non_negative(probs, message="`step_probs` must be >= 0."),
            tf.debugging.assert_less_equal(
                probs, tf.ones([], probs.dtype), message="`step_probs` must be <= 1."
            ),
        ]

    def _sample_control_dependencies(self, x):
        if not self.validate_args:
            return []
        checks = [
            tf.debugging.assert_non_negative(x, message="`n` must be >= 0."),
            tf.debugging.assert_less_equal(
                x, tf.cast(self._num_steps, x.dtype), message="`n` must be <= N."
            ),
        ]
        if x.dtype.is_floating:
            checks.append(tf.debugging.assert_equal(x, tf.round(x), message="`n` must be integer."))
        return checks


def truncated_geometric_prior(
    step_prob, num_steps: int, validate_args: bool = False, name: str = "TruncatedGeometric"
) -> NumStepsDistribution:
    """Normalized truncated geometric prior over `n in {0, ..., N}`.

    `p(k) = s^k (1 - s)` for `k < N` and `p(N) = s^N`: a `NumStepsDistribution`
    whose every step has presence probability `s`. NB: the AIR reference code
    uses the *unnormalized* `(1 - s) s^k` for all `k <= N` (KAIR `prior.py`);
    the two differ only at `k = N` and by normalization.

    Args:
      step_prob: the success probability `s`, a scalar or a `[...]` batch
        (e.g. an annealed schedule value); exact 0 and 1 are allowed.
      num_steps: `N`.
      validate_args: passed to `NumStepsDistribution`.
      name: name scope.

    Returns:
      A `NumStepsDistribution` with batch shape `step_prob.shape`.

    Raises:
      ValueError: if `num_steps < 1`.
    """
    if num_steps < 1:
        raise ValueError(f"`num_steps` must be >= 1; got {num_steps}.")
    step_prob = tf.convert_to_tensor(step_prob, dtype_hint=tf.float32)
    step_probs = step_prob[..., None] * tf.ones([num_steps], step_prob.dtype)
    return NumStepsDistribution(step_probs=step_probs, validate_args=validate_args, name=name)


@tfd.RegisterKL(NumStepsDistribution, NumStepsDistribution)
def _kl_num_steps(q: NumStepsDistribution, p: NumStepsDistribution, name=None) -> tf.Tensor:
    """`KL(q || p) = sum_n q(n) (log q(n) - log p(n))`, analytic, in float64.

    Terms with `q(n) = 0` are zero (with zero gradients); the KL is `+inf`
    when `q` puts mass where `p` has none.
    """
    if q.num_steps != p.num_steps:
        raise ValueError(
            f"KL between NumStepsDistributions needs equal N; got {q.num_steps} and {p.num_steps}."
        )
    with tf.name_scope(name or "kl_num_steps"):
        log_q = q._log_table64()
        log_p = p._log_table64()
        positive = log_q > _NEG_INF
        terms = tf.exp(log_q) * (_mask_log(log_q, positive) - _mask_log(log_p, positive))
        return tf.cast(tf.reduce_sum(terms, axis=-1), q._float_dtype)

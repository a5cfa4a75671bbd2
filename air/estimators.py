"""Score-function gradient estimators for AIR's discrete number of steps.

AIR (Eslami et al. 2016, sec. 2.2 and App. B) reparameterizes the continuous
latents (`z_where`, `z_what`) but not the number of steps `n`; its gradient
comes from the score function (likelihood-ratio, REINFORCE) estimator

    grad E_q[c(n)] = E_q[(c(n) - b) grad log q(n)],

unbiased for any baseline `b` that does not depend on `n` (it may depend on
the image and on every continuous latent). Every function here maps learning
signals (costs) and log-probabilities to *surrogate losses*: tensors whose
value is not meaningful but whose autodiff gradient is the estimator. All
losses are *minimized*; costs are negative rewards (e.g. the reconstruction
NLL of the sampled `n`).

- `score_function_surrogate`, `baseline_loss`: REINFORCE with a learned
  baseline (Williams 1992; Mnih & Gregor 2014, "Neural Variational Inference
  and Learning in Belief Networks", ICML, sec. 3.1-3.2).
- `nvil_normalize`, `nvil_moments`, `NVILNormalizer`: NVIL's variance
  reduction (Mnih & Gregor 2014, sec. 3.2 and Alg. 1): centre the signal with a
  running mean `c` and (optionally) divide by `max(1, sqrt(v))`, `v` its
  running variance (see `NVILNormalizer` for why AIR leaves the division off).
- `iwae_bound`, `leave_one_out_bounds`, `vimco_signals`, `vimco_loss`: VIMCO
  (Mnih & Rezende 2016, "Variational Inference for Monte Carlo Objectives",
  ICML, eqs. 3, 8-10), the K-particle estimator of the importance-weighted
  bound whose per-particle baselines are leave-one-out bounds.

Symbols: B batch, K particles.
"""

from __future__ import annotations

import sonnet as snt
import tensorflow as tf

from common.bounds import iwae_bound, log_mean_exp  # noqa: F401  (iwae_bound: part of this API)

# NVIL's running statistics start at mean 0 and variance 1 (Mnih & Gregor 2014, Alg. 1).
NVIL_INITIAL_MEAN = 0.0
NVIL_INITIAL_VARIANCE = 1.0


def score_function_surrogate(
    log_prob: tf.Tensor, cost: tf.Tensor, baseline: tf.Tensor | float = 0.0
) -> tf.Tensor:
    """REINFORCE surrogate `stop_gradient(cost - baseline) * log_prob`, to be minimized.

    Its gradient is `(cost - baseline) * grad log q(n)`, an unbiased estimate of
    `grad E_q[cost]` (for the part of `cost` that depends on the parameters only
    through the distribution of `n`) whenever `baseline` does not depend on `n`.

    Args:
      log_prob: `[...]` `log q(n)` of the sampled `n`, differentiable.
      cost: `[...]` learning signal (e.g. reconstruction NLL); gradients are
        stopped.
      baseline: `[...]` or scalar; gradients are stopped.

    Returns:
      `[...]` surrogate loss.
    """
    signal = tf.stop_gradient(tf.convert_to_tensor(cost) - baseline)
    return signal * log_prob


def baseline_loss(target: tf.Tensor, baseline: tf.Tensor) -> tf.Tensor:
    """`0.5 (stop_gradient(target) - baseline)^2`, the regression that trains a
    neural baseline towards the expected cost (Mnih & Gregor 2014, sec. 3.2).

    Args:
      target: `[...]` the cost the baseline should predict (gradients stopped).
      baseline: `[...]` the baseline's prediction.

    Returns:
      `[...]` per-example loss.
    """
    return 0.5 * tf.square(tf.stop_gradient(target) - baseline)


def nvil_normalize(signal: tf.Tensor, mean: tf.Tensor, variance: tf.Tensor) -> tf.Tensor:
    """NVIL's normalized signal `(signal - mean) / max(1, sqrt(variance))`.

    `mean` acts as an input-independent baseline (unbiased); dividing by a
    constant scales the score-function gradient by `1 / max(1, sqrt(variance))`,
    an adaptive step size for that term (Mnih & Gregor 2014, sec. 3.2).

    Args:
      signal: `[...]` centred learning signal `cost - b(x)`.
      mean, variance: running statistics of `signal` (scalars).

    Returns:
      `[...]`, gradients stopped.
    """
    scale = tf.maximum(1.0, tf.sqrt(variance))
    return tf.stop_gradient((signal - mean) / scale)


def nvil_moments(
    signal: tf.Tensor, mean: tf.Tensor, variance: tf.Tensor, rate
) -> tuple[tf.Tensor, tf.Tensor]:
    """Moving averages of the batch mean and variance of `signal`.

    `mean' = mean + rate (E_batch[signal] - mean)`, likewise `variance` with
    the batch variance. `rate = 1 - decay` is Mnih & Gregor's EMA (Alg. 1);
    `NVILNormalizer` uses the zero-debiased `(1 - decay) / (1 - decay^t)`.

    Returns:
      `(mean', variance')`.
    """
    signal = tf.stop_gradient(signal)
    batch_mean = tf.reduce_mean(signal)
    batch_var = tf.reduce_mean(tf.square(signal - batch_mean))
    return mean + rate * (batch_mean - mean), variance + rate * (batch_var - variance)


class NVILNormalizer(snt.Module):
    """Running mean/variance of a learning signal; NVIL's centring and normalization.

    `normalizer(signal)` returns `signal - c`, divided by `max(1, sqrt(v))`
    when `normalize_variance` (`nvil_normalize`), with the statistics from
    *before* this batch (so they never depend on the sample they act on and
    the centring stays an unbiased baseline); then it updates `c` and `v` with
    `nvil_moments` when `update` is True. The averages are zero-debiased
    (rate `(1 - decay) / (1 - decay^t)` at update t, as Adam's moments): the
    first batch sets them exactly, whereas Mnih & Gregor's plain EMA from
    `c = 0` lags the cost by hundreds of nats for ~1/(1 - decay) steps.

    Centring alone is an input-independent baseline that adapts within
    ~1/(1 - decay) steps, long before a neural baseline's output bias has
    moved to the scale of the cost (hundreds of nats for AIR's summed
    Gaussian likelihood). Variance normalization rescales the score-function
    term only: in NVIL every inference gradient is a score-function gradient,
    so it is a step-size adaptation; in AIR the same presence parameters also
    get exact gradients from the analytic KL terms, and dividing only the
    reconstruction's score term by `sqrt(v)` (~100) lets the KL terms win and
    switches all steps off. Hence `normalize_variance=False` is AIR's default.
    """

    def __init__(
        self, decay: float = 0.99, normalize_variance: bool = True, name: str | None = None
    ):
        """Args:
          decay: EMA decay in [0, 1) (KAIR `decay_rate`).
          normalize_variance: divide by `max(1, sqrt(v))` after centring.

        Raises:
          ValueError: if `decay` is outside [0, 1).
        """
        super().__init__(name=name)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"`decay` must be in [0, 1); got {decay}.")
        self.decay = decay
        self.normalize_variance = normalize_variance
        # MEAN aggregation: under a multi-replica strategy each replica proposes
        # its own update and the variable keeps their average.
        self.mean = tf.Variable(
            NVIL_INITIAL_MEAN,
            trainable=False,
            name="mean",
            aggregation=tf.VariableAggregation.MEAN,
        )
        self.variance = tf.Variable(
            NVIL_INITIAL_VARIANCE,
            trainable=False,
            name="variance",
            aggregation=tf.VariableAggregation.MEAN,
        )
        # 1 - decay^t after t updates: the debiasing weight.
        self.weight = tf.Variable(
            0.0, trainable=False, name="weight", aggregation=tf.VariableAggregation.MEAN
        )

    def __call__(self, signal: tf.Tensor, update: bool = True) -> tf.Tensor:
        """Args:
          signal: `[...]` float32 `cost - b(x)`.
          update: whether to update the running statistics with this batch.

        Returns:
          `[...]` the centred (and normalized) signal, gradients stopped.
        """
        if self.normalize_variance:
            out = nvil_normalize(signal, self.mean, self.variance)
        else:
            out = tf.stop_gradient(signal - self.mean)
        if update:
            weight = self.decay * self.weight + (1.0 - self.decay)
            mean, variance = nvil_moments(
                signal, self.mean, self.variance, (1.0 - self.decay) / weight
            )
            with tf.control_dependencies([out]):
                self.mean.assign(mean)
                self.variance.assign(variance)
                self.weight.assign(weight)
        return out


def _num_particles(log_w: tf.Tensor) -> int:
    k = log_w.shape[0]
    if k is None:
        raise ValueError("The particle axis K of `log_w` must be static.")
    return int(k)


def leave_one_out_bounds(log_w: tf.Tensor) -> tf.Tensor:
    """VIMCO's baselines `L_{-j}`: the bound with `log w_j` replaced by the mean
    of the other log-weights (the log of their geometric mean; Mnih & Rezende
    2016, eq. 10).

    Args:
      log_w: `[K, B]`, K >= 2.

    Returns:
      `[K, B]`; row j does not depend on particle j.

    Raises:
      ValueError: if K < 2.
    """
    log_w = tf.convert_to_tensor(log_w)
    k = _num_particles(log_w)
    if k < 2:
        raise ValueError(f"VIMCO needs K >= 2 particles; got K = {k}.")
    others_mean = (tf.reduce_sum(log_w, axis=0, keepdims=True) - log_w) / (k - 1)  # [K, B]
    eye = tf.eye(k, dtype=log_w.dtype)[:, :, None]  # [K(j), K(k), 1]
    # [j, k, B]: log_w[k] for k != j, the mean of the others at k == j.
    replaced = (1.0 - eye) * log_w[None] + eye * others_mean[:, None]
    return log_mean_exp(replaced, axis=1)


def vimco_signals(log_w: tf.Tensor) -> tf.Tensor:
    """Per-particle learning signals `L - L_{-j}` (Mnih & Rezende 2016, eq. 8),
    gradients stopped; rewards (higher is better).

    Args:
      log_w: `[K, B]`, K >= 2.

    Returns:
      `[K, B]`.
    """
    log_w = tf.stop_gradient(tf.convert_to_tensor(log_w))
    return iwae_bound(log_w)[None] - leave_one_out_bounds(log_w)


def vimco_loss(log_w: tf.Tensor, log_q: tf.Tensor) -> tf.Tensor:
    """VIMCO surrogate loss for the importance-weighted bound (Mnih & Rezende 2016, eq. 9).

    `-(L + sum_j stop_gradient(L - L_{-j}) log q(h_j))` with `L = iwae_bound(log_w)`.
    Autodiff through `L` gives `sum_j w~_j grad log w_j` (reparameterized
    paths and the explicit `-log q` inside `log w`), the second term the
    score-function part with leave-one-out baselines; together an unbiased
    estimate of `-grad E[L]`.

    Args:
      log_w: `[K, B]` log importance weights, differentiable.
      log_q: `[K, B]` log-probabilities of the non-reparameterized latents of
        each particle, differentiable.

    Returns:
      `[B]` surrogate loss; its value is `-L`.
    """
    bound = iwae_bound(log_w)
    signals = vimco_signals(log_w)
    score = tf.reduce_sum(signals * log_q, axis=0)
    return -(bound + score - tf.stop_gradient(score))

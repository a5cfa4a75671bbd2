"""Variational bounds as pure functions of log importance weights.

Every estimator takes the log importance weights

    log w_k = log p(x, z_k) - log q(z_k | x),   z_k ~ q(z | x),  k = 1..K,

as a `[K, B]` tensor (K importance samples, B batch) and returns a `[B]`
tensor in nats (higher is better). All reductions over samples go through
`tf.reduce_logsumexp`, so log-weights of any magnitude (e.g. -1e4) are safe.

Symbols: B batch, K importance samples, M groups of samples.

References:
  [Burda] Burda, Grosse & Salakhutdinov (2016). Importance Weighted
    Autoencoders. ICLR. arXiv:1509.00519.
  [Rainforth] Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh (2018).
    Tighter Variational Bounds are Not Necessarily Better. ICML.
    arXiv:1802.04537.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import tensorflow as tf

from common.bounds import iwae_bound, log_mean_exp  # noqa: F401  (iwae_bound: part of this API)

BOUNDS = ("elbo", "iwae", "miwae", "ciwae")
ESTIMATORS = BOUNDS + ("piwae",)


class Objectives(NamedTuple):
    """Per-example training objectives, each `[B]` nats, to be *maximized*.

    Attributes:
      generative: objective whose gradient trains the generative parameters
        (decoders, prior) theta.
      inference: objective whose gradient trains the inference parameters
        (encoders) phi.
    """

    generative: tf.Tensor
    inference: tf.Tensor


def _num_samples(log_w: tf.Tensor) -> tf.Tensor | int:
    """K: static when known, else dynamic."""
    k = log_w.shape[0]
    return k if k is not None else tf.shape(log_w)[0]


def elbo(log_w: tf.Tensor) -> tf.Tensor:
    """Monte-Carlo ELBO, `(1/K) sum_k log w_k` ([Burda] sec. 2).

    With K > 1 this is Burda's "VAE with k samples": the ELBO averaged over K
    samples (its gradient is the mean of the K single-sample gradients).

    Args:
      log_w: `[K, B]` log importance weights.

    Returns:
      `[B]` ELBO estimate in nats.
    """
    log_w = tf.convert_to_tensor(log_w)
    return tf.reduce_mean(log_w, axis=0)


def miwae_bound(log_w: tf.Tensor, num_groups: int) -> tf.Tensor:
    """MIWAE(M, K) = (1/M) sum_m log (1/K) sum_k w_{m,k} ([Rainforth] sec. 4).

    The `M*K` samples are laid out group-major: row `m*K + k` of `log_w` is
    sample k of group m. MIWAE(1, K) = IWAE_K and MIWAE(M, 1) = ELBO over M
    samples.

    Args:
      log_w: `[M*K, B]` log importance weights, group-major.
      num_groups: M, a positive int dividing the number of rows of `log_w`.

    Returns:
      `[B]` MIWAE bound in nats.

    Raises:
      ValueError: if `num_groups` is not a positive int, or does not divide
        the (static) number of samples.
    """
    log_w = tf.convert_to_tensor(log_w)
    if not isinstance(num_groups, numbers.Integral) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive int, got {num_groups!r}.")
    total = log_w.shape[0]
    if total is not None and total % num_groups:
        raise ValueError(f"num_groups={num_groups} does not divide the {total} samples of log_w.")
    # Row-major reshape: row m*K + k -> [m, k]. Normalizing over the wrong
    # axis here (PYTHAE's M/K swap) is only correct when M == K.
    grouped = tf.reshape(log_w, [num_groups, -1, tf.shape(log_w)[-1]])  # [M, K, B]
    per_group = log_mean_exp(grouped, axis=1)  # [M, B]
    return tf.reduce_mean(per_group, axis=0)


def ciwae_bound(log_w: tf.Tensor, beta: float | tf.Tensor) -> tf.Tensor:
    """CIWAE(beta) = beta * ELBO + (1 - beta) * IWAE_K ([Rainforth] sec. 4).

    Both terms use the same K samples; CIWAE(1) = ELBO, CIWAE(0) = IWAE_K.

    Args:
      log_w: `[K, B]` log importance weights.
      beta: mixing weight in [0, 1] (Python number or scalar tensor).

    Returns:
      `[B]` CIWAE bound in nats.

    Raises:
      ValueError: if `beta` is a Python number outside [0, 1].
    """
    log_w = tf.convert_to_tensor(log_w)
    if isinstance(beta, numbers.Real) and not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta!r}.")
    beta = tf.cast(beta, log_w.dtype)
    return beta * elbo(log_w) + (1.0 - beta) * iwae_bound(log_w)


def piwae_objectives(log_w: tf.Tensor, num_groups: int) -> Objectives:
    """PIWAE(M, K) objectives ([Rainforth] sec. 4).

    The generative parameters theta are trained on IWAE_{M*K} (all samples in
    one importance-weighted bound, which gives theta the highest gradient SNR)
    and the inference parameters phi on MIWAE(M, K) of the *same* samples
    (whose phi-gradient SNR does not vanish as K grows).

    Args:
      log_w: `[M*K, B]` log importance weights, group-major (see
        `miwae_bound`).
      num_groups: M.

    Returns:
      `Objectives(generative=IWAE_{M*K} [B], inference=MIWAE(M, K) [B])`.

    Raises:
      ValueError: as `miwae_bound`.
    """
    return Objectives(generative=iwae_bound(log_w), inference=miwae_bound(log_w, num_groups))


_BOUND_PARAMS = {"elbo": (), "iwae": (), "miwae": ("num_groups",), "ciwae": ("beta",)}


def bound(name: str, log_w: tf.Tensor, **params) -> tf.Tensor:
    """The bound called `name`, for configs.

    Args:
      name: one of `BOUNDS`: 'elbo', 'iwae', 'miwae' (needs `num_groups`),
        'ciwae' (needs `beta`).
      log_w: `[K, B]` log importance weights.
      **params: exactly the parameters the bound needs.

    Returns:
      `[B]` bound in nats.

    Raises:
      ValueError: for an unknown name, or missing or unexpected parameters.
    """
    if name not in _BOUND_PARAMS:
        raise ValueError(f"Unknown bound {name!r}; expected one of {BOUNDS}.")
    expected = set(_BOUND_PARAMS[name])
    if set(params) != expected:
        raise ValueError(
            f"Bound {name!r} takes parameters {sorted(expected)}, got {sorted(params)}."
        )
    fn = {"elbo": elbo, "iwae": iwae_bound, "miwae": miwae_bound, "ciwae": ciwae_bound}
    return fn[name](log_w, **params)


def training_objectives(
    estimator: str,
    log_w: tf.Tensor,
    num_groups: int = 1,
    beta: float | None = None,
) -> Objectives:
    """Generative and inference objectives of a training estimator.

    For 'elbo', 'iwae', 'miwae' and 'ciwae' both fields are the same bound
    (one objective trains all parameters); for 'piwae' they are the PIWAE pair.
    The training step maximizes `generative` w.r.t. the decoder variables and
    `inference` w.r.t. the encoder variables.

    Args:
      estimator: one of `ESTIMATORS`.
      log_w: `[K_total, B]` log importance weights (group-major for 'miwae'
        and 'piwae', `K_total = M*K`).
      num_groups: M for 'miwae' and 'piwae'; must be 1 for the others.
      beta: CIWAE mixing weight, required for 'ciwae' and None for the others.

    Returns:
      `Objectives`, each field `[B]` nats.

    Raises:
      ValueError: for an unknown estimator, or a parameter that the estimator
        does not use set to a non-default value (so a config cannot silently
        ask for something that is ignored).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"Unknown estimator {estimator!r}; expected one of {ESTIMATORS}.")
    if estimator not in ("miwae", "piwae") and num_groups != 1:
        raise ValueError(
            f"num_groups={num_groups} is only used by 'miwae' and 'piwae', not {estimator!r}."
        )
    if (estimator == "ciwae") != (beta is not None):
        raise ValueError(f"beta must be set for 'ciwae' only; got beta={beta!r} for {estimator!r}.")
    if estimator == "piwae":
        return piwae_objectives(log_w, num_groups)
    if estimator == "miwae":
        value = miwae_bound(log_w, num_groups)
    elif estimator == "ciwae":
        value = ciwae_bound(log_w, beta)
    else:
        value = bound(estimator, log_w)
    return Objectives(generative=value, inference=value)

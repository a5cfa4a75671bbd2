"""Importance-weighted bounds as pure functions of log weights, shared by `vae` and `air`.

Symbols: K importance samples (particles), B batch. All values in nats.
"""

from __future__ import annotations

import tensorflow as tf


def log_mean_exp(x: tf.Tensor, axis: int = 0) -> tf.Tensor:
    """`log((1/n) sum_i exp(x_i))` along `axis` (n its length), without overflow.

    Computed as `reduce_logsumexp(x, axis) - log n`, so values of any magnitude (e.g. -1e4) are
    safe; its gradient is the softmax of `x` along `axis` (the normalized importance weights of
    Burda et al. 2016, sec. 3).

    Args:
      x: a float tensor.
      axis: the axis to average over (static or dynamic length).

    Returns:
      `x` without `axis`.
    """
    x = tf.convert_to_tensor(x)
    n = x.shape[axis]
    n = n if n is not None else tf.shape(x)[axis]
    return tf.reduce_logsumexp(x, axis=axis) - tf.math.log(tf.cast(n, x.dtype))


def iwae_bound(log_w: tf.Tensor) -> tf.Tensor:
    """IWAE bound L_K = log (1/K) sum_k w_k (Burda et al. 2016, eq. 8; Mnih & Rezende 2016,
    eq. 3).

    Its reparameterized gradient is `sum_k w~_k grad log w_k` with normalized weights `w~_k`
    (Burda et al. sec. 3), so autodiff through this function gives the IWAE gradient.

    Args:
      log_w: `[K, B]` log importance weights.

    Returns:
      `[B]` IWAE-K bound in nats.
    """
    return log_mean_exp(log_w, axis=0)

"""The MLPs of the IWAE paper's models (Burda et al. 2016, sec. 5): a tanh trunk with Glorot
initialization feeding a diagonal-Gaussian head (`GaussianMLP`, encoders and the decoders of
hidden layers) or a Bernoulli head (`BernoulliMLP`, the pixel decoder). Symbols: B batch, D event
size."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp

from common import precision
from common.initializers import ArrayInitializer

tfb = tfp.bijectors
tfd = tfp.distributions


# The decoder output bias starts at the logit of the mean training image,
# clipped to [MEAN_IMAGE_CLIP, 1 - MEAN_IMAGE_CLIP] (Burda sec. 5; code YB).
MEAN_IMAGE_CLIP = 1e-3


def glorot_uniform() -> snt.initializers.Initializer:
    """Glorot & Bengio (2010) uniform initializer, as in the IWAE code."""
    return snt.initializers.VarianceScaling(1.0, "fan_avg", "uniform")


def output_bias_from_mean(mean_image: np.ndarray) -> np.ndarray:
    """`logit(clip(mean_image, MEAN_IMAGE_CLIP, 1 - MEAN_IMAGE_CLIP))`, float32.

    Args:
      mean_image: pixel means of the training images in [0, 1], any shape.

    Returns:
      Flattened `[D]` float32 logits, the `output_bias_init` of `BernoulliMLP`.
    """
    p = np.asarray(mean_image, np.float64).reshape(-1)
    p = np.clip(p, MEAN_IMAGE_CLIP, 1 - MEAN_IMAGE_CLIP)
    return (np.log(p) - np.log1p(-p)).astype(np.float32)


def _apply_to_last_axis(fn: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor) -> tf.Tensor:
    """Applies `fn: [N, D_in] -> [N, D_out]` to `x: [..., D_in]`, keeping `...`."""
    if x.shape.rank == 2:
        return fn(x)
    flat = tf.reshape(x, [-1, x.shape[-1]])  # [prod(...), D_in]
    out = fn(flat)
    return tf.reshape(out, tf.concat([tf.shape(x)[:-1], tf.shape(out)[-1:]], axis=0))


class _TanhTrunk(snt.Module):
    """Hidden layers `tanh(W h + b)` shared by the Gaussian and Bernoulli MLPs."""

    def __init__(self, hidden_sizes: Sequence[int], activation, name: str | None = None):
        super().__init__(name=name)
        if not hidden_sizes or any(int(h) < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive ints, got {hidden_sizes!r}.")
        self.layers = tuple(
            snt.Linear(int(h), w_init=glorot_uniform(), name=f"hidden_{i}")
            for i, h in enumerate(hidden_sizes)
        )
        self._activation = activation

    def __call__(self, h: tf.Tensor) -> tf.Tensor:
        for layer in self.layers:
            h = self._activation(layer(h))
        return h


class GaussianMLP(snt.Module):
    """MLP to a diagonal Gaussian: `N(mu(h), diag(sigma(h)^2))` (Burda sec. 5).

    `mu = W_mu t + b_mu` and `sigma = exp(W_s t + b_s)` (no floor, as in the
    paper's code), where `t` is the last tanh hidden layer.
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int],
        latent_size: int,
        activation: Callable[[tf.Tensor], tf.Tensor] = tf.tanh,
        name: str | None = None,
    ):
        """Constructs the MLP.

        Args:
          hidden_sizes: widths of the tanh hidden layers, e.g. `(200, 200)`.
          latent_size: D, the size of the Gaussian's event.
          activation: hidden nonlinearity.
          name: module name.

        Raises:
          ValueError: if `latent_size` or a hidden size is not positive.
        """
        super().__init__(name=name)
        if latent_size < 1:
            raise ValueError(f"latent_size must be positive, got {latent_size}.")
        self.latent_size = int(latent_size)
        self.trunk = _TanhTrunk(hidden_sizes, activation, name="trunk")
        self.loc_layer = snt.Linear(self.latent_size, w_init=glorot_uniform(), name="loc")
        self.log_scale_layer = snt.Linear(
            self.latent_size, w_init=glorot_uniform(), name="log_scale"
        )

    def __call__(self, inputs: tf.Tensor) -> tfd.Distribution:
        """Returns `Independent(Normal)`, batch shape `[...]`, event `[D]`.

        Args:
          inputs: `[..., D_in]`.
        """

        def heads(h):
            t = self.trunk(h)
            return tf.concat([self.loc_layer(t), self.log_scale_layer(t)], axis=-1)

        # The MLP in the mixed-precision policy's dtype; the distribution in float32.
        params = precision.run(_apply_to_last_axis, heads, inputs)  # [..., 2D]
        loc, log_scale = tf.split(params, 2, axis=-1)
        return tfd.Independent(tfd.Normal(loc, tf.exp(log_scale)), reinterpreted_batch_ndims=1)


class BernoulliMLP(snt.Module):
    """MLP to independent Bernoulli pixels with logits `W t + b` (Burda sec. 5)."""

    def __init__(
        self,
        hidden_sizes: Sequence[int],
        output_size: int,
        output_bias_init: np.ndarray | None = None,
        activation: Callable[[tf.Tensor], tf.Tensor] = tf.tanh,
        name: str | None = None,
    ):
        """Constructs the MLP.

        Args:
          hidden_sizes: widths of the tanh hidden layers, e.g. `(200, 200)`.
          output_size: D, the number of pixels.
          output_bias_init: optional `[D]` initial logits bias; use
            `output_bias_from_mean(train_mean)` for the paper's
            initialization. Zeros if None.
          activation: hidden nonlinearity.
          name: module name.

        Raises:
          ValueError: if `output_bias_init` is not `[output_size]`, or a size
            is not positive.
        """
        super().__init__(name=name)
        if output_size < 1:
            raise ValueError(f"output_size must be positive, got {output_size}.")
        self.output_size = int(output_size)
        b_init = None
        if output_bias_init is not None:
            output_bias_init = np.asarray(output_bias_init, np.float32)
            if output_bias_init.shape != (self.output_size,):
                raise ValueError(
                    f"output_bias_init must have shape [{self.output_size}], "
                    f"got {list(output_bias_init.shape)}."
                )
            b_init = ArrayInitializer(output_bias_init)
        self.trunk = _TanhTrunk(hidden_sizes, activation, name="trunk")
        self.logits_layer = snt.Linear(
            self.output_size, w_init=glorot_uniform(), b_init=b_init, name="logits"
        )

    def __call__(self, inputs: tf.Tensor) -> tfd.Distribution:
        """Returns `Independent(Bernoulli)`, batch shape `[...]`, event `[D]`.

        Args:
          inputs: `[..., D_in]`.
        """
        logits = precision.run(
            _apply_to_last_axis, lambda h: self.logits_layer(self.trunk(h)), inputs
        )
        return tfd.Independent(
            tfd.Bernoulli(logits=logits, dtype=tf.float32), reinterpreted_batch_ndims=1
        )

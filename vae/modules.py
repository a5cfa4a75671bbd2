"""Sonnet 2 modules of the IWAE paper's MLP models (Burda et al. 2016, sec. 5).

Symbols: B batch, K importance samples, D event size, L stochastic layers.

A model with L stochastic layers z_1..z_L factorizes as

    q(z_{1:L} | x) = q(z_1 | x) prod_{l>1} q(z_l | z_{l-1})
    p(x, z_{1:L})  = p(x | z_1) prod_{l<L} p(z_l | z_{l+1}) p(z_L),  p(z_L) = N(0, I),

and `IWAEModel.log_weights` returns `log w = log p(x, z) - log q(z | x)` for K
reparameterized samples, the input of every estimator in `vae.estimators`.

References:
  Burda, Grosse & Salakhutdinov (2016). Importance Weighted Autoencoders.
    ICLR. arXiv:1509.00519.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp

from common import distribute

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


class _ArrayInitializer(snt.initializers.Initializer):
    """Initializes a variable to a fixed array (snt's `Constant` takes scalars)."""

    def __init__(self, value: np.ndarray):
        self._value = np.asarray(value)

    def __call__(self, shape, dtype):
        if tuple(shape) != self._value.shape:
            raise ValueError(f"Initial value has shape {self._value.shape}, variable {shape}.")
        return tf.constant(self._value, dtype=dtype)


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

        params = _apply_to_last_axis(heads, inputs)  # [..., 2D]
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
            b_init = _ArrayInitializer(output_bias_init)
        self.trunk = _TanhTrunk(hidden_sizes, activation, name="trunk")
        self.logits_layer = snt.Linear(
            self.output_size, w_init=glorot_uniform(), b_init=b_init, name="logits"
        )

    def __call__(self, inputs: tf.Tensor) -> tfd.Distribution:
        """Returns `Independent(Bernoulli)`, batch shape `[...]`, event `[D]`.

        Args:
          inputs: `[..., D_in]`.
        """
        logits = _apply_to_last_axis(lambda h: self.logits_layer(self.trunk(h)), inputs)
        return tfd.Independent(
            tfd.Bernoulli(logits=logits, dtype=tf.float32), reinterpreted_batch_ndims=1
        )


class LogWeights(NamedTuple):
    """Output of `IWAEModel.log_weights`.

    Attributes:
      log_w: `[K, B]` log importance weights `log p(x, z) - log q(z | x)`.
      log_px_given_z: `[K, B]` `log p(x | z_1)`.
      log_pz: `[K, B]` `log p(z_L) + sum_{l<L} log p(z_l | z_{l+1})`.
      log_qz: `[K, B]` `log q(z_1 | x) + sum_{l>1} log q(z_l | z_{l-1})`.
      z: tuple of L samples, `z[l]` is `[K, B, D_l]` (layer l+1 in the maths).
      posterior: `q(z_1 | x)`, batch `[B]`, event `[D_1]`.
    """

    log_w: tf.Tensor
    log_px_given_z: tf.Tensor
    log_pz: tf.Tensor
    log_qz: tf.Tensor
    z: tuple[tf.Tensor, ...]
    posterior: tfd.Distribution


def _reparameterize(dist: tfd.Distribution, eps: tf.Tensor) -> tf.Tensor:
    """`mean + stddev * eps` for a diagonal Gaussian; broadcasts over `eps`."""
    return dist.mean() + dist.stddev() * eps


class IWAEModel(snt.Module):
    """VAE/IWAE with L stochastic layers of diagonal Gaussians (Burda sec. 5).

    Inference network: `encoders[0]` maps x to q(z_1 | x), `encoders[l]` maps
    z_l to q(z_{l+1} | z_l). Generative network: `decoders[0]` maps z_1 to
    p(x | z_1) (Bernoulli), `decoders[l]` maps z_{l+1} to p(z_l | z_{l+1});
    the prior p(z_L) = N(0, I) has no parameters.

    Example:
      model = make_model(num_stochastic_layers=1)
      out = model.log_weights(x, num_samples=5, seed=tf.constant([0, 1]))
      loss = -tf.reduce_mean(estimators.iwae_bound(out.log_w))
    """

    def __init__(
        self,
        encoders: Sequence[snt.Module],
        decoders: Sequence[snt.Module],
        latent_sizes: Sequence[int],
        name: str | None = None,
    ):
        """Constructs the model from its sub-modules.

        Args:
          encoders: L modules returning diagonal-Gaussian distributions.
          decoders: L modules; `decoders[0]` returns the distribution of x.
          latent_sizes: `[D_1, ..., D_L]`.
          name: module name.

        Raises:
          ValueError: if the three sequences differ in length or are empty,
            or an encoder's `latent_size` disagrees with `latent_sizes`.
        """
        super().__init__(name=name)
        if not latent_sizes or not len(encoders) == len(decoders) == len(latent_sizes):
            raise ValueError(
                "encoders, decoders and latent_sizes must have the same nonzero "
                f"length, got {len(encoders)}, {len(decoders)}, {len(latent_sizes)}."
            )
        for i, (enc, size) in enumerate(zip(encoders, latent_sizes, strict=True)):
            if getattr(enc, "latent_size", size) != size:
                raise ValueError(
                    f"latent_sizes[{i}]={size} but encoders[{i}] has latent_size {enc.latent_size}."
                )
        self.encoders = tuple(encoders)
        self.decoders = tuple(decoders)
        self.latent_sizes = tuple(int(d) for d in latent_sizes)

    @property
    def num_stochastic_layers(self) -> int:
        return len(self.latent_sizes)

    @property
    def inference_variables(self) -> tuple[tf.Variable, ...]:
        """Trainable variables of the encoders (phi).

        Variables are created by the first call; before it Sonnet raises
        `ValueError`.
        """
        return tuple(v for m in self.encoders for v in m.trainable_variables)

    @property
    def generative_variables(self) -> tuple[tf.Variable, ...]:
        """Trainable variables of the decoders (theta); see `inference_variables`."""
        return tuple(v for m in self.decoders for v in m.trainable_variables)

    def prior(self) -> tfd.Distribution:
        """p(z_L) = N(0, I), event `[D_L]`."""
        d = self.latent_sizes[-1]
        return tfd.Independent(tfd.Normal(tf.zeros([d]), tf.ones([d])), reinterpreted_batch_ndims=1)

    @staticmethod
    def _flatten_images(x: tf.Tensor) -> tf.Tensor:
        x = tf.convert_to_tensor(x, tf.float32)
        size = int(np.prod(x.shape[1:]))
        return tf.reshape(x, [-1, size])  # [B, D_x]

    def log_weights(self, x: tf.Tensor, num_samples: int, seed: tf.Tensor) -> LogWeights:
        """Log importance weights of `num_samples` reparameterized samples.

        Noise for layer l is `global_batch_normal([K, B, D_l], seeds[l],
        batch_axis=1)` with `seeds = stateless_split(seed, L)`, so it does not
        depend on how the global batch is split over replicas.

        Args:
          x: `[B, D_x]` or `[B, H, W, C]` float32 binary images.
          num_samples: K, a Python int.
          seed: `[2]` int stateless seed.

        Returns:
          `LogWeights`; every `[K, B]` field is in nats.
        """
        x = self._flatten_images(x)
        batch = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
        seeds = tf.random.experimental.stateless_split(seed, num=self.num_stochastic_layers)
        zs, log_qz, posterior = [], 0.0, None
        h = x
        for i, (encoder, size) in enumerate(zip(self.encoders, self.latent_sizes, strict=True)):
            q = encoder(h)  # batch [B] for i == 0, else [K, B]
            if posterior is None:
                posterior = q
            eps = distribute.global_batch_normal([num_samples, batch, size], seeds[i], batch_axis=1)
            h = _reparameterize(q, eps)  # [K, B, D_l]
            log_qz += q.log_prob(h)
            zs.append(h)
        log_pz = self.prior().log_prob(zs[-1])  # [K, B]
        for i in range(1, self.num_stochastic_layers):
            log_pz += self.decoders[i](zs[i]).log_prob(zs[i - 1])
        log_px_given_z = self.decoders[0](zs[0]).log_prob(x)  # [K, B]
        return LogWeights(
            log_w=log_px_given_z + log_pz - log_qz,
            log_px_given_z=log_px_given_z,
            log_pz=log_pz,
            log_qz=log_qz,
            z=tuple(zs),
            posterior=posterior,
        )

    def sample(self, num: int, seed: tf.Tensor) -> tf.Tensor:
        """Ancestral samples from the generative model, as pixel probabilities.

        Args:
          num: number of images, a Python int.
          seed: `[2]` int stateless seed.

        Returns:
          `[num, D_x]` Bernoulli means `E[x | z_1]` of generated images.
        """
        seeds = tf.random.experimental.stateless_split(seed, num=self.num_stochastic_layers)
        z = self.prior().sample(num, seed=seeds[-1])  # [num, D_L]
        for i in range(self.num_stochastic_layers - 1, 0, -1):
            z = self.decoders[i](z).sample(seed=seeds[i - 1])  # [num, D_l]
        return self.decoders[0](z).mean()

    def reconstruct(self, x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Decoder mean `E[x | z_1]` for one sample `z_1 ~ q(z_1 | x)`.

        Args:
          x: `[B, D_x]` or `[B, H, W, C]` images.
          seed: `[2]` int stateless seed.

        Returns:
          `[B, D_x]` pixel probabilities.
        """
        z1 = self.encoders[0](self._flatten_images(x)).sample(seed=seed)  # [B, D_1]
        return self.decoders[0](z1).mean()

    def posterior_mean(
        self, x: tf.Tensor, num_samples: int = 0, seed: tf.Tensor | None = None
    ) -> list[tf.Tensor]:
        """Per-layer posterior means `E_{q(z_l | x)}[z_l]`, for active units.

        Burda sec. 5.2 measures the activity of unit u as `Cov_x(E_q[u])`.
        Layer 1's mean is exact. For l > 1, `E_{q(z_l|x)}[z_l] =
        E_{q(z_{l-1}|x)}[mean q(z_l | z_{l-1})]`: with `num_samples > 0` this
        is estimated by Monte Carlo; with `num_samples == 0` the mean of the
        layer below is plugged in instead (deterministic, an approximation).

        Args:
          x: `[B, D_x]` or `[B, H, W, C]` images.
          num_samples: Monte-Carlo samples for layers l > 1; 0 to plug in.
          seed: `[2]` int stateless seed, required when `num_samples > 0`.

        Returns:
          List of L tensors, `[B, D_l]`.

        Raises:
          ValueError: if `num_samples > 0` and `seed` is None.
        """
        if num_samples > 0 and seed is None:
            raise ValueError("posterior_mean needs a seed when num_samples > 0.")
        q = self.encoders[0](self._flatten_images(x))
        means = [q.mean()]
        if num_samples > 0:
            seeds = tf.random.experimental.stateless_split(seed, num=self.num_stochastic_layers)
            h = q.sample(num_samples, seed=seeds[0])  # [S, B, D_1]
            for i in range(1, self.num_stochastic_layers):
                q = self.encoders[i](h)
                means.append(tf.reduce_mean(q.mean(), axis=0))
                h = q.sample(seed=seeds[i])
        else:
            for i in range(1, self.num_stochastic_layers):
                means.append(self.encoders[i](means[-1]).mean())
        return means


def make_model(
    num_stochastic_layers: int,
    output_bias_init: np.ndarray | None = None,
    input_size: int = 784,
) -> IWAEModel:
    """The IWAE paper's MNIST architectures (Burda sec. 5).

    1 layer: q(z|x) 784-200-200-50, p(x|z) 50-200-200-784.
    2 layers: q(z1|x) 784-200-200-100, q(z2|z1) 100-100-100-50,
    p(z1|z2) 50-100-100-100, p(x|z1) 100-200-200-784.

    Args:
      num_stochastic_layers: 1 or 2.
      output_bias_init: optional `[input_size]` initial bias of the Bernoulli
        logits (see `output_bias_from_mean`).
      input_size: D_x, number of pixels.

    Raises:
      ValueError: for another number of layers.
    """
    if num_stochastic_layers == 1:
        encoders = [GaussianMLP((200, 200), 50, name="q_z1")]
        decoders = [BernoulliMLP((200, 200), input_size, output_bias_init, name="p_x")]
        latent_sizes = [50]
    elif num_stochastic_layers == 2:
        encoders = [
            GaussianMLP((200, 200), 100, name="q_z1"),
            GaussianMLP((100, 100), 50, name="q_z2"),
        ]
        decoders = [
            BernoulliMLP((200, 200), input_size, output_bias_init, name="p_x"),
            GaussianMLP((100, 100), 100, name="p_z1"),
        ]
        latent_sizes = [100, 50]
    else:
        raise ValueError(f"num_stochastic_layers must be 1 or 2, got {num_stochastic_layers}.")
    return IWAEModel(encoders, decoders, latent_sizes, name="iwae")

"""Sonnet 2 modules of the IWAE paper's MLP models (Burda et al. 2016, sec. 5).

Symbols: B batch, K importance samples, D event size, L stochastic layers.

A model with L stochastic layers z_1..z_L factorizes as

    q(z_{1:L} | x) = q(z_1 | x) prod_{l>1} q(z_l | z_{l-1})
    p(x, z_{1:L})  = p(x | z_1) prod_{l<L} p(z_l | z_{l+1}) p(z_L),  p(z_L) = N(0, I),

and `IWAEModel.log_weights` returns `log w = log p(x, z) - log q(z | x)` for K
reparameterized samples, the input of every estimator in `vae.estimators`.

q(z_1 | x) is a diagonal Gaussian (`vae.mlps.GaussianMLP`, the paper's model) or, with
`make_model(..., posterior="planar" | "radial" | "iaf")`, a normalizing flow on
top of one (`vae.flow_posteriors.FlowPosteriorMLP`): z_1 = f_K o ... o f_1(z_0),
z_0 ~ q_0(z_0 | x),

    log q_K(z_1 | x) = log q_0(z_0 | x) - sum_k log |det df_k / dz_{k-1}|

(Rezende & Mohamed 2015, eq. 13), with the flow's parameters (planar, radial)
or its context (IAF) emitted by the encoder.

References:
  Burda, Grosse & Salakhutdinov (2016). Importance Weighted Autoencoders.
    ICLR. arXiv:1509.00519.
  Rezende & Mohamed (2015). Variational Inference with Normalizing Flows.
    ICML. arXiv:1505.05770.
  Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016). Improved
    Variational Inference with Inverse Autoregressive Flow. NeurIPS.
    arXiv:1606.04934.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp

from common import distribute
from vae.flow_posteriors import DEFAULT_NUM_FLOWS, POSTERIORS, FlowPosteriorMLP
from vae.mlps import BernoulliMLP, GaussianMLP

tfb = tfp.bijectors
tfd = tfp.distributions


class LogWeights(NamedTuple):
    """Output of `IWAEModel.log_weights`.

    Attributes:
      log_w: `[K, B]` log importance weights `log p(x, z) - log q(z | x)`.
      log_px_given_z: `[K, B]` `log p(x | z_1)`.
      log_pz: `[K, B]` `log p(z_L) + sum_{l<L} log p(z_l | z_{l+1})`.
      log_qz: `[K, B]` `log q(z_1 | x) + sum_{l>1} log q(z_l | z_{l-1})`.
      z: tuple of L samples, `z[l]` is `[K, B, D_l]` (layer l+1 in the maths);
        with a flow posterior `z[0]` is the flow's output `z_K`.
      posterior: `q(z_1 | x)`, batch `[B]`, event `[D_1]`: `Independent(Normal)`
        or, with a flow posterior, a `TransformedDistribution` (not a
        `CompositeTensor`, so a `tf.function` cannot return it; return the
        tensors you need instead).
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


def _is_flow(dist: tfd.Distribution) -> bool:
    # Not `isinstance(dist, tfd.TransformedDistribution)`: with a bijector that
    # is not a `CompositeTensor` (planar, radial) TFP returns its private
    # `_TransformedDistribution`, which is not a subclass of it.
    return isinstance(getattr(dist, "bijector", None), tfb.Bijector)


def _sample_and_log_prob(dist: tfd.Distribution, eps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Reparameterized `z` from standard-normal `eps` and `log q(z)`.

    A diagonal Gaussian gives `z = mean + stddev * eps`. A flow posterior
    `TransformedDistribution(q_0, f)` gives `z_0 = mean_0 + stddev_0 * eps`,
    `z = f(z_0)` and `log q(z) = log q_0(z_0) - log|det df/dz_0|` (Rezende &
    Mohamed 2015, eq. 13), with no inverse of `f`.
    """
    if not _is_flow(dist):
        z = _reparameterize(dist, eps)
        return z, dist.log_prob(z)
    z0 = _reparameterize(dist.distribution, eps)
    z = dist.bijector.forward(z0)
    log_det = dist.bijector.forward_log_det_jacobian(z0, event_ndims=1)
    return z, dist.distribution.log_prob(z0) - log_det


class IWAEModel(snt.Module):
    """VAE/IWAE with L stochastic layers of diagonal Gaussians (Burda sec. 5).

    Inference network: `encoders[0]` maps x to q(z_1 | x), `encoders[l]` maps
    z_l to q(z_{l+1} | z_l). Any encoder may be a `FlowPosteriorMLP` (a flow
    on a diagonal Gaussian); `make_model` uses one for `encoders[0]` only.
    Generative network: `decoders[0]` maps z_1 to p(x | z_1) (Bernoulli),
    `decoders[l]` maps z_{l+1} to p(z_l | z_{l+1}); the prior p(z_L) = N(0, I) has no parameters.

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
          encoders: L modules returning diagonal-Gaussian distributions, or
            `TransformedDistribution`s of one (`FlowPosteriorMLP`).
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
            h, log_q = _sample_and_log_prob(q, eps)  # [K, B, D_l], [K, B]
            log_qz += log_q
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
        Layer 1's mean is exact for a Gaussian q(z_1 | x); a flow posterior has
        no closed-form mean, so it is the Monte-Carlo average of the
        `num_samples` samples, or with `num_samples == 0` the flow applied to
        the base mean, `f(E[z_0])` (an approximation). For l > 1, `E_{q(z_l|x)}[z_l] =
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
        if num_samples > 0:
            seeds = tf.random.experimental.stateless_split(seed, num=self.num_stochastic_layers)
            h = q.sample(num_samples, seed=seeds[0])  # [S, B, D_1]
            means = [tf.reduce_mean(h, axis=0) if _is_flow(q) else q.mean()]
            for i in range(1, self.num_stochastic_layers):
                q = self.encoders[i](h)
                means.append(tf.reduce_mean(q.mean(), axis=0))
                h = q.sample(seed=seeds[i])
        else:
            means = [q.bijector.forward(q.distribution.mean()) if _is_flow(q) else q.mean()]
            for i in range(1, self.num_stochastic_layers):
                means.append(self.encoders[i](means[-1]).mean())
        return means


def make_model(
    num_stochastic_layers: int,
    output_bias_init: np.ndarray | None = None,
    input_size: int = 784,
    *,
    posterior: str = "gaussian",
    num_flows: int = 0,
    iaf_hidden_units: Sequence[int] = (200, 200),
    context_size: int = 50,
    iaf_log_scale_bound: float | None = None,
) -> IWAEModel:
    """The IWAE paper's MNIST architectures (Burda sec. 5).

    1 layer: q(z|x) 784-200-200-50, p(x|z) 50-200-200-784.
    2 layers: q(z1|x) 784-200-200-100, q(z2|z1) 100-100-100-50,
    p(z1|z2) 50-100-100-100, p(x|z1) 100-200-200-784.

    With a flow `posterior`, q(z_1 | x) is a `FlowPosteriorMLP` with the same
    trunk and an extra linear head (flow parameters or IAF context); with two
    stochastic layers q(z_2 | z_1) stays a diagonal Gaussian (the flow acts on
    the first layer only). `posterior="gaussian"` builds exactly the paper's
    model.

    Args:
      num_stochastic_layers: 1 or 2.
      output_bias_init: optional `[input_size]` initial bias of the Bernoulli
        logits (see `output_bias_from_mean`).
      input_size: D_x, number of pixels.
      posterior: one of `POSTERIORS`: `gaussian`, `planar`, `radial`, `iaf`.
      num_flows: K flow layers; 0 picks `DEFAULT_NUM_FLOWS[posterior]`; must
        be 0 for `gaussian`.
      iaf_hidden_units: hidden sizes of each IAF MADE (`iaf` only).
      context_size: size of the IAF context emitted by the encoder (`iaf` only).
      iaf_log_scale_bound: optional soft bound on the IAF log-scales (`iaf` only).

    Raises:
      ValueError: for another number of layers, an unknown posterior, or
        `num_flows` given with the Gaussian posterior.
    """
    if posterior not in POSTERIORS:
        raise ValueError(
            f"Unknown posterior {posterior!r}; expected one of {', '.join(POSTERIORS)}."
        )
    if posterior == "gaussian" and num_flows:
        raise ValueError(f"num_flows={num_flows} needs a flow posterior, not 'gaussian'.")
    if num_flows < 0:
        raise ValueError(f"num_flows must be >= 0, got {num_flows}.")

    def first_encoder(latent_size: int) -> snt.Module:
        if posterior == "gaussian":
            return GaussianMLP((200, 200), latent_size, name="q_z1")
        return FlowPosteriorMLP(
            (200, 200),
            latent_size,
            posterior,
            num_flows or DEFAULT_NUM_FLOWS[posterior],
            iaf_hidden_units=iaf_hidden_units,
            context_size=context_size,
            log_scale_bound=iaf_log_scale_bound,
            name="q_z1",
        )

    if num_stochastic_layers == 1:
        encoders = [first_encoder(50)]
        decoders = [BernoulliMLP((200, 200), input_size, output_bias_init, name="p_x")]
        latent_sizes = [50]
    elif num_stochastic_layers == 2:
        encoders = [
            first_encoder(100),
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

"""Sonnet 2 modules of the IWAE paper's MLP models (Burda et al. 2016, sec. 5).

Symbols: B batch, K importance samples, D event size, L stochastic layers.

A model with L stochastic layers z_1..z_L factorizes as

    q(z_{1:L} | x) = q(z_1 | x) prod_{l>1} q(z_l | z_{l-1})
    p(x, z_{1:L})  = p(x | z_1) prod_{l<L} p(z_l | z_{l+1}) p(z_L),  p(z_L) = N(0, I),

and `IWAEModel.log_weights` returns `log w = log p(x, z) - log q(z | x)` for K
reparameterized samples, the input of every estimator in `vae.estimators`.

q(z_1 | x) is a diagonal Gaussian (`GaussianMLP`, the paper's model) or, with
`make_model(..., posterior="planar" | "radial" | "iaf")`, a normalizing flow on
top of one (`FlowPosteriorMLP`): z_1 = f_K o ... o f_1(z_0), z_0 ~ q_0(z_0 | x),

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

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp

from common import distribute
from common.bijectors import Planar, Radial
from common.made import MADE

tfb = tfp.bijectors
tfd = tfp.distributions

# Choices of `make_model(posterior=...)` / `config.model.posterior`.
POSTERIORS = ("gaussian", "planar", "radial", "iaf")
# `num_flows=0` picks these: K = 10 planar/radial flows (Rezende & Mohamed
# sec. 6 report K = 10 to 80); 2 IAF layers.
DEFAULT_NUM_FLOWS = {"planar": 10, "radial": 10, "iaf": 2}

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


class FlowPosteriorMLP(snt.Module):
    """Flow posterior `q_K(z | x)`: a diagonal Gaussian `q_0(z_0 | x)` pushed
    through K flow layers conditioned on x.

    `z_K = f_K o ... o f_1(z_0)` and `log q_K(z_K | x) = log q_0(z_0 | x) -
    sum_k log|det df_k / dz_{k-1}|` (Rezende & Mohamed 2015, eq. 13). The tanh
    trunk of `GaussianMLP` feeds three linear heads: the mean and the log
    standard deviation of `q_0` (exactly as in `GaussianMLP`), and

    - `planar` (Rezende & Mohamed, eq. 10; parameters emitted by the encoder
      as in their sec. 4): `K (2D + 1)` outputs, K blocks `[w (D), u (D),
      b (1)]`; `u` is unconstrained, `common.bijectors.Planar` maps it to `u_hat` with
      `w^T u_hat > -1` (their appendix A.1);
    - `radial` (eq. 14): `K (D + 2)` outputs, K blocks `[z0 (D), alpha_raw (1),
      beta_raw (1)]`; `common.bijectors.Radial` uses `alpha = softplus(alpha_raw)`,
      `beta = -alpha + softplus(beta_raw)` (appendix A.2);
    - `iaf` (Kingma et al. 2016, sec. 4): a context `h` (`context_size`
      outputs) that conditions K MADEs (`common.made.MADE`, weights shared by all
      examples, input order reversed between layers, the context entering
      every layer). Step k is the affine autoregressive map
      `z_k = (z_{k-1} - m_k) * exp(-s_k)` with `[m_k, s_k] = MADE_k(z_{k-1}, h)`
      (TFP's `Invert(MaskedAutoregressiveFlow)`), i.e. Kingma et al.'s
      `z_k = mu_k + sigma_k * z_{k-1}` with `sigma_k = exp(-s_k)`,
      `mu_k = -m_k exp(-s_k)`, and `log|det| = -sum_d s_{k,d}`. This is not
      their LSTM-type gated update `sigma z + (1 - sigma) m`;
      `log_scale_bound` optionally soft-clips `s_k` instead.

    Symbols: B batch, K flows (here; importance samples elsewhere), D latent
    size, C context size.

    Example:
      ```python
      q_net = FlowPosteriorMLP((200, 200), 50, "planar", num_flows=10)
      q = q_net(x)               # batch [B], event [50]
      z = q.sample(seed=seed)    # [B, 50]
      log_q = q.log_prob(z)      # [B], via the bijector cache
      ```
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int],
        latent_size: int,
        flow: str,
        num_flows: int,
        iaf_hidden_units: Sequence[int] = (200, 200),
        context_size: int = 50,
        log_scale_bound: float | None = None,
        activation: Callable[[tf.Tensor], tf.Tensor] = tf.tanh,
        seed: int | None = None,
        name: str | None = None,
    ):
        """Constructs the MLP; the MADEs of `iaf` are created here, the linear
        layers at the first call.

        Args:
          hidden_sizes: widths of the tanh hidden layers, e.g. `(200, 200)`.
          latent_size: D.
          flow: `planar`, `radial` or `iaf`.
          num_flows: K, the number of flow layers.
          iaf_hidden_units: hidden sizes of each MADE (`iaf` only).
          context_size: C, size of the context `h` (`iaf` only).
          log_scale_bound: if set, the IAF log-scales are soft-clipped to
            `(-bound, bound)` with `bound * tanh(s / bound)` (`iaf` only);
            `None` leaves them unbounded.
          activation: trunk nonlinearity.
          seed: NumPy seed of the MADE weights and degrees (`None`: drawn from
            TF's global generator, so `tf.random.set_seed` fixes it).
          name: module name.

        Raises:
          ValueError: for an unknown `flow`, a non-positive size or count, or
            a non-positive `log_scale_bound`.
        """
        super().__init__(name=name)
        if flow not in POSTERIORS[1:]:
            raise ValueError(f"Unknown flow {flow!r}; expected one of {POSTERIORS[1:]}.")
        if latent_size < 1:
            raise ValueError(f"latent_size must be positive, got {latent_size}.")
        if num_flows < 1:
            raise ValueError(f"num_flows must be positive, got {num_flows}.")
        if flow == "iaf" and context_size < 1:
            raise ValueError(f"context_size must be positive, got {context_size}.")
        if log_scale_bound is not None and log_scale_bound <= 0:
            raise ValueError(f"log_scale_bound must be positive, got {log_scale_bound}.")
        self.latent_size = int(latent_size)
        self.flow = flow
        self.num_flows = int(num_flows)
        self.log_scale_bound = log_scale_bound
        d = self.latent_size
        self.trunk = _TanhTrunk(hidden_sizes, activation, name="trunk")
        self.loc_layer = snt.Linear(d, w_init=glorot_uniform(), name="loc")
        self.log_scale_layer = snt.Linear(d, w_init=glorot_uniform(), name="log_scale")
        self.mades = ()
        if flow == "iaf":
            self.num_flow_params = int(context_size)
            self.mades = tuple(
                MADE(
                    d,
                    tuple(iaf_hidden_units),
                    num_params=2,
                    input_order="left-to-right" if k % 2 == 0 else "right-to-left",
                    conditional_size=int(context_size),
                    seed=None if seed is None else seed + 1000 * k,
                    name=f"made_{k}",
                )
                for k in range(self.num_flows)
            )
        else:
            per_flow = 2 * d + 1 if flow == "planar" else d + 2
            self.num_flow_params = self.num_flows * per_flow
        self.flow_layer = snt.Linear(
            self.num_flow_params,
            w_init=glorot_uniform(),
            name="context" if flow == "iaf" else "flow_params",
        )

    def _shift_and_log_scale(self, made, z, context):
        shift, log_scale = made(z, conditional_input=context)
        if self.log_scale_bound is not None:
            log_scale = self.log_scale_bound * tf.tanh(log_scale / self.log_scale_bound)
        return shift, log_scale

    def bijector(self, flow_params: tf.Tensor) -> tfb.Bijector:
        """The flow `f_K o ... o f_1` for given encoder outputs.

        Args:
          flow_params: `[..., num_flow_params]`, the flow head's output (the
            block layout is in the class docstring; the context for `iaf`).

        Returns:
          A `tfb.Chain` on `[..., D]` events (it applies flow 1 first), batch
          shape `[...]`.
        """
        d = self.latent_size
        layers = []
        if self.flow == "iaf":
            for k, made in enumerate(self.mades):
                fn = functools.partial(self._shift_and_log_scale, made, context=flow_params)
                maf = tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=fn, name=f"maf_{k}")
                layers.append(tfb.Invert(maf, name=f"iaf_{k}"))
        else:
            for k, p in enumerate(tf.split(flow_params, self.num_flows, axis=-1)):
                if self.flow == "planar":
                    w, u, b = tf.split(p, [d, d, 1], axis=-1)
                    layers.append(Planar(w, u, b[..., 0], name=f"planar_{k}"))
                else:
                    z0, alpha_raw, beta_raw = tf.split(p, [d, 1, 1], axis=-1)
                    layers.append(
                        Radial(z0, alpha_raw[..., 0], beta_raw[..., 0], name=f"radial_{k}")
                    )
        return tfb.Chain(layers[::-1], name=self.flow)  # Chain applies its last first.

    def __call__(self, inputs: tf.Tensor) -> tfd.TransformedDistribution:
        """Returns `q_K(z | inputs)`, batch shape `[...]`, event `[D]`.

        Args:
          inputs: `[..., D_in]`.

        Returns:
          `tfd.TransformedDistribution(q_0, flow)`; `.distribution` is `q_0`
          (`Independent(Normal)`), `.bijector` the conditioned flow.
        """

        def heads(h):
            t = self.trunk(h)
            return tf.concat(
                [self.loc_layer(t), self.log_scale_layer(t), self.flow_layer(t)], axis=-1
            )

        d = self.latent_size
        params = _apply_to_last_axis(heads, inputs)  # [..., 2D + P]
        loc, log_scale, flow_params = tf.split(params, [d, d, self.num_flow_params], axis=-1)
        base = tfd.Independent(tfd.Normal(loc, tf.exp(log_scale)), reinterpreted_batch_ndims=1)
        return tfd.TransformedDistribution(base, self.bijector(flow_params), name=self.flow)


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

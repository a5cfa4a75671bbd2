"""Flow posteriors q_K(z | x) for the VAE: a diagonal Gaussian pushed through K planar, radial or
IAF layers whose parameters (or context) the encoder emits (Rezende & Mohamed 2015, eq. 13 and
sec. 4; Kingma et al. 2016). Symbols: B batch, D latent size, K flow layers."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp

from common import precision
from common.bijectors import Planar, Radial
from common.made import MADE
from vae.mlps import _apply_to_last_axis, _TanhTrunk, glorot_uniform

tfb = tfp.bijectors
tfd = tfp.distributions

# Choices of `make_model(posterior=...)` / `config.model.posterior`.
POSTERIORS = ("gaussian", "planar", "radial", "iaf")
# `num_flows=0` picks these: K = 10 planar/radial flows (Rezende & Mohamed
# sec. 6 report K = 10 to 80); 2 IAF layers.
DEFAULT_NUM_FLOWS = {"planar": 10, "radial": 10, "iaf": 2}


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
        params = precision.run(_apply_to_last_axis, heads, inputs)  # [..., 2D + P]
        loc, log_scale, flow_params = tf.split(params, [d, d, self.num_flow_params], axis=-1)
        base = tfd.Independent(tfd.Normal(loc, tf.exp(log_scale)), reinterpreted_batch_ndims=1)
        return tfd.TransformedDistribution(base, self.bijector(flow_params), name=self.flow)

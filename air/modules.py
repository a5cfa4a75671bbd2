"""Sonnet 2 building blocks of Attend, Infer, Repeat (Eslami et al. 2016).

Every trainable part of AIR except the LSTM core: the input encoder, the
presence and where heads applied to the LSTM output, the glimpse encoder
(`q(z_what | glimpse)`), the glimpse decoder, and the neural baseline of the
score-function estimator. `air.model.AIR` receives them as constructor
arguments; `air.experiment.build_model` wires them from a config.

Sizes follow the reference code (KAIR `scripts/multi_mnist.py`):
MLPs 2x256 ELU, presence MLP [128, 64], baseline [256, 128]; Sonnet's
default truncated-normal initialization.

The initializations that keep training away from the known collapses
(Kosiorek's AIR blog post, K-AIR) are arguments here, each documented where it acts:
`GlimpseDecoder(output_bias)`, `WhereHead(std_init)`, `PresenceHead(bias_init)`.

Symbols: B batch, D size of `z_what`, h/w glimpse height/width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp

from common import precision
from common.initializers import ArrayInitializer

tfd = tfp.distributions

# Smallest standard deviation of the Gaussian posteriors (keeps log q finite).
MIN_STD = 1e-4


def _softplus_inverse(x: float) -> float:
    """`y` with `softplus(y) = x`, in float64 (`tfp.math.softplus_inverse`).

    Raises:
      ValueError: x <= 0.
    """
    if x <= 0:
        raise ValueError(f"softplus_inverse needs x > 0; got {x}.")
    return float(tfp.math.softplus_inverse(tf.constant(x, tf.float64)))


def mlp(hidden_sizes: Sequence[int], name: str) -> snt.nets.MLP:
    """ELU MLP whose last layer is activated too (a hidden representation)."""
    return snt.nets.MLP(list(hidden_sizes), activation=tf.nn.elu, activate_final=True, name=name)


def _check_sizes(sizes: Sequence[int], arg_name: str) -> list[int]:
    sizes = [int(s) for s in sizes]
    if any(s < 1 for s in sizes):
        raise ValueError(f"`{arg_name}` must be positive sizes; got {sizes}.")
    return sizes


class InputEncoder(snt.Module):
    """Flattens the image and embeds it once for all steps: `[B, H, W, C] -> [B, hidden[-1]]`."""

    def __init__(self, hidden_sizes: Sequence[int] = (256, 256), name: str | None = None):
        super().__init__(name=name)
        hidden_sizes = _check_sizes(hidden_sizes, "hidden_sizes")
        if not hidden_sizes:
            raise ValueError("`hidden_sizes` must not be empty.")
        self._mlp = mlp(hidden_sizes, "mlp")

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        return precision.run(self._mlp, snt.flatten(images))


class WhereHead(snt.Module):
    """`q(u_where | h_t)`: a diagonal Gaussian over AIR's unconstrained where code.

    `u = (u_sx, u_sy, u_tx, u_ty)`; the window is `z_where = squash(u)`:
    scales `s = min_scale + (1 - min_scale) sigmoid(u_s)` and shifts
    `t = tanh(u_t)`, in `common.attention`'s `(s_x, s_y, t_x, t_y)` convention.
    The prior is `N(0, I)` on `u` (`air.model`).

    Deviation from the reference (KAIR puts the Gaussian on the squashed
    values, `NormalWithSoftplusScale` in its `modules.py`): sampling after
    the squash means every sampled window has a positive scale and lies inside
    the canvas, so large where noise can no longer produce flipped or
    near-zero windows whose inverse warp `1/s` explodes (the NaN/huge-write
    failure KAIR's iwae_naive branch patched with `min_glimpse_size`).

    `std_init` prevents the *large initial where-variance* collapse (K-AIR):
    with KAIR's `transform_var_bias` 0.5 the initial
    standard deviation is ~0.97, so early windows are random, reconstructions
    from them are worse than drawing nothing, and the presence probabilities
    are driven to 0 before the where head can learn. The output bias of the
    standard deviation starts at `softplus_inverse(std_init)` (0.1 by default:
    jitter of a few pixels).
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (256, 256),
        std_init: float = 0.1,
        min_scale: float = 0.1,
        scale_init: float | None = None,
        num_scales: int = 2,
        name: str | None = None,
    ):
        """Args:
          hidden_sizes: MLP on the LSTM output.
          std_init: initial standard deviation of `u` (for a zero pre-activation).
          min_scale: smallest window half-extent, normalized (0.1 = 5 px of 50).
          scale_init: initial window half-extent (the bias of `u_s` is set to
            `scale_code(scale_init)`); None: `u_s` starts at 0, i.e.
            `(1 + min_scale) / 2`.
          num_scales: 2: separate x / y scales, codes `u = (u_sx, u_sy, u_tx,
            u_ty)` (KAIR); 1: one scale for both axes, `u = (u_s, u_tx, u_ty)`
            (Eslami et al. 2016, sec. 3.1: "scale and translation").

        Raises:
          ValueError: bad sizes, `std_init <= 0`, `min_scale` outside [0, 1),
            `scale_init` outside (min_scale, 1) or `num_scales` not 1 or 2.
        """
        super().__init__(name=name)
        if std_init <= 0:
            raise ValueError(f"`std_init` must be > 0; got {std_init}.")
        if not 0.0 <= min_scale < 1.0:
            raise ValueError(f"`min_scale` must be in [0, 1); got {min_scale}.")
        if num_scales not in (1, 2):
            raise ValueError(f"`num_scales` must be 1 or 2; got {num_scales}.")
        self.std_init = std_init
        self.min_scale = min_scale
        self.num_scales = num_scales
        self.code_size = num_scales + 2
        loc_bias = [0.0] * self.code_size
        if scale_init is not None:
            loc_bias[:num_scales] = [self.scale_code(scale_init)] * num_scales
        self._mlp = mlp(_check_sizes(hidden_sizes, "hidden_sizes"), "mlp")
        self._loc = snt.Linear(self.code_size, b_init=ArrayInitializer(loc_bias), name="loc")
        self._std = snt.Linear(
            self.code_size, b_init=snt.initializers.Constant(_softplus_inverse(std_init))
        )

    def scale_code(self, scale: float) -> float:
        """The code `u_s` whose squashed window half-extent is `scale`.

        Raises:
          ValueError: if `scale` is outside `(min_scale, 1)`.
        """
        if not self.min_scale < scale < 1.0:
            raise ValueError(f"A window scale must be in ({self.min_scale}, 1); got {scale}.")
        p = (scale - self.min_scale) / (1.0 - self.min_scale)
        return math.log(p) - math.log1p(-p)

    def __call__(self, hidden: tf.Tensor) -> tfd.Distribution:
        """`[B, L]` -> `Independent(Normal)` over `[B, code_size]` codes `u`."""

        def params(h):
            x = self._mlp(h)
            return self._loc(x), self._std(x)

        loc, raw_std = precision.run(params, hidden)  # mixed precision: the MLP
        std = tf.nn.softplus(raw_std) + MIN_STD
        return tfd.Independent(tfd.Normal(loc, std), reinterpreted_batch_ndims=1)

    def squash(self, u: tf.Tensor) -> tf.Tensor:
        """`[..., code_size]` code -> `[..., 4]` `z_where = (s_x, s_y, t_x, t_y)` (with one
        scale, `s_x = s_y = s`)."""
        n = self.num_scales
        scale = self.min_scale + (1.0 - self.min_scale) * tf.sigmoid(u[..., :n])
        if n == 1:
            scale = tf.concat([scale, scale], axis=-1)
        return tf.concat([scale, tf.tanh(u[..., n:])], axis=-1)


class PresenceHead(snt.Module):
    """Logit of `p_t = P(b_t = 1 | h_t)`: `[B, L] -> [B]`.

    Depends on `h_t` only, not on the step's `z_where`/`z_what` (as in the
    paper and PYRO; KAIR also feeds the codes), so that `P(n >= t | z)` does
    not depend on `z_t` and the analytic per-step KL weighting is exact
    (`air.model`).

    `bias_init` ("steps start on", KAIR `step_bias`): the output bias starts
    at 1.0 (p_t ~ 0.73; KAIR: 0.75 master, 1.0 iwae_naive). A step that is off
    receives no reconstruction gradient for its what/where/decoder, so
    starting with most steps off lets the count collapse to 0 before the
    glimpses have learned anything worth drawing.
    """

    def __init__(self, hidden_sizes: Sequence[int] = (128, 64), bias_init: float = 1.0, name=None):
        super().__init__(name=name)
        self.bias_init = bias_init
        self._mlp = mlp(_check_sizes(hidden_sizes, "hidden_sizes"), "mlp")
        self._logit = snt.Linear(1, b_init=snt.initializers.Constant(bias_init), name="logit")

    def __call__(self, hidden: tf.Tensor) -> tf.Tensor:
        return precision.run(lambda h: self._logit(self._mlp(h)), hidden)[:, 0]


class GlimpseEncoder(snt.Module):
    """`q(z_what | glimpse)`: `[B, h, w, C] -> Independent(Normal)` over `[B, D]`."""

    def __init__(self, what_size: int = 50, hidden_sizes: Sequence[int] = (256, 256), name=None):
        super().__init__(name=name)
        if what_size < 1:
            raise ValueError(f"`what_size` must be >= 1; got {what_size}.")
        self.what_size = what_size
        self._mlp = mlp(_check_sizes(hidden_sizes, "hidden_sizes"), "mlp")
        self._params = snt.Linear(2 * what_size, name="params")

    def __call__(self, glimpses: tf.Tensor) -> tfd.Distribution:
        params = precision.run(lambda g: self._params(self._mlp(snt.flatten(g))), glimpses)
        loc, raw_std = tf.split(params, 2, axis=-1)
        std = tf.nn.softplus(raw_std) + MIN_STD
        return tfd.Independent(tfd.Normal(loc, std), reinterpreted_batch_ndims=1)


class GlimpseDecoder(snt.Module):
    """`z_what` -> glimpse intensities: `[B, D] -> [B, h, w, C]`.

    `output="sigmoid"` squashes the last layer into (0, 1); `output="linear"`
    is KAIR's unbounded output times `output_multiplier`.

    `output_bias` prevents the *too bright initial reconstruction* collapse
    (K-AIR; the Pyro AIR tutorial): the last layer's bias starts at
    -2, so a fresh decoder draws dim glimpses (sigmoid(-2) ~ 0.12). With a
    bright initial glimpse (KAIR: linear output x 0.5 around 0.5 in a window
    larger than a digit), every present step *increases* the summed squared
    error on the black background, the score-function signal says "fewer
    steps", and the presence probabilities reach 0 before the decoder learns
    to draw digits; with n = 0 no step gets a reconstruction gradient again.
    """

    def __init__(
        self,
        glimpse_shape: Sequence[int] = (20, 20),
        channels: int = 1,
        hidden_sizes: Sequence[int] = (256, 256),
        output: str = "sigmoid",
        output_bias: float = -2.0,
        output_multiplier: float = 1.0,
        name: str | None = None,
    ):
        super().__init__(name=name)
        if output not in ("sigmoid", "linear"):
            raise ValueError(f"`output` must be 'sigmoid' or 'linear'; got {output!r}.")
        self.glimpse_shape = tuple(_check_sizes(glimpse_shape, "glimpse_shape"))
        self.channels = channels
        self.output = output
        self.output_multiplier = output_multiplier
        self._mlp = mlp(_check_sizes(hidden_sizes, "hidden_sizes"), "mlp")
        h, w = self.glimpse_shape
        self._out = snt.Linear(
            h * w * channels, b_init=snt.initializers.Constant(output_bias), name="out"
        )

    def __call__(self, z_what: tf.Tensor) -> tf.Tensor:
        x = precision.run(lambda z: self._out(self._mlp(z)), z_what)
        x = tf.sigmoid(x) if self.output == "sigmoid" else x
        return self.output_multiplier * tf.reshape(x, [-1, *self.glimpse_shape, self.channels])


class Baseline(snt.Module):
    """Neural baseline `b(x, z)` for the score-function estimator: `[B] -> [B]`.

    An MLP [256, 128] ELU -> 1 on the flattened image and the continuous
    latents of every step (KAIR, K-AIR), with gradients into
    the latents stopped. It never sees `n` or `z_pres`: a baseline that
    depends on the sampled count makes the estimator biased and, as it learns
    to predict the cost *given* n, cancels the signal that should move the
    presence probabilities (KAIR feeds `z_pres` and the final LSTM state,
    which depends on it).
    """

    def __init__(self, hidden_sizes: Sequence[int] = (256, 128), name: str | None = None):
        super().__init__(name=name)
        self._mlp = mlp(_check_sizes(hidden_sizes, "hidden_sizes"), "mlp")
        self._out = snt.Linear(1, name="out")

    def __call__(self, images: tf.Tensor, latents: Sequence[tf.Tensor]) -> tf.Tensor:
        """Args:
        images: `[B, H, W, C]`.
        latents: tensors with leading axis B (e.g. `z_what [B, N, D]`,
          `z_where [B, N, 4]`); flattened, gradients stopped.
        """
        features = [snt.flatten(images)] + [snt.flatten(tf.stop_gradient(z)) for z in latents]
        features = tf.concat(features, axis=-1)
        return precision.run(lambda f: self._out(self._mlp(f)), features)[:, 0]

"""Flow assembly: MADE, MAF, IAF, RealNVP, planar and radial stacks; MADE MoG densities.

Symbols: B batch, D event size, C conditioning size (mixture components for
MADE MoG), K layers, H/W image height/width.

`make_flow` returns a `tfb.Bijector` whose forward direction maps base noise to
data (sampling) and whose inverse maps data to noise (density evaluation);
`make_density` puts it on a standard-normal base, or on a MADE MoG base
(`DENSITY_NAMES` "made_mog", "maf_mog"; `flows.mog.MADEMoG`). Every variable (Sonnet
conditioners, Keras batch-norm layers, planar/radial parameters) is reachable
through the bijector's `trainable_variables` (TFP's MAF/RealNVP keep the
conditioner as an attribute, and the conditioners here are `snt.Module`s, not
closures) and is created at construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp

from common.bijectors import PlanarLayer, RadialLayer
from common.made import MADE
from flows.batch_norm import make_batch_norm
from flows.conditioners import CouplingConditioner, _BoundedLogScale, _LogPrecision
from flows.mog import MADEMoG
from flows.one_pass import MaskedAutoregressiveFlow, RealNVP

tfb = tfp.bijectors
tfd = tfp.distributions

FLOW_NAMES = ("planar", "radial", "made", "maf", "iaf", "realnvp")
# Densities whose base is a MADE MoG (not flows on N(0, I)): make_density only.
MOG_DENSITY_NAMES = ("made_mog", "maf_mog")
DENSITY_NAMES = FLOW_NAMES + MOG_DENSITY_NAMES
# MAF paper (Papamakarios et al. 2017): 10 components per MADE MoG conditional.
DEFAULT_NUM_COMPONENTS = 10
# RealNVP coupling masks: contiguous halves (TFP's `RealNVP`), even/odd coordinates (the MAF
# code's baseline), and the image masks of Dinh et al. 2017, sec. 3.4 (need `image_shape`).
REALNVP_MASKS = ("halves", "parity", "checkerboard", "channel")
IMAGE_MASKS = ("checkerboard", "channel")


# Batch-norm variance epsilon of the MAF code (Papamakarios et al. 2017).
def _layer_seed(seed: int | None, k: int) -> int | None:
    return None if seed is None else seed + 1000 * k


def _coupling_mask(
    mask: str, image_shape: tuple[int, int, int] | None, k: int, event_size: int
) -> np.ndarray:
    """`[D]` bool: the units coupling layer k leaves unchanged (and conditions
    on).

    'parity' (the MAF code's RealNVP, Papamakarios et al. 2017: its mask is
    `arange(D) % 2`, flipped after every coupling) fixes the odd coordinates
    for even k and the even ones for odd k. The image masks are for events
    that flatten `[H, W, C]` images row-major (Dinh et al. 2017, sec. 3.4 and
    Fig. 3): 'checkerboard' fixes the pixels with `(h + w) % 2 == k % 2` (all
    channels of a pixel together), so the parity alternates between layers;
    'channel' fixes channels `[0, C // 2)` for even k and `[C // 2, C)` for
    odd k.
    """
    if mask == "parity":
        return np.arange(event_size) % 2 != k % 2
    height, width, channels = image_shape
    h, w, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij")
    if mask == "checkerboard":
        fixed = (h + w) % 2 == k % 2
    else:
        fixed = (c < channels // 2) if k % 2 == 0 else (c >= channels // 2)
    return fixed.reshape(-1)


def _check_image_shape(
    mask: str, image_shape: Sequence[int] | None, event_size: int
) -> tuple[int, int, int]:
    if image_shape is None:
        raise ValueError(f"The {mask!r} mask needs `image_shape=(H, W, C)`.")
    image_shape = tuple(int(n) for n in image_shape)
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"`image_shape` must be (H, W, C) with positive sizes, got {image_shape}.")
    if int(np.prod(image_shape)) != event_size:
        raise ValueError(
            f"`image_shape` {image_shape} has {int(np.prod(image_shape))} units, but "
            f"`event_size` is {event_size}."
        )
    if mask == "checkerboard" and image_shape[0] * image_shape[1] < 2:
        raise ValueError(f"A checkerboard mask needs at least 2 pixels, got {image_shape}.")
    if mask == "channel" and image_shape[2] < 2:
        raise ValueError(
            f"A channel mask needs at least 2 channels (C >= 2), got image_shape {image_shape}; "
            "use mask='checkerboard' for single-channel images."
        )
    return image_shape


def make_flow(
    name: str,
    event_size: int,
    num_layers: int,
    hidden_units: Sequence[int] = (),
    *,
    conditional_size: int | None = None,
    batch_norm: bool | None = None,
    activation: Callable[[tf.Tensor], tf.Tensor] = tf.nn.relu,
    hidden_degrees: str = "sequential",
    log_scale_bound: float | None = None,
    made_log_precision: bool = False,
    mask: str = "halves",
    image_shape: Sequence[int] | None = None,
    seed: int | None = None,
    dtype: tf.DType = tf.float32,
) -> tfb.Bijector:
    """Builds a flow; forward = noise to data (sampling), inverse = density.

    - 'planar' / 'radial': K `PlanarLayer`/`RadialLayer`s (Rezende & Mohamed
      2015); `hidden_units` must be empty.
    - 'made': one Gaussian MADE (Germain et al. 2015) as a one-layer MAF, the
      MAF paper's MADE baseline; `num_layers` must be 1.
    - 'maf': K MADEs with the input order reversed between consecutive layers
      and a batch-norm bijector after each (density direction), as in
      Papamakarios et al. (2017), sec. 3 and their code.
    - 'iaf': K inverted MAF layers (Kingma et al. 2016; Invert(MAF) has a
      one-pass forward), orders reversed between layers; with
      `conditional_size` every MADE also sees a context `h`.
    - 'realnvp': K affine couplings (Dinh et al. 2017) with
      `CouplingConditioner`s and batch norm after each coupling (MAF paper's
      baseline). `mask='halves'` (default) alternates contiguous halves (the
      first `D // 2` coordinates condition the rest, then the reverse);
      `mask='parity'` alternates odd/even coordinates, as the MAF code does
      (on MNIST the odd columns are then predicted from their neighbours, not
      the bottom half of the image from the top half: the MNIST configs use
      it). As in the MAF code, whose coupling nets read the whole masked
      D-vector, the nets' first layers start as `N(0, 1) / sqrt(D + 1)`.
      For images flattened row-major from `[H, W, C]` (`image_shape`),
      `mask='checkerboard'` alternates the parity of a spatial checkerboard
      and `mask='channel'` alternates channel halves (Dinh et al. 2017,
      sec. 3.4). Each non-'halves' coupling is
      `Permute(inverse) o RealNVP o Permute`, the permutation bringing the
      fixed units first (log-det 0).

    Conditional flows take the context through
    `bijector_kwargs=conditional_kwargs(flow, h)`. Batch norm is built in
    evaluation mode, so the flow is an exact bijection whose log-dets match
    its own forward; a training step asks for minibatch statistics with
    `with_training(flow, True)` (density direction only: its forward raises
    `flows.batch_norm.BatchNormModeError`), and `set_batch_norm_statistics`
    sets the MAF paper's full-training-set statistics.

    Args:
      name: one of `FLOW_NAMES`.
      event_size: D.
      num_layers: K.
      hidden_units: hidden sizes of each MADE / coupling network.
      conditional_size: C, size of the context (made, maf, iaf only).
      batch_norm: batch norm after each layer; default True for maf and
        realnvp, False otherwise (only maf and realnvp accept True).
      activation: MADE hidden nonlinearity.
      hidden_degrees: MADE hidden degrees, 'sequential' or 'random'.
      log_scale_bound: if set, MADE/coupling log-scales are soft-clipped to
        `(-bound, bound)` (`bound * tanh(log_scale / bound)`); `None` (the
        papers' parametrization) leaves them unbounded, which can overflow in
        the sampling direction of deep untrained stacks.
      made_log_precision: made / maf / iaf only: read the MADE's second output
        as a log precision, `log_scale = -0.5 logp` (the MAF code's
        parametrization; `False`, the default, reads it as the log-scale).
      mask: realnvp coupling masks, one of `REALNVP_MASKS`: 'halves' or
        'parity' (vectors), 'checkerboard' or 'channel' (images; need
        `image_shape`).
      image_shape: `(H, W, C)` with `H * W * C = D`, for the image masks only.
      seed: seed of the initial weights and random degrees (`None`: from
        TF's global generator).
      dtype: dtype of every variable.

    Returns:
      A `tfb.Bijector` on `[..., D]` events.

    Raises:
      ValueError: for an unknown name or mask, an argument the flow does not
        take, or an `image_shape` that does not fit the mask (not 3 positive
        sizes, `H * W * C != D`, fewer than 2 pixels for 'checkerboard' or
        `C < 2` for 'channel').
    """
    if name not in FLOW_NAMES:
        raise ValueError(f"Unknown flow {name!r}; expected one of {FLOW_NAMES}.")
    if event_size < 1:
        raise ValueError(f"`event_size` must be positive, got {event_size}.")
    if num_layers < 1:
        raise ValueError(f"`num_layers` must be positive, got {num_layers}.")
    if batch_norm is None:
        batch_norm = name in ("maf", "realnvp")
    if batch_norm and name not in ("maf", "realnvp"):
        raise ValueError(f"`batch_norm` is only supported for maf and realnvp, not {name!r}.")
    if conditional_size is not None and name not in ("made", "maf", "iaf"):
        raise ValueError(f"`conditional_size` is only supported for made, maf, iaf, not {name!r}.")
    if made_log_precision and name not in ("made", "maf", "iaf"):
        raise ValueError(f"`made_log_precision` is a made/maf/iaf option, not {name!r}'s.")
    if log_scale_bound is not None and (name in ("planar", "radial") or log_scale_bound <= 0):
        raise ValueError(
            f"`log_scale_bound` must be positive and is not used by {name!r}, "
            f"got {log_scale_bound}."
        )

    if mask not in REALNVP_MASKS:
        raise ValueError(f"Unknown `mask` {mask!r}; expected one of {REALNVP_MASKS}.")
    if mask != "halves" and name != "realnvp":
        raise ValueError(f"`mask` is a realnvp option; {name!r} takes only 'halves', got {mask!r}.")
    if mask not in IMAGE_MASKS and image_shape is not None:
        raise ValueError(
            f"`image_shape` is only used by the checkerboard and channel masks, got {image_shape} "
            f"with mask={mask!r}."
        )

    def bounded(conditioner: snt.Module) -> snt.Module:
        if log_scale_bound is None:
            return conditioner
        return _BoundedLogScale(conditioner, log_scale_bound)

    if name in ("planar", "radial"):
        if hidden_units:
            raise ValueError(f"{name} flows have no hidden units, got {hidden_units}.")
        layer_cls = PlanarLayer if name == "planar" else RadialLayer
        layers = [layer_cls(event_size, dtype=dtype, name=f"{name}_{k}") for k in range(num_layers)]
        # Chain applies its last bijector first: layer 0 acts first on the noise.
        return tfb.Chain([layer() for layer in reversed(layers)], name=name)

    if name == "realnvp" and mask != "halves":
        if mask in IMAGE_MASKS:
            image_shape = _check_image_shape(mask, image_shape, event_size)
        elif event_size < 2:
            raise ValueError(f"realnvp needs `event_size >= 2`, got {event_size}.")
        bijectors = []
        for k in range(num_layers):
            fixed = _coupling_mask(mask, image_shape, k, event_size)  # [D] bool
            permutation = np.concatenate([np.flatnonzero(fixed), np.flatnonzero(~fixed)])
            num_fixed = int(fixed.sum())
            conditioner = CouplingConditioner(
                num_fixed,
                event_size - num_fixed,
                hidden_units,
                init_fan_in=event_size,  # the MAF code's conditioners read all D inputs
                seed=_layer_seed(seed, k),
                dtype=dtype,
                name=f"coupling_{k}",
            )
            # Chain applies its last bijector first: gather the fixed units to
            # the front, couple, scatter back.
            coupling = tfb.Chain(
                [
                    tfb.Permute(np.argsort(permutation), name=f"unpermute_{k}"),
                    RealNVP(
                        num_masked=num_fixed,
                        shift_and_log_scale_fn=bounded(conditioner),
                        name=f"real_nvp_{k}",
                    ),
                    tfb.Permute(permutation, name=f"permute_{k}"),
                ],
                name=f"{mask}_coupling_{k}",
            )
            bijectors.append(coupling)
            if batch_norm:
                bijectors.append(make_batch_norm(event_size, dtype, f"batch_norm_{k}"))
        return tfb.Chain(bijectors, name=name)

    if name == "realnvp":
        if event_size < 2:
            raise ValueError(f"realnvp needs `event_size >= 2`, got {event_size}.")
        half = event_size // 2
        bijectors = []
        for k in range(num_layers):
            # Even k: x[:half] conditions x[half:]; odd k: the reverse
            # (negative `num_masked` keeps the last units fixed).
            fixed = half if k % 2 == 0 else event_size - half
            conditioner = CouplingConditioner(
                fixed,
                event_size - fixed,
                hidden_units,
                init_fan_in=event_size,  # the MAF code's conditioners read all D inputs
                seed=_layer_seed(seed, k),
                dtype=dtype,
                name=f"coupling_{k}",
            )
            num_masked = half if k % 2 == 0 else -fixed
            bijectors.append(
                RealNVP(
                    num_masked=num_masked,
                    shift_and_log_scale_fn=bounded(conditioner),
                    name=f"real_nvp_{k}",
                )
            )
            if batch_norm:
                bijectors.append(make_batch_norm(event_size, dtype, f"batch_norm_{k}"))
        # Chain's inverse (the density direction) applies bijectors[0] first.
        return tfb.Chain(bijectors, name=name)

    # Autoregressive flows: made, maf, iaf.
    if name == "made" and num_layers != 1:
        raise ValueError(f"made is a single MADE; `num_layers` must be 1, got {num_layers}.")

    def make_made(k: int) -> snt.Module:
        made = MADE(
            event_size,
            hidden_units,
            num_params=2,
            input_order="left-to-right" if k % 2 == 0 else "right-to-left",
            hidden_degrees=hidden_degrees,
            activation=activation,
            conditional_size=conditional_size,
            seed=_layer_seed(seed, k),
            dtype=dtype,
            name=f"made_{k}",
        )
        return bounded(_LogPrecision(made) if made_log_precision else made)

    if name == "made":
        return MaskedAutoregressiveFlow(shift_and_log_scale_fn=make_made(0), name="made")
    if name == "maf":
        bijectors = []
        for k in range(num_layers):
            bijectors.append(
                MaskedAutoregressiveFlow(shift_and_log_scale_fn=make_made(k), name=f"maf_{k}")
            )
            if batch_norm:
                bijectors.append(make_batch_norm(event_size, dtype, f"batch_norm_{k}"))
        return tfb.Chain(bijectors, name=name)
    # IAF: the forward (sampling) of Invert(MAF) is MAF's one-pass inverse.
    # Chain applies its last bijector first, so layer 0 acts first on the noise.
    bijectors = [
        tfb.Invert(
            MaskedAutoregressiveFlow(shift_and_log_scale_fn=make_made(k), name=f"maf_{k}"),
            name=f"iaf_{k}",
        )
        for k in range(num_layers)
    ]
    return tfb.Chain(bijectors[::-1], name=name)


def make_density(
    name: str,
    event_size: int,
    num_layers: int,
    hidden_units: Sequence[int] = (),
    *,
    num_components: int | None = None,
    **kwargs,
) -> tfd.TransformedDistribution:
    """A density: a flow on a standard-normal or a MADE MoG base.

    - `FLOW_NAMES`: `make_flow(name, event_size, num_layers, hidden_units,
      **kwargs)` on `N(0, I_D)` (a vector event, not a scalar base with an
      `event_shape`, TFP issue 787).
    - 'made_mog': one MADE MoG (`flows.MADEMoG`; Papamakarios et al. 2017,
      sec. 4; Germain et al. 2015): every conditional `p(x_i | x_<i)` is a
      mixture of C Gaussians whose logits, means and log-scales come from one
      MADE pass (output biases `N(0, 1)` as in the MAF code). `num_layers`
      must be 1 and there is no batch norm; it is wrapped in a
      `TransformedDistribution` with an identity bijector, so that every
      density here has a `.bijector` (`with_training` and
      `set_batch_norm_statistics` then work unchanged).
    - 'maf_mog': MAF(K) (`make_flow("maf", ...)`, batch norm by default) on a
      MADE MoG base, the MAF paper's "MAF MoG (5)" (sec. 4, Tables 1-2). The base
      continues the alternation of input orders: it follows MADE K-1 in the
      density direction and takes the order that a (K+1)-th MADE would have.

    The MoG densities take `activation`, `hidden_degrees`, `log_scale_bound`
    (also soft-clips the mixture log-scales), `seed`, `dtype` and (maf_mog)
    `batch_norm`; they have no context. Their log_prob is one pass per MADE;
    sampling is D sequential passes of the base MADE, then (maf_mog) of every
    MAF MADE.

    Example:
      ```python
      density = flows.make_density("maf_mog", 784, 5, [1024], num_components=10)
      loss = -tf.reduce_mean(density.log_prob(x))  # x: [B, 784]
      ```

    Args:
      name: one of `DENSITY_NAMES`.
      event_size: D.
      num_layers: K (1 for 'made' and 'made_mog').
      hidden_units: hidden sizes of each MADE / coupling network (and of the
        MoG base's MADE).
      num_components: C, Gaussians per MADE MoG conditional (MoG densities
        only; default `DEFAULT_NUM_COMPONENTS` = 10, the MAF paper's).
      **kwargs: `make_flow`'s keyword arguments.

    Returns:
      A `tfd.TransformedDistribution` with event shape `[D]`; its
      `trainable_variables` are the flow's and the base's.

    Raises:
      ValueError: for an unknown name, `num_components` for a plain flow or
        `< 1`, or an argument the density does not take (see `make_flow`).
    """
    if name not in DENSITY_NAMES:
        raise ValueError(f"Unknown density {name!r}; expected one of {DENSITY_NAMES}.")
    dtype = kwargs.get("dtype", tf.float32)
    if name in FLOW_NAMES:
        if num_components is not None:
            raise ValueError(f"`num_components` is only used by {MOG_DENSITY_NAMES}, not {name!r}.")
        flow = make_flow(name, event_size, num_layers, hidden_units, **kwargs)
        base = tfd.Independent(
            tfd.Normal(tf.zeros([event_size], dtype), tf.ones([event_size], dtype)),
            reinterpreted_batch_ndims=1,
        )
        return tfd.TransformedDistribution(base, flow, name=f"{name}_density")

    num_components = DEFAULT_NUM_COMPONENTS if num_components is None else num_components
    if num_components < 1:
        raise ValueError(f"`num_components` must be positive, got {num_components}.")
    if kwargs.get("conditional_size") is not None:
        raise ValueError(f"{name} has no conditional version here; drop `conditional_size`.")
    if name == "made_mog":
        unused = set(kwargs) - {
            "batch_norm",
            "activation",
            "hidden_degrees",
            "log_scale_bound",
            "seed",
            "dtype",
            "conditional_size",
        }
        if unused:
            raise ValueError(f"made_mog does not take {sorted(unused)}.")
        if num_layers != 1:
            raise ValueError(
                f"made_mog is a single MADE; `num_layers` must be 1, got {num_layers}."
            )
        if kwargs.get("batch_norm"):
            raise ValueError("made_mog has no batch norm; use batch_norm=False or None.")
        if event_size < 1:
            raise ValueError(f"`event_size` must be positive, got {event_size}.")
        flow = tfb.Identity(name="made_mog")
        order, base_index = "left-to-right", 0
    else:
        flow = make_flow("maf", event_size, num_layers, hidden_units, **kwargs)
        # Density direction: data -> MADE 0 -> ... -> MADE K-1 -> base.
        order = "left-to-right" if num_layers % 2 == 0 else "right-to-left"
        base_index = num_layers
    made = MADE(
        event_size,
        hidden_units,
        num_params=3 * num_components,
        input_order=order,
        hidden_degrees=kwargs.get("hidden_degrees", "sequential"),
        activation=kwargs.get("activation", tf.nn.relu),
        output_bias_stddev=1.0,  # the MAF code (gpapamak/maf, mades.py).
        seed=_layer_seed(kwargs.get("seed"), base_index),
        dtype=dtype,
        name=f"made_mog_{base_index}",
    )
    base = MADEMoG(made, num_components, log_scale_bound=kwargs.get("log_scale_bound"))
    return tfd.TransformedDistribution(base, flow, name=f"{name}_density")

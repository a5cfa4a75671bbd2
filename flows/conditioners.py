"""The networks inside the flows' bijectors: the coupling-layer MLPs of RealNVP, the log-scale
readouts of MADE outputs (bounded, or the MAF code's log precision), and the routing of a context
to every conditional conditioner of a flow (`conditional_kwargs`). Symbols: B batch, D event
size, C context size."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp

from common import precision

tfb = tfp.bijectors
tfd = tfp.distributions


def _dense(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """`x @ w + b` for `x: [..., fan_in]` (flattened to one matmul)."""
    if x.shape.rank == 2:
        return tf.matmul(x, w) + b
    out = tf.matmul(tf.reshape(x, [-1, tf.shape(x)[-1]]), w) + b
    return tf.reshape(out, tf.concat([tf.shape(x)[:-1], tf.shape(w)[-1:]], 0))


class _MLP(snt.Module):
    """MLP with a linear output; MAF-code init `N(0, 1) / sqrt(fan_in + 1)`,
    zero biases; variables created at construction. `input_fan_in` replaces
    the first layer's fan-in in that formula (default: `sizes[0]`)."""

    def __init__(
        self,
        sizes: Sequence[int],
        activation: Callable[[tf.Tensor], tf.Tensor],
        rng: np.random.Generator,
        dtype: tf.DType,
        name: str,
        input_fan_in: int | None = None,
    ):
        super().__init__(name=name)
        self.activation = activation
        self.weights, self.biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            scale_fan_in = input_fan_in if i == 0 and input_fan_in is not None else fan_in
            w = rng.standard_normal((fan_in, fan_out)) / np.sqrt(scale_fan_in + 1)
            self.weights.append(tf.Variable(w, dtype=dtype, name=f"w{i}"))
            self.biases.append(tf.Variable(tf.zeros([fan_out], dtype), name=f"b{i}"))

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return precision.run(self._layers, x)  # mixed precision (common/precision.py)

    def _layers(self, x: tf.Tensor) -> tf.Tensor:
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = _dense(x, w, b)
            if i < len(self.weights) - 1:
                x = self.activation(x)
        return x


class CouplingConditioner(snt.Module):
    """Shift and log-scale of an affine coupling layer (Dinh et al. 2017,
    sec. 3.2): `y_b = x_b * exp(s(x_a)) + t(x_a)`.

    As in the MAF paper's RealNVP baseline (Papamakarios et al. 2017, code):
    separate scale net `s` (tanh hidden units) and shift net `t` (ReLU hidden
    units), both with linear outputs. Called by `tfb.RealNVP` as
    `conditioner(x_a, output_units)`.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_units: Sequence[int],
        scale_activation: Callable[[tf.Tensor], tf.Tensor] = tf.tanh,
        shift_activation: Callable[[tf.Tensor], tf.Tensor] = tf.nn.relu,
        init_fan_in: int | None = None,
        seed: int | None = None,
        dtype: tf.DType = tf.float32,
        name: str | None = None,
    ):
        """Creates both networks.

        Args:
          input_size: size of the conditioning half `x_a`.
          output_size: size of the transformed half `x_b`.
          hidden_units: hidden sizes of each network.
          scale_activation: hidden nonlinearity of `s`.
          shift_activation: hidden nonlinearity of `t`.
          init_fan_in: the fan-in that scales the first layer's initial
            weights, `N(0, 1) / sqrt(init_fan_in + 1)`; default `input_size`.
            The MAF code's conditioners read the whole masked D-vector (the
            transformed half zeroed), so their first layer has fan-in D:
            `make_flow` passes `init_fan_in=D`.
          seed: NumPy seed of the initial weights (`None`: from TF's global
            generator).
          dtype: variable dtype.
          name: module name.

        Raises:
          ValueError: for non-positive sizes.
        """
        super().__init__(name=name)
        if input_size < 1 or output_size < 1:
            raise ValueError(
                f"`input_size` and `output_size` must be positive, got {input_size}, {output_size}."
            )
        self.output_size = output_size
        if seed is None:
            seed = int(tf.random.uniform([], 0, 2**31 - 1, dtype=tf.int64))
        rng = np.random.default_rng(seed)
        if init_fan_in is not None and init_fan_in < 1:
            raise ValueError(f"`init_fan_in` must be positive, got {init_fan_in}.")
        sizes = [input_size, *hidden_units, output_size]
        self.scale_net = _MLP(sizes, scale_activation, rng, dtype, "scale", init_fan_in)
        self.shift_net = _MLP(sizes, shift_activation, rng, dtype, "shift", init_fan_in)

    def __call__(self, x_a: tf.Tensor, output_units: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns `(shift, log_scale)`, each `[..., output_size]`."""
        if output_units != self.output_size:
            raise ValueError(f"Expected {self.output_size} output units, got {output_units}.")
        return self.shift_net(x_a), self.scale_net(x_a)


class _LogScaleOutput(snt.Module):
    """Wraps a `(shift, raw)` conditioner (MADE or coupling net) and returns
    `(shift, log_scale(raw))`; subclasses define `log_scale`."""

    def __init__(self, conditioner: snt.Module, prefix: str):
        super().__init__(name=f"{prefix}_{conditioner.name}")
        self.conditioner = conditioner

    @property
    def conditional(self) -> bool:
        return getattr(self.conditioner, "conditional", False)

    def log_scale(self, raw: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def __call__(self, *args, **kwargs) -> tuple[tf.Tensor, tf.Tensor]:
        shift, raw = self.conditioner(*args, **kwargs)
        return shift, self.log_scale(raw)


class _BoundedLogScale(_LogScaleOutput):
    """Soft-clips a conditioner's log-scale to `(-bound, bound)` with
    `bound * tanh(log_scale / bound)` (the deprecated TFP template clipped to
    [-5, 3]; `tfb.AutoregressiveNetwork` does not clip)."""

    def __init__(self, conditioner: snt.Module, bound: float):
        super().__init__(conditioner, "bounded")
        self.bound = bound

    def log_scale(self, raw: tf.Tensor) -> tf.Tensor:
        return self.bound * tf.tanh(raw / self.bound)


class _LogPrecision(_LogScaleOutput):
    """Reads a MADE's second output as a log precision `logp` and returns
    `log_scale = -0.5 logp`: the MAF code's parametrization (Papamakarios et
    al. 2017, code: `u = exp(0.5 logp) (x - m)`). The same model family as a
    direct log-scale, but the log-scale starts at half the spread and Adam
    moves it half as fast; on MNIST the single MADE is ~30 nats ahead after 8
    epochs with it (flows/README.md)."""

    def __init__(self, conditioner: snt.Module):
        super().__init__(conditioner, "log_precision")

    def log_scale(self, raw: tf.Tensor) -> tf.Tensor:
        return -0.5 * raw


def _children(bijector: tfb.Bijector) -> list[tfb.Bijector] | None:
    """Sub-bijectors of a Chain (list) or Invert (one), else None."""
    params = bijector.parameters
    if isinstance(params.get("bijectors"), (list, tuple)):
        return list(params["bijectors"])
    if isinstance(params.get("bijector"), tfb.Bijector):
        return [params["bijector"]]
    return None


def _leaf_kwargs(bijector: tfb.Bijector, conditional_input) -> dict:
    fn = bijector.parameters.get("shift_and_log_scale_fn") or bijector.parameters.get("bijector_fn")
    if getattr(fn, "conditional", False):
        return {"conditional_input": conditional_input}
    return {}


def conditional_kwargs(flow: tfb.Bijector, conditional_input: tf.Tensor) -> dict:
    """Routes a context to every conditional MADE of a flow.

    TFP's `Chain` passes keyword arguments to its parts by name and `Invert`
    passes them through; this builds that nested dict.

    Example:
      ```python
      q = flows.make_density("iaf", 8, 2, [32], conditional_size=16)
      z = q.sample(bijector_kwargs=flows.conditional_kwargs(q.bijector, h))
      ```

    Args:
      flow: a bijector built by `make_flow` (or any Chain/Invert nesting of
        MAFs whose conditioner has a `conditional` attribute).
      conditional_input: `[..., C]` context.

    Returns:
      The `bijector_kwargs` dict (empty if nothing is conditional).
    """
    children = _children(flow)
    if children is None:
        return _leaf_kwargs(flow, conditional_input)
    if len(children) == 1 and "bijector" in flow.parameters:  # Invert.
        return conditional_kwargs(children[0], conditional_input)
    routed = {}
    for child in children:
        child_kwargs = conditional_kwargs(child, conditional_input)
        if child_kwargs:
            routed[child.name] = child_kwargs
    return routed

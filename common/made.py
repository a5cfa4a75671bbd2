"""MADE: masked autoencoder for distribution estimation (Germain et al. 2015).

Symbols: B batch, D event size, C conditioning size, P parameters per
dimension (2 for a Gaussian/affine MADE: shift and log-scale).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import sonnet as snt
import tensorflow as tf

from common import precision

INPUT_ORDERS = ("left-to-right", "right-to-left", "random")
HIDDEN_DEGREES = ("sequential", "random")


def make_input_degrees(
    event_size: int, input_order: str | Sequence[int], rng: np.random.Generator
) -> np.ndarray:
    """Degrees m^0(d) of the inputs: the position (1..D) of input d in the order.

    Args:
      event_size: D.
      input_order: 'left-to-right', 'right-to-left' (a.k.a. reversed),
        'random', or an explicit permutation of `1..D` (the degree of each
        input).
      rng: for 'random'.

    Returns:
      `[D]` int array, a permutation of `1..D`.

    Raises:
      ValueError: for an unknown order or a sequence that is not a permutation.
    """
    if isinstance(input_order, str):
        if input_order == "left-to-right":
            return np.arange(1, event_size + 1)
        if input_order == "right-to-left":
            return np.arange(event_size, 0, -1)
        if input_order == "random":
            return rng.permutation(event_size) + 1
        raise ValueError(f"Unknown `input_order` {input_order!r}; expected one of {INPUT_ORDERS}.")
    degrees = np.asarray(input_order, dtype=np.int64)
    if degrees.shape != (event_size,) or not np.array_equal(
        np.sort(degrees), np.arange(1, event_size + 1)
    ):
        raise ValueError(
            f"`input_order` must be a permutation of 1..{event_size}, got {input_order!r}."
        )
    return degrees


def make_hidden_degrees(
    event_size: int,
    hidden_units: Sequence[int],
    first_degrees: np.ndarray,
    mode: str,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Degrees m^l(k) of the hidden units, layer by layer.

    Germain et al. (2015), sec. 4: m^l(k) in {min_k' m^(l-1)(k'), ..., D - 1};
    the lower bound keeps every unit connected to something. 'random' draws
    uniformly from that range (the MADE paper); 'sequential' cycles through
    `1..D-1` (Papamakarios et al.'s MAF code). For D = 1 every hidden unit
    gets degree 0 (it sees no input; the output is bias/context only).

    Args:
      event_size: D.
      hidden_units: sizes of the hidden layers.
      first_degrees: `[D]` input degrees.
      mode: 'sequential' or 'random'.
      rng: for 'random'.

    Returns:
      One int array per hidden layer.

    Raises:
      ValueError: for an unknown mode.
    """
    if mode not in HIDDEN_DEGREES:
        raise ValueError(f"Unknown `hidden_degrees` {mode!r}; expected one of {HIDDEN_DEGREES}.")
    high = event_size - 1
    degrees, previous = [], first_degrees
    for units in hidden_units:
        low = min(int(np.min(previous)), high)
        if mode == "random":
            layer = rng.integers(low, high + 1, size=units)
        else:
            layer = np.arange(units) % max(1, high - low + 1) + low
        degrees.append(layer)
        previous = layer
    return degrees


def make_masks(
    input_deg: np.ndarray, hidden_deg: Sequence[np.ndarray], num_params: int
) -> list[np.ndarray]:
    """Binary connectivity masks, `[fan_in, fan_out]` like the weights.

    Germain et al. (2015), sec. 4. Hidden layers: unit k' of layer l sees unit k
    of layer l-1 iff m^l(k') >= m^(l-1)(k). Output (strict): output d
    sees hidden unit k iff m^0(d) > m^L(k), so output d only depends on inputs
    earlier in the order. The output layer has `num_params * D` units laid
    out parameter-major (`[P, D]` flattened), so each parameter is a
    contiguous slice.
    """
    result, previous = [], input_deg
    for layer in hidden_deg:
        result.append((previous[:, None] <= layer[None, :]).astype(np.float32))
        previous = layer
    output = (previous[:, None] < input_deg[None, :]).astype(np.float32)  # [H_L, D]
    result.append(np.tile(output, [1, num_params]))  # [H_L, P * D]
    return result


def _masked_read(variable: tf.Variable, mask: tf.Tensor) -> tf.Tensor:
    """Reads a pre-masked weight: identity forwards, masked gradient backwards.

    The weight's masked entries start at zero and receive exactly zero
    gradient, so any optimizer whose update is zero for a zero gradient
    (SGD, momentum, Adam, RMSProp, decoupled weight decay) keeps them at zero
    and the forward pass needs no `W * mask`.
    """

    # The mask is an explicit input (not a closure capture), so that the
    # gradient also works inside `tf.while_loop` bodies (MAF sampling) under
    # `tf.function`.
    @tf.custom_gradient
    def identity(value, mask):
        def grad(upstream):
            return upstream * mask, None

        return tf.identity(value), grad

    return identity(tf.convert_to_tensor(variable), mask)


class MADE(snt.Module):
    """Masked autoencoder for distribution estimation (Germain et al. 2015).

    Maps `x: [..., D]` (and optionally a context `[..., C]`) to `P` tensors
    `[..., D]`; parameter `p` of dimension `d` depends only on the inputs that
    precede `d` in `input_order` and on the context. The context enters every
    layer, output included, through unmasked weights (degree 0; TFP's
    `AutoregressiveNetwork` default), so even the first dimension in the order
    depends on it; the MAF code feeds it to the first layer only, which leaves
    that dimension unconditioned. With `num_params=2` the outputs are `(shift, log_scale)`
    and the module is a `shift_and_log_scale_fn` for
    `tfb.MaskedAutoregressiveFlow` (the context goes through
    `bijector_kwargs={'conditional_input': h}`).

    Speed: masks are NumPy constants fixed at construction; by default the
    weights are stored pre-masked and only the gradient is masked
    (`_masked_read`), so a call is plain matmuls with no `W * mask` (which
    `premasked=False` applies instead; the two agree exactly). All weights are
    one matmul per layer: the P output parameters share one output matrix,
    and the context's contributions to all layers are one matmul with a
    concatenated `[C, H_1 + ... + H_L + P * D]` matrix.

    Initialization as in the MAF code (Papamakarios et al. 2017): weights
    `N(0, 1) / sqrt(fan_in + 1)` (then masked), zero biases (random-normal
    output biases with `output_bias_stddev`, as its mixture MADE).

    Example:
      ```python
      made = flows.MADE(event_size=5, hidden_units=[64, 64])
      maf = tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made)
      ```
    """

    def __init__(
        self,
        event_size: int,
        hidden_units: Sequence[int],
        num_params: int = 2,
        input_order: str | Sequence[int] = "left-to-right",
        hidden_degrees: str = "sequential",
        activation: Callable[[tf.Tensor], tf.Tensor] = tf.nn.relu,
        conditional_size: int | None = None,
        premasked: bool = True,
        output_bias_stddev: float = 0.0,
        seed: int | None = None,
        dtype: tf.DType = tf.float32,
        name: str | None = None,
    ):
        """Creates the masks and variables.

        Args:
          event_size: D.
          hidden_units: sizes of the hidden layers (may be empty: a masked
            linear map).
          num_params: P, number of outputs per dimension.
          input_order: see `make_input_degrees`.
          hidden_degrees: 'sequential' (MAF code) or 'random' (MADE paper).
          activation: hidden nonlinearity.
          conditional_size: C; `None` for an unconditional MADE.
          premasked: store pre-masked weights and mask only the gradients
            (saves one `W * mask` per layer per call, D calls per MAF
            sample); `False` multiplies by the mask at every call.
          seed: NumPy seed for random orders/degrees and the initial weights
            (`None`: draw one from TF's global generator, so
            `tf.random.set_seed` makes it reproducible).
          dtype: variable dtype.
          name: module name.

        Raises:
          ValueError: for a non-positive size or an unknown order/degree mode.
        """
        super().__init__(name=name)
        if event_size < 1:
            raise ValueError(f"`event_size` must be positive, got {event_size}.")
        if num_params < 1:
            raise ValueError(f"`num_params` must be positive, got {num_params}.")
        if any(units < 1 for units in hidden_units):
            raise ValueError(f"`hidden_units` must be positive, got {hidden_units}.")
        if conditional_size is not None and conditional_size < 1:
            raise ValueError(f"`conditional_size` must be positive, got {conditional_size}.")
        if output_bias_stddev < 0:
            raise ValueError(f"`output_bias_stddev` must be >= 0, got {output_bias_stddev}.")
        self.event_size = event_size
        self.hidden_units = tuple(hidden_units)
        self.num_params = num_params
        self.activation = activation
        self.conditional_size = conditional_size
        self.premasked = premasked
        if seed is None:
            seed = int(tf.random.uniform([], 0, 2**31 - 1, dtype=tf.int64))
        rng = np.random.default_rng(seed)

        self.input_degrees = make_input_degrees(event_size, input_order, rng)
        self.hidden_degrees = make_hidden_degrees(
            event_size, self.hidden_units, self.input_degrees, hidden_degrees, rng
        )
        self.masks = make_masks(self.input_degrees, self.hidden_degrees, num_params)
        self._mask_constants = [tf.constant(m, dtype) for m in self.masks]

        sizes = [event_size, *self.hidden_units, num_params * event_size]
        self._layer_sizes = sizes[1:]
        extra_fan_in = conditional_size or 0
        self.weights, self.biases, context_blocks = [], [], []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            scale = 1.0 / np.sqrt(fan_in + extra_fan_in + 1)
            w = rng.standard_normal((fan_in, fan_out)) * scale
            self.weights.append(tf.Variable(w * self.masks[i], dtype=dtype, name=f"w{i}"))
            self.biases.append(tf.Variable(tf.zeros([fan_out], dtype), name=f"b{i}"))
            if conditional_size is not None:
                context_blocks.append(rng.standard_normal((conditional_size, fan_out)) * scale)
        if output_bias_stddev > 0:
            # Drawn after everything else, so the default stream is unchanged.
            self.biases[-1].assign(rng.standard_normal(sizes[-1]) * output_bias_stddev)
        self.conditional_weights = None
        if conditional_size is not None:
            self.conditional_weights = tf.Variable(  # [C, H_1 + ... + H_L + P * D]
                np.concatenate(context_blocks, axis=1), dtype=dtype, name="w_context"
            )

    @property
    def conditional(self) -> bool:
        return self.conditional_size is not None

    def _weight(self, i: int) -> tf.Tensor:
        weight = self.weights[i]  # a cast tensor under mixed precision
        mask = tf.cast(self._mask_constants[i], weight.dtype)
        if self.premasked:
            return _masked_read(weight, mask)
        return weight * mask

    def _layers(self, h: tf.Tensor, context: list[tf.Tensor] | None) -> tf.Tensor:
        num_layers = len(self.weights)
        for i in range(num_layers):
            out = tf.matmul(h, self._weight(i)) + self.biases[i]
            if context is not None:
                out += context[i]
            h = self.activation(out) if i < num_layers - 1 else out
        return h

    def __call__(
        self, x: tf.Tensor, conditional_input: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, ...]:
        """Applies the network.

        Args:
          x: `[..., D]` input.
          conditional_input: `[..., C]` context, broadcastable against the
            batch shape of `x`; required iff `conditional_size` was given.

        Returns:
          A tuple of `num_params` tensors, each `[..., D]`.

        Raises:
          ValueError: if the context is missing or unexpected.
        """
        if self.conditional != (conditional_input is not None):
            raise ValueError(
                "`conditional_input` must be given iff the MADE has `conditional_size` "
                f"(conditional_size={self.conditional_size})."
            )
        x = tf.convert_to_tensor(x)
        batch_shape = tf.shape(x)[:-1]
        flat = x.shape.rank != 2
        h = tf.reshape(x, [-1, self.event_size]) if flat else x  # [B, D]
        context = None
        if conditional_input is not None:
            context = tf.convert_to_tensor(conditional_input, dtype=x.dtype)
            context = tf.broadcast_to(
                context, tf.concat([batch_shape, [self.conditional_size]], axis=0)
            )
            context = tf.reshape(context, [-1, self.conditional_size])  # [B, C]
            context = tf.split(  # One matmul for all layers.
                tf.matmul(context, self.conditional_weights), self._layer_sizes, axis=-1
            )
        # The layers in the mixed-precision policy's dtype (common/precision.py).
        h = precision.run(self._layers, h, context)
        if flat:
            h = tf.reshape(h, tf.concat([batch_shape, [self.num_params * self.event_size]], 0))
        return tuple(tf.split(h, self.num_params, axis=-1))

"""Mixed precision for Sonnet modules: float32 variables, bfloat16 / float16 arithmetic.

`config.precision` names a policy:

  float32:         everything in float32 (the default).
  mixed_bfloat16:  the matmul-heavy networks (MLPs, LSTMs, convolutions, attention blocks)
                   compute in bfloat16 on float32 variables: faster matmuls on CPUs with
                   AVX512_BF16 or AMX and on TPUs (the README has this machine's figures).
                   bfloat16 has float32's exponent range, so no loss scaling is needed.
  mixed_float16:   the same in float16, for GPUs with tensor cores; the training loop scales
                   the loss dynamically (`tf_keras.mixed_precision.LossScaleOptimizer`) so that
                   small gradients do not flush to zero. On CPUs float16 arithmetic is
                   emulated and slow.

The training loop sets the policy (`policy(config.precision)`, around tracing) and the models
call `run(network, *inputs)` around each such network: while a mixed policy is active,
floating-point inputs are cast to its dtype, every Sonnet module's variables are read through a
cast (`snt.custom_variable_getter`; the variables themselves, the optimizer state and the
checkpoints stay float32; variables a module creates on its first call are float32 too) and the
outputs come back in the inputs' dtype. Everything outside, the
numerically sensitive parts (log-sum-exp, KL divergences, likelihoods and their mixtures,
log-det-Jacobians, `NumStepsDistribution`), stays in float32 (Micikevicius et al. 2018, "Mixed
precision training", sec. 3; the same split as Keras' mixed-precision policies). Evaluation
binaries compute the reported figures in float32 whatever the run was trained with.
"""

import contextlib
from collections.abc import Callable, Iterator

import sonnet as snt
import tensorflow as tf

POLICIES = {
    "float32": tf.float32,
    "mixed_bfloat16": tf.bfloat16,
    "mixed_float16": tf.float16,
}


def compute_dtype(policy: str) -> tf.DType:
    """The arithmetic dtype of `policy` (a key of `POLICIES`).

    Raises:
      ValueError: an unknown policy, naming the valid ones.
    """
    if policy not in POLICIES:
        raise ValueError(f"precision must be one of {', '.join(POLICIES)}, got {policy!r}.")
    return POLICIES[policy]


_active = tf.float32  # the policy's dtype while `policy()` is active (global, as Keras' policy)


@contextlib.contextmanager
def policy(name: str) -> Iterator[tf.DType]:
    """Makes `run` compute in `compute_dtype(name)` inside the `with` block (and in the
    `tf.function`s traced there); yields that dtype.

    Raises:
      ValueError: an unknown policy.
    """
    global _active
    previous, _active = _active, compute_dtype(name)
    try:
        yield _active
    finally:
        _active = previous


def active_dtype() -> tf.DType:
    """The compute dtype of the active `policy` (float32 outside any)."""
    return _active


def uses_loss_scaling(policy: str) -> bool:
    """Whether training under `policy` needs dynamic loss scaling (float16 only)."""
    return compute_dtype(policy) == tf.float16


def _is_float(x) -> bool:
    return isinstance(x, tf.Tensor | tf.Variable) and x.dtype.is_floating


def _cast_floats(structure, dtype: tf.DType):
    def cast(x):
        return tf.cast(x, dtype) if _is_float(x) and x.dtype != dtype else x

    return tf.nest.map_structure(cast, structure)


def _float32_variables(next_creator, **kwargs):
    """A variable creator that makes float32 variables whatever dtype the module asks for (a
    Sonnet module creates its variables in its inputs' dtype on its first call)."""
    initial = kwargs.get("initial_value")
    if callable(initial):
        initial = initial()
    initial = tf.convert_to_tensor(initial)
    if initial.dtype.is_floating and initial.dtype != tf.float32:
        initial = tf.cast(initial, tf.float32)
    kwargs["initial_value"] = initial
    if kwargs.get("dtype") is not None and tf.as_dtype(kwargs["dtype"]).is_floating:
        kwargs["dtype"] = tf.float32
    return next_creator(**kwargs)


def run(network: Callable, *args, **kwargs):
    """`network(*args, **kwargs)` computed in the active policy's dtype.

    Args:
      network: a Sonnet module or a function of Sonnet modules. Variables it creates (a
        module's first call) are float32 whatever the policy.
      *args, **kwargs: nests of tensors; floating ones are cast to the compute dtype. Under
        float32 `network` is called unchanged.

    Returns:
      `network`'s outputs with every floating tensor cast back to the dtype of the floating
      inputs (float32 if none).
    """
    dtype = _active
    if dtype == tf.float32:
        return network(*args, **kwargs)
    floats = [x for x in tf.nest.flatten((args, kwargs)) if _is_float(x)]
    out_dtype = floats[0].dtype if floats else tf.float32
    args, kwargs = _cast_floats((args, kwargs), dtype)
    with (
        tf.variable_creator_scope(_float32_variables),
        snt.custom_variable_getter(lambda v: tf.cast(v, dtype) if v.dtype != dtype else v),
    ):
        outputs = network(*args, **kwargs)
    return _cast_floats(outputs, out_dtype)

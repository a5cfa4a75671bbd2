"""Batch normalization as a bijector inside MAF and RealNVP (Papamakarios et al. 2017, sec. 3.3 and
appendix; Dinh et al. 2017, sec. 3.7): construction, the training / evaluation modes of a whole
flow, and the MAF code's evaluation statistics from the training set. Symbols: N examples,
D event size."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from flows.conditioners import _children, conditional_kwargs

tfb = tfp.bijectors
tfd = tfp.distributions

BATCH_NORM_EPSILON = 1e-5


class BatchNormModeError(NotImplementedError):
    """The sampling direction of a batch-norm bijector in training mode was asked for."""


class _BatchNormalization(tfb.BatchNormalization):
    """`tfb.BatchNormalization` that is an exact bijection in evaluation mode and a
    density-direction-only map in training mode.

    Evaluation mode (`training=False`, what `make_batch_norm` and `make_flow`
    build): both directions use the stored statistics, so `inverse(forward(x))
    = x` and the log-dets are those of one affine map.

    Training mode (`with_training(flow, True)`, for the training step's
    `log_prob` only): `inverse(y)` normalizes with the minibatch statistics of
    `y`, which no `forward(x)` can know, so the forward direction of a batch
    that did not come from `inverse` raises `BatchNormModeError` instead of
    silently using other statistics.

    In TFP 0.25, `inverse` (the density direction) normalizes with minibatch
    statistics in training mode, but `_forward_log_det_jacobian` always uses
    the moving variance; and `TransformedDistribution.log_prob` takes the
    log-det as `-forward_log_det_jacobian(inverse(y))`. So in training mode
    `log_prob` mixed minibatch normalization with the moving-variance
    log-det: off by `0.5 * sum(log var_batch - log moving_var)`, making the
    loss wrong and training diverge. Here, in training mode, the forward
    log-det at `x` is `-ildj(forward(x))`; when `x` came from `inverse(y)`
    (always, inside `log_prob`), TFP's bijector cache returns that same `y`,
    so the log-det uses the minibatch statistics that normalized `y`.
    Evaluation mode is unchanged (stored statistics throughout).
    """

    def _forward(self, x):
        if self.parameters["training"]:
            raise BatchNormModeError(
                f"{self.name}: batch norm in training mode normalizes each minibatch in the "
                "density direction only; sample (forward) with `with_training(flow, False)`, "
                "which uses the stored statistics."
            )
        return super()._forward(x)

    def _forward_log_det_jacobian(self, x):
        if not self.parameters["training"]:
            return super()._forward_log_det_jacobian(x)
        # `x` came from `inverse(y)` (inside `log_prob`): the cache returns that `y`, so the
        # log-det uses the minibatch statistics that normalized it.
        return -self._inverse_log_det_jacobian(self.forward(x))


def make_batch_norm(event_size: int, dtype: tf.DType, name: str) -> tfb.BatchNormalization:
    """A batch-norm bijector with its variables built (MAF paper and code), in evaluation
    mode (an exact bijection with the stored statistics; `with_training` gives the
    training step's minibatch mode).

    Deviation: the Keras layer learns `gamma` (kept positive by TFP's
    `gamma_constraint`, which Keras optimizers apply after each step; other
    optimizers should call `var.constraint` themselves) where the MAF code
    learns `log gamma`.
    """
    layer = tf_keras.layers.BatchNormalization(
        epsilon=BATCH_NORM_EPSILON,
        gamma_constraint=lambda gamma: tf.nn.relu(gamma) + 1e-6,
        dtype=tf.as_dtype(dtype).name,
        name=name,
    )
    layer.build([None, event_size])
    return _BatchNormalization(batchnorm_layer=layer, training=False, name=name)


def with_training(
    flow: tfb.Bijector | tfd.TransformedDistribution, training: bool
) -> tfb.Bijector | tfd.TransformedDistribution:
    """Returns `flow` with every batch-norm bijector in `training` mode.

    `tfb.BatchNormalization` fixes its mode at construction; this rebuilds the
    Chain/Invert nesting around copies of the batch-norm bijectors that share
    the same Keras layers, so both flows share every variable.

    Args:
      flow: a bijector, or a `TransformedDistribution` over one.
      training: True: minibatch statistics in the density direction (and
        updates of the moving averages); False: the stored statistics.

    Returns:
      The same kind of object as `flow`.
    """
    if isinstance(flow, tfd.TransformedDistribution):
        return flow.copy(bijector=with_training(flow.bijector, training))
    if isinstance(flow, tfb.BatchNormalization):
        return flow.copy(training=training)
    children = _children(flow)
    if children is None:
        return flow
    new_children = [with_training(child, training) for child in children]
    if "bijector" in flow.parameters:
        return flow.copy(bijector=new_children[0])
    return flow.copy(bijectors=new_children)


def set_batch_norm_statistics(
    flow: tfb.Bijector, x: tf.Tensor, conditional_input: tf.Tensor | None = None
) -> tf.Tensor:
    """Sets the stored statistics of every batch-norm layer from data.

    The MAF code evaluates with the batch-norm mean and variance of the whole
    training set (not a moving average): `x` is pushed through the flow in
    the density direction and each batch-norm layer's `moving_mean` and
    `moving_variance` are set to the (biased) statistics of its input.

    Args:
      flow: a bijector built by `make_flow`.
      x: `[N, D]` data (e.g. the whole training set).
      conditional_input: `[N, C]` context for conditional flows.

    Returns:
      `[N, D]` the data mapped to the base space with the new statistics.
    """
    if isinstance(flow, tfb.BatchNormalization):
        mean, variance = tf.nn.moments(x, axes=[0])
        flow.batchnorm.moving_mean.assign(mean)
        flow.batchnorm.moving_variance.assign(variance)
        return flow.copy(training=False).inverse(x)
    children = _children(flow)
    if children is not None and "bijectors" in flow.parameters:
        for child in children:  # Chain's inverse applies bijectors[0] first.
            x = set_batch_norm_statistics(child, x, conditional_input)
        return x
    kwargs = conditional_kwargs(flow, conditional_input) if conditional_input is not None else {}
    return with_training(flow, False).inverse(x, **kwargs)

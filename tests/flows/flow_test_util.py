"""Shared checks for bijector tests (after TFP's `bijector_test_util`).

Caching pitfall (TFP's bijector cache, `tensorflow_probability/python/internal/
cache_util.py`): TFP caches `forward`/`inverse` results by
tensor identity, so every check below feeds *fresh* tensors
(`tf.constant(array)`) to each call it means to test.
"""

from __future__ import annotations

import numpy as np
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors


def batch_norms(flow) -> list:
    """The batch-norm bijectors directly inside a `tfb.Chain` flow."""
    return [
        b for b in flow.parameters.get("bijectors", []) if isinstance(b, tfb.BatchNormalization)
    ]


def randomize_batch_norm(flow, rng: np.random.Generator) -> None:
    """Non-trivial stored statistics and affine parameters, so that the
    evaluation-mode batch norm is not the identity."""
    for bn in batch_norms(flow):
        layer = bn.batchnorm
        d = layer.moving_mean.shape[0]
        layer.moving_mean.assign(rng.normal(size=d) * 0.5)
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=d))
        layer.gamma.assign(rng.uniform(0.5, 1.5, size=d))
        layer.beta.assign(rng.normal(size=d) * 0.5)


def autodiff_log_det(bijector, x: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Returns `(forward(x), log|det d forward / dx|)` from `batch_jacobian`.

    `x` is `[B, D]`; examples must be independent (no batch-norm in training
    mode).
    """
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = bijector.forward(x, **kwargs)
    jacobian = tape.batch_jacobian(y, x)  # [B, D, D]
    sign, log_abs_det = np.linalg.slogdet(jacobian.numpy())
    assert np.all(sign != 0), "singular Jacobian"
    return y.numpy(), log_abs_det


def check_bijector(test, bijector, x: np.ndarray, rtol: float = 1e-9, atol: float = 1e-9, **kwargs):
    """inverse(forward(x)) = x, forward(inverse(y)) = y, fldj(x) = -ildj(y)
    and fldj equals the autodiff log-determinant."""
    y, log_det = autodiff_log_det(bijector, x, **kwargs)
    fldj = bijector.forward_log_det_jacobian(tf.constant(x), event_ndims=1, **kwargs).numpy()
    x_back = bijector.inverse(tf.constant(y), **kwargs).numpy()
    y_again = bijector.forward(tf.constant(x_back), **kwargs).numpy()
    ildj = bijector.inverse_log_det_jacobian(tf.constant(y), event_ndims=1, **kwargs).numpy()
    test.assertAllClose(x_back, x, rtol=rtol, atol=atol)
    test.assertAllClose(y_again, y, rtol=rtol, atol=atol)
    test.assertAllClose(np.broadcast_to(fldj, log_det.shape), log_det, rtol=rtol, atol=atol)
    test.assertAllClose(np.broadcast_to(ildj, log_det.shape), -log_det, rtol=rtol, atol=atol)
    return y


def check_2d_density(test, density, num_samples: int = 20000, grid_size: int = 200, **kwargs):
    """A 2-D density integrates to 1 on a grid, and the moments E[x_i],
    E[x_i^2], E[x_1 x_2] of its samples agree with the grid's (to 5 standard
    errors plus the grid error)."""
    samples = density.sample(num_samples, seed=1234, **kwargs).numpy()
    test.assertTrue(np.all(np.isfinite(samples)))
    lo = samples.min(axis=0) - 1.0
    hi = samples.max(axis=0) + 1.0
    axes = [np.linspace(lo[i], hi[i], grid_size) for i in range(2)]
    cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    grid = grid.astype(samples.dtype)
    prob = np.exp(density.log_prob(tf.constant(grid), **kwargs).numpy())
    mass = prob.sum() * cell
    test.assertAllClose(mass, 1.0, atol=1e-2)

    def moments(x):
        return np.stack([x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 1] ** 2, x[:, 0] * x[:, 1]], -1)

    grid_moments = (moments(grid) * prob[:, None]).sum(0) * cell / mass
    sample_values = moments(samples)
    standard_error = sample_values.std(0) / np.sqrt(num_samples)
    tolerance = 5 * standard_error + 2e-3 * (1 + np.abs(grid_moments))  # Grid error.
    test.assertAllLessEqual(np.abs(sample_values.mean(0) - grid_moments) / tolerance, 1.0)


def check_every_variable_trains(test, density, x: np.ndarray, variables) -> None:
    """Every one of `variables` gets a finite gradient of the mean negative log-likelihood of
    `x` under `density`, and one Adam(1e-2) step moves it."""
    x = tf.constant(x, tf.float32)
    before = [v.numpy().copy() for v in variables]
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(density.log_prob(x))
    grads = tape.gradient(loss, variables)
    for variable, grad in zip(variables, grads, strict=True):
        test.assertIsNotNone(grad, variable.name)
        test.assertTrue(np.all(np.isfinite(grad.numpy())), variable.name)
    snt.optimizers.Adam(1e-2).apply(grads, variables)
    for variable, old in zip(variables, before, strict=True):
        test.assertNotAllClose(variable.numpy(), old, msg=variable.name)

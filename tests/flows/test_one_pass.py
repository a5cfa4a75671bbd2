"""flows.one_pass: MAF and RealNVP with the values and gradients of TFP's classes, one network
pass per log_prob."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import flows
from flows import one_pass

tfb = tfp.bijectors
tfd = tfp.distributions


def _affine_made(event_size: int, seed: int, conditional: bool = False) -> flows.MADE:
    return flows.MADE(
        event_size,
        hidden_units=[8, 8],
        num_params=2,
        conditional_size=3 if conditional else None,
        seed=seed,
    )


def _pair(event_size: int, conditional: bool = False):
    """The same MADE inside TFP's MAF and inside ours."""
    made = _affine_made(event_size, seed=1, conditional=conditional)
    return (
        tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made),
        one_pass.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made),
        made,
    )


def _fresh(x: np.ndarray) -> tf.Tensor:
    # A new tensor each call: TFP caches bijector results by tensor identity.
    return tf.constant(np.array(x))


@pytest.mark.parametrize("event_size", [1, 3, 7])
def test_values_match_tfp(event_size):
    reference, ours, _ = _pair(event_size)
    y = np.random.default_rng(0).normal(size=(5, event_size)).astype(np.float32)
    np.testing.assert_allclose(ours.inverse(_fresh(y)), reference.inverse(_fresh(y)), rtol=1e-6)
    # ildj before and after `inverse` (the cached path) and fldj at x.
    np.testing.assert_allclose(
        ours.inverse_log_det_jacobian(_fresh(y), event_ndims=1),
        reference.inverse_log_det_jacobian(_fresh(y), event_ndims=1),
        rtol=1e-6,
    )
    y_t = _fresh(y)
    x = ours.inverse(y_t)
    np.testing.assert_allclose(
        ours.inverse_log_det_jacobian(y_t, event_ndims=1),
        reference.inverse_log_det_jacobian(_fresh(y), event_ndims=1),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        ours.forward_log_det_jacobian(x, event_ndims=1),
        -reference.inverse_log_det_jacobian(_fresh(y), event_ndims=1),
        rtol=1e-6,
    )
    # Sampling direction: the parent's sequential forward, then back.
    z = np.random.default_rng(1).normal(size=(4, event_size)).astype(np.float32)
    np.testing.assert_allclose(ours.inverse(ours.forward(_fresh(z))), z, atol=1e-5)


@pytest.mark.parametrize("conditional", [False, True])
def test_log_prob_and_gradients_match_tfp(conditional):
    event_size = 5
    reference, ours, made = _pair(event_size, conditional=conditional)
    base = tfd.Independent(tfd.Normal(tf.zeros([event_size]), 1.0), 1)
    rng = np.random.default_rng(2)
    y = rng.normal(size=(6, event_size)).astype(np.float32)
    kwargs = {}
    if conditional:
        context = tf.constant(rng.normal(size=(6, 3)).astype(np.float32))
        kwargs = {"bijector_kwargs": {"conditional_input": context}}

    def loss_and_grads(bijector):
        density = tfd.TransformedDistribution(base, bijector)
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(density.log_prob(_fresh(y), **kwargs))
        return loss, tape.gradient(loss, made.trainable_variables)

    loss_ref, grads_ref = loss_and_grads(reference)
    loss_ours, grads_ours = loss_and_grads(ours)
    np.testing.assert_allclose(loss_ours, loss_ref, rtol=1e-6)
    assert grads_ours and all(g is not None for g in grads_ours)
    for g_ours, g_ref in zip(grads_ours, grads_ref, strict=True):
        np.testing.assert_allclose(g_ours, g_ref, rtol=1e-5, atol=1e-6)


def _count_matmuls(density: tfd.Distribution, y: tf.Tensor) -> int:
    variables = density.trainable_variables

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(density.log_prob(y))
        return tape.gradient(loss, variables)

    graph = grads.get_concrete_function().graph
    ops = list(graph.get_operations())
    for function in graph._functions.values():
        ops += function.graph.get_operations()
    return sum(op.type == "MatMul" for op in ops)


def test_training_step_graph_has_half_the_matmuls():
    """make_density('maf') uses the one-pass class: its gradient graph holds
    half the matmuls of the same stack built from TFP's class."""
    event_size, num_layers = 6, 3
    y = tf.constant(np.random.default_rng(3).normal(size=(4, event_size)).astype(np.float32))
    ours = flows.make_density("maf", event_size, num_layers, [8, 8], seed=0, batch_norm=False)
    assert _count_matmuls(ours, y) > 0
    made_layers = [
        b for b in ours.bijector.bijectors if isinstance(b, tfb.MaskedAutoregressiveFlow)
    ]
    assert len(made_layers) == num_layers
    assert all(isinstance(b, one_pass.MaskedAutoregressiveFlow) for b in made_layers)
    reference = tfd.TransformedDistribution(
        ours.distribution,
        tfb.Chain(
            [
                tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=b._shift_and_log_scale_fn)
                for b in made_layers
            ]
        ),
    )
    np.testing.assert_allclose(ours.log_prob(y), reference.log_prob(y), rtol=1e-5)
    assert 2 * _count_matmuls(ours, y) == _count_matmuls(reference, y)


def _coupling_pair(event_size: int, num_masked: int):
    fixed = abs(num_masked)
    conditioner = flows.CouplingConditioner(fixed, event_size - fixed, [8], seed=4)
    return (
        tfb.RealNVP(num_masked=num_masked, shift_and_log_scale_fn=conditioner),
        one_pass.RealNVP(num_masked=num_masked, shift_and_log_scale_fn=conditioner),
        conditioner,
    )


@pytest.mark.parametrize("event_size,num_masked", [(2, 1), (5, 2), (5, -2), (6, -3)])
def test_realnvp_values_match_tfp(event_size, num_masked):
    reference, ours, _ = _coupling_pair(event_size, num_masked)
    rng = np.random.default_rng(5)
    y = rng.normal(size=(4, event_size)).astype(np.float32)
    x = rng.normal(size=(4, event_size)).astype(np.float32)
    for direction in ("inverse", "forward"):
        np.testing.assert_allclose(
            getattr(ours, direction)(_fresh(y)), getattr(reference, direction)(_fresh(y)), rtol=1e-6
        )
    # Log-dets through the cache (after the transformation) and without it.
    y_t, x_t = _fresh(y), _fresh(x)
    x_from_y, y_from_x = ours.inverse(y_t), ours.forward(x_t)
    for ldj_ours, ldj_ref in [
        (ours.inverse_log_det_jacobian(y_t, 1), reference.inverse_log_det_jacobian(_fresh(y), 1)),
        (ours.forward_log_det_jacobian(x_from_y, 1), -reference.inverse_log_det_jacobian(y, 1)),
        (ours.forward_log_det_jacobian(x_t, 1), reference.forward_log_det_jacobian(_fresh(x), 1)),
        (ours.inverse_log_det_jacobian(y_from_x, 1), -reference.forward_log_det_jacobian(x, 1)),
        (ours.inverse_log_det_jacobian(_fresh(y), 1), reference.inverse_log_det_jacobian(y, 1)),
    ]:
        np.testing.assert_allclose(ldj_ours, ldj_ref, rtol=1e-5, atol=1e-6)
    # The fixed units pass through unchanged.
    fixed = slice(None, num_masked) if num_masked > 0 else slice(num_masked, None)
    np.testing.assert_array_equal(np.asarray(x_from_y)[:, fixed], y[:, fixed])


def test_realnvp_log_prob_and_gradients_match_tfp():
    event_size = 6
    reference, ours, conditioner = _coupling_pair(event_size, -3)
    base = tfd.Independent(tfd.Normal(tf.zeros([event_size]), 1.0), 1)
    y = np.random.default_rng(6).normal(size=(5, event_size)).astype(np.float32)

    def loss_and_grads(bijector):
        density = tfd.TransformedDistribution(base, bijector)
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(density.log_prob(_fresh(y)))
        return loss, tape.gradient(loss, conditioner.trainable_variables)

    loss_ref, grads_ref = loss_and_grads(reference)
    loss_ours, grads_ours = loss_and_grads(ours)
    np.testing.assert_allclose(loss_ours, loss_ref, rtol=1e-6)
    for g_ours, g_ref in zip(grads_ours, grads_ref, strict=True):
        np.testing.assert_allclose(g_ours, g_ref, rtol=1e-5, atol=1e-6)


def test_realnvp_training_step_graph_has_half_the_matmuls():
    event_size, num_layers = 6, 2
    y = tf.constant(np.random.default_rng(7).normal(size=(4, event_size)).astype(np.float32))
    ours = flows.make_density("realnvp", event_size, num_layers, [8], seed=0, batch_norm=False)
    couplings = [b for b in ours.bijector.bijectors if isinstance(b, tfb.RealNVP)]
    assert len(couplings) == num_layers
    assert all(isinstance(b, one_pass.RealNVP) for b in couplings)
    reference = tfd.TransformedDistribution(
        ours.distribution,
        tfb.Chain(
            [
                tfb.RealNVP(
                    num_masked=b._num_masked, shift_and_log_scale_fn=b._shift_and_log_scale_fn
                )
                for b in couplings
            ]
        ),
    )
    np.testing.assert_allclose(ours.log_prob(y), reference.log_prob(y), rtol=1e-5)
    # TFP's log-det pass reruns the scale net only (the unused shift net is
    # pruned from the graph), so the saving is less than half.
    assert _count_matmuls(ours, y) < 0.6 * _count_matmuls(reference, y)


def test_tfp_version_guard_names_the_tested_range():
    one_pass.check_tfp_version(tfp.__version__)  # the installed TFP is a tested one
    one_pass.check_tfp_version("0.25.0")
    for version in ("0.26.0", "0.24.0", "1.0.0", "0.26.0rc1"):
        with pytest.raises(one_pass.TFPVersionError, match=r">=0\.25,<0\.26"):
            one_pass.check_tfp_version(version)


class _CountingNetwork(tf.Module):
    """Wraps a shift-and-log-scale network and counts its calls (eagerly)."""

    def __init__(self, network):
        super().__init__()
        self.network, self.calls = network, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.network(*args, **kwargs)


def test_private_tfp_internals_still_give_one_network_call_per_log_prob():
    """The one-pass classes rely on TFP's greedy bijector cache handing the inverse's log-det to
    `inverse_log_det_jacobian`, and on the parents' private `_bijector_fn`, `_masked_size` and
    `_reverse_mask`. If a TFP release changes any of them, the log-det needs a second network
    call (or breaks) and this test fails."""
    y = np.random.default_rng(5).normal(size=(4, 5)).astype(np.float32)
    made = _CountingNetwork(_affine_made(5, seed=2))
    maf = tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(tf.zeros(5)),
        one_pass.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made),
    )
    maf.log_prob(_fresh(y))
    assert made.calls == 1
    conditioner = _CountingNetwork(flows.CouplingConditioner(2, 3, [8], seed=4))
    nvp = tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(tf.zeros(5)),
        one_pass.RealNVP(num_masked=-2, shift_and_log_scale_fn=conditioner),
    )
    nvp.log_prob(_fresh(y))
    assert conditioner.calls == 1
    bijector = nvp.bijector
    # TFP keeps the negative count and a reversal flag: the last 2 units condition the rest.
    assert (bijector._masked_size, bijector._reverse_mask) == (-2, True)

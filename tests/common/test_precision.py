"""Mixed precision (`common.precision`): `run` computes a network in bfloat16 / float16 on
float32 variables (checked against NumPy with `ml_dtypes` rounding), every package's training
loss on the same weights stays within a stated tolerance of float32 while actually changing, and
training with `mixed_bfloat16` / `mixed_float16` (dynamic loss scaling) on real MNIST ends with
bounds close to float32's."""

import importlib
import os

import ml_dtypes
import numpy as np
import pytest
import sonnet as snt
import tensorflow as tf

from common import precision, training
from tests import events

BF16 = ml_dtypes.bfloat16


def _bf16(x):
    """Rounds float32 values to bfloat16 (NumPy, independent of TensorFlow)."""
    return np.asarray(x, np.float32).astype(BF16).astype(np.float32)


def test_unknown_policy_names_the_valid_ones():
    with pytest.raises(ValueError, match="float32, mixed_bfloat16, mixed_float16"):
        precision.compute_dtype("bfloat16")
    with pytest.raises(ValueError), precision.policy("half"):
        pass
    assert precision.active_dtype() == tf.float32


def test_linear_computes_in_bfloat16_on_float32_variables():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(8, 64)), tf.float32)
    linear = snt.Linear(32, b_init=snt.initializers.RandomNormal())
    with precision.policy("mixed_bfloat16"):
        first = precision.run(linear, x)  # creates the variables: float32 all the same
        assert linear.w.dtype == tf.float32 and linear.b.dtype == tf.float32
        with tf.GradientTape() as tape:
            y = precision.run(linear, x)
            loss = tf.reduce_sum(y**2)
        grads = tape.gradient(loss, [linear.w, linear.b])
    w, b = linear.w.numpy(), linear.b.numpy()
    exact = x.numpy() @ w + b
    np.testing.assert_array_equal(first.numpy(), y.numpy())
    assert y.dtype == tf.float32
    # bfloat16 inputs and weights; the product and its sum rounded to bfloat16.
    expected = _bf16(_bf16(_bf16(x.numpy()) @ _bf16(w)) + _bf16(b))
    np.testing.assert_allclose(y.numpy(), expected, rtol=2**-7, atol=1e-2)
    assert np.max(np.abs(y.numpy() - exact)) > 1e-4  # not float32 arithmetic
    # Gradients reach the float32 variables, close to float32 gradients.
    assert all(g.dtype == tf.float32 for g in grads)
    np.testing.assert_allclose(grads[0].numpy(), x.numpy().T @ (2 * exact), rtol=0.05, atol=0.5)
    # Outside the policy: float32 again.
    np.testing.assert_allclose(precision.run(linear, x).numpy(), exact, rtol=1e-5, atol=1e-5)


def test_variables_created_inside_a_policy_are_float32_and_float64_comes_back():
    mlp = snt.nets.MLP([16, 4])
    with precision.policy("mixed_float16"):
        out = precision.run(lambda h: mlp(h), tf.ones([2, 3]))
        assert {v.dtype for v in mlp.variables} == {tf.float32}
        assert out.dtype == tf.float32
        x64 = tf.ones([2, 3], tf.float64)
        assert precision.run(mlp, x64).dtype == tf.float64  # computed in float16


# package -> (config module, variant)
SMOKE = {
    "vae": ("vae.configs.iwae", "smoke"),
    "flows": ("flows.configs.mnist", "smoke"),
    "air": ("air.configs.air", "smoke"),
    "draw": ("draw.configs.mnist", "smoke"),
    "scae": ("scae.configs.mnist", "smoke"),
}
# Largest relative change of the training loss on the same weights and batch under
# mixed_bfloat16 (bfloat16 keeps 8 significant bits, a relative rounding of 2^-9 ~ 2e-3 per
# value; the sums and likelihoods in float32 average those out): for the batch mean and for the
# median example. AIR draws discrete presences, and a probability rounded to bfloat16 can flip
# a draw (that example's count and loss change completely), so for AIR only the median example
# is held to it.
LOSS_RTOL = 5e-3


@pytest.mark.parametrize("package", list(SMOKE))
def test_training_loss_under_mixed_bfloat16_is_close_to_float32(package):
    module, variant = SMOKE[package]
    config = importlib.import_module(module).get_config(variant)
    seed = tf.constant([3, 5], tf.int32)

    def losses(policy):
        # A fresh task each time: a step may update state (e.g. AIR's learning-signal
        # centering), so both policies must start from the same one.
        tf.random.set_seed(config.seed)
        task = importlib.import_module(config.experiment).build_task(config)
        batch = next(iter(task.validation_dataset() or task.train_dataset(0)))
        # Away from the initialization, where some outputs do not depend on the arithmetic
        # (e.g. a MADE's zero output layer makes every MAF the identity).
        for i, v in enumerate(task.model.trainable_variables):
            v.assign_add(0.02 * tf.random.stateless_normal(v.shape, [i, 1]))
        with precision.policy(policy):
            out = tf.function(task.step)(batch, seed)
        for value in out.losses.values():
            assert value.dtype == tf.float32
        return {k: v.numpy() for k, v in out.losses.items()}  # per example, [B]

    reference, mixed = losses("float32"), losses("mixed_bfloat16")
    for name, value in reference.items():
        per_example = np.abs(mixed[name] - value) / np.maximum(np.abs(value), 1e-6)
        assert np.median(per_example) < LOSS_RTOL, (package, name, value, mixed[name])
        if package != "air":
            rel = abs(mixed[name].mean() - value.mean()) / abs(value.mean())
            assert rel < LOSS_RTOL, (package, name, value.mean(), mixed[name].mean())
        assert np.any(mixed[name] != value), (package, name)  # the networks ran in bfloat16


def _train_vae(tmp_path, policy, skip_nonfinite=False):
    from vae import experiment as vae_experiment
    from vae.configs import iwae

    config = iwae.get_config("smoke")
    config.precision = policy
    config.loop.num_steps = 40
    config.loop.summary_every = 10
    config.loop.eval_every = 40
    config.loop.skip_nonfinite = skip_nonfinite
    run_dir = os.path.join(tmp_path, f"{policy}_{skip_nonfinite}")
    os.makedirs(run_dir)
    result = training.train(config, run_dir, vae_experiment.build_task)
    return result, run_dir


def test_mixed_training_on_real_mnist_ends_close_to_float32(tmp_path):
    """40 steps of `vae` `smoke` under each policy: the validation ELBO differs from
    float32's by < 1% (the trajectories differ by rounding only); float16 uses dynamic loss
    scaling (its scale is in TensorBoard) and the variables stay float32."""
    results = {p: _train_vae(tmp_path, p) for p in precision.POLICIES}
    bound = {p: r.validation_metrics["elbo"] for p, (r, _) in results.items()}
    for policy in ("mixed_bfloat16", "mixed_float16"):
        assert abs(bound[policy] - bound["float32"]) < 0.01 * abs(bound["float32"]), bound
        assert bound[policy] != bound["float32"]
    acc = events.load(os.path.join(results["mixed_float16"][1], "train"))
    scales = [v for _, v in events.scalars(acc, "loss_scale")]
    assert scales and all(s >= 1 and np.log2(s) == int(np.log2(s)) for s in scales), scales
    reader = tf.train.load_checkpoint(results["mixed_float16"][1])
    dtypes = reader.get_variable_to_dtype_map()
    model_vars = [k for k in dtypes if k.startswith("model/") and "OPTIMIZER_SLOT" not in k]
    assert model_vars and all(dtypes[k] == tf.float32 for k in model_vars)


def test_float16_loss_scale_comes_down_under_skip_nonfinite(tmp_path):
    """With `loop.skip_nonfinite` the LossScaleOptimizer still sees overflowed gradients, so
    its scale comes down from 2^15 and training goes on (a skipped step must not keep the scale
    where it overflowed)."""
    result, run_dir = _train_vae(tmp_path, "mixed_float16", skip_nonfinite=True)
    train_events = events.load(os.path.join(run_dir, "train"))
    scales = [v for _, v in events.scalars(train_events, "loss_scale")]
    assert scales and min(scales) < 2.0**15, scales
    skipped = [v for _, v in events.scalars(train_events, "skipped_steps")]
    assert skipped[-1] < 40, skipped
    reference, _ = _train_vae(tmp_path, "float32")
    elbo = result.validation_metrics["elbo"]
    assert abs(elbo - reference.validation_metrics["elbo"]) < 0.01 * abs(
        reference.validation_metrics["elbo"]
    )

"""Tests for flows/models.py: make_flow / make_density and helpers."""

import os

import numpy as np
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized

import flows
from tests.flows import flow_test_util

tfb = tfp.bijectors
tfd = tfp.distributions

HIDDEN = (16,)


def _num_layers(name):
    return 1 if name == "made" else 3


def _hidden(name):
    return () if name in ("planar", "radial") else HIDDEN


def _expected_num_variables(name, num_layers, hidden, conditional=False):
    dense_layers = len(hidden) + 1
    if name in ("planar", "radial"):
        return 3 * num_layers
    if name in ("made", "iaf"):
        return num_layers * (2 * dense_layers + int(conditional))
    if name == "maf":
        return num_layers * (2 * dense_layers + int(conditional)) + 2 * num_layers
    return num_layers * 2 * 2 * dense_layers + 2 * num_layers  # realnvp.


# (name, D, log_scale_bound). Unbounded random-init stacks of 3 MADEs or
# couplings can overflow while sampling in D >= 5 (log-scales compound to
# exp(12) and beyond), so those run with a bound (same code plus a tanh on the
# log-scale); D = 2 covers the unbounded path.
_JACOBIAN_CASES = [(name, d, None) for name in ("planar", "radial", "made") for d in (2, 5, 8)] + [
    (name, d, bound)
    for name in ("maf", "iaf", "realnvp")
    for d, bound in ((2, None), (2, 2.0), (5, 2.0), (8, 2.0))
]

_VARIABLE_CASES = [(name, False) for name in flows.FLOW_NAMES] + [
    (name, True) for name in ("made", "maf", "iaf")
]


class MakeFlowTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        tf.random.set_seed(0)
        self.rng = np.random.default_rng(0)

    @parameterized.parameters(*_JACOBIAN_CASES)
    def test_inverse_and_log_det_match_autodiff(self, name, d, log_scale_bound):
        kwargs = {} if log_scale_bound is None else dict(log_scale_bound=log_scale_bound)
        flow = flows.make_flow(
            name, d, _num_layers(name), _hidden(name), dtype=tf.float64, seed=d, **kwargs
        )
        flow = flows.with_training(flow, False)
        flow_test_util.randomize_batch_norm(flow, self.rng)
        x = self.rng.normal(size=(8, d))
        flow_test_util.check_bijector(self, flow, x, rtol=1e-8, atol=1e-8)

    @parameterized.parameters("maf", "iaf", "made")
    def test_conditional_inverse_and_log_det_match_autodiff(self, name):
        d, c = 4, 3
        flow = flows.make_flow(
            name,
            d,
            _num_layers(name),
            HIDDEN,
            conditional_size=c,
            log_scale_bound=2.0,
            dtype=tf.float64,
            seed=1,
        )
        flow = flows.with_training(flow, False)
        flow_test_util.randomize_batch_norm(flow, self.rng)
        context = tf.constant(self.rng.normal(size=(8, c)))
        kwargs = flows.conditional_kwargs(flow, context)
        x = self.rng.normal(size=(8, d))
        flow_test_util.check_bijector(self, flow, x, rtol=1e-8, atol=1e-8, **kwargs)

    @parameterized.parameters(*_VARIABLE_CASES)
    def test_every_variable_is_tracked_and_trained(self, name, conditional):
        d, c = 3, 2
        num_layers, hidden = _num_layers(name), _hidden(name)
        kwargs = dict(conditional_size=c) if conditional else {}
        density = flows.make_density(name, d, num_layers, hidden, seed=0, **kwargs)
        expected = _expected_num_variables(name, num_layers, hidden, conditional)
        variables = density.trainable_variables
        self.assertLen(variables, expected)
        self.assertLen({v.ref() for v in variables}, expected)  # No duplicates.
        self.assertLen(density.bijector.trainable_variables, expected)

        x = tf.constant(self.rng.normal(size=(32, d)) * 1.5 + 0.5, tf.float32)
        context = tf.constant(self.rng.normal(size=(32, c)), tf.float32)
        bijector_kwargs = flows.conditional_kwargs(density.bijector, context)
        self.assertEqual(bool(bijector_kwargs), conditional)
        before = [v.numpy().copy() for v in variables]
        optimizer = snt.optimizers.Adam(1e-2)
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(density.log_prob(x, bijector_kwargs=bijector_kwargs))
        grads = tape.gradient(loss, variables)
        for variable, grad in zip(variables, grads, strict=True):
            self.assertIsNotNone(grad, variable.name)
            self.assertTrue(np.all(np.isfinite(grad.numpy())), variable.name)
        optimizer.apply(grads, variables)
        for variable, old in zip(variables, before, strict=True):
            self.assertNotAllClose(variable.numpy(), old, msg=variable.name)

    @parameterized.parameters(("iaf", False), ("maf", True), ("planar", False), ("realnvp", False))
    def test_training_step_under_tf_function(self, name, jit_compile):
        """A compiled Adam step (for IAF, scoring data runs the sequential
        MAF loop, i.e. MADE's masked gradient inside a `tf.while_loop`; for
        planar, the Newton loop). `test_log_prob_eager_matches_tf_function`
        covers every flow's log_prob and sampling under `tf.function`."""
        density = flows.make_density(name, 3, _num_layers(name), _hidden(name), seed=0)
        variables = density.trainable_variables
        optimizer = snt.optimizers.Adam(1e-3)
        x = tf.constant(self.rng.normal(size=(32, 3)), tf.float32)

        @tf.function(jit_compile=jit_compile)
        def step(x):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(density.log_prob(x))
            grads = tape.gradient(loss, variables)
            optimizer.apply(grads, variables)
            return loss, grads

        losses = []
        for _ in range(10):
            loss, grads = step(x)
            losses.append(float(loss))
        for grad in grads:
            self.assertTrue(np.all(np.isfinite(grad.numpy())))
        self.assertLess(losses[-1], losses[0])

    @parameterized.parameters(*flows.FLOW_NAMES)
    def test_log_prob_eager_matches_tf_function(self, name):
        density = flows.make_density(name, 3, _num_layers(name), _hidden(name), seed=0)
        density = flows.with_training(density, False)
        x = tf.constant(self.rng.normal(size=(16, 3)), tf.float32)
        eager = density.log_prob(x)
        graph = tf.function(density.log_prob)(tf.identity(x))
        self.assertTrue(np.all(np.isfinite(eager.numpy())))
        self.assertAllClose(eager, graph, rtol=1e-5, atol=1e-5)
        samples = tf.function(lambda: density.sample(5, seed=(1, 2)))()
        self.assertEqual(samples.shape, [5, 3])

    @parameterized.parameters(*flows.FLOW_NAMES)
    def test_2d_density_integrates_to_one_and_matches_samples(self, name):
        density = flows.make_density(
            name, 2, _num_layers(name), _hidden(name), dtype=tf.float64, seed=7
        )
        density = flows.with_training(density, False)
        flow_test_util.check_2d_density(self, density)

    def test_conditional_iaf_2d_density(self):
        density = flows.make_density(
            "iaf", 2, 2, HIDDEN, conditional_size=3, dtype=tf.float64, seed=7
        )
        context = tf.constant([0.5, -1.0, 2.0], tf.float64)
        kwargs = flows.conditional_kwargs(density.bijector, context)
        flow_test_util.check_2d_density(self, density, bijector_kwargs=kwargs)

    def test_iaf_scores_own_samples_like_external_points(self):
        """IAF scores its samples through the bijector cache (one pass) and
        external points through the sequential inverse; both must agree."""
        density = flows.make_density("iaf", 4, 2, HIDDEN, conditional_size=2, seed=0)
        context = tf.random.normal([6, 2])
        kwargs = flows.conditional_kwargs(density.bijector, context)
        z = density.sample(6, seed=(3, 4), bijector_kwargs=kwargs)
        cached = density.log_prob(z, bijector_kwargs=kwargs)
        fresh = density.log_prob(tf.constant(z.numpy()), bijector_kwargs=kwargs)
        self.assertAllClose(cached, fresh, rtol=1e-4, atol=1e-4)
        other = flows.conditional_kwargs(density.bijector, context + 1.0)
        self.assertNotAllClose(
            density.log_prob(tf.constant(z.numpy()), bijector_kwargs=other), fresh
        )

    @parameterized.parameters(*flows.FLOW_NAMES)
    def test_checkpoint_round_trip(self, name):
        """Every variable (batch-norm statistics included) is checkpointed
        through the bijector."""
        num_layers, hidden = _num_layers(name), _hidden(name)
        source = flows.with_training(flows.make_density(name, 3, num_layers, hidden, seed=1), False)
        target = flows.with_training(flows.make_density(name, 3, num_layers, hidden, seed=2), False)
        flow_test_util.randomize_batch_norm(source.bijector, self.rng)
        x = tf.constant(self.rng.normal(size=(5, 3)), tf.float32)
        path = tf.train.Checkpoint(flow=source.bijector).save(
            os.path.join(self.get_temp_dir(), "ckpt")
        )
        self.assertNotAllClose(target.log_prob(x), source.log_prob(x))
        tf.train.Checkpoint(flow=target.bijector).restore(path).assert_consumed()
        self.assertAllClose(target.log_prob(tf.identity(x)), source.log_prob(tf.identity(x)))

    def test_conditional_kwargs_routing(self):
        h = tf.zeros([1, 2])
        iaf = flows.make_flow("iaf", 3, 2, HIDDEN, conditional_size=2)
        self.assertEqual(set(flows.conditional_kwargs(iaf, h)), {"iaf_0", "iaf_1"})
        made = flows.make_flow("made", 3, 1, HIDDEN, conditional_size=2)
        self.assertEqual(list(flows.conditional_kwargs(made, h)), ["conditional_input"])
        maf = flows.make_flow("maf", 3, 2, HIDDEN)
        self.assertEqual(flows.conditional_kwargs(maf, h), {})

    def test_with_training_shares_variables_and_switches_statistics(self):
        density = flows.make_density("realnvp", 3, 2, HIDDEN, seed=0)  # evaluation mode
        training = flows.with_training(density, True)
        self.assertEqual(
            [v.ref() for v in density.trainable_variables],
            [v.ref() for v in training.trainable_variables],
        )
        x = tf.constant(self.rng.normal(size=(32, 3)) * 3.0 + 1.0, tf.float32)
        # Training mode normalizes with minibatch statistics: the density of
        # a point depends on the rest of the batch; evaluation mode does not.
        train_full = training.log_prob(x)[:4]
        train_part = training.log_prob(tf.identity(x[:4]))
        self.assertNotAllClose(train_full, train_part)
        self.assertAllClose(density.log_prob(x)[:4], density.log_prob(x[:4]), atol=1e-5)

    @parameterized.parameters("maf", "realnvp")
    def test_default_flow_is_a_bijection_with_its_own_log_det(self, name):
        """As a user calls it: `make_flow` with batch norm (non-trivial stored statistics) is an
        exact bijection, and its forward log-det is the autodiff log|det J| of its forward."""
        flow = flows.make_flow(name, 4, 2, [16], dtype=tf.float64, seed=0)
        data = self.rng.normal(size=(500, 4)) * [1.0, 3.0, 0.2, 2.0] + [5.0, -1.0, 0.0, 2.0]
        flows.set_batch_norm_statistics(flow, tf.constant(data))
        x = tf.constant(self.rng.normal(size=(6, 4)))
        # Fresh tensors (`.numpy()`): TFP's bijector cache would hand back the input otherwise.
        self.assertAllClose(flow.inverse(tf.constant(flow.forward(x).numpy())), x, atol=1e-9)
        y = tf.constant(data[:6])
        self.assertAllClose(flow.forward(tf.constant(flow.inverse(y).numpy())), y, atol=1e-9)
        _, expected = flow_test_util.autodiff_log_det(flow, x.numpy())
        self.assertAllClose(flow.forward_log_det_jacobian(x, event_ndims=1), expected, atol=1e-8)
        self.assertAllClose(
            flow.inverse_log_det_jacobian(flow.forward(x), event_ndims=1), -expected, atol=1e-8
        )

    def test_flow_density_samples_with_their_own_log_prob_in_both_modes(self):
        density = flows.FlowDensity(flows.make_density("realnvp", 3, 2, HIDDEN, seed=0))
        data = self.rng.normal(size=(400, 3)) * [1.0, 3.0, 0.2] + [5.0, -1.0, 0.0]
        density.set_batch_norm_statistics(tf.constant(data, tf.float32))
        for training in (True, False):
            z, log_q = density.sample_and_log_prob(5, tf.constant([3, 4]), training=training)
            fresh = tf.constant(z.numpy())  # no bijector cache: log_prob inverts the samples
            self.assertAllClose(log_q, density.log_prob(fresh, training=False), atol=1e-4)

    def test_training_mode_has_no_sampling_direction(self):
        density = flows.make_density("maf", 3, 2, HIDDEN, seed=0)
        training = flows.with_training(density, True)
        with self.assertRaisesRegex(flows.batch_norm.BatchNormModeError, "with_training"):
            training.bijector.forward(tf.zeros([2, 3]))
        with self.assertRaises(flows.batch_norm.BatchNormModeError):
            training.sample(2, seed=[1, 2])
        # Its density direction works (the training step's log_prob).
        self.assertAllEqual(training.log_prob(tf.ones([4, 3])).shape, [4])

    @parameterized.parameters("maf", "realnvp")
    def test_training_mode_log_prob_uses_minibatch_statistics(self, name):
        """Training-mode log_prob = base log_prob + the sum of each layer's
        inverse log-det, batch norm included with the *minibatch* variance
        (TFP's own BatchNormalization bijector mixes in the moving variance
        here; see flows.batch_norm._BatchNormalization)."""
        density = flows.with_training(
            flows.make_density(name, 3, 2, HIDDEN, dtype=tf.float64, seed=0), True
        )
        x = self.rng.normal(size=(64, 3)) * [1.0, 3.0, 0.2] + [2.0, -1.0, 0.0]
        expected, h = 0.0, x
        for bijector in density.bijector.parameters["bijectors"]:  # Density order.
            expected += bijector.inverse_log_det_jacobian(tf.constant(h), event_ndims=1).numpy()
            h = bijector.inverse(tf.constant(h)).numpy()
        expected += density.distribution.log_prob(h).numpy()
        self.assertAllClose(density.log_prob(tf.constant(x)), expected)
        self.assertAllClose(tf.function(density.log_prob)(tf.constant(x)), expected)

    def test_set_batch_norm_statistics_whitens_each_layer_input(self):
        d = 3
        flow = flows.make_flow("maf", d, 2, HIDDEN, dtype=tf.float64, seed=0)
        x = self.rng.normal(size=(2000, d)) * [1.0, 3.0, 0.2] + [5.0, -1.0, 0.0]
        u = flows.set_batch_norm_statistics(flow, tf.constant(x)).numpy()
        # The last batch norm (gamma = 1, beta = 0) whitens its input exactly.
        self.assertAllClose(u.mean(0), np.zeros(d), atol=1e-10)
        self.assertAllClose(u.var(0), np.ones(d), atol=1e-4)
        first = flow_test_util.batch_norms(flow)[0].batchnorm
        self.assertNotAllClose(first.moving_mean, np.zeros(d))
        evaluation = flows.with_training(flow, False)
        self.assertAllClose(evaluation.inverse(tf.constant(x)), u)

    def test_structure(self):
        maf = flows.make_flow("maf", 4, 3, HIDDEN)
        mades = [
            b.parameters["shift_and_log_scale_fn"]
            for b in maf.parameters["bijectors"]
            if isinstance(b, tfb.MaskedAutoregressiveFlow)
        ]
        self.assertLen(mades, 3)
        self.assertLen(flow_test_util.batch_norms(maf), 3)
        self.assertAllEqual(mades[0].input_degrees, [1, 2, 3, 4])
        self.assertAllEqual(mades[1].input_degrees, [4, 3, 2, 1])  # Reversed.
        self.assertAllEqual(mades[2].input_degrees, [1, 2, 3, 4])

        realnvp = flows.make_flow("realnvp", 5, 2, HIDDEN, batch_norm=False)
        first, second = realnvp.parameters["bijectors"]
        x = tf.random.normal([4, 5])
        self.assertAllEqual(first.forward(x)[:, :2], x[:, :2])  # First half fixed.
        self.assertAllEqual(second.forward(x)[:, 2:], x[:, 2:])  # Then the rest.
        self.assertNotAllClose(first.forward(x)[:, 2:], x[:, 2:])

    def test_validation(self):
        with self.assertRaises(ValueError):
            flows.make_flow("glow", 2, 1)
        with self.assertRaises(ValueError):
            flows.make_flow("planar", 2, 2, [8])
        with self.assertRaises(ValueError):
            flows.make_flow("made", 2, 2, [8])
        with self.assertRaises(ValueError):
            flows.make_flow("realnvp", 1, 2, [8])
        with self.assertRaises(ValueError):
            flows.make_flow("iaf", 2, 2, [8], batch_norm=True)
        with self.assertRaises(ValueError):
            flows.make_flow("realnvp", 2, 2, [8], conditional_size=3)
        with self.assertRaises(ValueError):
            flows.make_flow("maf", 2, 0, [8])


class MadeLogPrecisionTest(tf.test.TestCase, parameterized.TestCase):
    """`made_log_precision`: the MADE's second output is a log precision, log_scale = -0.5 logp."""

    @parameterized.parameters("made", "maf", "iaf")
    def test_exact_bijector(self, name):
        num_layers = 1 if name == "made" else 2
        extra = (
            {"batch_norm": False} if name == "maf" else {}
        )  # minibatch statistics: no round trip
        flow = flows.make_flow(
            name, 4, num_layers, [8], made_log_precision=True, seed=3, dtype=tf.float64, **extra
        )
        x = np.random.default_rng(0).normal(size=(5, 4))
        flow_test_util.check_bijector(self, flow, x)

    def test_log_det_is_minus_half_the_log_scale_reading(self):
        y = np.random.default_rng(1).normal(size=(6, 5))
        plain = flows.make_flow("made", 5, 1, [8], seed=7, dtype=tf.float64)
        precision = flows.make_flow(
            "made", 5, 1, [8], made_log_precision=True, seed=7, dtype=tf.float64
        )
        # Same seed, same MADE weights: the second output r gives ildj -sum(r) read as a
        # log-scale and +0.5 sum(r) read as a log precision.
        ildj_plain = plain.inverse_log_det_jacobian(tf.constant(y), event_ndims=1)
        ildj_precision = precision.inverse_log_det_jacobian(tf.constant(y), event_ndims=1)
        self.assertAllClose(ildj_precision, -0.5 * ildj_plain, rtol=1e-12)

    def test_other_flows_reject_it(self):
        with self.assertRaisesRegex(ValueError, "made_log_precision"):
            flows.make_flow("realnvp", 4, 2, [8], made_log_precision=True)


if __name__ == "__main__":
    tf.test.main()

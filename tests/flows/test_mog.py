"""Tests for flows/mog.py (MADE MoG) and the MoG densities of `flows.make_density`
(made_mog, maf_mog), their configs and `python -m flows.train` on them."""

import json
import math
import os
import shutil
import tempfile

import numpy as np
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized
from scipy import special, stats

import flows
from flows import data as flows_data
from flows import density as flows_density
from flows import tasks as flows_tasks
from flows.configs import mnist as mnist_configs
from tests import binaries
from tests.flows import flow_test_util

tfb = tfp.bijectors
tfd = tfp.distributions

HIDDEN = (16,)


def _numpy_made(made, x):
    """The MADE's outputs `[B, P, D]` recomputed in NumPy from its weights and masks."""
    h = x
    for i, (w, b, mask) in enumerate(zip(made.weights, made.biases, made.masks, strict=True)):
        h = h @ (w.numpy() * mask) + b.numpy()
        if i < len(made.weights) - 1:
            h = np.maximum(h, 0.0)  # ReLU
    return h.reshape(len(x), made.num_params, made.event_size)  # parameter-major layout


def _numpy_mog_conditionals(made, x, num_components, log_scale_bound=None):
    """`[B, D]` log p(x_i | x_<i) of the mixture conditionals, from scratch."""
    c = num_components
    out = _numpy_made(made, x)  # [B, 3C, D]
    logits, loc, log_scale = out[:, :c], out[:, c : 2 * c], out[:, 2 * c :]  # [B, C, D] each
    if log_scale_bound is not None:
        log_scale = log_scale_bound * np.tanh(log_scale / log_scale_bound)
    log_weights = logits - special.logsumexp(logits, axis=1, keepdims=True)
    log_normal = stats.norm.logpdf(x[:, None, :], loc, np.exp(log_scale))
    return special.logsumexp(log_weights + log_normal, axis=1)  # [B, D]


def _mog(d, num_components, seed, input_order="random", hidden=(8, 8), dtype=tf.float64):
    made = flows.MADE(
        d,
        hidden,
        num_params=3 * num_components,
        input_order=input_order,
        output_bias_stddev=1.0,
        seed=seed,
        dtype=dtype,
    )
    return flows.MADEMoG(made, num_components)


def _num_layers(name):
    return 1 if name == "made_mog" else 2


class MADEMoGTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        tf.random.set_seed(0)
        self.rng = np.random.default_rng(0)

    @parameterized.parameters((1, None), (3, None), (4, 1.5))
    def test_log_prob_matches_numpy_mixture_conditionals(self, num_components, bound):
        d = 5
        made = flows.MADE(
            d, (8, 8), num_params=3 * num_components, input_order="random", seed=3, dtype=tf.float64
        )
        # Non-trivial outputs: random biases of every layer.
        for b in made.biases:
            b.assign(self.rng.normal(size=b.shape) * 0.5)
        density = flows.MADEMoG(made, num_components, log_scale_bound=bound)
        x = self.rng.normal(size=(7, d)) * 1.5
        expected = _numpy_mog_conditionals(made, x, num_components, bound)
        self.assertAllClose(density.log_prob(tf.constant(x)), expected.sum(-1), rtol=1e-10)
        self.assertAllClose(density.conditional_log_probs(tf.constant(x)), expected, rtol=1e-10)
        # TFP's mixture (used for sampling) is the same density.
        tfp_mixture = density.conditional_distribution(tf.constant(x)).distribution
        self.assertAllClose(tfp_mixture.log_prob(x), expected, rtol=1e-10)
        self.assertEqual(density.log_prob(tf.constant(x[None])).shape, [1, 7])  # extra batch dim

    def test_a_component_with_underflowing_scale_drops_out_instead_of_nan(self):
        """exp(s) = 0 in float64 for s = -1000: that component has density 0 at
        x != mu, so log p is the log of the other components' mixture (TFP's
        Normal would give NaN here)."""
        c, d = 3, 2
        density = _mog(d, c, seed=4, input_order="left-to-right", hidden=())
        made = density.made
        bias = made.biases[-1].numpy().reshape(3 * c, d)  # [3C, D] parameter-major
        bias[2 * c] = -1000.0  # log-scale of component 0, every dimension
        made.biases[-1].assign(bias.reshape(-1))
        x = self.rng.normal(size=(5, d))
        out = _numpy_made(made, x)
        logits, loc, log_scale = out[:, :c], out[:, c : 2 * c], out[:, 2 * c :]
        log_weights = logits - special.logsumexp(logits, axis=1, keepdims=True)
        others = log_weights[:, 1:] + stats.norm.logpdf(
            x[:, None, :], loc[:, 1:], np.exp(log_scale[:, 1:])
        )
        expected = special.logsumexp(others, axis=1).sum(-1)
        self.assertAllClose(density.log_prob(tf.constant(x)), expected, rtol=1e-10)

    def test_made_mog_density_is_the_numpy_mixture(self):
        density = flows.make_density(
            "made_mog", 4, 1, HIDDEN, num_components=3, dtype=tf.float64, seed=0
        )
        self.assertIsInstance(density.bijector, tfb.Identity)
        made = density.distribution.made
        self.assertAllEqual(made.input_degrees, [1, 2, 3, 4])
        x = self.rng.normal(size=(6, 4))
        expected = _numpy_mog_conditionals(made, x, 3).sum(-1)
        self.assertAllClose(density.log_prob(tf.constant(x)), expected, rtol=1e-10)

    def test_autoregressive_property(self):
        """Perturbing x_j changes the conditional parameters of exactly the
        dimensions after j in the order (and the conditional density of j and
        those after it), for a random order."""
        d = 6
        density = _mog(d, 3, seed=5, hidden=(32, 32))
        degrees = density.made.input_degrees
        self.assertFalse(np.array_equal(degrees, np.arange(1, d + 1)))  # a random order
        # Many examples, so that some ReLU path from x_j to every later output is active.
        x = self.rng.normal(size=(64, d))

        def conditionals(x):
            x = tf.constant(x)
            params = np.stack(density.conditional_parameters(x), axis=0)  # [3, B, D, C]
            return params, density.conditional_log_probs(x).numpy()

        params, log_p = conditionals(x)
        for j in range(d):
            x_new = x.copy()
            x_new[:, j] += 1.0
            params_new, log_p_new = conditionals(x_new)
            for i in range(d):
                same_params = np.array_equal(params[:, :, i], params_new[:, :, i])
                same_log_p = np.array_equal(log_p[:, i], log_p_new[:, i])
                self.assertEqual(same_params, degrees[i] <= degrees[j], (i, j))
                self.assertEqual(same_log_p, degrees[i] < degrees[j], (i, j))

    def test_log_prob_jacobian_is_triangular_in_the_order(self):
        """d log p(x_i | x_<i) / d x_k = 0 unless k precedes i or k = i (autodiff)."""
        d = 5
        density = _mog(d, 2, seed=9, hidden=(32, 32))
        degrees = density.made.input_degrees
        x = tf.constant(self.rng.normal(size=(32, d)))
        with tf.GradientTape() as tape:
            tape.watch(x)
            log_p = density.conditional_log_probs(x)  # [B, D]
        jacobian = tape.batch_jacobian(log_p, x).numpy()  # [B, D, D]
        allowed = degrees[None, :] <= degrees[:, None]  # [i, k]: k before i, or k = i
        self.assertAllEqual(jacobian[:, ~allowed], np.zeros_like(jacobian[:, ~allowed]))
        # Every allowed dependence is used by some example (ReLU paths may be off for others).
        self.assertTrue(np.all(np.any(jacobian[:, allowed] != 0, axis=0)))

    def test_samples_have_uniform_independent_rosenblatt_transforms(self):
        """If x ~ p, the conditional CDFs u_i = F(x_i | x_<i) (the Rosenblatt
        transform, computed in NumPy from the MADE outputs) are i.i.d. U(0, 1)."""
        d, c, n = 4, 3, 4000
        density = _mog(d, c, seed=2)
        x = density.sample(n, seed=(7, 8)).numpy()
        self.assertEqual(x.shape, (n, d))
        out = _numpy_made(density.made, x)  # [n, 3C, D]
        logits, loc, scale = out[:, :c], out[:, c : 2 * c], np.exp(out[:, 2 * c :])
        weights = special.softmax(logits, axis=1)
        u = np.sum(weights * stats.norm.cdf((x[:, None, :] - loc) / scale), axis=1)  # [n, D]
        for i in range(d):
            self.assertGreater(stats.kstest(u[:, i], "uniform").pvalue, 1e-3, i)
        correlation = np.corrcoef(u.T)[np.triu_indices(d, 1)]
        self.assertAllLess(np.abs(correlation), 4.0 / np.sqrt(n))  # ~4 standard errors

    @parameterized.parameters("made_mog", "maf_mog")
    def test_2d_density_integrates_to_one_and_matches_samples(self, name):
        density = flows.make_density(
            name, 2, _num_layers(name), HIDDEN, num_components=4, dtype=tf.float64, seed=7
        )
        density = flows.with_training(density, False)
        flow_test_util.randomize_batch_norm(density.bijector, self.rng)
        flow_test_util.check_2d_density(self, density)

    @parameterized.parameters("made_mog", "maf_mog")
    def test_every_variable_is_tracked_and_trained(self, name):
        d, hidden = 3, (8, 8)
        num_layers = _num_layers(name)
        density = flows.make_density(name, d, num_layers, hidden, num_components=2, seed=0)
        per_made = 2 * (len(hidden) + 1)
        expected = per_made if name == "made_mog" else (num_layers + 1) * per_made + 2 * num_layers
        variables = density.trainable_variables
        self.assertLen(variables, expected)
        self.assertLen({v.ref() for v in variables}, expected)
        flow_test_util.check_every_variable_trains(
            self, density, self.rng.normal(size=(32, d)) * 1.5 + 0.5, variables
        )

    @parameterized.parameters("made_mog", "maf_mog")
    def test_eager_matches_tf_function_and_training_lowers_the_loss(self, name):
        density = flows.make_density(name, 3, _num_layers(name), HIDDEN, num_components=3, seed=0)
        evaluation = flows.with_training(density, False)
        x = tf.constant(self.rng.normal(size=(64, 3)) * [1.0, 2.0, 0.5], tf.float32)
        self.assertAllClose(
            evaluation.log_prob(x), tf.function(evaluation.log_prob)(tf.identity(x)), atol=1e-5
        )
        samples = tf.function(lambda: evaluation.sample(5, seed=(1, 2)))()
        self.assertAllClose(samples, evaluation.sample(5, seed=(1, 2)), atol=1e-5)
        variables = density.trainable_variables
        optimizer = snt.optimizers.Adam(1e-2)

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(density.log_prob(x))
            optimizer.apply(tape.gradient(loss, variables), variables)
            return loss

        losses = [float(step(x)) for _ in range(10)]
        self.assertLess(losses[-1], losses[0])

    def test_batch_norm_statistics_and_training_mode_with_a_mog_base(self):
        d = 3
        density = flows.make_density("maf_mog", d, 2, HIDDEN, num_components=3, dtype=tf.float64)
        base = density.distribution
        evaluation = flows.with_training(density, False)
        self.assertIs(evaluation.distribution, base)
        self.assertEqual(
            [v.ref() for v in density.trainable_variables],
            [v.ref() for v in evaluation.trainable_variables],
        )
        x = self.rng.normal(size=(500, d)) * [1.0, 3.0, 0.2] + [5.0, -1.0, 0.0]

        def layer_by_layer(bijectors):
            # log p(x) = log base(u) + sum of each layer's inverse log-det, density order.
            total, h = 0.0, x
            for bijector in bijectors:
                total += bijector.inverse_log_det_jacobian(tf.constant(h), event_ndims=1).numpy()
                h = bijector.inverse(tf.constant(h)).numpy()
            return total + base.log_prob(tf.constant(h)).numpy(), h

        # Training mode: minibatch statistics.
        expected, _ = layer_by_layer(density.bijector.parameters["bijectors"])
        self.assertAllClose(density.log_prob(tf.constant(x)), expected)
        # Evaluation mode after storing the training-set statistics.
        u = flows.set_batch_norm_statistics(density.bijector, tf.constant(x)).numpy()
        self.assertAllClose(u.mean(0), np.zeros(d), atol=1e-10)  # the last batch norm whitens
        expected, h = layer_by_layer(evaluation.bijector.parameters["bijectors"])
        self.assertAllClose(h, u)
        self.assertAllClose(evaluation.log_prob(tf.constant(x)), expected)

    @parameterized.parameters("made_mog", "maf_mog")
    def test_checkpoint_round_trip(self, name):
        num_layers = _num_layers(name)
        source = flows.make_density(name, 3, num_layers, HIDDEN, num_components=2, seed=1)
        target = flows.make_density(name, 3, num_layers, HIDDEN, num_components=2, seed=2)
        source, target = flows.with_training(source, False), flows.with_training(target, False)
        flow_test_util.randomize_batch_norm(source.bijector, self.rng)
        x = tf.constant(self.rng.normal(size=(5, 3)), tf.float32)
        path = tf.train.Checkpoint(density=source).save(os.path.join(self.get_temp_dir(), "ckpt"))
        self.assertNotAllClose(target.log_prob(x), source.log_prob(x))
        tf.train.Checkpoint(density=target).restore(path).assert_consumed()
        self.assertAllClose(target.log_prob(tf.identity(x)), source.log_prob(tf.identity(x)))

    def test_structure(self):
        made_mog = flows.make_density("made_mog", 4, 1, HIDDEN, seed=0)
        self.assertEqual(made_mog.distribution.num_components, flows.DEFAULT_NUM_COMPONENTS)
        self.assertEqual(made_mog.distribution.made.num_params, 30)
        # MoG output biases are N(0, 1) (MAF code); hidden biases zero.
        self.assertGreater(np.std(made_mog.distribution.made.biases[-1].numpy()), 0.5)
        self.assertAllEqual(made_mog.distribution.made.biases[0], np.zeros(16))
        for num_layers, base_order in ((2, [1, 2, 3, 4]), (3, [4, 3, 2, 1])):
            maf_mog = flows.make_density("maf_mog", 4, num_layers, HIDDEN, num_components=2)
            mades = [
                b.parameters["shift_and_log_scale_fn"]
                for b in maf_mog.bijector.parameters["bijectors"]
                if isinstance(b, tfb.MaskedAutoregressiveFlow)
            ]
            self.assertLen(mades, num_layers)
            self.assertLen(flow_test_util.batch_norms(maf_mog.bijector), num_layers)
            # The base continues the alternation of orders after the last MADE.
            self.assertAllEqual(mades[-1].input_degrees[::-1], base_order)
            self.assertAllEqual(maf_mog.distribution.made.input_degrees, base_order)

    def test_validation(self):
        made = flows.MADE(3, HIDDEN, num_params=6)
        with self.assertRaisesRegex(ValueError, "num_params"):
            flows.MADEMoG(made, 3)
        with self.assertRaisesRegex(ValueError, "num_components"):
            flows.MADEMoG(made, 0)
        with self.assertRaisesRegex(ValueError, "unconditional"):
            flows.MADEMoG(flows.MADE(3, HIDDEN, num_params=6, conditional_size=2), 2)
        with self.assertRaisesRegex(ValueError, "output_bias_stddev"):
            flows.MADE(3, HIDDEN, output_bias_stddev=-1.0)
        with self.assertRaisesRegex(ValueError, "num_components"):
            flows.make_density("maf", 3, 2, HIDDEN, num_components=3)
        with self.assertRaisesRegex(ValueError, "num_components"):
            flows.make_density("maf_mog", 3, 2, HIDDEN, num_components=0)
        with self.assertRaisesRegex(ValueError, "num_layers"):
            flows.make_density("made_mog", 3, 2, HIDDEN)
        with self.assertRaisesRegex(ValueError, "batch norm"):
            flows.make_density("made_mog", 3, 1, HIDDEN, batch_norm=True)
        with self.assertRaisesRegex(ValueError, "conditional_size"):
            flows.make_density("maf_mog", 3, 2, HIDDEN, conditional_size=2)
        with self.assertRaisesRegex(ValueError, "does not take"):
            flows.make_density("made_mog", 4, 1, HIDDEN, mask="halves")
        with self.assertRaisesRegex(ValueError, "Unknown density"):
            flows.make_density("realnvp_mog", 3, 2, HIDDEN)


class MoGConfigTest(tf.test.TestCase, parameterized.TestCase):
    def test_variants(self):
        made_mog = mnist_configs.get_config("made_mog")
        self.assertEqual((made_mog.model.flow, made_mog.model.num_layers), ("made_mog", 1))
        self.assertEqual(made_mog.optimizer.learning_rate, 1e-3)  # MAF App.: as MADE
        self.assertFalse(made_mog.model.batch_norm)
        maf_mog = mnist_configs.get_config("maf_mog5")
        self.assertEqual((maf_mog.model.flow, maf_mog.model.num_layers), ("maf_mog", 5))
        self.assertEqual(maf_mog.optimizer.learning_rate, 1e-4)
        self.assertTrue(maf_mog.model.batch_norm)
        for config in (made_mog, maf_mog):
            self.assertEqual(config.model.num_components, 10)  # MAF paper
            self.assertEqual(tuple(config.model.hidden_units), (1024, 1024))

    @parameterized.parameters("made_mog", "maf_mog5")
    def test_build_model_passes_num_components(self, variant):
        config = mnist_configs.get_config(variant)
        config.model.hidden_units = (4,)
        config.model.num_components = 3
        model = flows_density.build_model(config)
        self.assertEqual(model.density.distribution.num_components, 3)
        self.assertEqual(model.event_size, 784)
        self.assertEqual(model.has_batch_norm, variant == "maf_mog5")
        y = tf.random.stateless_normal([2, 784], [1, 2])
        self.assertTrue(np.all(np.isfinite(model.log_prob(y, training=False).numpy())))

    @parameterized.parameters(("made_mog", 1, False), ("maf_mog", 2, True))
    def test_mnist_task_step_evaluation_and_samples(self, flow, num_layers, batch_norm):
        """The MNIST task on tiny random data: a training step, a validation
        evaluation (with batch-norm statistics) and sample images."""
        config = mnist_configs.get_config("smoke")
        config.model.flow, config.model.num_layers = flow, num_layers
        config.model.batch_norm, config.model.num_components = batch_norm, 3
        config.eval.num_samples = 2
        rng = np.random.default_rng(0)
        data = flows_data.MnistData(*rng.uniform(size=[3, 40, 28, 28]).astype(np.float32))
        task = flows_tasks.MnistDensityTask(config, data=data)
        out = task.step(next(iter(task.train_dataset(0))), tf.constant([0, 0]))
        self.assertTrue(np.all(np.isfinite(out.metrics["log_likelihood"].numpy())))
        metrics = task.evaluate(task.validation_dataset(), tf.constant([0, 1]))
        self.assertTrue(math.isfinite(metrics["log_likelihood"]))
        images = task.images(next(iter(task.validation_dataset())), tf.constant([1, 2]))
        self.assertTrue(np.all(np.isfinite(images["samples"].numpy())))


class MoGTrainBinaryTest(tf.test.TestCase):
    """`python -m flows.train` on real MNIST (smoke config, one epoch of 10 steps) for MAF MoG,
    which runs the MADE MoG base too (made_mog runs in-process above, to keep this short)."""

    def test_train_binary_runs(self):
        results = tempfile.mkdtemp(prefix="flows_mog_")
        self.addCleanup(shutil.rmtree, results, ignore_errors=True)
        binaries.run(
            "flows.train",
            "--config=flows/configs/mnist.py:smoke",
            "--config.model.flow=maf_mog",
            "--config.model.num_components=3",
            "--config.loop.num_steps=10",
            "--config.eval.num_samples=2",
            f"--results_dir={results}",
            "--run_name=mog",
        )
        with open(os.path.join(results, "mog", "1", "metrics.json")) as f:
            metrics = json.load(f)
        self.assertEqual(metrics["step"], 10)
        self.assertTrue(math.isfinite(metrics["test_log_likelihood"]))
        self.assertTrue(math.isfinite(metrics["test_bits_per_pixel"]))  # untrained: no range


if __name__ == "__main__":
    tf.test.main()

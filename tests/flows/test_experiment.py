"""End to end on real MNIST with the `smoke` config through `python -m flows.train`: early
stopping state, metrics.json (test log-likelihood in nats and bits/pixel), the checkpoint round
trip through `load_from_checkpoint`; plus the early-stopping logic and the configs."""

import json
import math
import os
import shutil
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from tensorboard.backend.event_processing import event_accumulator

from common import experiment, training
from flows import data as flows_data
from flows import density as flows_density
from flows import early_stopping as flows_early_stopping
from flows import evaluation as flows_evaluation
from flows import tasks as flows_tasks
from flows.configs import mnist as mnist_configs
from flows.configs import toy as toy_configs
from tests import binaries

SMOKE = "--config=flows/configs/mnist.py:smoke"  # 2 epochs of 10 steps, 100 test images


class MnistEndToEndTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.results = tempfile.mkdtemp(prefix="flows_e2e_")
        cls.proc = binaries.run(
            "flows.train", SMOKE, f"--results_dir={cls.results}", "--run_name=ref"
        )
        cls.run_dir = os.path.join(cls.results, "ref", "1")
        with open(os.path.join(cls.run_dir, "metrics.json")) as f:
            cls.metrics = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.results, ignore_errors=True)
        super().tearDownClass()

    def test_metrics_json_has_finite_test_log_likelihood_and_bits_per_pixel(self):
        m = self.metrics
        self.assertIn("test log-likelihood (logit space)", self.proc.stdout)
        self.assertEqual(m["step"], 20)
        self.assertEqual(m["num_test_images"], 100)
        for name in (
            "test_log_likelihood",
            "test_log_likelihood_2se",
            "test_bits_per_pixel",
            "test_bits_per_pixel_2se",
        ):
            self.assertTrue(math.isfinite(m[name]), name)
        self.assertGreater(m["test_log_likelihood_2se"], 0)
        # Untrained-ish but sane: better than nothing, worse than the MAF paper's models.
        self.assertBetween(m["test_bits_per_pixel"], 1.5, 8.0)
        # bits/pixel = 8 - (log p(y) + log|dy/dx|) / (D ln 2), averaged over the same images,
        # with the Jacobian of y = logit(a + (1 - 2a) x), a = 1e-6, re-derived in NumPy from the
        # dequantized pixels x: dy/dx = (1 - 2a) / (p (1 - p)), p = a + (1 - 2a) x.
        config = experiment.load_config(self.run_dir)
        x = flows_data.load_mnist_data(config).test.reshape(-1, 784).astype(np.float64)
        alpha = 1e-6
        p = alpha + (1 - 2 * alpha) * x
        jacobian = np.mean(np.sum(np.log(1 - 2 * alpha) - np.log(p) - np.log1p(-p), axis=1))
        expected = 8 - (m["test_log_likelihood"] + jacobian) / (784 * math.log(2))
        self.assertAllClose(m["test_bits_per_pixel"], expected, atol=1e-4)

    def test_evaluate_binary_reproduces_the_training_runs_test_figures(self):
        with open(os.path.join(self.run_dir, "metrics.json")) as f:
            before = json.load(f)
        proc = binaries.run("flows.evaluate", f"--run_dir={self.run_dir}")
        self.assertIn("test log-likelihood (logit space)", proc.stdout)
        self.assertIn(f"{before['test_log_likelihood']:.2f}", proc.stdout)
        with open(os.path.join(self.run_dir, "metrics.json")) as f:
            after = json.load(f)
        for name in ("test_log_likelihood", "test_bits_per_pixel", "best_epoch", "checkpoint"):
            self.assertEqual(after[name], before[name], name)
        missing = binaries.run("flows.evaluate", "--run_dir=/nonexistent/run", check=False)
        self.assertNotEqual(missing.returncode, 0)
        self.assertIn("/nonexistent/run", missing.stderr.strip().splitlines()[-1])

    def test_early_stopping_state_and_best_checkpoint(self):
        state = flows_early_stopping.load_early_stopping(self.run_dir)
        self.assertEqual([s for s, _ in state.history], [10, 20])  # one validation per epoch
        self.assertEqual(state.patience_steps, 10)  # 1 epoch of 10 steps
        self.assertEqual(state.best_value, max(v for _, v in state.history))
        best = os.path.join(self.run_dir, state.best_checkpoint)
        self.assertTrue(os.path.exists(best + ".index"))
        self.assertEqual(self.metrics["checkpoint"], best)
        self.assertEqual(
            [experiment.checkpoint_step(p) for p in experiment.checkpoint_paths(self.run_dir)],
            [10, 20],
        )

    def test_tensorboard_scalars_and_images(self):
        def tags(sub):
            acc = event_accumulator.EventAccumulator(
                os.path.join(self.run_dir, sub), size_guidance={"tensors": 0}
            )
            acc.Reload()
            return set(acc.Tags()["tensors"])

        self.assertContainsSubset(
            {"log_likelihood", "bits_per_pixel", "loss/model", "grad_norm", "input", "samples"},
            tags("train"),
        )
        self.assertContainsSubset({"log_likelihood", "bits_per_pixel"}, tags("validation"))
        self.assertContainsSubset({"test_log_likelihood", "test_bits_per_pixel"}, tags("test"))

    def test_load_from_checkpoint_reproduces_the_test_metrics(self):
        restored = experiment.load_from_checkpoint(self.run_dir, self.metrics["checkpoint"])
        self.assertIsInstance(restored.model, flows_density.FlowDensity)
        # evaluate_run rebuilds the model from config.json and the checkpoint alone.
        again = flows_evaluation.evaluate_run(self.run_dir)
        for name in ("test_log_likelihood", "test_bits_per_pixel", "validation_log_likelihood"):
            self.assertAllClose(again[name], self.metrics[name], rtol=1e-6, msg=name)
        # The restored model is the trained one, not a fresh initialization.
        fresh = flows_density.build_model(restored.config)
        y = tf.random.stateless_normal([4, 784], [1, 2])
        self.assertNotAllClose(
            restored.model.log_prob(y, training=False), fresh.log_prob(y, training=False)
        )
        names = lambda m: sorted(v.name for v in m.variables)
        self.assertEqual(names(restored.model), names(fresh))

    def test_early_stopping_stops_the_loop_and_a_resume_trains_no_further(self):
        config = mnist_configs.get_config("smoke")
        config.loop.num_steps = 50  # 5 epochs of 10 steps; patience 1 epoch
        config.eval.after_training = False
        run_dir = os.path.join(self.results, "stops")
        os.makedirs(run_dir)
        experiment.write_run_info(run_dir, config, ["test"])
        # A validation score that never improves (a real one could by rounding alone).
        flat = {"log_likelihood": -1000.0, "bits_per_pixel": 2.0}
        with mock.patch.object(flows_tasks.MnistDensityTask, "evaluate", return_value=flat):
            result, state = flows_early_stopping.train_with_early_stopping(config, run_dir, None)
        self.assertTrue(result.stopped_by_hook)
        self.assertEqual(result.step, 20)  # epoch 1 is the best, epoch 2 uses up the patience
        self.assertEqual(state.history, [(10, -1000.0), (20, -1000.0)])
        self.assertEqual(state.best_step, 10)
        self.assertTrue(flows_early_stopping.load_early_stopping(run_dir).should_stop)
        latest = experiment.latest_checkpoint(run_dir)
        self.assertEqual(experiment.checkpoint_step(latest), 20)
        again, state = flows_early_stopping.train_with_early_stopping(config, run_dir, latest)
        self.assertEqual(again.step, 20)
        self.assertEqual(experiment.checkpoint_step(experiment.latest_checkpoint(run_dir)), 20)

    def test_early_stopping_follows_the_uninterrupted_trajectory(self):
        """Early stopping validates (and sets batch-norm statistics) between training steps
        through the loop's hook; the parameters equal those of the plain loop."""
        config = mnist_configs.get_config("smoke")
        config.early_stopping.patience_epochs = 0  # one call of common.training.train
        config.eval.after_training = False
        run_dir = os.path.join(self.results, "plain")
        os.makedirs(run_dir)
        experiment.write_run_info(run_dir, config, ["test"])
        result, state = flows_early_stopping.train_with_early_stopping(config, run_dir, None)
        self.assertIsNone(state)
        self.assertEqual(result.step, 20)
        plain = experiment.load_from_checkpoint(run_dir).model
        stopped = experiment.load_from_checkpoint(self.run_dir).model  # model.ckpt-20
        for u, v in zip(stopped.trainable_variables, plain.trainable_variables, strict=True):
            self.assertAllEqual(u, v, msg=u.name)


class EarlyStoppingTest(tf.test.TestCase):
    def test_stops_after_patience_without_improvement(self):
        state = flows_early_stopping.EarlyStopping(patience_steps=3)
        self.assertFalse(state.should_stop)
        improved = [state.update(s, v) for s, v in enumerate([1.0, 2.0, 1.5, 1.9, 1.99], 1)]
        self.assertEqual(improved, [True, True, False, False, False])
        self.assertEqual((state.best_step, state.best_value), (2, 2.0))
        self.assertTrue(state.should_stop)  # 5 - 2 >= 3

    def test_non_finite_scores_never_improve(self):
        state = flows_early_stopping.EarlyStopping(patience_steps=2)
        self.assertFalse(state.update(1, float("nan")))
        self.assertFalse(state.update(2, -float("inf")))
        self.assertIsNone(state.best_step)
        self.assertTrue(state.should_stop)
        self.assertTrue(state.update(3, -5.0))

    def test_json_round_trip_and_order(self):
        state = flows_early_stopping.EarlyStopping(patience_steps=10)
        state.update(5, -3.0)
        state.best_checkpoint = "best/model.ckpt-5"
        copy = flows_early_stopping.EarlyStopping.from_dict(json.loads(json.dumps(state.to_dict())))
        self.assertEqual(copy.to_dict(), state.to_dict())
        with self.assertRaisesRegex(ValueError, "step order"):
            state.update(5, 1.0)


class ConfigTest(tf.test.TestCase, parameterized.TestCase):
    def test_paper_variants(self):
        maf = mnist_configs.get_config("maf5")
        self.assertEqual((maf.model.flow, maf.model.num_layers), ("maf", 5))
        self.assertEqual(tuple(maf.model.hidden_units), (1024, 1024))  # the MAF code
        self.assertEqual((maf.batch_size, maf.optimizer.learning_rate), (100, 1e-4))
        self.assertEqual(maf.early_stopping.patience_epochs, 30)
        self.assertEqual(maf.data.validation_size, 10_000)
        self.assertEqual(maf.data.dequantization_seed, 42)
        self.assertEqual(mnist_configs.get_config("realnvp5").model.flow, "realnvp")
        made = mnist_configs.get_config("made")
        self.assertEqual((made.model.flow, made.optimizer.learning_rate), ("made", 1e-3))
        self.assertFalse(made.model.batch_norm)
        with self.assertRaisesRegex(ValueError, "Unknown variant"):
            mnist_configs.get_config("maf10")

    @parameterized.parameters(*mnist_configs.VARIANTS)
    def test_every_mnist_variant_builds(self, variant):
        """Every variant builds; the MADEs of made / maf / maf_mog read their second output as a
        log precision (the MAF code), the other densities have no such option."""
        config = mnist_configs.get_config(variant)
        config.model.hidden_units = (4,)
        model = flows_density.build_model(config)
        wrapped = [m for m in model.submodules if m.name.startswith("log_precision_")]
        if config.model.flow in ("made", "maf", "maf_mog"):
            self.assertTrue(config.model.made_log_precision)
            self.assertLen(wrapped, config.model.num_layers)
        else:
            self.assertFalse(config.model.made_log_precision)
            self.assertEmpty(wrapped)
        y = tf.random.stateless_normal([3, 784], [5, 6])
        self.assertTrue(np.all(np.isfinite(model.log_prob(y, training=False).numpy())))

    @parameterized.parameters(("realnvp", 2, True), ("made_mog", 1, False))
    def test_densities_without_gaussian_mades_ignore_made_log_precision(self, flow, layers, bn):
        """`--config.model.flow=...` on the maf5 config works: made_log_precision (on there)
        reaches only the Gaussian MADEs, as realnvp_mask reaches only realnvp."""
        config = mnist_configs.get_config("maf5")
        config.model.hidden_units = (4,)
        config.model.flow, config.model.num_layers, config.model.batch_norm = flow, layers, bn
        self.assertTrue(config.model.made_log_precision)
        model = flows_density.build_model(config)
        self.assertEmpty([m for m in model.submodules if m.name.startswith("log_precision_")])
        y = tf.random.stateless_normal([3, 784], [5, 6])
        self.assertTrue(np.all(np.isfinite(model.log_prob(y, training=False).numpy())))

    @parameterized.parameters("two_moons", "pinwheel,smoke", "u3", "u4,smoke")
    def test_toy_variants(self, variant):
        config = toy_configs.get_config(variant)
        energy = variant.startswith("u")
        self.assertEqual(config.model.flow, "planar" if energy else "maf")
        self.assertEqual(config.target, variant.split(",")[0])

    def test_unknown_toy_variant(self):
        with self.assertRaisesRegex(ValueError, "target one of"):
            toy_configs.get_config("u5")
        with self.assertRaisesRegex(ValueError, "Unknown variant"):
            toy_configs.get_config("u1,fast")

    def test_early_stopping_needs_the_default_strategy(self):
        config = mnist_configs.get_config("smoke")
        config.strategy = "mirrored"
        with self.assertRaisesRegex(ValueError, "patience_epochs=0"):
            flows_early_stopping.train_with_early_stopping(config, tempfile.gettempdir(), None)

    def test_made_variant_builds_without_batch_norm(self):
        config = mnist_configs.get_config("made")
        config.model.hidden_units = (8,)
        model = flows_density.build_model(config)
        self.assertLen(model.trainable_variables, 4)  # two masked layers, weights and biases
        self.assertLen(model.weight_matrices, 2)
        self.assertFalse(model.has_batch_norm)

    def test_loss_carries_the_weight_decay_once(self):
        config = mnist_configs.get_config("smoke")
        task = flows_tasks.MnistDensityTask(config, data=_tiny_data())
        batch = next(iter(task.train_dataset(0)))
        out = task.step(batch, tf.constant([0, 0]))
        decay = sum(float(tf.reduce_sum(w**2)) for w in task.model.weight_matrices) * 1e-6
        self.assertAllClose(out.losses["model"], -out.metrics["log_likelihood"] + decay)
        self.assertIsInstance(out, training.StepOutput)
        self.assertTrue(task.model.has_batch_norm)


def _tiny_data() -> flows_data.MnistData:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=[3, 40, 28, 28]).astype(np.float32)
    return flows_data.MnistData(*x)


if __name__ == "__main__":
    tf.test.main()

"""End to end on real multi-MNIST with the `smoke` config through the binaries
(`air.train`, then `air.evaluate`), plus unit tests of the experiment wiring."""

import json
import os
import time

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from air import data as multi_mnist
from air import experiment as air_experiment
from air import model, plots
from air.configs import air as air_configs
from common import experiment
from tests import binaries, events

NUM_STEPS = 60
SUMMARY_EVERY = 20


class AIREndToEndTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.results = os.path.join(
            os.environ.get("TEST_TMPDIR", "/tmp"), f"air_e2e_{os.getpid()}_{time.time_ns()}"
        )
        binaries.run(
            "air.train",
            "--config=air/configs/air.py:smoke",
            f"--config.loop.num_steps={NUM_STEPS}",
            f"--config.loop.summary_every={SUMMARY_EVERY}",
            "--config.loop.checkpoint_every=30",
            "--config.eval.after_training=False",
            f"--results_dir={cls.results}",
            "--run_name=smoke",
        )
        cls.run_dir = os.path.join(cls.results, "smoke", "1")
        cls.eval_proc = binaries.run("air.evaluate", f"--run_dir={cls.run_dir}")
        with open(os.path.join(cls.run_dir, "metrics.json")) as f:
            cls.metrics = json.load(f)

    def test_negative_elbo_decreases(self):
        elbo = events.scalars(events.load(os.path.join(self.run_dir, "train")), "elbo")
        self.assertEqual([s for s, _ in elbo], [20, 40, 60])
        # Means over steps 1-20 and 41-60; -ELBO is the bound part of the model loss.
        self.assertGreater(elbo[-1][1], elbo[0][1] + 10.0, elbo)

    def test_evaluate_writes_count_accuracy_and_the_confusion_matrix(self):
        m = self.metrics
        self.assertEqual(m["step"], NUM_STEPS)
        self.assertEqual(m["num_images"], 200)
        confusion = np.array(m["confusion_matrix"])
        self.assertEqual(confusion.shape, (3, 4))  # true 0..2 x inferred 0..3
        self.assertEqual(confusion.sum(), 200)
        self.assertAllClose(m["count_accuracy"], np.trace(confusion) / 200)
        for name in ("elbo", "iwae_bound_k3", "kl_num_steps", "kl_what", "kl_where", "num_steps"):
            self.assertTrue(np.isfinite(m[name]), name)
        # Rows are the true counts of the test images (from the data, not the model) ...
        data = multi_mnist.load_from_config(experiment.load_config(self.run_dir))
        self.assertAllEqual(confusion.sum(1), np.bincount(data.test.counts, minlength=3))
        # ... and the mean sampled count is the mean of the confusion matrix's columns.
        self.assertAllClose(m["num_steps"], confusion.sum(0) @ np.arange(4) / 200, atol=1e-6)
        self.assertBetween(m["validation_count_accuracy"], 0.0, 1.0)
        self.assertGreater(m["gradient_variance_no_baseline"], m["gradient_variance"])
        self.assertIn("count accuracy", self.eval_proc.stdout)
        self.assertIn("confusion matrix", self.eval_proc.stdout)

    def test_tensorboard_images_and_scalars(self):
        train = events.load(os.path.join(self.run_dir, "train"))
        tags = set(train.Tags()["tensors"])
        for tag in ("input", "reconstruction", "glimpse_boxes", "loss/model", "loss/baseline"):
            self.assertIn(tag, tags)
        test = events.load(os.path.join(self.run_dir, "test"))
        tags = set(test.Tags()["tensors"])
        for tag in ("confusion_matrix", "glimpse_boxes", "count_accuracy", "elbo"):
            self.assertIn(tag, tags)
        validation = set(events.load(os.path.join(self.run_dir, "validation")).Tags()["tensors"])
        self.assertIn("count_accuracy", validation)

    def test_load_from_checkpoint_restores_the_model(self):
        restored = experiment.load_from_checkpoint(self.run_dir)
        self.assertEqual(restored.step, NUM_STEPS)
        reader = tf.train.load_checkpoint(restored.checkpoint_path)
        stored = {
            name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map()
            if name.startswith("model/") and "OPTIMIZER_SLOT" not in name
        }
        variables = restored.model.variables
        self.assertLen(stored, len(variables))
        values = sorted(np.sum(np.abs(v)) for v in stored.values())
        self.assertAllClose(values, sorted(np.sum(np.abs(v.numpy())) for v in variables))
        self.assertIsNotNone(restored.model.baseline)
        self.assertIsNotNone(restored.model.nvil)


class WiringTest(tf.test.TestCase, parameterized.TestCase):
    def test_validation_images_come_from_the_validation_split_not_test(self):
        task = air_experiment.build_task(air_configs.get_config("smoke"))
        images = np.concatenate([b["image"].numpy() for b in task.validation_dataset()])
        expected = task.data.validation.images[..., None] / 255.0
        self.assertAllClose(images, expected)
        self.assertNotAllClose(images, task.data.test.images[: len(images), ..., None] / 255.0)

    @parameterized.parameters(*air_configs.VARIANTS)
    def test_variants_are_valid(self, variant):
        config = air_configs.get_config(variant)
        air_experiment.validate_config(config)
        self.assertEqual(config.experiment, "air.experiment")

    def test_reference_variant_holds_the_reference_code_values(self):
        c = air_configs.get_config("reference")
        self.assertEqual(
            (c.optimizer.name, c.optimizer.learning_rate, c.batch_size, c.model.max_steps),
            ("rmsprop", 1e-4, 64, 3),
        )
        self.assertEqual(c.objective.baseline_lr_multiplier, 10.0)
        self.assertEqual(
            (c.prior.schedule, c.prior.hold_steps, c.prior.decay_steps),
            ("exponential", 1_000, 100_000),
        )

    def test_cpu_variant_counts_by_construction(self):
        """The two `cpu` defaults that make counting emerge (README "Robustness")."""
        c = air_configs.get_config("cpu")
        # MNIST digits are size-normalized into a 20x20 box: the window (2 * half-extent *
        # canvas / 2 pixels) must exceed it by a few pixels of where-noise on each side, or
        # a second step pays for drawing the rows the first window cut off.
        window_px = c.model.where_scale_prior_mean * c.data.canvas_size
        self.assertGreaterEqual(window_px, 20 * c.data.digit_scale + 4)
        self.assertLess(c.model.where_scale_prior_mean, 1.0)
        # Each extra step must cost far more than the ~4.6 nats of s = 0.01, with which the
        # probes kept every step on for any image with a digit (count accuracy ~31%).
        self.assertEqual(c.prior.schedule, "fixed")
        extra_step_nats = -np.log(c.prior.step_prob)
        self.assertGreaterEqual(extra_step_nats, 16.0)
        log_p = model.num_steps_prior_log_probs(c.prior.step_prob, c.model.max_steps).numpy()
        self.assertAllClose(log_p[1] - log_p[2], extra_step_nats, rtol=1e-6)

    def test_unknown_variant(self):
        with self.assertRaisesRegex(ValueError, "variant"):
            air_configs.get_config("big")

    @parameterized.named_parameters(
        ("vimco_elbo", dict(estimator="vimco", bound="elbo", num_particles=2)),
        ("vimco_one_particle", dict(estimator="vimco", bound="iwae", num_particles=1)),
        ("vimco_baseline", dict(estimator="vimco", bound="iwae", num_particles=2)),
        ("unknown", dict(estimator="nvil")),
        ("normalization_without_centring", dict(centering=False, nvil_normalization=True)),
    )
    def test_bad_objectives(self, overrides):
        config = air_configs.get_config("smoke")
        config.objective.update(overrides)
        with self.assertRaises(ValueError):
            air_experiment.validate_config(config)

    def test_parameter_groups(self):
        config = air_configs.get_config("smoke")
        task = air_experiment.build_task(config)
        groups = task.param_groups()
        self.assertEqual(set(groups), {"model", "baseline"})
        self.assertIsNot(groups["model"].optimizer, groups["baseline"].optimizer)
        baseline_lr = float(groups["baseline"].optimizer.learning_rate)
        self.assertAllClose(baseline_lr, 10 * config.optimizer.learning_rate)
        ids = lambda g: {id(v) for v in g.variables}
        self.assertFalse(ids(groups["model"]) & ids(groups["baseline"]))
        config.objective.update(
            dict(estimator="vimco", bound="iwae", num_particles=2, baseline=False, centering=False)
        )
        vimco = air_experiment.build_model(config)
        self.assertIsNone(vimco.baseline)
        self.assertIsNone(vimco.nvil)

    def test_draw_boxes(self):
        # A window of 5 pixels (columns 2..6 of a 9-pixel axis): s = 4/8, t = (2*2+4)/8 - 1 = 0.
        z_where = np.array([[[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, -0.5, -0.5]]])
        images = plots.draw_boxes(np.zeros([1, 9, 9, 1]), z_where, np.array([[1, 0]]))
        red = np.all(images[0] == plots.STEP_COLOURS[0], axis=-1)
        expected = np.zeros([9, 9], bool)
        expected[2, 2:7] = expected[6, 2:7] = expected[2:7, 2] = expected[2:7, 6] = True
        self.assertAllEqual(red, expected)
        self.assertEqual(images.shape, (1, 9, 9, 3))  # the absent step draws nothing
        self.assertEqual(int(np.any(images > 0, -1).sum()), 16)
        confusion = plots.confusion_image(np.array([[3, 1], [0, 4]]))
        self.assertEqual(confusion.shape, (1, 48, 48, 3))


if __name__ == "__main__":
    tf.test.main()

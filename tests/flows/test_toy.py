"""Tests for flows/toy.py (samplers, exact densities, energies U1-U4) and the toy experiment
(a smoke fit lowers the loss; PNGs, metrics.json, TensorBoard images, checkpoint round trip)."""

import json
import math
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from tensorboard.backend.event_processing import event_accumulator

from common import experiment
from flows import experiment as flows_experiment
from flows import toy
from flows import toy_task as flows_toy_task
from flows.configs import toy as toy_configs


def _numpy_energy(name, z):
    """Rezende & Mohamed (2015), Table 1, re-derived in NumPy (float64, no wall)."""
    z1, z2 = z[:, 0], z[:, 1]
    w1 = np.sin(2 * np.pi * z1 / 4)
    w2 = 3 * np.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + np.exp(-(z1 - 1) / 0.3))
    if name == "u1":
        return 0.5 * ((np.linalg.norm(z, axis=1) - 2) / 0.4) ** 2 - np.log(
            np.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + np.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)
        )
    if name == "u2":
        return 0.5 * ((z2 - w1) / 0.4) ** 2
    if name == "u3":
        return -np.log(
            np.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + np.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2)
        )
    return -np.log(
        np.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + np.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2)
    )


class SamplerTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(*toy.DENSITIES)
    def test_deterministic_finite_and_in_the_picture(self, name):
        a = toy.sample(name, 5000, [1, 2])
        self.assertEqual(a.shape, [5000, 2])
        self.assertAllEqual(a, toy.sample(name, 5000, [1, 2]))
        self.assertNotAllClose(a, toy.sample(name, 5000, [1, 3]))
        inside = np.mean(np.all(np.abs(a.numpy()) < toy.PLOT_LIMIT, axis=1))
        self.assertGreater(inside, 0.999)

    @parameterized.parameters(*toy.EXACT_DENSITIES)
    def test_exact_density_integrates_to_one_and_matches_the_sampler(self, name):
        points, area = toy.grid(6.0, 600)
        log_p = toy.log_density(name, tf.constant(points)).numpy()
        self.assertAllClose(np.exp(log_p).sum() * area, 1.0, atol=1e-6)
        # Mass per quadrant of [-4, 4]^2 cells of side 2: density vs 40,000 samples.
        x = toy.sample(name, 40_000, [0, 7], tf.float64).numpy()
        cells = lambda v: np.floor(np.clip(v, -3.99, 3.99) / 2).astype(int) + 2  # 0..3
        counts = np.zeros([4, 4])
        np.add.at(counts, (cells(x[:, 0]), cells(x[:, 1])), 1)
        mass = np.zeros([4, 4])
        np.add.at(mass, (cells(points[:, 0]), cells(points[:, 1])), np.exp(log_p) * area)
        # Binomial 5-sigma bounds.
        sigma = np.sqrt(mass * (1 - mass) / 40_000) + 1e-9
        self.assertAllLessEqual(np.abs(counts / 40_000 - mass) / sigma, 5.0)

    def test_checkerboard_samples_are_on_dark_cells(self):
        x = toy.sample("checkerboard", 2000, [4, 4])
        self.assertAllClose(toy.log_density("checkerboard", x), -math.log(8) * np.ones(2000))
        self.assertEqual(float(toy.log_density("checkerboard", [[0.5, -0.5]])[0]), -np.inf)

    def test_unknown_names(self):
        with self.assertRaisesRegex(ValueError, "Unknown target"):
            toy.sample("u1", 3, [0, 0])
        with self.assertRaisesRegex(ValueError, "Unknown target"):
            toy.log_density("two_moons", [[0.0, 0.0]])


class EnergyTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(*toy.ENERGIES)
    def test_matches_numpy_inside_the_walls(self, name):
        z = np.random.default_rng(0).uniform(-4, 4, size=[500, 2])
        self.assertAllClose(toy.energy(name, tf.constant(z)), _numpy_energy(name, z), rtol=1e-10)

    @parameterized.parameters(*toy.ENERGIES)
    def test_normalizes_on_a_grid_to_a_finite_constant(self, name):
        # Same cell size on a larger box: log Z does not change, so the mass is all inside.
        log_z = toy.log_normalizer(name, 6.0, 600)
        self.assertTrue(np.isfinite(log_z))
        self.assertAllClose(toy.log_normalizer(name, 8.0, 800), log_z, atol=1e-9)
        self.assertAllClose(toy.log_normalizer(name), log_z, atol=1e-5)  # finer grid

    def test_without_the_wall_u2_grows_with_the_box(self):
        # exp(-U2) is constant along z1 in mean, so its integral over [-L, L]^2 grows like L.
        small = toy.log_normalizer("u2", 6.0, 600, confine=False)
        large = toy.log_normalizer("u2", 8.0, 800, confine=False)
        self.assertAllClose(large - small, math.log(8 / 6), atol=0.01)

    def test_target_log_prob_is_normalized(self):
        points, area = toy.grid(6.0, 600)
        for name in ("u3", "eight_gaussians"):
            log_p = toy.target_log_prob_fn(name)(tf.constant(points)).numpy()
            self.assertAllClose(np.exp(log_p).sum() * area, 1.0, atol=1e-5, msg=name)
        self.assertIsNone(toy.target_log_prob_fn("pinwheel"))


class PictureTest(tf.test.TestCase):
    def test_grid_image_has_y_upwards(self):
        # A density concentrated at the top-left corner appears in the first row/column.
        image = toy.density_on_grid(lambda x: -tf.reduce_sum((x - [-3.9, 3.9]) ** 2, -1) * 50, 4, 8)
        self.assertEqual(np.unravel_index(image.argmax(), image.shape), (0, 0))
        hist = toy.histogram([[-3.9, 3.9], [np.nan, 0.0]], 4, 8)
        self.assertEqual(hist.sum(), 1)
        self.assertEqual(hist[0, 0], 1)
        rgb = toy.colorize(image)
        self.assertEqual(rgb.shape, (8, 8, 3))
        self.assertAllInRange(rgb, 0.0, 1.0)


class ToyExperimentTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="flows_toy_")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    @parameterized.parameters(("two_moons", "log_likelihood", 1), ("u2", "kl", -1))
    def test_smoke_fit_lowers_the_loss(self, target, metric, sign):
        config = toy_configs.get_config(f"{target},smoke")
        run_dir = os.path.join(self.tmp, "1")
        os.makedirs(run_dir)
        experiment.write_run_info(run_dir, config, ["test"])
        seed = tf.constant([0, 99], tf.int64)
        before_task = flows_toy_task.ToyTask(config)
        before = before_task.evaluate(before_task.validation_dataset(), seed)[metric]

        metrics = flows_experiment.train_and_evaluate(config, run_dir)
        restored = experiment.load_from_checkpoint(run_dir)
        after_task = flows_toy_task.ToyTask(config, restored.model)
        after = after_task.evaluate(after_task.validation_dataset(), seed)[metric]
        self.assertGreater(sign * (after - before), 0.1, f"{metric}: {before} -> {after}")
        if metric == "kl":  # KL(q || p) >= 0 up to Monte-Carlo error
            self.assertGreater(after, -0.05)

        # Run-folder outputs: PNGs, metrics.json, TensorBoard images.
        for name in ("density.png", "samples.png"):
            with open(os.path.join(run_dir, name), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        with open(os.path.join(run_dir, "metrics.json")) as f:
            self.assertEqual(json.load(f)["step"], 60)
        self.assertTrue(math.isfinite(metrics[f"test_{metric}"]))
        acc = event_accumulator.EventAccumulator(
            os.path.join(run_dir, "train"), size_guidance={"tensors": 0}
        )
        acc.Reload()
        self.assertContainsSubset({"density", "samples", "target"}, acc.Tags()["tensors"])


if __name__ == "__main__":
    tf.test.main()

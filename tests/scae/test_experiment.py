"""End to end on real 40x40 shifted MNIST with the `smoke` config, through the binaries
(`scae.train`, then `scae.evaluate`), plus the model's loss terms and variants."""

import json
import os
import shutil
import tempfile
import unittest.mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from common import experiment
from scae import data, model
from scae import experiment as scae_experiment
from scae.configs import mnist as mnist_configs
from tests import binaries, events


class SCAEEndToEndTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.results = tempfile.mkdtemp(prefix="scae_e2e_")
        cls.proc = binaries.run(
            "scae.train",
            "--config=scae/configs/mnist.py:smoke",
            "--config.loop.num_steps=40",
            "--config.eval.after_training=False",
            f"--results_dir={cls.results}",
            "--run_name=smoke",
        )
        cls.run_dir = os.path.join(cls.results, "smoke", "1")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.results, ignore_errors=True)
        super().tearDownClass()

    def test_the_loss_decreases(self):
        loss = events.scalars(events.load(os.path.join(self.run_dir, "train")), "loss/model")
        self.assertEqual([s for s, _ in loss], [10, 20, 30, 40])
        self.assertLess(loss[-1][1], loss[0][1] - 10.0, loss)

    def test_tensorboard_images_and_validation_accuracy(self):
        acc = events.load(os.path.join(self.run_dir, "train"))
        tags = set(acc.Tags()["tensors"])
        image_tags = ("object_reconstructions", "transformed_templates", "prior_presence")
        for tag in ("input", "reconstruction", "difference", "templates", "rec_ll", *image_tags):
            self.assertIn(tag, tags)
        val = events.scalars(
            events.load(os.path.join(self.run_dir, "validation")), "prior_kmeans_accuracy"
        )
        self.assertEqual([s for s, _ in val], [10, 20, 30, 40])
        self.assertTrue(all(0.0 <= v <= 1.0 for _, v in val))

    def test_accuracy_curve_of_several_runs(self):
        """One PNG with every run's validation curves: a curve per run and kind in the legend."""
        import matplotlib.pyplot as plt

        from scae import plots

        path = os.path.join(self.results, "two_runs.png")
        drawn = []
        original = plt.Axes.plot

        def recording_plot(ax, *args, **kwargs):
            drawn.append((kwargs.get("label"), list(args[1])))
            return original(ax, *args, **kwargs)

        with unittest.mock.patch.object(plt.Axes, "plot", recording_plot):
            plots.save_accuracy_curve({"seed 0": self.run_dir, "seed 1": self.run_dir}, path)
        self.assertGreater(os.path.getsize(path), 1000)
        val = events.scalars(
            events.load(os.path.join(self.run_dir, "validation")), "posterior_kmeans_accuracy"
        )
        self.assertEqual(
            [label for label, _ in drawn],
            [f"seed {i}, {k} presences" for i in (0, 1) for k in ("prior", "posterior")],
        )
        self.assertAllClose(drawn[1][1], [100 * v for _, v in val])

    def test_evaluate_writes_metrics(self):
        proc = binaries.run("scae.evaluate", f"--run_dir={self.run_dir}")
        self.assertIn("prior presences, 10 clusters", proc.stdout)
        with open(os.path.join(self.run_dir, "metrics.json")) as f:
            m = json.load(f)
        self.assertEqual((m["step"], m["num_train_images"], m["num_test_images"]), (40, 300, 200))
        for kind in ("prior", "posterior"):
            for split in ("train", "test", "affine_test"):
                self.assertBetween(m[f"{split}_{kind}_kmeans10_accuracy"], 0.0, 1.0)
        for png in (
            "templates.png", "reconstructions.png", "accuracy_curve.png", "presences.png",
            "tsne.png", "object_reconstructions.png",
        ):  # fmt: skip
            self.assertIn(png, m["figures"])
            self.assertGreater(os.path.getsize(os.path.join(self.run_dir, png)), 1000)
        restored = experiment.load_from_checkpoint(self.run_dir)
        self.assertEqual(restored.step, 40)

    def test_evaluate_on_validation_with_presence_noise_overridden(self):
        """--split=validation scores the validation images into their own file (metrics.json,
        the test figures, is neither written nor changed); --presence_noise changes the
        features."""
        test_file = os.path.join(self.run_dir, "metrics.json")

        def test_metrics():
            if not os.path.exists(test_file):
                return None
            with open(test_file) as f:
                return f.read()

        before = test_metrics()
        results = {}
        for noise in ("on", "off"):
            proc = binaries.run(
                "scae.evaluate", f"--run_dir={self.run_dir}", "--split=validation",
                f"--presence_noise={noise}", "--noplot",
            )  # fmt: skip
            self.assertIn("validation images; presence noise " + noise, proc.stdout)
            path = os.path.join(self.run_dir, f"metrics_validation_noise_{noise}.json")
            with open(path) as f:
                results[noise] = json.load(f)
        for noise, m in results.items():
            self.assertEqual((m["split"], m["presence_noise"]), ("validation", noise == "on"))
            self.assertEqual((m["num_train_images"], m["num_validation_images"]), (300, 200))
            for kind in ("prior", "posterior"):
                for split in ("train", "validation", "affine_validation"):
                    self.assertIn(f"{split}_{kind}_kmeans10_accuracy", m)
            self.assertNotIn("test_prior_kmeans10_accuracy", m)
        self.assertNotEqual(results["on"]["validation_rec_ll"], results["off"]["validation_rec_ll"])
        self.assertEqual(test_metrics(), before)


class LossTest(tf.test.TestCase, parameterized.TestCase):
    def test_loss_is_the_sum_of_its_terms(self):
        config = mnist_configs.get_config("smoke")
        scae = scae_experiment.build_model(config)
        x = tf.random.stateless_uniform([6, data.CANVAS_SIZE, data.CANVAS_SIZE, 1], [1, 2])
        labels = tf.constant([0, 1, 2, 3, 4, 5], tf.int64)
        out = scae(x)
        loss, metrics = model.loss_terms(out, labels, config.loss)
        w, s = config.loss, out.sparsity
        expected = (
            -out.rec_ll
            - w.part_likelihood * out.part_likelihood.log_prob
            + w.dynamic_l2 * out.dynamic_l2
            + w.prior_within * s.prior_within
            + w.prior_between * s.prior_between
            + w.posterior_within * s.posterior_within
            - w.posterior_between * s.posterior_between
            + metrics["prior_probe_xent"]
            + metrics["posterior_probe_xent"]
        )
        self.assertAllClose(loss, expected, rtol=1e-6)
        # The probes see stop-gradient presences: their loss moves no capsule parameter.
        with tf.GradientTape() as tape:
            out = scae(x)
            xent = tf.reduce_sum(model.loss_terms(out, labels, config.loss)[1]["prior_probe_xent"])
        grads = tape.gradient(xent, scae.trainable_variables)
        moved = {
            v.name for v, g in zip(scae.trainable_variables, grads, strict=True) if g is not None
        }
        self.assertTrue(moved and all("probe" in n for n in moved), moved)

    def test_object_reconstructions(self):
        config = mnist_configs.get_config("smoke")
        scae = scae_experiment.build_model(config)
        x = tf.random.stateless_uniform([3, data.CANVAS_SIZE, data.CANVAS_SIZE, 1], [3, 4])
        out = scae(x)
        per_object = scae.object_reconstructions(out).numpy()
        k, m = config.model.num_objects, config.model.num_parts
        self.assertEqual(per_object.shape, (3, k, data.CANVAS_SIZE, data.CANVAS_SIZE, 1))
        decoder = scae.template_decoder
        votes = out.objects.votes().numpy()
        presence = (out.objects.vote_presence() * out.parts.presence[:, None]).numpy()
        for b, j in ((0, 0), (2, k - 1)):
            # Capsule j of example b alone: its M votes as the poses of one image.
            rendered = decoder.render(votes[b, j].reshape(1, m, 2, 3), (40, 40))
            p = np.clip(presence[b, j], 1e-6, 1 - 1e-6)
            expected = decoder.reconstruction(rendered, tf.constant(np.log(p / (1 - p))[None]))
            self.assertAllClose(per_object[b, j], expected[0], atol=1e-5)
        # A capsule of presence 0 draws the background only.
        bg = float(tf.sigmoid(decoder.background_intensity_raw))
        absent = out._replace(objects=out.objects._replace(presence_logit=tf.fill([3, k], -1e4)))
        self.assertAllClose(scae.object_reconstructions(absent), np.full_like(per_object, bg),
                            atol=1e-4)  # fmt: skip

    @parameterized.parameters(*mnist_configs.VARIANTS)
    def test_variants_build(self, variant):
        config = mnist_configs.get_config(variant)
        self.assertEqual(config.experiment, "scae.experiment")
        if variant == "reference":
            self.assertEqual((config.model.num_parts, config.model.num_objects), (40, 32))
            self.assertEqual(config.optimizer.learning_rate, 3e-5)
        if variant == "paper":
            self.assertEqual((config.model.num_parts, config.model.num_objects), (24, 24))


if __name__ == "__main__":
    tf.test.main()

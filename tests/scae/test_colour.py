"""SVHN / CIFAR-10 for SCAE: the Sobel target against a NumPy re-derivation, the TFDS splits and
one training run plus `evaluate_run` on `tfds.testing.mock_data` (this machine cannot download
the real datasets; the mock has their shapes and label ranges)."""

import json
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from common import experiment, training
from scae import data
from scae import evaluation as scae_evaluation
from scae import experiment as scae_experiment
from scae.configs import colour


def _numpy_sobel_target(images):
    ky = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float64)  # d/dy; d/dx is its transpose
    out = np.zeros_like(images, np.float64)
    for b in range(images.shape[0]):
        for c in range(images.shape[3]):
            padded = np.pad(images[b, :, :, c], 1, mode="reflect")
            h, w = images.shape[1:3]
            edges = np.zeros((h, w))
            for i in range(h):
                for j in range(w):
                    window = padded[i : i + 3, j : j + 3]
                    edges[i, j] = (window * ky).sum() + (window * ky.T).sum()
            edges = np.abs(edges - np.median(edges))
            out[b, :, :, c] = (edges - edges.min()) / (edges.max() - edges.min() + 1e-8)
    return out


class SobelTest(tf.test.TestCase):
    def test_against_numpy(self):
        images = np.random.default_rng(0).uniform(size=(2, 7, 6, 3)).astype(np.float32)
        got = data.sobel_target(tf.constant(images)).numpy()
        self.assertAllClose(got, _numpy_sobel_target(images), atol=1e-5)
        self.assertAllClose(got.min(axis=(1, 2)), np.zeros((2, 3)), atol=1e-6)
        self.assertAllClose(got.max(axis=(1, 2)), np.ones((2, 3)), atol=1e-5)

    def test_a_flat_background_is_black(self):
        image = np.full((1, 8, 8, 3), 0.7, np.float32)
        image[0, 3:5, 3:5] = 0.1  # a dark square on a flat colour
        target = data.sobel_target(tf.constant(image)).numpy()
        self.assertAllClose(target[0, 0], np.zeros((8, 3)), atol=1e-6)  # far from the square
        self.assertGreater(target[0, 2:6, 2:6].max(), 0.9)


class ColourDataTest(tf.test.TestCase):
    def test_splits_from_tfds(self):
        with tfds.testing.mock_data(num_examples=30):
            d = data.load_colour("svhn_cropped", validation_size=8)
        self.assertEqual([len(s.images) for s in d], [22, 8, 30])
        for s in d:
            self.assertEqual(s.images.shape[1:], (32, 32, 3))
            self.assertEqual(s.images.dtype, np.uint8)
            self.assertTrue(np.all((0 <= s.labels) & (s.labels < 10)))
        with self.assertRaisesRegex(ValueError, "Unknown dataset"):
            data.load_colour("imagenet")
        with tfds.testing.mock_data(num_examples=30), self.assertRaises(ValueError):
            data.load_colour("cifar10", validation_size=30)

    def test_batches_carry_the_image_and_its_sobel_target(self):
        with tfds.testing.mock_data(num_examples=20):
            d = data.load_colour("cifar10", validation_size=4)
        batch = next(iter(data.colour_train_dataset(d.train, 5, seed=0)))
        self.assertEqual(batch["image"].shape, (5, 32, 32, 3))
        self.assertAllClose(batch["target"], data.sobel_target(batch["image"]))
        first = next(iter(data.colour_eval_dataset(d.test, 3)))
        self.assertAllClose(first["image"], d.test.images[:3] / 255.0)


class ColourConfigTest(tf.test.TestCase):
    def test_paper_sizes_build(self):
        for variant, parts, objects in (("svhn", 24, 32), ("cifar10", 32, 64)):
            config = colour.get_config(variant)
            scae = scae_experiment.build_model(config)
            self.assertEqual(scae.template_decoder.templates.shape, (parts, 14, 14, 3))
            self.assertEqual(scae.capsule_decoder.num_capsules, objects)
            self.assertEqual(data.image_shape(config), (32, 32, 3))
        with self.assertRaisesRegex(ValueError, "Unknown variant"):
            colour.get_config("stl10")


class ColourEndToEndTest(tf.test.TestCase):
    def test_train_and_evaluate_on_mock_svhn(self):
        config = colour.get_config("smoke")
        config.loop.num_steps = 20
        run_dir = self.create_tempdir().full_path
        with tfds.testing.mock_data(num_examples=60):
            experiment.write_run_info(run_dir, config, ["test"])
            result = training.train(config, run_dir, scae_experiment.build_task)
            metrics = scae_evaluation.evaluate_run(run_dir)
        self.assertEqual(result.step, 20)
        self.assertTrue(np.isfinite(result.train_metrics["loss/model"]))
        restored = experiment.load_from_checkpoint(run_dir)
        self.assertEqual(restored.model.template_decoder.templates.shape, (4, 6, 6, 3))
        with open(os.path.join(run_dir, "metrics.json")) as f:
            self.assertEqual(json.load(f)["step"], 20)
        self.assertEqual(metrics["num_test_images"], 60)
        self.assertNotIn("affine_test_prior_kmeans10_accuracy", metrics)  # MNIST only
        self.assertBetween(metrics["test_prior_kmeans10_accuracy"], 0.0, 1.0)
        for png in metrics["figures"]:
            self.assertGreater(os.path.getsize(os.path.join(run_dir, png)), 1000)
        summary = scae_evaluation.format_metrics(run_dir, metrics)
        self.assertIn("prior presences, 10 clusters", summary)
        self.assertNotIn("affine", summary)


if __name__ == "__main__":
    tf.test.main()

"""End to end on real binarized MNIST with the `smoke` config, through the binaries
(`draw.train`, `draw.evaluate`, `draw.generate`), plus the pieces they are built from."""

import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from PIL import Image

from common import summaries
from draw import experiment as draw_experiment
from draw import plots
from draw.configs import mnist as mnist_configs
from tests import binaries, events


class DRAWEndToEndTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.results = tempfile.mkdtemp(prefix="draw_e2e_")
        cls.train_log = binaries.run(
            "draw.train",
            "--config=draw/configs/mnist.py:smoke",
            "--config.loop.num_steps=200",
            "--config.loop.eval_every=100",
            "--config.loop.checkpoint_every=100",
            "--config.loop.image_every=100",
            "--config.optimizer.learning_rate=0.01",
            "--config.inter_op_threads=2",  # the thread pools of the other variants
            "--config.intra_op_threads=1",
            f"--results_dir={cls.results}",
            "--run_name=smoke",
        ).stderr
        cls.run_dir = os.path.join(cls.results, "smoke", "1")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.results, ignore_errors=True)
        super().tearDownClass()

    def test_the_validation_bound_decreases(self):
        val = events.scalars(events.load(os.path.join(self.run_dir, "validation")), "negative_elbo")
        self.assertEqual([s for s, _ in val], [100, 200])
        acc = events.load(os.path.join(self.run_dir, "train"))
        first = events.scalars(acc, "negative_elbo")[0][1]
        self.assertLess(val[-1][1], first - 5.0, (first, val))

    def test_tensorboard_has_the_terms_and_the_step_images(self):
        tags = set(events.load(os.path.join(self.run_dir, "train")).Tags()["tensors"])
        for tag in ("negative_elbo", "reconstruction_loss", "latent_loss", "grad_norm",
                    "reconstruction_steps", "samples_steps"):  # fmt: skip
            self.assertIn(tag, tags)

    def test_evaluate_writes_the_bound_and_its_terms(self):
        proc = binaries.run("draw.evaluate", f"--run_dir={self.run_dir}", "--num_samples=6")
        self.assertIn("negative ELBO", proc.stdout)
        # Training and evaluation both ran on the run's thread pools (config overrides above).
        for log in (self.train_log, proc.stderr):
            self.assertIn("TensorFlow thread pools: 2 inter-op, 1 intra-op.", log)
        with open(os.path.join(self.run_dir, "metrics.json")) as f:
            m = json.load(f)
        self.assertEqual((m["step"], m["num_images"], m["num_samples"]), (200, 200, 6))
        self.assertAllClose(
            m["negative_elbo"], m["reconstruction_loss"] + m["latent_loss"], rtol=1e-6
        )
        self.assertEqual(m["data"], "static (seed 0)")

    def test_generate_writes_a_png_per_step_and_the_gif(self):
        out = os.path.join(self.results, "gen")
        binaries.run(
            "draw.generate", f"--run_dir={self.run_dir}", "--num_samples=9", f"--output_dir={out}"
        )
        steps = mnist_configs.get_config("smoke").model.num_steps
        pngs = sorted(f for f in os.listdir(out) if f.startswith("step_"))
        self.assertEqual(pngs, [f"step_{t:03d}.png" for t in range(1, steps + 1)])
        with Image.open(os.path.join(out, "canvas.gif")) as gif:
            self.assertEqual(gif.n_frames, steps)
            self.assertEqual(gif.size, (3 * (28 * 3 + 2) - 2,) * 2)  # 3 x 3 samples, scale 3
        tags = set(events.load(os.path.join(self.run_dir, "test")).Tags()["tensors"])
        self.assertIn("generated/final_canvas", tags)

    def test_validation_curve_png(self):
        curve = summaries.validation_curve(self.run_dir, "negative_elbo")
        self.assertEqual([s for s, _ in curve], [100, 200])
        path = plots.save_validation_curves(
            {"smoke": self.run_dir}, os.path.join(self.results, "curve.png"), {"paper": 80.97}
        )
        with Image.open(path) as png:
            self.assertEqual(png.size, (700, 450))

    def test_bad_input_is_one_line(self):
        proc = binaries.run(
            "draw.generate", f"--run_dir={self.run_dir}", "--num_samples=0", check=False
        )
        self.assertEqual(proc.returncode, 1)
        self.assertIn("--num_samples", proc.stderr.strip().splitlines()[-1])
        proc = binaries.run(
            "draw.train", "--config=draw/configs/mnist.py:smoke",
            "--config.data.source=larochelle", f"--config.data.data_dir={self.results}",
            f"--results_dir={self.results}", check=False,
        )  # fmt: skip
        self.assertEqual(proc.returncode, 1)
        self.assertIn("binarized_mnist_train.amat", proc.stderr.strip().splitlines()[-1])


class PlotsTest(tf.test.TestCase):
    def test_boxes_are_drawn_where_the_window_is(self):
        probs = np.zeros([1, 1, 10, 10], np.float32)
        boxes = np.array([[[2.0, 3.0, 6.0, 8.0]]])  # x 2..6, y 3..8 (0-based pixels)
        frame = plots.render_frames(probs, read_boxes=boxes, scale=2)[0, 0]
        red = np.all(frame == plots.READ_COLOUR, axis=-1)
        ys, xs = np.nonzero(red)
        # pixel p spans [2p, 2p + 2) at scale 2; its centre is 2p + 1.
        self.assertEqual((xs.min(), xs.max(), ys.min(), ys.max()), (5, 13, 7, 17))

    def test_tile_and_steps(self):
        images = np.arange(5 * 2 * 3 * 3, dtype=np.uint8).reshape(5, 2, 3, 3)
        grid = plots.tile(images, 3, gap=1)
        self.assertEqual(grid.shape, (2 * 2 + 1, 3 * 3 + 2, 3))
        self.assertAllEqual(grid[3:5, 4:7], images[4])
        self.assertEqual(plots.shown_steps(64), [0, 9, 18, 27, 36, 45, 54, 63])
        self.assertEqual(plots.shown_steps(3), [0, 1, 2])


class ConfigTest(tf.test.TestCase):
    def test_paper_variant_is_table_3(self):
        m = mnist_configs.get_config("paper").model
        self.assertEqual(
            (m.num_steps, m.lstm_size, m.latent_size, m.read_size, m.write_size, m.attention),
            (64, 256, 100, 2, 5, True),
        )
        self.assertFalse(mnist_configs.get_config("no_attention").model.attention)

    def test_kl_warmup_weights_the_latent_loss_only(self):
        config = mnist_configs.get_config("smoke")
        config.loss.kl_warmup_steps = 4
        task = draw_experiment.DRAWTask(config)
        batch = next(iter(task.train_dataset(0)))
        seed = tf.constant([1, 2])
        for iteration, weight in ((0, 0.25), (1, 0.5), (2, 0.75), (3, 1.0), (10, 1.0)):
            task.optimizer.iterations.assign(iteration)
            got = task.step(batch, seed)
            out = task.model(batch["image"], seed)
            lx, lz = out.reconstruction_loss.numpy(), out.latent_loss.numpy()
            self.assertAllClose(got.losses["model"], lx + weight * lz, rtol=1e-6)
            self.assertAllClose(got.metrics["negative_elbo"], lx + lz, rtol=1e-6)  # reported: 1
            self.assertAllClose(got.metrics["kl_weight"], np.full_like(lx, weight))
        config.loss.kl_warmup_steps = 0
        task.optimizer.iterations.assign(0)
        self.assertAllClose(task.step(batch, seed).metrics["kl_weight"], np.ones_like(lx))

    def test_mean_image_logit(self):
        images = np.array([[[1, 0]], [[1, 1]], [[1, 0]], [[1, 0]]], np.uint8)
        self.assertAllClose(
            draw_experiment.mean_image_logit(images), [[np.log(0.999 / 0.001), np.log(1 / 3)]]
        )

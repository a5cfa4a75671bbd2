"""End to end on real MNIST with the `smoke` config, through the binaries a
user runs: train, checkpoint, kill and --resume, evaluation, load_from_checkpoint,
TensorBoard (event files and the real server), mirrored strategy, bad input."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from common import experiment
from tests import binaries

SMOKE = "--config=vae/configs/iwae.py:smoke"
# 40 steps, checkpoints every 10; the test split is a 100-image prefix.
SMOKE_ARGS = [SMOKE, "--config.loop.num_steps=40"]


def _params(run_dir, checkpoint=None):
    restored = experiment.load_from_checkpoint(run_dir, checkpoint)
    return {v.name: v.numpy() for v in restored.model.trainable_variables}


def _wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VAEEndToEndTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.results = os.path.join(
            os.environ.get("TEST_TMPDIR", "/tmp"), f"vae_e2e_{os.getpid()}_{time.time_ns()}"
        )
        # The reference: one uninterrupted 40-step run (it also evaluates the test prefix).
        cls.proc = binaries.run(
            "vae.train", *SMOKE_ARGS, f"--results_dir={cls.results}", "--run_name=ref"
        )
        cls.run_dir = os.path.join(cls.results, "ref", "1")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.results, ignore_errors=True)
        super().tearDownClass()

    def test_run_folder_contents_and_printed_test_figures(self):
        self.assertIn("NLL (k = 20)", self.proc.stdout)
        with open(os.path.join(self.run_dir, "metrics.json")) as f:
            metrics = json.load(f)
        self.assertEqual(metrics["step"], 40)
        self.assertEqual(metrics["num_images"], 100)
        # The bounds' arithmetic is checked against NumPy in test_evaluation.py; here: the
        # printed figure is the stored one.
        self.assertTrue(np.isfinite(metrics["nll"]))
        self.assertIn(f"{metrics['nll']:.2f}", self.proc.stdout)
        with open(os.path.join(self.run_dir, "flags.json")) as f:
            info = json.load(f)
        self.assertIn("tensorflow", info["versions"])
        config = experiment.load_config(self.run_dir)
        self.assertEqual(config.loop.num_steps, 40)
        steps = [experiment.checkpoint_step(p) for p in experiment.checkpoint_paths(self.run_dir)]
        self.assertEqual(steps, [10, 20, 30, 40])

    def test_load_from_checkpoint_restores_an_identical_model(self):
        restored = experiment.load_from_checkpoint(self.run_dir)
        self.assertEqual(restored.step, 40)
        again = experiment.load_from_checkpoint(self.run_dir)
        x = tf.cast(tf.random.stateless_uniform([4, 784], [1, 2]) > 0.5, tf.float32)
        seed = tf.constant([3, 4])
        a = restored.model.log_weights(x, 7, seed).log_w
        b = again.model.log_weights(x, 7, seed).log_w
        self.assertAllEqual(a, b)
        # ... and it is the trained model, not a fresh one.
        fresh = experiment.load_from_checkpoint(
            self.run_dir, experiment.checkpoint_paths(self.run_dir)[0]
        )
        self.assertNotAllClose(a, fresh.model.log_weights(x, 7, seed).log_w)

    def test_tensorboard_event_files_hold_scalars_and_images(self):
        def tags(sub):
            acc = event_accumulator.EventAccumulator(
                os.path.join(self.run_dir, sub), size_guidance={"tensors": 0}
            )
            acc.Reload()
            return acc.Tags()["tensors"]

        train_tags = set(tags("train"))
        for tag in (
            "elbo",
            "iwae_bound",
            "kl",
            "log_px_given_z",
            "learning_rate",
            "grad_norm",
            "steps_per_second",
            "loss/model",
            "input",
            "reconstruction",
            "samples",
        ):
            self.assertIn(tag, train_tags)
        self.assertIn("iwae_bound_k5", set(tags("validation")))
        self.assertIn("nll", set(tags("test")))

    def test_tensorboard_server_serves_the_run(self):
        port = _free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                f"--logdir={self.run_dir}",
                "--host=127.0.0.1",
                f"--port={port}",
                "--load_fast=false",
                "--reload_interval=1",
            ],
            env=binaries.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            def get(path):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return json.loads(r.read())

            def ready():
                try:
                    return "train" in get("/data/plugin/scalars/tags")
                except OSError:
                    return False

            _wait_for(ready, 90, "tensorboard to serve the scalars")
            scalars = get("/data/plugin/scalars/tags")
            self.assertIn("elbo", scalars["train"])
            self.assertIn("iwae_bound_k5", scalars["validation"])
            points = get("/data/plugin/scalars/scalars?run=train&tag=elbo")
            self.assertEqual(points[-1][1], 40)  # [wall_time, step, value]
            self.assertTrue(np.isfinite(points[-1][2]))
            images = get("/data/plugin/images/tags")
            self.assertIn("reconstruction", images["train"])
        finally:
            proc.terminate()
            proc.wait(30)

    def test_killed_run_resumes_to_the_same_parameters(self):
        results = os.path.join(self.results, "kill")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vae.train",
                *SMOKE_ARGS,
                f"--results_dir={results}",
                "--run_name=k",
                "--config.eval.after_training=False",
            ],
            cwd=binaries.ROOT,
            env=binaries.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        run_dir = os.path.join(results, "k", "1")
        _wait_for(
            lambda: experiment.checkpoint_paths(run_dir) or proc.poll() is not None,
            240,
            "a first checkpoint",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        self.assertTrue(experiment.checkpoint_paths(run_dir))
        binaries.run(
            "vae.train",
            *SMOKE_ARGS,
            f"--results_dir={results}",
            "--run_name=k",
            "--resume",
            "--config.eval.after_training=False",
        )
        self.assertFalse(os.path.exists(os.path.join(results, "k", "2")))  # resumed in place
        resumed, reference = _params(run_dir), _params(self.run_dir)
        self.assertEqual(resumed.keys(), reference.keys())
        for name in reference:
            np.testing.assert_array_equal(resumed[name], reference[name], err_msg=name)

    def test_sigterm_saves_a_checkpoint_and_resume_finishes(self):
        results = os.path.join(self.results, "term")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vae.train",
                SMOKE,
                "--config.loop.num_steps=100000",
                "--config.loop.checkpoint_every=100000",
                f"--results_dir={results}",
                "--run_name=t",
                "--config.eval.after_training=False",
            ],
            cwd=binaries.ROOT,
            env=binaries.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        run_dir = os.path.join(results, "t", "1")
        _wait_for(
            lambda: glob.glob(os.path.join(run_dir, "train", "*tfevents*")),
            240,
            "training to start",
        )
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0, stderr[-3000:])
        paths = experiment.checkpoint_paths(run_dir)
        self.assertLen(paths, 1)
        self.assertIn("continue with --resume", stderr)

    def test_mirrored_over_two_cpu_devices_matches_one_device(self):
        results = os.path.join(self.results, "mirrored")
        binaries.run(
            "vae.train",
            *SMOKE_ARGS,
            "--config.strategy=mirrored",
            "--config.num_cpu_devices=2",
            f"--results_dir={results}",
            "--run_name=m",
            "--config.eval.after_training=False",
        )
        mirrored, reference = _params(os.path.join(results, "m", "1")), _params(self.run_dir)
        for name in reference:
            self.assertAllClose(mirrored[name], reference[name], rtol=1e-4, atol=1e-4, msg=name)
        # The tolerance is meaningful: training moves the parameters far more.
        first = _params(self.run_dir, experiment.checkpoint_paths(self.run_dir)[0])
        moved = max(np.abs(first[n] - reference[n]).max() for n in reference)
        self.assertGreater(moved, 1e-2)

    def test_unknown_config_field_is_a_clear_error(self):
        proc = binaries.run(
            "vae.train",
            SMOKE,
            "--config.objective.num_sampels=3",
            f"--results_dir={self.results}/bad",
            check=False,
        )
        self.assertNotEqual(proc.returncode, 0)
        self.assertNotIn("Traceback", proc.stderr)
        (line,) = [x for x in proc.stderr.splitlines() if "num_sampels" in x]
        self.assertIn('Did you mean "num_samples"', line)
        self.assertFalse(os.path.exists(os.path.join(self.results, "bad")))

    def test_bad_variant_is_one_line(self):
        proc = binaries.run("vae.train", "--config=vae/configs/iwae.py:nope", check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertNotIn("Traceback", proc.stderr)
        self.assertIn("Unknown variant 'nope'", proc.stderr)

    def test_unknown_flag_is_a_clear_error(self):
        proc = binaries.run("vae.train", SMOKE, "--num_stepz=3", check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("num_stepz", proc.stderr)

    def test_wrong_run_dir_is_a_clear_error(self):
        proc = binaries.run("vae.evaluate", f"--run_dir={self.results}/no/such/run", check=False)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("is not a run folder", proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)

    def test_truncated_checkpoint_is_a_clear_error_and_nothing_is_lost(self):
        run_dir = os.path.join(self.results, "trunc", "1")
        shutil.copytree(self.run_dir, run_dir)
        latest = experiment.latest_checkpoint(run_dir)
        data = glob.glob(latest + ".data-*")[0]
        with open(data, "r+b") as f:
            f.truncate(os.path.getsize(data) // 2)

        # The checkpoints and the config stay byte for byte (flags.json and
        # git_diff.txt may log the failed attempt: they only ever append).
        def snapshot():
            paths = glob.glob(os.path.join(run_dir, "*ckpt*")) + [
                os.path.join(run_dir, n) for n in ("checkpoint", "config.json")
            ]
            return {p: open(p, "rb").read() for p in paths}

        before = snapshot()
        proc = binaries.run("vae.evaluate", f"--run_dir={run_dir}", check=False)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("Cannot restore checkpoint", proc.stderr)
        self.assertIn("model.ckpt-30", proc.stderr)  # names an earlier checkpoint to use
        proc = binaries.run(
            "vae.train",
            *SMOKE_ARGS,
            f"--results_dir={self.results}",
            "--run_name=trunc",
            "--resume",
            check=False,
        )
        self.assertEqual(proc.returncode, 1)
        self.assertIn("Cannot restore checkpoint", proc.stderr)
        self.assertEqual(before, snapshot())
        # The earlier checkpoint still evaluates.
        proc = binaries.run(
            "vae.evaluate",
            f"--run_dir={run_dir}",
            f"--checkpoint={os.path.join(run_dir, 'model.ckpt-30')}",
            "--progress=false",
        )
        self.assertIn("NLL", proc.stdout)

    def test_nan_loss_stops_with_a_clear_error(self):
        # A learning rate this large makes the logits overflow within a few steps.
        results = os.path.join(self.results, "nan")
        proc = binaries.run(
            "vae.train",
            *SMOKE_ARGS,
            "--config.optimizer.learning_rate=1e12",
            "--config.optimizer.schedule=constant",
            f"--results_dir={results}",
            "--run_name=n",
            check=False,
        )
        self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
        self.assertRegex(proc.stderr, r"Non-finite .* at step \d+")

    def test_piwae_trains_and_gradient_snr_is_reported(self):
        # PIWAE(2, 3): separate objectives for the inference and generative groups.
        results = os.path.join(self.results, "piwae")
        proc = binaries.run(
            "vae.train",
            SMOKE,
            "--config.objective.estimator=piwae",
            "--config.objective.num_groups=2",
            "--config.objective.num_samples=3",
            f"--results_dir={results}",
            "--run_name=p",
        )
        self.assertIn("NLL", proc.stdout)
        run_dir = os.path.join(results, "p", "1")
        acc = event_accumulator.EventAccumulator(
            os.path.join(run_dir, "train"), size_guidance={"tensors": 0}
        )
        acc.Reload()
        self.assertIn("loss/inference", acc.Tags()["tensors"])
        self.assertIn("loss/generative", acc.Tags()["tensors"])
        binaries.run(
            "vae.evaluate",
            f"--run_dir={run_dir}",
            "--gradient_snr_repeats=8",
            "--num_samples=10",
            "--progress=false",
        )
        with open(os.path.join(run_dir, "metrics.json")) as f:
            metrics = json.load(f)
        # The SNR itself is checked against a closed form in test_evaluation.py; here: one SNR
        # per data point over 8 draws, on 100 images, for both parameter groups.
        self.assertEqual(metrics["gradient_snr_num_images"], 100)
        self.assertEqual(metrics["gradient_snr_repeats"], 8)
        for name in ("gradient_snr_inference", "gradient_snr_generative"):
            self.assertTrue(np.isfinite(metrics[name]))

"""Pre-emption without warning: `vae.train` (`smoke`, 200 steps, a checkpoint every 10; with
GENMODELS_KILL_ALL=1 also every other package's training binary) is killed with SIGKILL at 20
moments and resumed with `--resume` after each, then allowed to finish.
Half of the kills are random moments, half land while a checkpoint is being written (as soon as
TF's temporary checkpoint folder appears). Checked: every checkpoint left behind is readable;
the final parameters equal an uninterrupted run's bit for bit; and TensorBoard reads every
summary step exactly once, with the values of the uninterrupted run (the re-run tail supersedes
the killed one), also after `--resume` of the finished run."""

import glob
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from common import experiment
from tests import binaries, events

KILLS = 20
LOOP = [
    "--config.loop.summary_every=5",
    "--config.loop.image_every=100",
    "--config.eval.after_training=False",
]
# package -> binary, its arguments (a smoke config long enough to be killed while training).
PACKAGES = {
    "vae": ("vae.train", ["--config=vae/configs/iwae.py:smoke", "--config.loop.num_steps=200",
                          "--config.loop.checkpoint_every=10", "--config.loop.eval_every=50"]),
    "draw": ("draw.train", ["--config=draw/configs/mnist.py:smoke", "--config.loop.num_steps=200",
                            "--config.loop.checkpoint_every=10", "--config.loop.eval_every=50"]),
    "air": ("air.train", ["--config=air/configs/air.py:smoke", "--config.loop.num_steps=200",
                          "--config.loop.checkpoint_every=10", "--config.loop.eval_every=50"]),
    "scae": ("scae.train", ["--config=scae/configs/mnist.py:smoke", "--config.loop.num_steps=60",
                            "--config.loop.checkpoint_every=5", "--config.loop.eval_every=30"]),
    "flows": ("flows.train", ["--config=flows/configs/mnist.py:smoke",
                              "--config.loop.num_steps=200", "--config.loop.checkpoint_every=10",
                              "--config.loop.eval_every=50"]),
}  # fmt: skip
# CI runs the vae case; GENMODELS_KILL_ALL=1 runs every package (about 4 minutes each).
ALL = os.environ.get("GENMODELS_KILL_ALL") == "1"


def _params(run_dir):
    restored = experiment.load_from_checkpoint(run_dir)
    return {v.name: v.numpy() for v in restored.model.trainable_variables}


class KillAndResumeTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters((name, name) for name in PACKAGES)
    def test_twenty_sigkills(self, package):
        if package != "vae" and not ALL:
            self.skipTest("GENMODELS_KILL_ALL=1 runs the other packages (slow)")
        module, args = PACKAGES[package]
        args = [*args, *LOOP, f"--run_name={package}"]
        rng = random.Random(0)
        reference_root = self.create_tempdir().full_path
        binaries.run(module, *args, f"--results_dir={reference_root}")
        reference = os.path.join(reference_root, package, "1")

        results = self.create_tempdir().full_path
        run_dir = os.path.join(results, package, "1")
        during_checkpoint = 0
        for kill in range(KILLS + 1):
            resume = ["--resume"] if os.path.exists(os.path.join(run_dir, "config.json")) else []
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args, f"--results_dir={results}", *resume],
                cwd=binaries.ROOT, env=binaries.env(), stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            if kill == KILLS:  # the last start runs to the end
                _, err = proc.communicate(timeout=600)
                self.assertEqual(proc.returncode, 0, err[-3000:])
                break
            deadline = time.time() + (rng.uniform(3.0, 12.0) if kill % 2 else 60.0)
            while time.time() < deadline and proc.poll() is None:
                if kill % 2 == 0 and glob.glob(os.path.join(run_dir, "*_temp*")):
                    during_checkpoint += 1
                    break
                time.sleep(0.002 if kill % 2 == 0 else 0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            for path in experiment.checkpoint_paths(run_dir) if os.path.isdir(run_dir) else []:
                tf.train.load_checkpoint(path)  # readable, whatever the moment of the kill
        self.assertGreater(during_checkpoint, 0)
        # Resuming the finished run validates its last step again: still once in TensorBoard.
        binaries.run(module, *args, f"--results_dir={results}", "--resume")

        final, expected = _params(run_dir), _params(reference)
        for name in expected:
            self.assertAllEqual(final[name], expected[name], msg=name)
        for sub in ("train", "validation"):
            want_acc = events.load(os.path.join(reference, sub))
            got_acc = events.load(os.path.join(run_dir, sub))
            tags = [
                t
                for t in want_acc.Tags()["tensors"]
                if t != "steps_per_second"
                and tf.make_ndarray(want_acc.Tensors(t)[0].tensor_proto).ndim == 0  # not images
            ]
            self.assertTrue(tags, sub)
            for tag in tags:
                got, want = events.scalars(got_acc, tag), events.scalars(want_acc, tag)
                self.assertEqual([s for s, _ in got], [s for s, _ in want], msg=f"{sub}/{tag}")
                np.testing.assert_allclose(
                    [v for _, v in got], [v for _, v in want], rtol=1e-5, err_msg=f"{sub}/{tag}"
                )
        print(f"{package}: {KILLS} kills ({during_checkpoint} during a checkpoint write), "
              "0 unreadable checkpoints, final parameters bit-identical")  # fmt: skip


if __name__ == "__main__":
    tf.test.main()

"""Pre-emption without warning: `vae.train` (`smoke`, 200 steps, a checkpoint every 10) is killed
with SIGKILL at 20 moments and resumed with `--resume` after each, then allowed to finish.
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

from common import experiment
from tests import binaries, events

KILLS = 20
ARGS = [
    "--config=vae/configs/iwae.py:smoke",
    "--config.loop.num_steps=200",
    "--config.loop.checkpoint_every=10",
    "--config.loop.summary_every=5",
    "--config.loop.eval_every=50",
    "--config.loop.image_every=100",
    "--config.eval.after_training=False",
]


def _params(run_dir):
    restored = experiment.load_from_checkpoint(run_dir)
    return {v.name: v.numpy() for v in restored.model.trainable_variables}


class KillAndResumeTest(tf.test.TestCase):
    def test_twenty_sigkills(self):
        rng = random.Random(0)
        reference_root = self.create_tempdir().full_path
        binaries.run("vae.train", *ARGS, f"--results_dir={reference_root}")
        reference = os.path.join(reference_root, "vae", "1")

        results = self.create_tempdir().full_path
        run_dir = os.path.join(results, "vae", "1")
        during_checkpoint = 0
        for kill in range(KILLS + 1):
            resume = ["--resume"] if os.path.exists(os.path.join(run_dir, "config.json")) else []
            proc = subprocess.Popen(
                [sys.executable, "-m", "vae.train", *ARGS, f"--results_dir={results}", *resume],
                cwd=binaries.ROOT, env=binaries.env(), stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            if kill == KILLS:  # the last start runs to the end
                _, err = proc.communicate(timeout=300)
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
        binaries.run("vae.train", *ARGS, f"--results_dir={results}", "--resume")

        final, expected = _params(run_dir), _params(reference)
        for name in expected:
            self.assertAllEqual(final[name], expected[name], msg=name)
        for sub, tag in (("train", "loss/model"), ("validation", "elbo")):
            got = events.scalars(events.load(os.path.join(run_dir, sub)), tag)
            want = events.scalars(events.load(os.path.join(reference, sub)), tag)
            self.assertEqual([s for s, _ in got], [s for s, _ in want], msg=sub)
            np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-5)


if __name__ == "__main__":
    tf.test.main()

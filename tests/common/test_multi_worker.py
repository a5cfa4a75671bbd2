"""Multi-worker training on localhost: two `python -m <package>.train` processes joined by
`TF_CONFIG` into one `MultiWorkerMirroredStrategy` cluster (the TF distribute guide's setup) train
a `smoke` config together. Checked: both exit 0; they agree on one run folder (the chief's, one
past the folders already there); only the chief evaluates and writes into it (the non-chief's
scratch checkpoints are gone); and the trained parameters equal those of one process with the
same global batch, to float tolerance."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from common import experiment
from tests import binaries

CASES = {
    "vae": ("vae.train", "vae/configs/iwae.py:smoke", 40),
    "draw": ("draw.train", "draw/configs/mnist.py:smoke", 30),
}


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _params(run_dir):
    restored = experiment.load_from_checkpoint(run_dir)
    return {v.name: v.numpy() for v in restored.model.trainable_variables}


class MultiWorkerTest(tf.test.TestCase):
    def _check(self, package):
        module, config, steps = CASES[package]
        results = self.create_tempdir().full_path
        args = [
            f"--config={config}",
            f"--config.loop.num_steps={steps}",
            f"--results_dir={results}",
        ]
        binaries.run(module, *args, "--run_name=one", "--config.eval.after_training=False")

        os.makedirs(os.path.join(results, "mw", "1"))  # an earlier run: the new one must be 2
        procs = self._workers(module, [*args, "--run_name=mw"])
        outputs = [p.communicate(timeout=600) for p in procs]
        for p, (_, err) in zip(procs, outputs, strict=True):
            self.assertEqual(p.returncode, 0, err[-3000:])
        self.assertEqual(sorted(os.listdir(os.path.join(results, "mw"))), ["1", "2"])
        run_dir = os.path.join(results, "mw", "2")
        self.assertTrue(os.path.exists(os.path.join(run_dir, "metrics.json")))
        self.assertFalse([n for n in os.listdir(run_dir) if n.startswith(".worker")])
        # Only the chief (worker 0) evaluated and printed the figures.
        self.assertIn("metrics.json", outputs[0][0])
        self.assertNotIn("metrics.json", outputs[1][0])

        one, two = _params(os.path.join(results, "one", "1")), _params(run_dir)
        self.assertEqual(one.keys(), two.keys())
        for name in one:
            self.assertAllClose(two[name], one[name], rtol=1e-4, atol=1e-4, msg=name)
        # The tolerance is small next to how far training moved the parameters.
        first = experiment.checkpoint_paths(os.path.join(results, "one", "1"))[0]
        start = {
            v.name: v.numpy()
            for v in experiment.load_from_checkpoint(
                os.path.join(results, "one", "1"), first
            ).model.trainable_variables
        }
        self.assertGreater(max(np.abs(start[n] - one[n]).max() for n in one), 1e-2)

    def _workers(self, module, args):
        cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
        procs = []
        for index in range(2):
            env = binaries.env()
            env["TF_CONFIG"] = json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", module, *args, "--config.strategy=multi_worker"],
                    cwd=binaries.ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        return procs

    def test_killed_worker_restart_with_resume_equals_uninterrupted(self):
        """SIGKILL one worker mid-run: the other stops within seconds with one line saying how
        to resume (TensorFlow's coordination service notices the missing heartbeats), the
        checkpoints are intact, and restarting every worker with --resume (the TF guide's
        recovery for MultiWorkerMirroredStrategy) ends where an uninterrupted two-worker run
        ends."""
        results = self.create_tempdir().full_path
        args = [
            "--config=vae/configs/iwae.py:smoke",
            "--config.loop.num_steps=400",
            "--config.loop.checkpoint_every=20",
            "--config.eval.after_training=False",
            f"--results_dir={results}",
        ]
        reference = self._workers("vae.train", [*args, "--run_name=whole"])
        for p in reference:
            _, err = p.communicate(timeout=600)
            self.assertEqual(p.returncode, 0, err[-3000:])

        procs = self._workers("vae.train", [*args, "--run_name=killed"])
        run_dir = os.path.join(results, "killed", "1")
        deadline = time.time() + 300
        while not os.path.exists(os.path.join(run_dir, "model.ckpt-100.index")):
            self.assertLess(time.time(), deadline, "no checkpoint 100 within 300 s")
            self.assertIsNone(procs[0].poll(), "the run ended before the kill")
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)
        start = time.time()
        _, err = procs[0].communicate(timeout=180)
        procs[1].communicate()
        waited = time.time() - start
        self.assertEqual(procs[0].returncode, 1, err[-3000:])
        self.assertNotIn("Traceback", err)
        (line,) = [x for x in err.splitlines() if x.startswith("error:")]
        self.assertIn("of the cluster stopped", line)  # the lost task is named when TF says
        self.assertIn("--resume", line)
        print(f"worker 0 stopped {waited:.1f} s after worker 1 was killed: {line}")
        stopped_at = experiment.checkpoint_step(experiment.latest_checkpoint(run_dir))
        self.assertGreaterEqual(stopped_at, 100)
        self.assertLess(stopped_at, 400)

        resumed = self._workers("vae.train", [*args, "--run_name=killed", "--resume"])
        for p in resumed:
            _, err = p.communicate(timeout=600)
            self.assertEqual(p.returncode, 0, err[-3000:])
        whole, again = _params(os.path.join(results, "whole", "1")), _params(run_dir)
        for name in whole:
            self.assertAllClose(again[name], whole[name], rtol=1e-6, atol=1e-6, msg=name)

    def test_vae_two_workers_equal_one_process(self):
        self._check("vae")

    def test_draw_two_workers_equal_one_process(self):
        self._check("draw")


if __name__ == "__main__":
    tf.test.main()

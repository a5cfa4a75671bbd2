"""Faults of the disk under a training binary (`vae.train`, `smoke`): a disk that fills up during
training and a read-only results folder. Each must end with one line naming the path and the
reason, exit status 1, and nothing the user had lost: earlier checkpoints stay readable, no
partial checkpoint is left behind, and `--resume` once space is back ends where an
uninterrupted run ends.

The disks are a small tmpfs and a read-only bind mount, so these tests need `mount` (root, as in
the CI container); elsewhere they are skipped."""

import os
import shutil
import subprocess
import unittest

import numpy as np
import tensorflow as tf

from common import experiment
from tests import binaries

ARGS = ["--config=vae/configs/iwae.py:smoke", "--config.eval.after_training=False"]
CHECKPOINT_MB = 5.1  # one `smoke` VAE checkpoint (parameters and Adam slots)


def _mount(*args) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = os.path.join(os.environ.get("TEST_TMPDIR", "/tmp"), f"mount_probe_{os.getpid()}")
    os.makedirs(probe, exist_ok=True)
    ok = _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", probe)
    if ok:
        subprocess.run(["umount", probe], check=True)
    os.rmdir(probe)
    return ok


def _params(run_dir, checkpoint=None):
    restored = experiment.load_from_checkpoint(run_dir, checkpoint)
    return {v.name: v.numpy() for v in restored.model.trainable_variables}


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@unittest.skipUnless(_can_mount(), "needs root and mount (tmpfs, bind mounts)")
class DiskFaultTest(tf.test.TestCase):
    def mount(self, *args):
        self.assertTrue(_mount(*args), f"mount {args} failed")

    def umount_later(self, path):
        self.addCleanup(subprocess.run, ["umount", path], check=False)

    def test_disk_full_during_training_then_resume(self):
        reference = self.create_tempdir().full_path
        binaries.run("vae.train", *ARGS, "--config.loop.num_steps=40", f"--results_dir={reference}")

        disk = self.create_tempdir().full_path
        # Room for the run's small files and two checkpoints, not three.
        self.mount("-t", "tmpfs", "-o", f"size={int(2.4 * CHECKPOINT_MB * 1024)}k", "tmpfs", disk)
        self.umount_later(disk)
        proc = binaries.run(
            "vae.train", *ARGS, "--config.loop.num_steps=40", f"--results_dir={disk}", check=False
        )
        self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
        self.assertNotIn("Traceback", proc.stderr)
        (line,) = _error_lines(proc.stderr)
        run_dir = os.path.join(disk, "vae", "1")
        self.assertIn(f"checkpoint in {run_dir!r}: No space left on device", line)
        self.assertIn("model.ckpt-20) is intact", line)
        self.assertEqual(
            sorted(n for n in os.listdir(run_dir) if "ckpt" in n),
            [f"model.ckpt-{s}.{e}" for s in (10, 20) for e in ("data-00000-of-00001", "index")],
        )
        _params(run_dir)  # the newest checkpoint (20) loads

        # Space comes back: --resume finishes the run exactly as if nothing had happened.
        self.mount("-o", "remount,size=64m", disk)
        binaries.run(
            "vae.train", *ARGS, "--config.loop.num_steps=40", f"--results_dir={disk}", "--resume"
        )
        resumed, uninterrupted = _params(run_dir), _params(os.path.join(reference, "vae", "1"))
        for name in uninterrupted:
            self.assertAllEqual(resumed[name], uninterrupted[name], msg=name)

    def test_read_only_results_folder(self):
        results = self.create_tempdir().full_path
        binaries.run("vae.train", *ARGS, "--config.loop.num_steps=10", f"--results_dir={results}")
        run_dir = os.path.join(results, "vae", "1")
        before = {
            n: os.path.getsize(os.path.join(run_dir, n))
            for n in os.listdir(run_dir)
            if os.path.isfile(os.path.join(run_dir, n))
        }
        self.mount("--bind", results, results)
        self.umount_later(results)
        self.mount("-o", "remount,bind,ro", results)

        for extra in ([], ["--resume"]):  # a new run, and continuing the old one
            proc = binaries.run(
                "vae.train",
                *ARGS,
                "--config.loop.num_steps=20",
                f"--results_dir={results}",
                *extra,
                check=False,
            )
            self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
            self.assertNotIn("Traceback", proc.stderr)
            (line,) = _error_lines(proc.stderr)
            self.assertIn(f"in '{results}", line)
            self.assertTrue(line.endswith("Read-only file system."), line)
        after = {
            n: os.path.getsize(os.path.join(run_dir, n))
            for n in os.listdir(run_dir)
            if os.path.isfile(os.path.join(run_dir, n))
        }
        self.assertEqual(after, before)
        self.assertEqual(os.listdir(os.path.join(results, "vae")), ["1"])
        moved = _params(run_dir)
        self.assertTrue(all(np.all(np.isfinite(v)) for v in moved.values()))


if __name__ == "__main__":
    tf.test.main()

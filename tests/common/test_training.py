"""The shared training loop on toy tasks: parameter groups, resume, the NaN
guard and signal handling. The VAE end-to-end tests live in tests/vae."""

import os
import signal
import subprocess
import sys

import ml_collections
import numpy as np
import sonnet as snt
import tensorflow as tf
import tf_keras

from common import experiment, training
from tests import binaries

BATCH = 8


def _config(num_steps, checkpoint_every=2, seed=3):
    config = ml_collections.ConfigDict(
        dict(seed=seed, strategy="default", num_cpu_devices=0, deterministic=True)
    )
    config.loop = training.loop_config()
    config.loop.update(
        num_steps=num_steps,
        log_every=1,
        summary_every=1,
        image_every=1000,
        eval_every=1000,
        checkpoint_every=checkpoint_every,
    )
    return config


class _Regression:
    """y = x . w_true + noise, fitted by a Linear module with Adam.

    The batch of step s depends only on s; `nan_at_step` poisons one batch and
    `signal_at_step` sends SIGTERM to this process while producing one.
    """

    def __init__(self, config, nan_at_step=None, signal_at_step=None):
        self.model = snt.Linear(1, name="regression")
        self.model(tf.zeros([1, 3]))
        self.optimizer = tf_keras.optimizers.Adam((config or {}).get("learning_rate", 0.05))
        self.global_batch_size = BATCH
        self.nan_at_step = nan_at_step
        self.signal_at_step = signal_at_step

    def train_dataset(self, start_step):
        def batch(s):
            x = tf.random.stateless_normal([BATCH, 3], tf.stack([s, tf.constant(7, tf.int64)]))
            y = tf.reduce_sum(x * [1.0, -2.0, 0.5], axis=1, keepdims=True)
            if self.nan_at_step is not None:
                # Step numbers are 1-based in the loop: batch s is used by step s + 1.
                y = tf.where(s + 1 == self.nan_at_step, np.nan, y)
            if self.signal_at_step is not None:
                tf.py_function(
                    lambda s: (
                        (
                            os.kill(os.getpid(), signal.SIGTERM)
                            if int(s) + 1 == self.signal_at_step
                            else None
                        )
                        or 0
                    ),
                    [s],
                    tf.int32,
                )
            return {"x": x, "y": y}

        return tf.data.Dataset.counter(start_step).map(batch)

    def validation_dataset(self):
        return None

    def param_groups(self):
        return {"model": training.ParamGroup(self.model.trainable_variables, self.optimizer)}

    def step(self, batch, seed):
        err = tf.squeeze(self.model(batch["x"]) - batch["y"], 1)
        return training.StepOutput({"model": err**2}, {"mse": err**2})

    def evaluate(self, dataset, seed):
        return {}

    def images(self, batch, seed):
        return {}


class _Validated(_Regression):
    """`_Regression` with a validation set; its 'mse' is the mean squared error of the current
    weights on 64 fixed examples."""

    def validation_dataset(self):
        x = tf.random.stateless_normal([64, 3], [11, 12])
        y = tf.reduce_sum(x * [1.0, -2.0, 0.5], axis=1, keepdims=True)
        return tf.data.Dataset.from_tensors({"x": x, "y": y})

    def evaluate(self, dataset, seed):
        batch = next(iter(dataset))
        return {"mse": float(tf.reduce_mean((self.model(batch["x"]) - batch["y"]) ** 2))}


class _TwoGroups(_Regression):
    """Two scalars with separate losses: loss_a = (a - 1)^2 + b^2 trains only a,
    loss_b = (b - 3)^2 trains only b; the optimum is a = 1, b = 3 (had loss_a's
    gradient reached b, b would settle at 1.5)."""

    def __init__(self, config):
        super().__init__(config)
        self.model = snt.Module(name="scalars")
        self.model.a = tf.Variable(0.0, name="a")
        self.model.b = tf.Variable(0.0, name="b")
        self.optimizer = tf_keras.optimizers.SGD(0.1)

    def param_groups(self):
        return {
            "a": training.ParamGroup([self.model.a], self.optimizer),
            "b": training.ParamGroup([self.model.b], self.optimizer),
        }

    def step(self, batch, seed):
        ones = tf.ones([BATCH])
        loss_a = ((self.model.a - 1.0) ** 2 + self.model.b**2) * ones
        loss_b = (self.model.b - 3.0) ** 2 * ones
        return training.StepOutput({"a": loss_a, "b": loss_b}, {})


def _variables(task):
    return [v.numpy() for v in task.model.trainable_variables]


class TrainingLoopTest(tf.test.TestCase):
    def _train(self, config, run_dir, resume_from=None, **task_kwargs):
        holder = {}

        def build(c):
            holder["task"] = _Regression(c, **task_kwargs)
            return holder["task"]

        result = training.train(config, run_dir, build, resume_from)
        return result, holder["task"]

    def test_fits_and_writes_checkpoints_and_scalars(self):
        run_dir = self.create_tempdir().full_path
        result, task = self._train(_config(60, checkpoint_every=20), run_dir)
        self.assertEqual(result.step, 60)
        self.assertFalse(result.interrupted)
        w = task.model.w.numpy()[:, 0]
        self.assertAllClose(w, [1.0, -2.0, 0.5], atol=0.15)
        steps = [experiment.checkpoint_step(p) for p in experiment.checkpoint_paths(run_dir)]
        self.assertEqual(steps, [20, 40, 60])
        self.assertTrue(os.listdir(os.path.join(run_dir, "train")))

    def test_resume_continues_the_same_trajectory(self):
        full_dir = self.create_tempdir().full_path
        _, full = self._train(_config(10), full_dir)
        part_dir = self.create_tempdir().full_path
        self._train(_config(6), part_dir)
        ckpt = experiment.latest_checkpoint(part_dir)
        self.assertEqual(experiment.checkpoint_step(ckpt), 6)
        result, resumed = self._train(_config(10), part_dir, resume_from=ckpt)
        self.assertEqual(result.step, 10)
        for a, b in zip(_variables(full), _variables(resumed), strict=True):
            np.testing.assert_array_equal(a, b)

    def test_resume_takes_the_configured_learning_rate_not_the_checkpointed_one(self):
        run_dir = self.create_tempdir().full_path
        self._train(_config(4), run_dir)
        config = _config(6)
        config.learning_rate = 0.01  # e.g. --config.optimizer.learning_rate=... with --resume
        _, task = self._train(config, run_dir, resume_from=experiment.latest_checkpoint(run_dir))
        self.assertAllClose(float(task.optimizer.learning_rate.numpy()), 0.01)
        self.assertEqual(int(task.optimizer.iterations), 6)  # the rest of Adam's state resumed

    def test_parameter_groups_get_only_their_own_loss(self):
        holder = {}

        def build(c):
            holder["task"] = _TwoGroups(c)
            return holder["task"]

        training.train(_config(200, checkpoint_every=1000), self.create_tempdir().full_path, build)
        self.assertAllClose(holder["task"].model.a.numpy(), 1.0, atol=1e-3)
        self.assertAllClose(holder["task"].model.b.numpy(), 3.0, atol=1e-3)

    def test_nan_stops_with_step_and_quantity_and_keeps_last_checkpoint(self):
        run_dir = self.create_tempdir().full_path
        with self.assertRaisesRegex(training.NonFiniteError, r"mse.* at step 7 .*model.ckpt-6"):
            self._train(_config(20, checkpoint_every=2), run_dir, nan_at_step=7)
        paths = experiment.checkpoint_paths(run_dir)
        self.assertEqual(experiment.checkpoint_step(paths[-1]), 6)
        restored = _Regression(None)
        experiment.restore(tf.train.Checkpoint(model=restored.model), paths[-1], run_dir)
        for v in _variables(restored):
            self.assertTrue(np.all(np.isfinite(v)))

    def test_sigterm_saves_and_stops(self):
        run_dir = self.create_tempdir().full_path
        result, task = self._train(_config(50, checkpoint_every=100), run_dir, signal_at_step=5)
        self.assertTrue(result.interrupted)
        self.assertLess(result.step, 50)
        latest = experiment.latest_checkpoint(run_dir)
        self.assertEqual(experiment.checkpoint_step(latest), result.step)
        # The signal handler is gone afterwards.
        self.assertIs(signal.getsignal(signal.SIGTERM), signal.SIG_DFL)

    def _train_with_hook(self, config, run_dir, stop_at=None, resume_from=None):
        calls, holder = [], {}

        def build(c):
            holder["task"] = _Validated(c)
            return holder["task"]

        def after_validation(step, metrics):
            # What the hook sees is the model at `step`: a checkpoint of it exists already.
            latest = experiment.latest_checkpoint(run_dir)
            calls.append((step, metrics["mse"], experiment.checkpoint_step(latest)))
            return stop_at is not None and step >= stop_at

        result = training.train(config, run_dir, build, resume_from, after_validation)
        return result, holder["task"], calls

    def test_after_validation_sees_every_validation_with_a_checkpoint(self):
        config = _config(10, checkpoint_every=1000)
        config.loop.eval_every = 3
        run_dir = self.create_tempdir().full_path
        result, task, calls = self._train_with_hook(config, run_dir)
        self.assertEqual([c[0] for c in calls], [3, 6, 9, 10])  # and at the end
        self.assertEqual([c[2] for c in calls], [3, 6, 9, 10])  # saved before validating
        self.assertFalse(result.stopped_by_hook)
        self.assertEqual(result.validation_metrics["mse"], calls[-1][1])
        self.assertLess(calls[-1][1], calls[0][1])  # it trains

    def test_after_validation_stops_the_loop_on_the_same_trajectory(self):
        config = _config(12, checkpoint_every=1000)
        config.loop.eval_every = 2
        stopped_dir = self.create_tempdir().full_path
        result, stopped, calls = self._train_with_hook(config, stopped_dir, stop_at=4)
        self.assertTrue(result.stopped_by_hook)
        self.assertFalse(result.interrupted)
        self.assertEqual(result.step, 4)
        self.assertEqual([c[0] for c in calls], [2, 4])
        self.assertEqual(experiment.checkpoint_step(experiment.latest_checkpoint(stopped_dir)), 4)
        # The parameters equal those of a plain loop of 4 steps: validating changes nothing.
        plain_dir = self.create_tempdir().full_path
        _, plain = self._train(_config(4, checkpoint_every=1000), plain_dir)
        for u, v in zip(_variables(stopped), _variables(plain), strict=True):
            self.assertAllEqual(u, v)
        # Resuming the stopped run continues to the end, validating from step 6 on.
        result, _, calls = self._train_with_hook(
            config, stopped_dir, resume_from=experiment.latest_checkpoint(stopped_dir)
        )
        self.assertEqual([c[0] for c in calls], [6, 8, 10, 12])
        self.assertEqual(result.step, 12)

    def test_current_learning_rate_reads_a_schedule_at_the_optimizer_step(self):
        schedule = tf_keras.optimizers.schedules.PiecewiseConstantDecay([2], [1.0, 0.5])
        opt = tf_keras.optimizers.Adam(schedule)
        self.assertEqual(training.current_learning_rate(opt), 1.0)
        opt.iterations.assign(3)
        self.assertEqual(training.current_learning_rate(opt), 0.5)


class RunFolderTest(tf.test.TestCase):
    def test_numbering_starts_at_one_and_increments(self):
        root = self.create_tempdir().full_path
        first = experiment.new_run_dir(root, "exp")
        second = experiment.new_run_dir(root, "exp")
        self.assertEqual(os.path.basename(first), "1")
        self.assertEqual(os.path.basename(second), "2")
        self.assertEqual(experiment.latest_run_dir(root, "exp"), second)

    def test_resume_without_runs_is_a_clear_error(self):
        with self.assertRaisesRegex(experiment.RunError, "no run folder to resume"):
            experiment.latest_run_dir(self.create_tempdir().full_path, "exp")

    def test_run_info_records_config_versions_and_restarts(self):
        run_dir = experiment.new_run_dir(self.create_tempdir().full_path, "exp")
        config = ml_collections.ConfigDict({"a": 1, "b": {"c": "x"}})
        experiment.write_run_info(run_dir, config, ["prog", "--flag"])
        experiment.write_run_info(run_dir, config, ["prog", "--resume"])
        self.assertEqual(experiment.load_config(run_dir).to_dict(), config.to_dict())
        import json

        with open(os.path.join(run_dir, experiment.FLAGS_FILE)) as f:
            info = json.load(f)
        self.assertEqual(info["argv"], ["prog", "--flag"])
        self.assertEqual(info["restarts"][0]["argv"], ["prog", "--resume"])
        self.assertEqual(info["versions"]["tensorflow"], tf.__version__)

    def test_not_a_run_folder(self):
        with self.assertRaisesRegex(experiment.RunError, "not a run folder"):
            experiment.load_config(self.create_tempdir().full_path)

    def test_damaged_config_and_newer_run_folders_are_refused(self):
        import json

        run_dir = experiment.new_run_dir(self.create_tempdir().full_path, "exp")
        experiment.write_run_info(run_dir, ml_collections.ConfigDict({"a": 1}), ["prog"])
        flags_path = os.path.join(run_dir, experiment.FLAGS_FILE)
        with open(flags_path) as f:
            info = json.load(f)
        self.assertEqual(info["run_format"], experiment.RUN_FORMAT)
        info.setdefault("restarts", []).append({"run_format": experiment.RUN_FORMAT + 1})
        with open(flags_path, "w") as f:
            json.dump(info, f)
        with self.assertRaisesRegex(experiment.RunError, "newer version.*nothing was changed"):
            experiment.load_config(run_dir)
        os.remove(flags_path)  # a folder from before run_format existed: layout 1, readable
        self.assertEqual(experiment.load_config(run_dir).a, 1)
        with open(os.path.join(run_dir, experiment.CONFIG_FILE), "w") as f:
            f.write('{"a": 1,')  # cut short
        with self.assertRaisesRegex(experiment.RunError, "config.json' is damaged"):
            experiment.load_config(run_dir)


class SetupThreadsTest(tf.test.TestCase):
    def test_sizes_the_pools_of_a_fresh_process(self):
        code = (
            "from common import training\n"
            "training.setup_threads(2, 1)\n"
            "import tensorflow as tf\n"
            "tf.constant(1.0) + 1.0  # the runtime starts with these pools\n"
            "t = tf.config.threading\n"
            "print(t.get_inter_op_parallelism_threads(), t.get_intra_op_parallelism_threads())\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=binaries.ROOT, env=binaries.env(),
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        self.assertEqual(out.stdout.split()[-2:], ["2", "1"])

    def test_zero_leaves_the_defaults_and_a_change_after_the_first_op_is_an_error(self):
        tf.constant(1.0) + 1.0
        before = tf.config.threading.get_inter_op_parallelism_threads()
        training.setup_threads(0, 0)
        self.assertEqual(tf.config.threading.get_inter_op_parallelism_threads(), before)
        with self.assertRaisesRegex(RuntimeError, "before TensorFlow runs any op"):
            training.setup_threads(before + 7, 0)


if __name__ == "__main__":
    tf.test.main()

"""The NaN/Inf guard on real data: the `vae` `smoke` task on real MNIST, with a NaN injected
into one training batch or, with finite values, into one step's gradients. By default training
stops naming the step and the quantity and the last checkpoint stays intact; with
`loop.skip_nonfinite` the poisoned step's update is skipped (the optimizer's step count shows it:
one update fewer, not a zero update) and training goes on."""

import numpy as np
import tensorflow as tf

from common import experiment, training
from vae import experiment as vae_experiment
from vae.configs import iwae

POISONED = 7  # 1-based training step


def _config(num_steps=12, skip=False):
    config = iwae.get_config("smoke")
    config.loop.num_steps = num_steps
    config.loop.checkpoint_every = 5
    config.loop.eval_every = 1000
    config.loop.skip_nonfinite = skip
    return config


@tf.custom_gradient
def _nan_gradient_at(x, poisoned):
    """Identity forward; the gradient is NaN where `poisoned` is True."""

    def grad(dy):
        return tf.where(poisoned, tf.fill(tf.shape(dy), np.nan), dy), None

    return tf.identity(x), grad


def _build(where):
    """`vae.experiment.build_task` with a NaN in step `POISONED`'s batch (`where="batch"`) or in
    its gradients only (`where="gradient"`)."""

    def build(config):
        task = vae_experiment.build_task(config)
        train_dataset, step = task.train_dataset, task.step

        def poisoned_dataset(start_step):
            ds = train_dataset(start_step)
            steps = tf.data.Dataset.counter(start_step + 1)  # the 1-based step of each batch

            def poison(batch, s):
                if where == "batch":
                    image = batch["image"]
                    nan = tf.tensor_scatter_nd_update(image, [[0, 3, 3, 0]], [np.nan])
                    batch = dict(batch, image=tf.where(s == POISONED, nan, image))
                return dict(batch, step=s)

            return tf.data.Dataset.zip(ds, steps).map(poison)

        def poisoned_step(batch, seed):
            s = batch.pop("step")
            out = step(batch, seed)
            if where == "gradient":
                losses = {
                    k: _nan_gradient_at(v, tf.equal(s, POISONED)) for k, v in out.losses.items()
                }
                out = out._replace(losses=losses)
            return out

        task.train_dataset, task.step = poisoned_dataset, poisoned_step
        return task

    return build


class NonFiniteGuardTest(tf.test.TestCase):
    def _check_stops(self, where, quantity):
        run_dir = self.create_tempdir().full_path
        experiment.write_run_info(run_dir, _config(), ["test"])
        with self.assertRaisesRegex(
            training.NonFiniteError, rf"Non-finite .*{quantity}.* at step {POISONED} .*ckpt-5"
        ):
            training.train(_config(), run_dir, _build(where))
        paths = experiment.checkpoint_paths(run_dir)
        self.assertEqual([experiment.checkpoint_step(p) for p in paths], [5])
        restored = experiment.load_from_checkpoint(run_dir)
        for v in restored.model.trainable_variables:
            self.assertTrue(np.all(np.isfinite(v.numpy())), v.name)

    def test_nan_in_a_batch_stops_naming_the_step(self):
        self._check_stops("batch", "loss")

    def test_nan_in_the_gradients_stops_naming_grad_norm(self):
        self._check_stops("gradient", "grad_norm")

    def test_skip_nonfinite_skips_exactly_the_poisoned_update(self):
        for where in ("batch", "gradient"):
            run_dir = self.create_tempdir().full_path
            holder = {}

            def build(config, where=where, holder=holder):
                holder["task"] = _build(where)(config)
                return holder["task"]

            result = training.train(_config(skip=True), run_dir, build)
            self.assertEqual(result.step, 12)
            self.assertEqual(int(holder["task"].optimizer.iterations), 11, where)
            for v in holder["task"].model.trainable_variables:
                self.assertTrue(np.all(np.isfinite(v.numpy())), (where, v.name))


if __name__ == "__main__":
    tf.test.main()

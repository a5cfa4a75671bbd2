"""The 2-D toy task (`common.training.Task`): densities by maximum likelihood, the energies U1-U4
of Rezende & Mohamed (2015) by reverse KL (`flows.toy` holds the targets)."""

from __future__ import annotations

import ml_collections
import numpy as np
import tensorflow as tf

from common import optimizers, training
from flows import toy
from flows.density import FlowDensity, build_model


class ToyTask:
    """`common.training.Task` for the 2-D targets of `flows.toy`.

    Densities: maximum likelihood on fresh samples every step (infinite data). Energies U1-U4:
    reverse KL as in Rezende & Mohamed's (2015) Fig. 3 experiment, loss `log q(z) + beta_t U(z)`
    on `z ~ q` with an annealed inverse temperature `beta_t = min(1, beta_0 + t / anneal_steps)`
    (`objective.anneal_steps = 0`: beta = 1); `kl` is `KL(q || p) = E_q[log q + U] + log Z`
    with Z from quadrature (`toy.log_normalizer`).
    """

    def __init__(self, config: ml_collections.ConfigDict, model: FlowDensity | None = None):
        if config.target not in toy.TARGETS:
            raise ValueError(
                f"target must be one of {', '.join(toy.TARGETS)}, got {config.target!r}."
            )
        self.config = config
        self.target = config.target
        self.is_energy = config.target in toy.ENERGIES
        self.model = model if model is not None else build_model(config)
        self.global_batch_size = config.batch_size
        self.optimizer = optimizers.make_optimizer(config.optimizer)
        self.log_z = toy.log_normalizer(self.target) if self.is_energy else None
        self._target_log_prob = toy.target_log_prob_fn(self.target)
        num = config.eval.num_samples
        spec = tf.TensorSpec([None, 2], tf.float32)
        self._eval_log_prob = tf.function(
            lambda x: self.model.log_prob(x, training=False), input_signature=[spec]
        )
        self._eval_sample = tf.function(
            lambda seed: self.model.sample_and_log_prob(num, seed, training=False)
        )

    def _data_seed(self, stream: int) -> tf.Tensor:
        return tf.constant([self.config.seed, stream], tf.int64)

    # -- data ------------------------------------------------------------------------------------
    def train_dataset(self, start_step: int) -> tf.data.Dataset:
        batch, target, base = self.global_batch_size, self.target, self._data_seed(2)
        steps = tf.data.Dataset.counter(start_step, dtype=tf.int64)
        if self.is_energy:
            # No data: the batch carries the step (for the annealing) and fixes the batch size.
            return steps.map(lambda s: {"step": tf.fill([batch], s)})
        return steps.map(
            lambda s: {
                "x": tf.ensure_shape(
                    toy.sample(target, batch, tf.random.experimental.stateless_fold_in(base, s)),
                    [batch, 2],
                )
            }
        )

    def _held_out(self, stream: int) -> tf.Tensor:
        return toy.sample(self.target, self.config.eval.num_samples, self._data_seed(stream))

    def validation_dataset(self) -> tf.data.Dataset:
        if self.is_energy:
            return tf.data.Dataset.from_tensors({"step": tf.zeros([1], tf.int64)})
        return tf.data.Dataset.from_tensors({"x": self._held_out(1)})

    def test_dataset(self) -> tf.data.Dataset:
        if self.is_energy:
            return self.validation_dataset()
        return tf.data.Dataset.from_tensors({"x": self._held_out(4)})

    # -- training --------------------------------------------------------------------------------
    def param_groups(self) -> dict[str, training.ParamGroup]:
        return {"model": training.ParamGroup(self.model.trainable_variables, self.optimizer)}

    def step(self, batch, seed) -> training.StepOutput:
        if not self.is_energy:
            log_q = self.model.log_prob(batch["x"], training=True)
            return training.StepOutput({"model": -log_q}, {"log_likelihood": log_q})
        num = tf.shape(batch["step"])[0]
        z, log_q = self.model.sample_and_log_prob(num, seed, training=True)
        u = toy.energy(self.target, z)
        obj = self.config.objective
        t = tf.cast(batch["step"], tf.float32)  # [B]
        beta = tf.minimum(1.0, obj.initial_beta + t / obj.anneal_steps) if obj.anneal_steps else 1.0
        free_energy = log_q + u
        return training.StepOutput(
            {"model": log_q + beta * u},
            {
                "free_energy": free_energy,
                "kl": free_energy + self.log_z,
                "beta": beta * tf.ones_like(u),
            },
        )

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, dataset: tf.data.Dataset, seed: tf.Tensor) -> dict[str, float]:
        """Densities: held-out log-likelihood (and, with an exact density, `kl` = KL(p || q)).
        Energies: `free_energy` and `kl` = KL(q || p) from `eval.num_samples` samples."""
        if self.is_energy:
            z, log_q = self._eval_sample(seed)
            free_energy = log_q + toy.energy(self.target, z)
            return {
                "free_energy": float(tf.reduce_mean(free_energy)),
                "kl": float(tf.reduce_mean(free_energy)) + self.log_z,
            }
        # Batch-norm statistics from fresh samples of the target (the training distribution).
        self.model.set_batch_norm_statistics(self._held_out(3))
        x = next(iter(dataset))["x"]
        log_q = self._eval_log_prob(x)
        metrics = {"log_likelihood": float(tf.reduce_mean(log_q))}
        if self.target in toy.EXACT_DENSITIES:
            log_p = toy.log_density(self.target, x)
            metrics["kl"] = float(tf.reduce_mean(log_p - log_q))
        return metrics

    def panels(self, seed: tf.Tensor, size: int = 128, bins: int = 64) -> dict[str, np.ndarray]:
        """Pictures on [-4, 4]^2: densities on a `size x size` grid (the target's when known,
        and the model's) and `bins x bins` histograms of samples (the target's when its density
        is unknown, and the model's)."""
        if self._target_log_prob is not None:
            target = toy.density_on_grid(self._target_log_prob, size=size)
        else:
            target = toy.histogram(self._held_out(1), size=bins)
        samples, _ = self._eval_sample(seed)
        return {
            "target": target,
            "density": toy.density_on_grid(self._eval_log_prob, size=size),
            "samples": toy.histogram(samples, size=bins),
        }

    def images(self, batch, seed) -> dict[str, tf.Tensor]:
        del batch
        return {
            name: tf.constant(toy.colorize(image)[None])
            for name, image in self.panels(seed).items()
        }

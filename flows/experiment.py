"""Wiring of the flows experiments; the generic loop in `common.training` runs them.

- `task = "mnist"`: density estimation of dequantized MNIST in logit space as in the MAF paper
  (Papamakarios et al. 2017, sec. 4.3 and App.; REFERENCES.md 1.3, 3.8): MAF(5), RealNVP(5)
  (Dinh et al. 2017) or MADE (Germain et al. 2015), Adam, L2 weight decay, early stopping on the
  validation log-likelihood with a patience in epochs, batch-norm statistics of the training set at
  evaluation, test log-likelihood in nats (logit space, +- 2 standard errors) and bits/pixel.
- `task = "uci"`: the same density estimation on the MAF paper's UCI data sets and BSDS300
  (`common.uci`; MAF Table 1), test log-likelihood in nats (+- 2 standard errors).
- `task = "toy"`: 2-D densities by maximum likelihood and the energies U1-U4 of Rezende & Mohamed
  (2015) by reverse KL (`flows.toy`).

Early stopping: `train_and_evaluate` runs `common.training.train` once, validating every
`early_stopping.eval_every_epochs` epochs through the loop's `after_validation` hook, which
records the score in `early_stopping.json`, keeps the best model in `<run_dir>/best/` and stops
the loop after `patience_epochs` epochs without improvement.

Symbols: B batch, D event size (784 for MNIST, 6-63 for UCI, 2 for the toys), N examples.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, NamedTuple

import ml_collections
import numpy as np
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras
from absl import logging

from common import datasets, experiment, summaries, training, uci
from flows import models, toy

tfd = tfp.distributions

MNIST_EVENT_SIZE = 28 * 28
ACTIVATIONS = {"relu": tf.nn.relu, "tanh": tf.tanh}
MNIST_FLOWS = ("maf", "realnvp", "made", "made_mog", "maf_mog")
MNIST_IMAGE_SHAPE = (28, 28, 1)  # realnvp's checkerboard / channel masks
EARLY_STOPPING_FILE = "early_stopping.json"
METRICS_FILE = "metrics.json"
BEST_DIR = "best"


class FlowDensity(snt.Module):
    """A flow density from `flows.make_density` (standard-normal base, or a MADE MoG base).

    Batch norm (MAF, RealNVP) uses minibatch statistics with `training=True` and the stored
    statistics with `training=False`; both densities share every variable.
    """

    def __init__(self, density: tfd.TransformedDistribution, name: str | None = None):
        super().__init__(name=name)
        self.flow = density.bijector
        self.event_size = int(density.event_shape[-1])
        self.density = density
        self.eval_density = models.with_training(density, False)

    def _pick(self, training: bool) -> tfd.TransformedDistribution:
        return self.density if training else self.eval_density

    @staticmethod
    def _tfp_seed(seed: tf.Tensor) -> tf.Tensor:
        """TFP takes int32 stateless seeds; the loop's are int64 (the cast wraps)."""
        return tf.cast(seed, tf.int32)

    def log_prob(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        """`[B, D]` -> `[B]` log-density in nats."""
        return self._pick(training).log_prob(x)

    def sample(self, num: int, seed: tf.Tensor, training: bool = False) -> tf.Tensor:
        """`[num, D]` samples (the sampling direction: D sequential passes for MAF)."""
        return self._pick(training).sample(num, seed=self._tfp_seed(seed))

    def sample_and_log_prob(
        self, num, seed: tf.Tensor, training: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """`([num, D], [num])`: samples and their log-density from the forward log-det (no
        inverse is computed, so planar flows need no root finding)."""
        return self._pick(training).experimental_sample_and_log_prob(num, seed=self._tfp_seed(seed))

    @property
    def has_batch_norm(self) -> bool:
        return any("moving_mean" in v.name for v in self.variables)

    def set_batch_norm_statistics(self, x: tf.Tensor) -> None:
        """Stores the batch-norm statistics of the data `x: [N, D]` (MAF code); a no-op
        without batch norm."""
        if self.has_batch_norm:
            models.set_batch_norm_statistics(self.flow, x)

    @property
    def weight_matrices(self) -> list[tf.Variable]:
        """Trainable rank-2 variables (dense weights; not biases or batch-norm parameters)."""
        return [v for v in self.trainable_variables if v.shape.rank == 2]


def _event_size(config: ml_collections.ConfigDict) -> int:
    if config.task == "mnist":
        return MNIST_EVENT_SIZE
    if config.task == "toy":
        return 2
    if config.task == "uci":
        uci_name = config.data.dataset
        if uci_name not in uci.DIMENSIONS:
            raise ValueError(f"data.dataset must be one of {uci.DATASETS}, got {uci_name!r}.")
        return uci.DIMENSIONS[uci_name]
    raise ValueError(f"config.task must be mnist, uci or toy, got {config.task!r}.")


def build_model(config: ml_collections.ConfigDict) -> FlowDensity:
    """The model of `config` with all its variables created.

    `model.num_components` reaches the MADE MoG densities (made_mog, maf_mog) only;
    `model.realnvp_mask` reaches realnvp only (other flows ignore it), the image masks with the
    MNIST image shape; `model.made_log_precision` reaches the Gaussian MADEs of made, maf, iaf
    and maf_mog only (realnvp and the MADE MoG have none). Configs without these fields (toys) get
    the defaults.

    Raises:
      ValueError: for an unknown task, flow or activation, or arguments the flow does not take.
    """
    m = config.model
    if m.activation not in ACTIVATIONS:
        raise ValueError(
            f"model.activation must be one of {sorted(ACTIVATIONS)}, got {m.activation!r}."
        )
    batch_norm = m.batch_norm
    if config.task == "toy" and config.target in toy.ENERGIES:
        if batch_norm:
            raise ValueError(
                "model.batch_norm cannot be used with an energy target: reverse-KL training "
                "has no data batch to normalize."
            )
        if m.flow in models.MOG_DENSITY_NAMES:
            raise ValueError(
                f"model.flow={m.flow!r} cannot be used with an energy target: MADE MoG samples "
                "are not reparameterized, so reverse-KL gradients would be wrong."
            )
        batch_norm = False if m.flow in ("maf", "realnvp") else None
    extra = {}
    if m.flow in models.MOG_DENSITY_NAMES:
        extra["num_components"] = m.get("num_components", models.DEFAULT_NUM_COMPONENTS)
    if m.get("made_log_precision", False) and m.flow in ("made", "maf", "iaf", "maf_mog"):
        extra["made_log_precision"] = True  # the MAF code's MADE output (models._LogPrecision)
    mask = m.get("realnvp_mask", "halves")
    if m.flow == "realnvp" and mask != "halves":
        extra["mask"] = mask
        if mask in models.IMAGE_MASKS:
            extra["image_shape"] = MNIST_IMAGE_SHAPE if config.task == "mnist" else None
    density = models.make_density(
        m.flow,
        _event_size(config),
        m.num_layers,
        tuple(m.hidden_units),
        batch_norm=batch_norm,
        activation=ACTIVATIONS[m.activation],
        hidden_degrees=m.hidden_degrees,
        log_scale_bound=m.log_scale_bound,
        seed=config.seed,
        **extra,
    )
    return FlowDensity(density, name="flow_density")


def make_optimizer(config: ml_collections.ConfigDict) -> tf_keras.optimizers.Optimizer:
    """Adam (tf_keras, which runs under every `tf.distribute` strategy; see vae.experiment)."""
    opt = config.optimizer
    return tf_keras.optimizers.Adam(
        opt.learning_rate,
        beta_1=opt.beta_1,
        beta_2=opt.beta_2,
        epsilon=opt.epsilon,
        jit_compile=False,
    )


def _mean_and_2se(values: np.ndarray) -> tuple[float, float]:
    """Mean and two standard errors (MAF paper's error bars: 2 std / sqrt(N))."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), 0.0
    return float(values.mean()), float(2 * values.std(ddof=1) / math.sqrt(len(values)))


# -- MNIST ---------------------------------------------------------------------------------------


class MnistData(NamedTuple):
    """Dequantized pixels x in [0, 1), float32 `[N, 28, 28]` per split."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def load_mnist_data(config: ml_collections.ConfigDict) -> MnistData:
    """MAF-paper MNIST: 50k / 10k / 10k, statically dequantized, split i with seed `[seed, i]`.

    Each whole split is dequantized (and stored) before the prefixes of `data.num_train_images`,
    `eval.num_validation_images` and `eval.num_test_images` are taken, so a prefix sees the same
    noise as the full split.

    Raises:
      ValueError: bad sizes. datasets.DataError: MNIST cannot be loaded.
    """
    if config.data.dataset != "mnist":
        raise ValueError(f"data.dataset must be 'mnist', got {config.data.dataset!r}.")
    data_dir = config.data.data_dir or None
    mnist = datasets.load_mnist(data_dir, config.data.source, config.data.validation_size)
    seed = config.data.dequantization_seed
    out = []
    for i, (split, prefix) in enumerate(
        (
            (mnist.train, config.data.num_train_images),
            (mnist.validation, config.eval.num_validation_images),
            (mnist.test, config.eval.num_test_images),
        )
    ):
        if not len(split.images):
            raise ValueError("data.validation_size must be positive: early stopping needs it.")
        x = datasets.static_dequantize(split.images, (seed, i), data_dir)
        out.append(x[:prefix] if prefix else x)
    return MnistData(*out)


def _flat_logits(x: np.ndarray) -> tf.Tensor:
    """Dequantized `[N, 28, 28]` -> logit space `[N, D]`."""
    return datasets.logit_transform(np.reshape(x, [len(x), -1]))


def _pixel_images(y: tf.Tensor) -> tf.Tensor:
    """Logit-space `[N, D]` -> `[N, 28, 28, 1]` pixels in [0, 1] (non-finite -> 0)."""
    x = datasets.inverse_logit_transform(y)
    x = tf.where(tf.math.is_finite(x), tf.clip_by_value(x, 0.0, 1.0), 0.0)
    return tf.reshape(x, [-1, 28, 28, 1])


class _DensityTask:
    """What the MNIST and UCI tasks share: data + model + Adam, the MAF paper's loss with L2
    weight decay, and an evaluation-mode `log_prob` on `[N, D]`."""

    def __init__(self, config: ml_collections.ConfigDict, data, model: FlowDensity | None, load):
        if config.model.flow not in MNIST_FLOWS:
            raise ValueError(
                f"model.flow must be one of {MNIST_FLOWS} for {config.task}, "
                f"got {config.model.flow!r}."
            )
        self.config = config
        self.data = data if data is not None else load(config)
        self.model = model if model is not None else build_model(config)
        self.global_batch_size = config.batch_size
        self.steps_per_epoch = datasets.steps_per_epoch(len(self.data.train), config.batch_size)
        self.optimizer = make_optimizer(config)
        spec = tf.TensorSpec([None, _event_size(config)], tf.float32)
        self._eval_log_prob = tf.function(
            lambda y: self.model.log_prob(y, training=False), input_signature=[spec]
        )

    def param_groups(self) -> dict[str, training.ParamGroup]:
        return {"model": training.ParamGroup(self.model.trainable_variables, self.optimizer)}

    def _training_log_prob_and_loss(self, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`(log p(y) [B], loss [B])` in training mode; the loss carries the MAF App.'s L2 weight
        decay lambda * sum w^2 on the weight matrices, a constant per example so that the mean
        loss carries it once."""
        log_p = self.model.log_prob(y, training=True)
        decay = self.config.optimizer.weight_decay * tf.add_n(
            [tf.reduce_sum(tf.square(w)) for w in self.model.weight_matrices]
        )
        return log_p, -log_p + decay


class MnistDensityTask(_DensityTask):
    """`common.training.Task` for MAF-paper density estimation on MNIST."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        data: MnistData | None = None,
        model: FlowDensity | None = None,
    ):
        """Loads the data (unless given) and builds the model (unless given, e.g. restored)."""
        super().__init__(config, data, model, load_mnist_data)
        num = config.eval.num_samples
        self._sample = tf.function(lambda seed: self.model.sample(num, seed))

    # -- data ------------------------------------------------------------------------------------
    def train_dataset(self, start_step: int) -> tf.data.Dataset:
        batch = self.global_batch_size
        ds = datasets.train_dataset(self.data.train, batch, self.config.seed, "logit", start_step)
        return ds.map(lambda e: {"image": tf.ensure_shape(e["image"], [batch, 28, 28, 1])})

    def validation_dataset(self) -> tf.data.Dataset:
        return datasets.eval_dataset(self.data.validation, self.config.eval.batch_size, "logit")

    def test_dataset(self) -> tf.data.Dataset:
        return datasets.eval_dataset(self.data.test, self.config.eval.batch_size, "logit")

    # -- training --------------------------------------------------------------------------------
    def step(self, batch, seed) -> training.StepOutput:
        del seed  # Deterministic given the batch.
        y = tf.reshape(batch["image"], [-1, MNIST_EVENT_SIZE])  # [B, D]
        log_p, loss = self._training_log_prob_and_loss(y)
        return training.StepOutput(
            losses={"model": loss},
            metrics={"log_likelihood": log_p, "bits_per_pixel": datasets.bits_per_pixel(log_p, y)},
        )

    # -- evaluation ------------------------------------------------------------------------------
    def set_batch_norm_statistics(self, num_examples: int) -> None:
        """Batch-norm statistics of the first `num_examples` (0: all) training images."""
        x = self.data.train[:num_examples] if num_examples else self.data.train
        self.model.set_batch_norm_statistics(_flat_logits(x))

    def log_likelihoods(self, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
        """Per-example `(log p(y) in nats, bits/pixel)`, each `[N]`, in evaluation mode."""
        log_p, bpp = [], []
        for batch in dataset:
            y = tf.reshape(batch["image"], [-1, MNIST_EVENT_SIZE])
            lp = self._eval_log_prob(y)
            log_p.append(lp.numpy())
            bpp.append(datasets.bits_per_pixel(lp, y).numpy())
        return np.concatenate(log_p), np.concatenate(bpp)

    def evaluate(self, dataset: tf.data.Dataset, seed: tf.Tensor) -> dict[str, float]:
        """Validation log-likelihood (nats, logit space) and bits/pixel with the batch-norm
        statistics of the training set (`early_stopping.batch_norm_examples` images)."""
        del seed
        self.set_batch_norm_statistics(self.config.early_stopping.batch_norm_examples)
        log_p, bpp = self.log_likelihoods(dataset)
        return {"log_likelihood": float(np.mean(log_p)), "bits_per_pixel": float(np.mean(bpp))}

    def images(self, batch, seed) -> dict[str, tf.Tensor]:
        y = tf.reshape(batch["image"][: self.config.eval.num_samples], [-1, MNIST_EVENT_SIZE])
        columns = max(1, int(math.ceil(math.sqrt(self.config.eval.num_samples))))
        return {
            "input": summaries.image_grid(_pixel_images(y), columns),
            "samples": summaries.image_grid(_pixel_images(self._sample(seed)), columns),
        }


# -- UCI and BSDS300 ----------------------------------------------------------------------------


def load_uci_data(config: ml_collections.ConfigDict) -> uci.UciData:
    """The MAF paper's preprocessed `data.dataset` (`common.uci.load_uci`), float32 `[N, D]`
    splits, cut to the prefixes of `data.num_train_examples`, `eval.num_validation_examples` and
    `eval.num_test_examples` (0: the whole split).

    Raises:
      ValueError: unknown data set. datasets.DataError: missing or bad files (the message says
        where to put them).
    """
    data = uci.load_uci(config.data.dataset, config.data.data_dir or None)
    prefixes = (
        config.data.num_train_examples,
        config.eval.num_validation_examples,
        config.eval.num_test_examples,
    )
    return uci.UciData(*(x[:n] if n else x for x, n in zip(data, prefixes, strict=True)))


class UciDensityTask(_DensityTask):
    """`common.training.Task` for MAF-paper density estimation on UCI / BSDS300 (`{"x": [B, D]}`
    batches; the loss, weight decay and evaluation are those of `MnistDensityTask` without the
    logit-space conversions)."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        data: uci.UciData | None = None,
        model: FlowDensity | None = None,
    ):
        """Loads the data (unless given) and builds the model (unless given, e.g. restored)."""
        super().__init__(config, data, model, load_uci_data)

    def train_dataset(self, start_step: int) -> tf.data.Dataset:
        return uci.train_dataset(
            self.data.train, self.global_batch_size, self.config.seed, start_step
        )

    def validation_dataset(self) -> tf.data.Dataset:
        return uci.eval_dataset(self.data.validation, self.config.eval.batch_size)

    def test_dataset(self) -> tf.data.Dataset:
        return uci.eval_dataset(self.data.test, self.config.eval.batch_size)

    def step(self, batch, seed) -> training.StepOutput:
        del seed  # Deterministic given the batch.
        log_p, loss = self._training_log_prob_and_loss(batch["x"])
        return training.StepOutput({"model": loss}, {"log_likelihood": log_p})

    def set_batch_norm_statistics(self, num_examples: int) -> None:
        """Batch-norm statistics of `num_examples` evenly spaced training examples (0: all)."""
        x = self.data.train
        if num_examples and num_examples < len(x):
            x = x[np.linspace(0, len(x) - 1, num_examples).astype(np.int64)]
        self.model.set_batch_norm_statistics(tf.constant(x))

    def log_likelihoods(self, dataset: tf.data.Dataset) -> np.ndarray:
        """Per-example log p(x) in nats, `[N]`, in evaluation mode."""
        return np.concatenate([self._eval_log_prob(b["x"]).numpy() for b in dataset])

    def evaluate(self, dataset: tf.data.Dataset, seed: tf.Tensor) -> dict[str, float]:
        """Validation log-likelihood (nats) with the batch-norm statistics of the training set
        (`early_stopping.batch_norm_examples` examples)."""
        del seed
        self.set_batch_norm_statistics(self.config.early_stopping.batch_norm_examples)
        return {"log_likelihood": float(np.mean(self.log_likelihoods(dataset)))}

    def images(self, batch, seed) -> dict[str, tf.Tensor]:
        del batch, seed
        return {}  # tabular data: no pictures


# -- 2-D toys ------------------------------------------------------------------------------------


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
        self.optimizer = make_optimizer(config)
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


def build_task(config: ml_collections.ConfigDict):
    """The `common.training.Task` of `config.task`."""
    if config.task == "mnist":
        return MnistDensityTask(config)
    if config.task == "toy":
        return ToyTask(config)
    if config.task == "uci":
        return UciDensityTask(config)
    raise ValueError(f"config.task must be mnist, uci or toy, got {config.task!r}.")


# -- early stopping ------------------------------------------------------------------------------


class EarlyStopping:
    """Patience-based early stopping on a validation score (higher is better).

    MAF App.: stop when the validation log-likelihood has not improved for `patience` epochs and
    keep the best model. Steps are global training steps; a non-finite score never improves.
    """

    def __init__(self, patience_steps: int):
        if patience_steps < 1:
            raise ValueError(f"patience_steps must be positive, got {patience_steps}.")
        self.patience_steps = patience_steps
        self.best_step: int | None = None
        self.best_value = -math.inf
        self.best_checkpoint: str | None = None  # relative to the run folder
        self.history: list[tuple[int, float]] = []

    @property
    def last_step(self) -> int:
        return self.history[-1][0] if self.history else 0

    def update(self, step: int, value: float) -> bool:
        """Records the score at `step`; returns True when it is a new best."""
        if self.history and step <= self.last_step:
            raise ValueError(f"Scores must come in step order: {step} after {self.last_step}.")
        self.history.append((int(step), float(value)))
        if math.isfinite(value) and value > self.best_value:
            self.best_step, self.best_value = int(step), float(value)
            return True
        return False

    @property
    def should_stop(self) -> bool:
        since = self.last_step - (self.best_step if self.best_step is not None else 0)
        return bool(self.history) and since >= self.patience_steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "patience_steps": self.patience_steps,
            "best_step": self.best_step,
            "best_value": self.best_value if math.isfinite(self.best_value) else None,
            "best_checkpoint": self.best_checkpoint,
            "history": [list(h) for h in self.history],
            "stopped": self.should_stop,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EarlyStopping:
        state = cls(d["patience_steps"])
        state.best_step = d["best_step"]
        state.best_value = -math.inf if d["best_value"] is None else d["best_value"]
        state.best_checkpoint = d["best_checkpoint"]
        state.history = [(int(s), float(v)) for s, v in d["history"]]
        return state


def load_early_stopping(run_dir: str) -> EarlyStopping | None:
    path = os.path.join(run_dir, EARLY_STOPPING_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return EarlyStopping.from_dict(json.load(f))


def _num_train(config: ml_collections.ConfigDict) -> int:
    full = datasets.NUM_TRAIN - config.data.validation_size
    return min(config.data.num_train_images, full) if config.data.num_train_images else full


def _best_manager(model: tf.Module, run_dir: str) -> tf.train.CheckpointManager:
    """Keeps the best model alone in `<run_dir>/best/model.ckpt-<step>`, readable by
    `experiment.load_from_checkpoint(run_dir, path)`; saving deletes the previous best."""
    return tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model),
        os.path.join(run_dir, BEST_DIR),
        max_to_keep=1,
        checkpoint_name=experiment.CHECKPOINT_NAME,
    )


def train_with_early_stopping(
    config: ml_collections.ConfigDict, run_dir: str, resume_from: str | None
) -> tuple[training.TrainResult, EarlyStopping | None]:
    """Trains an MNIST or UCI density with early stopping (`early_stopping.patience_epochs > 0`)
    or for `loop.num_steps`.

    Validation runs every `early_stopping.eval_every_epochs` epochs inside one call of
    `common.training.train` (its `after_validation` hook), which saves a checkpoint there; the
    hook records the score in `early_stopping.json`, keeps the best model in `best/` and stops
    the loop after `patience_epochs` epochs without improvement.

    Returns:
      The loop's `TrainResult` and the early-stopping state (None without early stopping).

    Raises:
      ValueError: early stopping with a strategy other than `default` (see module docstring).
    """
    es = config.early_stopping
    if es.patience_epochs <= 0:
        return training.train(config, run_dir, build_task, resume_from), None
    if config.strategy != "default" or config.num_cpu_devices > 1:
        raise ValueError(
            "Early stopping validates and sets batch-norm statistics on one in-memory task "
            "between training steps, which needs strategy='default'; use "
            f"early_stopping.patience_epochs=0 for strategy={config.strategy!r}."
        )
    uci_data = load_uci_data(config) if config.task == "uci" else None  # loaded once
    num_train = len(uci_data.train) if uci_data is not None else _num_train(config)
    per_epoch = datasets.steps_per_epoch(num_train, config.batch_size)
    every = es.eval_every_epochs * per_epoch
    state = load_early_stopping(run_dir) or EarlyStopping(es.patience_epochs * per_epoch)
    step = experiment.checkpoint_step(resume_from) if resume_from else 0
    task, best = None, None

    def build(train_config):
        nonlocal task
        if uci_data is not None:
            task = UciDensityTask(train_config, uci_data)
        else:
            task = MnistDensityTask(train_config)
        return task

    def after_validation(step: int, metrics: dict[str, float]) -> bool:
        """Records the validation score, keeps the best checkpoint; True stops training."""
        nonlocal best
        if step <= state.last_step:  # already recorded (a resumed run)
            return state.should_stop
        value = metrics["log_likelihood"]
        if state.update(step, value):
            best = best or _best_manager(task.model, run_dir)
            path = best.save(checkpoint_number=step)
            state.best_checkpoint = os.path.relpath(path, run_dir)  # the run folder may move
        logging.info(
            "epoch %.2f: validation log-likelihood %.2f (best %.2f at epoch %.2f)",
            step / per_epoch,
            value,
            state.best_value,
            (state.best_step or 0) / per_epoch,
        )
        experiment.write_json(os.path.join(run_dir, EARLY_STOPPING_FILE), state.to_dict())
        return state.should_stop

    result = training.TrainResult(step, {}, {}, False)
    if not state.should_stop and step < config.loop.num_steps:
        # One call of the loop: validation every `every` steps through the hook, so the step
        # function compiles once (not once per epoch) and a signal is handled at any step.
        train_config = ml_collections.ConfigDict(config.to_dict())
        train_config.loop.eval_every = every
        train_config.loop.image_every = min(config.loop.image_every, every)
        result = training.train(train_config, run_dir, build, resume_from, after_validation)
        if result.interrupted:
            return result, state
        step = result.step
    if state.should_stop:
        logging.info(
            "Early stopping at epoch %.2f: no improvement for %d epochs.",
            step / per_epoch,
            es.patience_epochs,
        )
    return result, state


train_mnist = train_with_early_stopping  # its former name


# -- evaluation of a run -------------------------------------------------------------------------


def _write_test_scalars(run_dir: str, metrics: dict[str, Any], step: int) -> None:
    writer = tf.summary.create_file_writer(os.path.join(run_dir, "test"))
    with writer.as_default():
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "step":
                tf.summary.scalar(name, value, step=step)
    writer.flush()


def _evaluate_mnist(model: FlowDensity, config: ml_collections.ConfigDict) -> dict[str, Any]:
    task = MnistDensityTask(config, model=model)
    task.set_batch_norm_statistics(config.eval.batch_norm_examples)
    log_p, bpp = task.log_likelihoods(task.test_dataset())
    val_log_p, val_bpp = task.log_likelihoods(task.validation_dataset())
    ll, ll_2se = _mean_and_2se(log_p)
    bits, bits_2se = _mean_and_2se(bpp)
    return {
        "test_log_likelihood": ll,
        "test_log_likelihood_2se": ll_2se,
        "test_bits_per_pixel": bits,
        "test_bits_per_pixel_2se": bits_2se,
        "validation_log_likelihood": float(np.mean(val_log_p)),
        "validation_bits_per_pixel": float(np.mean(val_bpp)),
        "num_test_images": int(len(log_p)),
    }


def _evaluate_uci(model: FlowDensity, config: ml_collections.ConfigDict) -> dict[str, Any]:
    task = UciDensityTask(config, model=model)
    task.set_batch_norm_statistics(config.eval.batch_norm_examples)
    log_p = task.log_likelihoods(task.test_dataset())
    ll, ll_2se = _mean_and_2se(log_p)
    return {
        "dataset": config.data.dataset,
        "test_log_likelihood": ll,
        "test_log_likelihood_2se": ll_2se,
        "validation_log_likelihood": float(
            np.mean(task.log_likelihoods(task.validation_dataset()))
        ),
        "num_test_examples": int(len(log_p)),
        "num_train_examples": int(len(task.data.train)),
    }


def _evaluate_toy(
    model: FlowDensity, config: ml_collections.ConfigDict, run_dir: str, step: int
) -> dict[str, Any]:
    task = ToyTask(config, model)
    seed = tf.constant([config.seed, 5], tf.int64)
    metrics = {f"test_{k}": v for k, v in task.evaluate(task.test_dataset(), seed).items()}
    panels = task.panels(seed, size=200, bins=100)
    title = f"{config.target}: {config.model.flow}({config.model.num_layers}), step {step}"
    toy.save_figure(
        os.path.join(run_dir, "density.png"),
        {"target": panels["target"], "model density": panels["density"]},
        title,
    )
    toy.save_figure(os.path.join(run_dir, "samples.png"), {"model samples": panels["samples"]})
    metrics["figures"] = ["density.png", "samples.png"]
    return metrics


def evaluate_run(run_dir: str, checkpoint_path: str | None = None) -> dict[str, Any]:
    """Evaluates a run on held-out data; writes `metrics.json`, TensorBoard scalars under
    `<run_dir>/test` and, for the toys, `density.png` and `samples.png`.

    MNIST: the best checkpoint of early stopping (else the newest), batch-norm statistics from the
    training split, test log-likelihood in nats (logit space) and bits/pixel, +- 2 standard
    errors. UCI / BSDS300: the same, the test log-likelihood in nats (no bits/pixel). Toys:
    held-out log-likelihood (densities) or KL(q || p) (energies).

    Raises:
      common.experiment.RunError: bad run folder or checkpoint.
    """
    state = load_early_stopping(run_dir)
    if checkpoint_path is None and state is not None and state.best_checkpoint:
        checkpoint_path = os.path.join(run_dir, state.best_checkpoint)
    restored = experiment.load_from_checkpoint(run_dir, checkpoint_path)
    config = restored.config
    metrics: dict[str, Any] = {
        "task": config.task,
        "step": restored.step,
        "checkpoint": restored.checkpoint_path,
    }
    if config.task in ("mnist", "uci"):
        logging.info(
            "Evaluating %s on the %s test split.", restored.checkpoint_path, config.data.dataset
        )
        if config.task == "mnist":
            metrics.update(_evaluate_mnist(restored.model, config))
            num_train = _num_train(config)
        else:
            metrics.update(_evaluate_uci(restored.model, config))
            num_train = metrics["num_train_examples"]
        if state is not None:
            per_epoch = datasets.steps_per_epoch(num_train, config.batch_size)
            metrics["epochs_trained"] = state.last_step / per_epoch
            metrics["best_epoch"] = (state.best_step or 0) / per_epoch
            metrics["early_stopped"] = state.should_stop
    else:
        metrics.update(_evaluate_toy(restored.model, config, run_dir, restored.step))
    experiment.write_json(os.path.join(run_dir, METRICS_FILE), metrics)
    _write_test_scalars(run_dir, metrics, restored.step)
    return metrics


def train_and_evaluate(
    config: ml_collections.ConfigDict, run_dir: str, resume_from: str | None = None
) -> dict[str, Any] | None:
    """Trains (MNIST: with early stopping) and evaluates the run.

    Returns:
      The metrics written to `metrics.json`, or None when interrupted or
      `eval.after_training` is False.
    """
    if config.task in ("mnist", "uci"):
        result, _ = train_with_early_stopping(config, run_dir, resume_from)
    else:
        result = training.train(config, run_dir, build_task, resume_from)
    if result.interrupted or not config.eval.after_training:
        return None
    return evaluate_run(run_dir)


def format_metrics(run_dir: str, metrics: dict[str, Any]) -> str:
    """A short human-readable summary of `evaluate_run`'s metrics."""
    lines = [f"Results for {run_dir} (step {metrics['step']}):"]
    if metrics["task"] == "mnist":
        lines += [
            f"  test log-likelihood (logit space): {metrics['test_log_likelihood']:.2f} "
            f"+- {metrics['test_log_likelihood_2se']:.2f} nats "
            f"({metrics['num_test_images']} images, +- 2 s.e.)",
            f"  test bits/pixel: {metrics['test_bits_per_pixel']:.3f} "
            f"+- {metrics['test_bits_per_pixel_2se']:.3f}",
            f"  validation log-likelihood: {metrics['validation_log_likelihood']:.2f} nats",
        ]
    elif metrics["task"] == "uci":
        lines += [
            f"  {metrics['dataset'].upper()} test log-likelihood: "
            f"{metrics['test_log_likelihood']:.2f} +- {metrics['test_log_likelihood_2se']:.2f} "
            f"nats ({metrics['num_test_examples']} examples, +- 2 s.e.)",
            f"  validation log-likelihood: {metrics['validation_log_likelihood']:.2f} nats",
        ]
    else:
        for name, value in metrics.items():
            if name.startswith("test_"):
                lines.append(f"  {name}: {value:.4f}")
        lines.append(f"  figures: {', '.join(metrics['figures'])}")
    if "best_epoch" in metrics:  # MNIST and UCI runs with early stopping
        lines.append(
            f"  best epoch {metrics['best_epoch']:.2f} of {metrics['epochs_trained']:.2f}"
            + (" (early stopped)" if metrics["early_stopped"] else "")
        )
    lines.append(f"  written to {os.path.join(run_dir, METRICS_FILE)}")
    return "\n".join(lines)

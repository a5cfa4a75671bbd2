"""The density-estimation tasks (`common.training.Task`s) of the MAF paper: MNIST and UCI / BSDS300.

Both train a `flows.density.FlowDensity` with Adam on the negative log-likelihood plus the MAF
appendix's L2 weight decay, and evaluate in batch-norm evaluation mode (Papamakarios et al. 2017,
sec. 4.3 and appendix). Symbols: B batch, D event size, N examples.
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np
import tensorflow as tf

from common import optimizers, summaries, training
from common.data import pipelines
from flows import data as flows_data
from flows import uci
from flows.density import MNIST_EVENT_SIZE, MNIST_FLOWS, FlowDensity, build_model, event_size


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
        self.steps_per_epoch = pipelines.steps_per_epoch(len(self.data.train), config.batch_size)
        self.optimizer = optimizers.make_optimizer(config.optimizer)
        spec = tf.TensorSpec([None, event_size(config)], tf.float32)
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
        data: flows_data.MnistData | None = None,
        model: FlowDensity | None = None,
    ):
        """Loads the data (unless given) and builds the model (unless given, e.g. restored)."""
        super().__init__(config, data, model, flows_data.load_mnist_data)
        num = config.eval.num_samples
        self._sample = tf.function(lambda seed: self.model.sample(num, seed))

    # -- data ------------------------------------------------------------------------------------
    def train_dataset(self, start_step: int) -> tf.data.Dataset:
        batch = self.global_batch_size
        ds = pipelines.train_dataset(
            self.data.train, batch, self.config.seed, flows_data.LOGIT, start_step
        )
        return ds.map(lambda e: {"image": tf.ensure_shape(e["image"], [batch, 28, 28, 1])})

    def validation_dataset(self) -> tf.data.Dataset:
        return pipelines.eval_dataset(
            self.data.validation, self.config.eval.batch_size, flows_data.LOGIT
        )

    def test_dataset(self) -> tf.data.Dataset:
        return pipelines.eval_dataset(self.data.test, self.config.eval.batch_size, flows_data.LOGIT)

    # -- training --------------------------------------------------------------------------------
    def step(self, batch, seed) -> training.StepOutput:
        del seed  # Deterministic given the batch.
        y = tf.reshape(batch["image"], [-1, MNIST_EVENT_SIZE])  # [B, D]
        log_p, loss = self._training_log_prob_and_loss(y)
        return training.StepOutput(
            losses={"model": loss},
            metrics={
                "log_likelihood": log_p,
                "bits_per_pixel": flows_data.bits_per_pixel(log_p, y),
            },
        )

    # -- evaluation ------------------------------------------------------------------------------
    def set_batch_norm_statistics(self, num_examples: int) -> None:
        """Batch-norm statistics of the first `num_examples` (0: all) training images."""
        x = self.data.train[:num_examples] if num_examples else self.data.train
        self.model.set_batch_norm_statistics(flows_data.flat_logits(x))

    def log_likelihoods(self, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
        """Per-example `(log p(y) in nats, bits/pixel)`, each `[N]`, in evaluation mode."""
        log_p, bpp = [], []
        for batch in dataset:
            y = tf.reshape(batch["image"], [-1, MNIST_EVENT_SIZE])
            lp = self._eval_log_prob(y)
            log_p.append(lp.numpy())
            bpp.append(flows_data.bits_per_pixel(lp, y).numpy())
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
            "input": summaries.image_grid(flows_data.pixel_images(y), columns),
            "samples": summaries.image_grid(flows_data.pixel_images(self._sample(seed)), columns),
        }


def load_uci_data(config: ml_collections.ConfigDict) -> uci.UciData:
    """The MAF paper's preprocessed `data.dataset` (`flows.uci.load_uci`), float32 `[N, D]`
    splits, cut to the prefixes of `data.num_train_examples`, `eval.num_validation_examples` and
    `eval.num_test_examples` (0: the whole split).

    Raises:
      ValueError: unknown data set. mnist_data.DataError: missing or bad files (the message says
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

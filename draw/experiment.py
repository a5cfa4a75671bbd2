"""Wiring of the DRAW experiments: data, model, optimizer, the training task and test evaluation.

`common.training.train` runs `DRAWTask`; `draw.train`, `draw.evaluate` and `draw.generate` are
thin binaries around `build_task`, `evaluate_run` and `draw.plots`.

Figures, per image, in nats: `L^x` (`reconstruction_loss`), `L^z` (`latent_loss`), the negative
ELBO `L = L^x + L^z` (Gregor et al. 2015, eq. 12: the number of their Table 2), and the
importance-sampled bound `-log (1/k) sum_k p(x, z^k) / q(z^k | x)` (Burda et al. 2016, eq. 8),
an upper bound of the NLL that tightens as k grows.

Symbols: B batch, T steps, H x W = 28 x 28 image.
"""

from __future__ import annotations

import math
import os
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
import tf_keras
import tqdm
from absl import logging

from common import bounds, experiment, optimizers, summaries, training
from common.data import pipelines
from draw import data, plots
from draw.model import DRAW

IMAGE_SHAPE = (28, 28)


CONFIG_RANGES = {  # checked by `common.cli.check_config` before a run starts
    "model.num_steps": ">= 1",
    "model.lstm_size": ">= 1",
    "model.latent_size": ">= 1",
    "model.read_size": "in [1, 28]",  # N of an N x N window on the 28 x 28 image
    "model.write_size": "in [1, 28]",
    "eval.num_samples": ">= 1",
    "eval.chunk_samples": ">= 1",
    "eval.num_test_images": ">= 0",
    "eval.num_validation_images": ">= 0",
    "optimizer.epsilon": "> 0",
    "optimizer.global_clipnorm": ">= 0",
    "optimizer.final_fraction": "in [0, 1]",
    "loss.kl_warmup_steps": ">= 0",
}


def build_model(
    config: ml_collections.ConfigDict, canvas_bias_init: np.ndarray | None = None
) -> DRAW:
    """The DRAW of `config.model` with its variables created.

    Args:
      config: a `draw/configs/mnist.py` config.
      canvas_bias_init: optional `[28, 28]` initial `c_0`.

    Raises:
      ValueError: bad sizes.
    """
    m = config.model
    model = DRAW(
        IMAGE_SHAPE,
        num_steps=m.num_steps,
        lstm_size=m.lstm_size,
        latent_size=m.latent_size,
        attention=m.attention,
        read_size=m.read_size,
        write_size=m.write_size,
        canvas_bias_init=canvas_bias_init,
        unroll=m.get("unroll", False),
        read_window_bias=tuple(m.get("read_window_bias", (0.0,) * 5)),
        zero_write_init=m.get("zero_write_init", False),
        name="draw",
    )
    model(tf.zeros([1, *IMAGE_SHAPE]), tf.constant([0, 0]))
    return model


def mean_image_logit(images: np.ndarray) -> np.ndarray:
    """`[28, 28]` logit of the mean of binary `[N, 28, 28]` images, clipped to [1e-3, 1 - 1e-3]
    (the canvas bias `c_0` starts there: the model then predicts the mean image before step 1)."""
    p = np.clip(images.astype(np.float64).mean(0), 1e-3, 1 - 1e-3)
    return np.log(p / (1 - p)).astype(np.float32)


def make_optimizer(config: ml_collections.ConfigDict) -> tf_keras.optimizers.Optimizer:
    """Adam with a constant or cosine-decayed learning rate.

    Raises:
      ValueError: unknown schedule.
    """
    lr = optimizers.learning_rate_schedule(config.optimizer, config.loop.num_steps)
    return optimizers.make_optimizer(config.optimizer, lr)


def load_data(config: ml_collections.ConfigDict) -> data.BinarizedMnist:
    return data.load(
        config.data.source,
        config.data.data_dir or None,
        config.data.binarization_seed,
        config.data.mnist_source,
    )


def _first(images: np.ndarray, num: int) -> np.ndarray:
    return images[:num] if num else images


class DRAWTask:
    """`common.training.Task` for DRAW on binarized MNIST."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        make_optimizer(config)  # fail on a bad schedule before loading data
        self.data = load_data(config)
        logging.info("Binarized MNIST: %s", self.data.source)
        init = mean_image_logit(self.data.train) if config.model.canvas_bias_from_data else None
        self.model = build_model(config, init)
        self.optimizer = make_optimizer(config)
        self.global_batch_size = config.batch_size
        self._eval_fn = tf.function(lambda x, s: _per_example(self.model(x, s)))

    def train_dataset(self, start_step: int) -> tf.data.Dataset:
        batch = self.global_batch_size
        ds = pipelines.train_dataset(self.data.train, batch, self.config.seed, "binary", start_step)
        return ds.map(lambda e: {"image": tf.ensure_shape(e["image"], [batch, 28, 28, 1])})

    def validation_dataset(self) -> tf.data.Dataset | None:
        images = _first(self.data.validation, self.config.eval.num_validation_images)
        return pipelines.eval_dataset(images, self.config.eval.batch_size, "binary")

    def param_groups(self) -> dict[str, training.ParamGroup]:
        return {"model": training.ParamGroup(self.model.trainable_variables, self.optimizer)}

    def kl_weight(self) -> tf.Tensor:
        """The weight of `L^z` in the training loss at the current step: 1, or with
        `loss.kl_warmup_steps = n > 0` rising linearly from 1/n at the first step to 1 at step n
        (a warm-up against posterior collapse; Bowman et al. 2016, sec. 3.1; Sonderby et al.
        2016, sec. 2.3; not in the DRAW paper). Reported figures always use weight 1."""
        warmup = self.config.get("loss", {}).get("kl_warmup_steps", 0)
        if not warmup:
            return tf.constant(1.0)
        step = tf.cast(self.optimizer.iterations + 1, tf.float32)
        return tf.minimum(1.0, step / float(warmup))

    def step(self, batch, seed) -> training.StepOutput:
        out = self.model(batch["image"], seed)
        weight = self.kl_weight()
        metrics = _per_example(out)
        metrics["kl_weight"] = tf.fill(tf.shape(out.loss), weight)
        loss = out.reconstruction_loss + weight * out.latent_loss
        return training.StepOutput({"model": loss}, metrics)

    def evaluate(self, dataset: tf.data.Dataset, seed: tf.Tensor) -> dict[str, float]:
        """Mean `negative_elbo`, `reconstruction_loss` and `latent_loss` (nats), one sample
        per image."""
        totals: dict[str, float] = {}
        n = 0
        for i, batch in enumerate(dataset):
            out = self._eval_fn(batch["image"], tf.random.experimental.stateless_fold_in(seed, i))
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + float(tf.reduce_sum(v))
            n += int(batch["image"].shape[0])
        return {k: v / n for k, v in totals.items()}

    def images(self, batch, seed) -> dict[str, tf.Tensor]:
        x = batch["image"][:8]
        out = self.model(x, seed)
        gen = self.model.generate(8, seed)
        return {
            "reconstruction_steps": plots.steps_with_windows(x[..., 0], out, self.model),
            "samples_steps": plots.generation_steps(gen, self.model),
        }


def _per_example(out) -> dict[str, tf.Tensor]:
    return {
        "negative_elbo": out.loss,
        "reconstruction_loss": out.reconstruction_loss,
        "latent_loss": out.latent_loss,
    }


def build_task(config: ml_collections.ConfigDict) -> DRAWTask:
    return DRAWTask(config)


# -- test-set evaluation (draw.evaluate) ------------------------------------------


def importance_sampled_bounds(
    model: DRAW,
    dataset: tf.data.Dataset,
    num_samples: int,
    chunk_samples: int,
    seed: int,
    progress: bool = True,
) -> dict[str, float]:
    """The negative ELBO (split into `L^x` and `L^z`) and the importance-sampled bound.

    Every image gets `num_samples` draws of `z ~ q(z | x)` (in chunks of `chunk_samples`):
    `negative_elbo`, `reconstruction_loss` and `latent_loss` average over them (Monte-Carlo
    estimates of the paper's bound and its two terms); `nll_bound` is
    `-log mean_k exp(log_w_k)` (Burda et al. 2016, eq. 8), never above `negative_elbo` in
    expectation. Means over images in nats, with the standard error of `nll_bound`.

    Raises:
      ValueError: `chunk_samples` does not divide `num_samples`.
    """
    if num_samples % chunk_samples:
        raise ValueError(f"eval.chunk_samples={chunk_samples} must divide {num_samples}.")

    @tf.function
    def chunk(x, s):
        tiled = tf.reshape(tf.repeat(x[None], chunk_samples, 0), [-1, *IMAGE_SHAPE])
        out = model(tiled, s)
        shape = [chunk_samples, -1]
        return (
            tf.reshape(out.log_weight, shape),
            tf.reshape(out.reconstruction_loss, shape),
            tf.reshape(out.latent_loss, shape),
        )

    base = tf.constant([seed, 4242], tf.int32)
    parts: dict[str, list[np.ndarray]] = {"nll_bound": [], "lx": [], "lz": []}
    total = int(dataset.cardinality().numpy())
    bar = tqdm.tqdm(dataset, total=total, desc="importance sampling", disable=not progress)
    chunks = num_samples // chunk_samples
    for i, batch in enumerate(bar):
        x = batch["image"][..., 0]
        log_w, lx, lz = [], [], []
        for j in range(chunks):
            w, a, b = chunk(x, tf.random.experimental.stateless_fold_in(base, i * chunks + j))
            log_w.append(w)
            lx.append(a)
            lz.append(b)
        log_w = tf.concat(log_w, 0)  # [num_samples, B]
        parts["nll_bound"].append(-bounds.iwae_bound(log_w).numpy())
        parts["lx"].append(tf.reduce_mean(tf.concat(lx, 0), 0).numpy())
        parts["lz"].append(tf.reduce_mean(tf.concat(lz, 0), 0).numpy())
    nll = np.concatenate(parts["nll_bound"])
    lx, lz = np.concatenate(parts["lx"]), np.concatenate(parts["lz"])
    return {
        "negative_elbo": float((lx + lz).mean()),
        "reconstruction_loss": float(lx.mean()),
        "latent_loss": float(lz.mean()),
        "nll_bound": float(nll.mean()),
        "nll_bound_stderr": float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else 0.0,
        "num_images": int(len(nll)),
        "num_samples": int(num_samples),
    }


def _use_run_threads(run_dir: str) -> None:
    """Sizes TensorFlow's thread pools as the run's config says (`common.training.setup_threads`)
    when this process has not run an op yet; otherwise keeps the pools it has."""
    config = experiment.load_config(run_dir)
    try:
        training.setup_threads(config.get("inter_op_threads", 0), config.get("intra_op_threads", 0))
    except RuntimeError:
        logging.info("TensorFlow is already running: evaluating on its current thread pools.")


def evaluate_run(
    run_dir: str,
    checkpoint_path: str | None = None,
    num_samples: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluates a run on the test split; writes `metrics.json` and TensorBoard under
    `run_dir/test`.

    Raises:
      common.experiment.RunError: bad run folder or checkpoint.
      common.data.mnist.DataError: missing data.
    """
    _use_run_threads(run_dir)
    restored = experiment.load_from_checkpoint(run_dir, checkpoint_path)
    config, model = restored.config, restored.model
    binarized = load_data(config)
    images = _first(binarized.test, config.eval.num_test_images)
    test = pipelines.eval_dataset(images, config.eval.batch_size, "binary")
    k = num_samples or config.eval.num_samples
    logging.info(
        "Evaluating %s (step %d) on %d test images, k = %d.",
        restored.checkpoint_path, restored.step, len(images), k,
    )  # fmt: skip
    metrics: dict[str, Any] = {"step": restored.step, "checkpoint": restored.checkpoint_path}
    metrics.update(
        importance_sampled_bounds(
            model, test, k, math.gcd(k, config.eval.chunk_samples), config.seed, progress
        )
    )
    metrics["data"] = binarized.source
    experiment.write_json(os.path.join(run_dir, "metrics.json"), metrics)
    summaries.write_test_metrics(run_dir, metrics, restored.step)
    return metrics


def format_metrics(run_dir: str, metrics: dict[str, Any]) -> str:
    """A short human-readable summary of `evaluate_run`'s metrics."""
    return "\n".join(
        [
            f"Test results for {run_dir} (step {metrics['step']}, {metrics['num_images']} images, "
            f"binarized MNIST: {metrics['data']}):",
            f"  negative ELBO: {metrics['negative_elbo']:.2f} nats "
            f"(L^x {metrics['reconstruction_loss']:.2f} + L^z {metrics['latent_loss']:.2f})",
            f"  importance-sampled bound (k = {metrics['num_samples']}): "
            f"{metrics['nll_bound']:.2f} +- {metrics['nll_bound_stderr']:.2f} nats",
            f"  written to {os.path.join(run_dir, 'metrics.json')}",
        ]
    )

"""Evaluation of a flows run: test log-likelihood (nats, +- 2 standard errors as in the MAF
paper's tables), bits/pixel for MNIST, KL for the toys; `metrics.json`, TensorBoard and figures."""

from __future__ import annotations

import math
import os
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from common import experiment, summaries
from common.data import pipelines
from flows import data as flows_data
from flows import toy
from flows.density import FlowDensity
from flows.early_stopping import load_early_stopping
from flows.tasks import MnistDensityTask, UciDensityTask
from flows.toy_task import ToyTask

METRICS_FILE = "metrics.json"


def _mean_and_2se(values: np.ndarray) -> tuple[float, float]:
    """Mean and two standard errors (MAF paper's error bars: 2 std / sqrt(N))."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), 0.0
    return float(values.mean()), float(2 * values.std(ddof=1) / math.sqrt(len(values)))


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
            num_train = flows_data.num_train_images(config)
        else:
            metrics.update(_evaluate_uci(restored.model, config))
            num_train = metrics["num_train_examples"]
        if state is not None:
            per_epoch = pipelines.steps_per_epoch(num_train, config.batch_size)
            metrics["epochs_trained"] = state.last_step / per_epoch
            metrics["best_epoch"] = (state.best_step or 0) / per_epoch
            metrics["early_stopped"] = state.should_stop
    else:
        metrics.update(_evaluate_toy(restored.model, config, run_dir, restored.step))
    experiment.write_json(os.path.join(run_dir, METRICS_FILE), metrics)
    summaries.write_test_metrics(run_dir, metrics, restored.step)
    return metrics


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

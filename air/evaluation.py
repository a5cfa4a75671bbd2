"""Evaluation of AIR: count accuracy and confusion, bounds, gradient variance of the estimators,
TensorBoard images, `metrics.json`; `python -m air.evaluate` calls `evaluate_run`."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from air import data as multi_mnist
from air import estimators
from air.objective import compute_losses, prior_step_prob
from air.plots import confusion_image, draw_boxes
from common import experiment, summaries

if TYPE_CHECKING:
    from air.experiment import Learner


class Evaluator:
    """Held-out metrics and TensorBoard images of a `Learner`."""

    def __init__(self, learner: Learner, config: ml_collections.ConfigDict):
        self.learner = learner
        self.config = config
        self.max_digits = config.data.max_digits
        self.max_steps = config.model.max_steps
        self._batch_fn = tf.function(self._batch, reduce_retracing=True)

    def _batch(self, images, counts, seed, step_prob):
        air = self.learner.air
        seeds = tf.random.experimental.stateless_split(seed, 3)
        out = air(images, seeds[0], step_prob)
        mode = air(images, seeds[1], step_prob, deterministic=True)
        k = self.config.eval.num_particles
        batch = tf.shape(images)[0]
        tiled = air(tf.tile(images, [k, 1, 1, 1]), seeds[2], step_prob)
        counts = tf.cast(counts, tf.int32)
        return {
            "elbo": out.elbo,
            f"iwae_bound_k{k}": estimators.iwae_bound(tf.reshape(tiled.log_weight, [k, batch])),
            "log_likelihood": out.log_likelihood,
            "kl_num_steps": out.kl_num_steps,
            "kl_what": tf.reduce_sum(out.presence_probs * out.kl_what, 1),
            "kl_where": tf.reduce_sum(out.presence_probs * out.kl_where, 1),
            "num_steps": tf.cast(out.num_steps, tf.float32),
            "expected_num_steps": tf.reduce_sum(out.presence_probs, 1),
            "count_accuracy": tf.cast(tf.equal(out.num_steps, counts), tf.float32),
            "count_accuracy_mode": tf.cast(tf.equal(mode.num_steps, counts), tf.float32),
            "_inferred": out.num_steps,
        }

    def __call__(self, dataset: tf.data.Dataset, seed: tf.Tensor, step_prob) -> dict[str, Any]:
        """Means over `dataset` of the per-image metrics, plus `confusion_matrix`
        (`[max_digits + 1, max_steps + 1]` ints: rows true count, columns the
        sampled inferred count) and `num_images`."""
        sums: dict[str, float] = {}
        confusion = np.zeros([self.max_digits + 1, self.max_steps + 1], np.int64)
        num = 0
        step_prob = tf.cast(step_prob, tf.float64)
        for i, batch in enumerate(dataset):
            values = self._batch_fn(
                batch["image"],
                batch["count"],
                tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int32), i),
                step_prob,
            )
            inferred = values.pop("_inferred").numpy()
            np.add.at(confusion, (batch["count"].numpy(), inferred), 1)
            for name, v in values.items():
                sums[name] = sums.get(name, 0.0) + float(tf.reduce_sum(v))
            num += len(inferred)
        metrics: dict[str, Any] = {k: v / max(num, 1) for k, v in sums.items()}
        metrics["prior_step_prob"] = float(step_prob)
        metrics["confusion_matrix"] = confusion
        metrics["num_images"] = num
        return metrics

    def images(self, images: tf.Tensor, seed: tf.Tensor, step_prob) -> dict[str, tf.Tensor]:
        """Input, reconstruction and per-step glimpse boxes (`STEP_COLOURS`), `[1, ., ., 3]`."""
        out = self.learner.air(images, seed, step_prob)
        z_where, z_pres = out.z_where.numpy(), out.z_pres.numpy()
        recon = np.clip(out.canvas.numpy(), 0.0, 1.0)
        columns = int(math.ceil(math.sqrt(len(recon))))
        grid = lambda a: summaries.image_grid(a, columns)
        return {
            "input": grid(np.repeat(images.numpy(), 3, -1)),
            "reconstruction": grid(np.repeat(recon, 3, -1)),
            "glimpse_boxes": grid(draw_boxes(images.numpy(), z_where, z_pres)),
            "reconstruction_boxes": grid(draw_boxes(recon, z_where, z_pres)),
        }


def gradient_variance(
    learner: Learner,
    config: ml_collections.ConfigDict,
    images: tf.Tensor,
    step_prob,
    repeats: int,
    seed: int,
) -> dict[str, float]:
    """Per-parameter variance of the stochastic gradient of the model loss.

    Draws `repeats` gradients on the same `images` (fresh latent samples each
    time) and reports the variance across draws averaged over parameters,
    for all AIR parameters and for the presence head alone (whose gradient
    comes only through `log q(n)` and the KL weights). For REINFORCE, the
    same without baseline and NVIL (`_no_baseline`) measures what the
    variance reduction buys (K-AIR: ~1e3 without vs ~1e-1 with a baseline).

    Raises:
      ValueError: if `repeats < 2`.
    """
    if repeats < 2:
        raise ValueError(f"gradient variance needs >= 2 repeats; got {repeats}.")
    air = learner.air
    variables = air.trainable_variables
    presence = [i for i, v in enumerate(variables) if "presence" in v.name]
    step_prob = tf.cast(step_prob, tf.float64)

    def make(plain: bool):
        @tf.function
        def draw(s):
            with tf.GradientTape() as tape:
                losses = compute_losses(
                    learner,
                    images,
                    s,
                    step_prob,
                    config.objective,
                    update_stats=False,
                    plain_reinforce=plain,
                )
                loss = tf.reduce_mean(losses.model_loss)
            grads = tape.gradient(loss, variables)
            return [tf.reshape(g, [-1]) for g in grads]

        return draw

    variants = {"": False}
    if config.objective.estimator == "reinforce":
        variants["_no_baseline"] = True
    result = {}
    for suffix, plain in variants.items():
        draw = make(plain)
        samples = [draw(tf.constant([seed, r], tf.int32)) for r in range(repeats)]
        per_var = [
            np.stack([s[i].numpy() for s in samples]).var(0, ddof=1) for i in range(len(variables))
        ]
        result["gradient_variance" + suffix] = float(np.mean(np.concatenate(per_var)))
        result["gradient_variance_presence" + suffix] = float(
            np.mean(np.concatenate([per_var[i] for i in presence]))
        )
    return result


def evaluate_run(run_dir: str, checkpoint_path: str | None = None) -> dict[str, Any]:
    """Evaluates a run on the held-out multi-MNIST test split (and its validation split).

    Writes `metrics.json` (count accuracy, confusion matrix, ELBO, IWAE-k
    bound, KL terms, mean number of steps, gradient variance on test images;
    `validation_count_accuracy[_mode]` on the validation images, made of
    held-out training digits) and TensorBoard scalars and images (confusion
    matrix, glimpse boxes) under `run_dir/test`.

    Raises:
      common.experiment.RunError: bad run folder or checkpoint.
    """
    restored = experiment.load_from_checkpoint(run_dir, checkpoint_path)
    config, learner = restored.config, restored.model
    data = multi_mnist.load_from_config(config)
    test = multi_mnist.prefix(data.test, config.eval.num_test_images)
    dataset = multi_mnist.multi_mnist_eval_dataset(test, config.eval.batch_size)
    step_prob = prior_step_prob(config.prior, restored.step)
    logging.info(
        "Evaluating %s (step %d) on %d held-out images.",
        restored.checkpoint_path,
        restored.step,
        len(test.images),
    )
    evaluator = Evaluator(learner, config)
    seed = tf.constant([config.seed, 10_000], tf.int32)
    metrics: dict[str, Any] = {"step": restored.step, "checkpoint": restored.checkpoint_path}
    validation = multi_mnist.multi_mnist_eval_dataset(data.validation, config.eval.batch_size)
    on_validation = evaluator(validation, seed, step_prob)
    metrics["validation_count_accuracy"] = on_validation["count_accuracy"]
    metrics["validation_count_accuracy_mode"] = on_validation["count_accuracy_mode"]
    metrics.update(evaluator(dataset, seed, step_prob))
    confusion = metrics["confusion_matrix"]
    metrics["confusion_matrix"] = confusion.tolist()
    if config.eval.gradient_variance_repeats:
        images = tf.constant(
            test.images[: config.eval.gradient_variance_batch, ..., None] / 255.0, tf.float32
        )
        metrics.update(
            gradient_variance(
                learner,
                config,
                images,
                step_prob,
                config.eval.gradient_variance_repeats,
                config.seed,
            )
        )
    experiment.write_json(os.path.join(run_dir, "metrics.json"), metrics)
    x = tf.constant(test.images[:16, ..., None] / 255.0, tf.float32)
    images = {"confusion_matrix": confusion_image(confusion)}
    images.update(evaluator.images(x, seed, step_prob))
    summaries.write_test_metrics(run_dir, metrics, restored.step, images)
    return metrics


def format_metrics(run_dir: str, metrics: dict[str, Any]) -> str:
    """A short human-readable summary of `evaluate_run`'s metrics."""
    lines = [
        f"Held-out multi-MNIST results for {run_dir} (step {metrics['step']}, "
        f"{metrics['num_images']} images):",
        f"  count accuracy: {metrics['count_accuracy']:.4f} (sampled n), "
        f"{metrics['count_accuracy_mode']:.4f} (mode)",
        f"  validation count accuracy: {metrics['validation_count_accuracy']:.4f} (sampled n), "
        f"{metrics['validation_count_accuracy_mode']:.4f} (mode), held-out training digits",
        "  confusion matrix (rows: true count 0.., columns: inferred count 0..):",
    ]
    lines += [f"    {row}" for row in metrics["confusion_matrix"]]
    lines.append(f"  ELBO: {metrics['elbo']:.2f} nats")
    for name in sorted(k for k in metrics if k.startswith("iwae_bound_k")):
        lines.append(f"  IWAE bound k = {name[len('iwae_bound_k') :]}: {metrics[name]:.2f} nats")
    lines.append(
        f"  KL n / what / where: {metrics['kl_num_steps']:.2f} / {metrics['kl_what']:.2f} / "
        f"{metrics['kl_where']:.2f} nats"
    )
    lines.append(
        f"  mean steps: {metrics['num_steps']:.3f} (sampled), "
        f"{metrics['expected_num_steps']:.3f} (expected)"
    )
    for name in sorted(k for k in metrics if k.startswith("gradient_variance")):
        lines.append(f"  {name}: {metrics[name]:.4g}")
    lines.append(f"  written to {os.path.join(run_dir, 'metrics.json')}")
    return "\n".join(lines)

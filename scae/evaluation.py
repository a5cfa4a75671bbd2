"""Evaluation of a SCAE run (Kosiorek et al. 2019, sec. 4.1): unsupervised accuracy (LIN-MATCH)
of k-means on object presences and the linear probes (LIN-PRED), on train and test, and the
viewpoint robustness of the same clusters: the test digits under random affine transforms in
affNIST's ranges (`scae.data.affine_transform`: rotation within +-20 degrees, shear within +-0.2,
scales 0.8-1.2, random placement), clustered with the k-means fitted on the untransformed
training images (`affine_test_*` metrics; the SCAE blog post reports 92.2%).

For prior presences (`u_k = max_m a_k a_{k,m}`) and posterior masses (`v_k`), k-means with each
`eval.clusters` count is fitted on the training images' features (`eval.num_train_images`, 0:
all), matched to labels there, and scored on train and test (`scae.clustering`). The probes are
the two linear classifiers trained online on stop-gradient presences. Presence noise at
evaluation follows `eval.presence_noise` (the reference code always adds it).

Writes `metrics.json` and TensorBoard scalars under `<run_dir>/test`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from common import experiment, summaries
from scae import clustering, data, plots
from scae import experiment as scae_experiment


def evaluate_run(
    run_dir: str, checkpoint_path: str | None = None, plot: bool = True
) -> dict[str, Any]:
    """Evaluates a run's newest (or given) checkpoint; returns and writes the metrics, and with
    `plot` the PNGs `templates.png`, `reconstructions.png`, `accuracy_curve.png`,
    `presences.png` (object presences of 8 test images) and `tsne.png` (t-SNE of the test
    images' posterior presences) in the run folder (listed in the metrics' `figures`).

    Raises:
      common.experiment.RunError: bad run folder or checkpoint.
    """
    restored = experiment.load_from_checkpoint(run_dir, checkpoint_path)
    config, scae = restored.config, restored.model
    splits = data.load_splits(config)
    noise = tf.constant([config.seed, 77], tf.int32) if config.eval.presence_noise else None
    train = data.prefix(splits.train, config.eval.num_train_images)
    test = data.prefix(splits.test, config.eval.num_test_images)
    batch = config.eval.batch_size
    # Training images get the fixed evaluation shifts too, so the features are repeatable.
    datasets = {
        "train": data.eval_batches(config, train, batch),
        "test": data.eval_batches(config, test, batch),
    }
    if data.dataset_name(config) == "mnist":
        datasets["affine_test"] = data.affine_eval_dataset(test, batch)
    features = {}
    for name, dataset in datasets.items():
        logging.info("Collecting object presences of the %s images.", name)
        features[name] = scae_experiment.presences(scae, dataset, noise)
    metrics: dict[str, Any] = {
        "step": restored.step,
        "checkpoint": restored.checkpoint_path,
        "num_train_images": int(len(features["train"]["label"])),
        "num_test_images": int(len(features["test"]["label"])),
        "test_rec_ll": float(features["test"]["rec_ll"].mean()),
        "test_part_log_prob": float(features["test"]["part_log_prob"].mean()),
    }
    fit = features["train"]
    for kind in ("prior", "posterior"):
        for q in config.eval.clusters:
            result = clustering.kmeans_accuracy(
                fit[kind],
                fit["label"],
                {name: (values[kind], values["label"]) for name, values in features.items()},
                num_clusters=q,
                num_classes=config.data.num_classes,
                seed=config.seed,
            )
            for split_name, accuracy in result.accuracy.items():
                metrics[f"{split_name}_{kind}_kmeans{q}_accuracy"] = accuracy
        for split_name, values in features.items():
            metrics[f"{split_name}_{kind}_probe_accuracy"] = float(
                np.mean(values[f"{kind}_probe"] == values["label"])
            )
    if plot:
        first = next(iter(data.eval_batches(config, data.prefix(test, 8), 8)))
        metrics["figures"] = _plot(scae, first, features["test"], run_dir, config.seed)
    experiment.write_json(os.path.join(run_dir, "metrics.json"), metrics)
    summaries.write_test_metrics(run_dir, metrics, restored.step)
    return metrics


def _plot(scae, first: dict, test_features: dict, run_dir: str, seed: int) -> list[str]:
    """The PNGs of `evaluate_run`; `first` is the batch of the first 8 test images."""
    decoder = scae.template_decoder
    plots.save_templates(decoder.templates.numpy(), os.path.join(run_dir, "templates.png"))
    x, target = first["image"], first.get("target", first["image"])
    out = scae(x, targets=target)
    recon = decoder.reconstruction(out.rendered, out.parts.presence_logit).numpy()
    plots.save_reconstructions(
        target.numpy(), np.clip(recon, 0, 1), os.path.join(run_dir, "reconstructions.png")
    )
    plots.save_accuracy_curve(run_dir, os.path.join(run_dir, "accuracy_curve.png"))
    # The first 8 test images, as above (`presences` keeps the dataset's order).
    plots.save_presences(
        x.numpy(), test_features["prior"][:8], test_features["posterior"][:8],
        test_features["label"][:8], os.path.join(run_dir, "presences.png"),
    )  # fmt: skip
    plots.save_tsne(
        test_features["posterior"], test_features["label"], os.path.join(run_dir, "tsne.png"),
        seed=seed,
    )  # fmt: skip
    plots.save_object_reconstructions(
        x.numpy()[:4], scae.object_reconstructions(out).numpy()[:4],
        out.part_likelihood.prior_presence.numpy()[:4],
        os.path.join(run_dir, "object_reconstructions.png"),
    )  # fmt: skip
    return [
        "templates.png", "reconstructions.png", "accuracy_curve.png", "presences.png", "tsne.png",
        "object_reconstructions.png",
    ]  # fmt: skip


def format_metrics(run_dir: str, metrics: dict[str, Any]) -> str:
    """A short human-readable summary of `evaluate_run`'s metrics."""
    lines = [
        f"SCAE results for {run_dir} (step {metrics['step']}; k-means fitted on "
        f"{metrics['num_train_images']} training images, {metrics['num_test_images']} test "
        "images):"
    ]
    for kind in ("prior", "posterior"):
        for name in sorted(k for k in metrics if k.startswith(f"test_{kind}_kmeans")):
            q = name[len(f"test_{kind}_kmeans") : -len("_accuracy")]
            affine = metrics.get(f"affine_test_{kind}_kmeans{q}_accuracy")
            lines.append(
                f"  {kind} presences, {q} clusters: test {metrics[name]:.4f}, train "
                f"{metrics[f'train_{kind}_kmeans{q}_accuracy']:.4f}"
                + ("" if affine is None else f", affine-transformed test {affine:.4f}")
            )
        lines.append(
            f"  {kind} linear probe: test {metrics[f'test_{kind}_probe_accuracy']:.4f}, train "
            f"{metrics[f'train_{kind}_probe_accuracy']:.4f}"
        )
    lines.append(
        f"  test image log-likelihood {metrics['test_rec_ll']:.1f} nats, part log-likelihood "
        f"{metrics['test_part_log_prob']:.2f} nats"
    )
    if metrics.get("figures"):
        lines.append(f"  figures: {', '.join(metrics['figures'])}")
    lines.append(f"  written to {os.path.join(run_dir, 'metrics.json')}")
    return "\n".join(lines)

"""Evaluation of a SCAE run (Kosiorek et al. 2019, sec. 4.1): unsupervised accuracy (LIN-MATCH)
of k-means on object presences and the linear probes (LIN-PRED), on train and test (or, for
choices, validation), and the viewpoint robustness of the same clusters: the held-out digits
under random affine transforms in affNIST's ranges (`scae.data.affine_transform`: rotation within
+-20 degrees, shear within +-0.2, scales 0.8-1.2, random placement), clustered with the k-means
fitted on the untransformed training images (`affine_test_*` metrics; the SCAE blog post reports
92.2%).

For prior presences (`u_k = max_m a_k a_{k,m}`) and posterior masses (`v_k`), k-means with each
`eval.clusters` count is fitted on the training images' features (`eval.num_train_images`, 0:
all), matched to labels there, and scored on train and test (`scae.clustering`). The probes are
the two linear classifiers trained online on stop-gradient presences. Presence noise at
evaluation follows `eval.presence_noise` (the reference code always adds it) unless overridden.

Writes `metrics.json` and TensorBoard scalars under `<run_dir>/test` (other splits and noise
settings: `metrics_file`).
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

SPLITS = ("test", "validation")


def metrics_file(split: str = "test", presence_noise: bool | None = None) -> str:
    """The file `evaluate_run` writes: `metrics.json` for the test split with the run's own
    presence-noise setting, otherwise e.g. `metrics_validation.json` or
    `metrics_validation_noise_on.json`, so that no evaluation overwrites another."""
    if split == "test" and presence_noise is None:
        return "metrics.json"
    noise = "" if presence_noise is None else f"_noise_{'on' if presence_noise else 'off'}"
    return f"metrics_{split}{noise}.json"


def evaluate_run(
    run_dir: str,
    checkpoint_path: str | None = None,
    plot: bool = True,
    split: str = "test",
    presence_noise: bool | None = None,
) -> dict[str, Any]:
    """Evaluates a run's newest (or given) checkpoint; returns and writes the metrics, and with
    `plot` (test split only) the PNGs `templates.png`, `reconstructions.png`,
    `accuracy_curve.png`, `presences.png` (object presences of 8 test images) and `tsne.png`
    (t-SNE of the test images' posterior presences) in the run folder (listed in the metrics'
    `figures`).

    Args:
      run_dir: the run folder.
      checkpoint_path: a checkpoint prefix; None: the newest.
      plot: write the PNGs (test split only).
      split: `"test"` (the reported figures) or `"validation"` (the last training images, for
        choices: `eval.num_validation_images` of them).
      presence_noise: add presence noise at evaluation (the reference code's quirk); None: the
        run's `eval.presence_noise`.

    Raises:
      common.experiment.RunError: bad run folder or checkpoint.
      ValueError: an unknown `split`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}.")
    restored = experiment.load_from_checkpoint(run_dir, checkpoint_path)
    config, scae = restored.config, restored.model
    splits = data.load_splits(config)
    noisy = config.eval.presence_noise if presence_noise is None else presence_noise
    noise = tf.constant([config.seed, 77], tf.int32) if noisy else None
    train = data.prefix(splits.train, config.eval.num_train_images)
    if split == "test":
        held_out = data.prefix(splits.test, config.eval.num_test_images)
    else:
        held_out = data.prefix(splits.validation, config.eval.num_validation_images)
    batch = config.eval.batch_size
    # Training images get the fixed evaluation shifts too, so the features are repeatable.
    datasets = {
        "train": data.eval_batches(config, train, batch),
        split: data.eval_batches(config, held_out, batch),
    }
    if data.dataset_name(config) == "mnist":
        datasets[f"affine_{split}"] = data.affine_eval_dataset(held_out, batch)
    features = {}
    for name, dataset in datasets.items():
        logging.info("Collecting object presences of the %s images.", name)
        features[name] = scae_experiment.presences(scae, dataset, noise)
    metrics: dict[str, Any] = {
        "step": restored.step,
        "checkpoint": restored.checkpoint_path,
        "split": split,
        "presence_noise": bool(noisy),
        "num_train_images": int(len(features["train"]["label"])),
        f"num_{split}_images": int(len(features[split]["label"])),
        f"{split}_rec_ll": float(features[split]["rec_ll"].mean()),
        f"{split}_part_log_prob": float(features[split]["part_log_prob"].mean()),
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
    if plot and split == "test":
        first = next(iter(data.eval_batches(config, data.prefix(held_out, 8), 8)))
        metrics["figures"] = _plot(scae, first, features["test"], run_dir, config.seed)
    name = metrics["metrics_file"] = metrics_file(split, presence_noise)
    experiment.write_json(os.path.join(run_dir, name), metrics)
    if name == "metrics.json":
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
    split = metrics.get("split", "test")
    noise = metrics.get("presence_noise")
    noise_text = "" if noise is None else f"; presence noise {'on' if noise else 'off'}"
    lines = [
        f"SCAE results for {run_dir} (step {metrics['step']}; k-means fitted on "
        f"{metrics['num_train_images']} training images, {metrics[f'num_{split}_images']} "
        f"{split} images{noise_text}):"
    ]
    for kind in ("prior", "posterior"):
        for name in sorted(k for k in metrics if k.startswith(f"{split}_{kind}_kmeans")):
            q = name[len(f"{split}_{kind}_kmeans") : -len("_accuracy")]
            affine = metrics.get(f"affine_{split}_{kind}_kmeans{q}_accuracy")
            lines.append(
                f"  {kind} presences, {q} clusters: {split} {metrics[name]:.4f}, train "
                f"{metrics[f'train_{kind}_kmeans{q}_accuracy']:.4f}"
                + ("" if affine is None else f", affine-transformed {split} {affine:.4f}")
            )
        lines.append(
            f"  {kind} linear probe: {split} {metrics[f'{split}_{kind}_probe_accuracy']:.4f}, "
            f"train {metrics[f'train_{kind}_probe_accuracy']:.4f}"
        )
    lines.append(
        f"  {split} image log-likelihood {metrics[f'{split}_rec_ll']:.1f} nats, part "
        f"log-likelihood {metrics[f'{split}_part_log_prob']:.2f} nats"
    )
    if metrics.get("figures"):
        lines.append(f"  figures: {', '.join(metrics['figures'])}")
    written = metrics.get("metrics_file", "metrics.json")
    lines.append(f"  written to {os.path.join(run_dir, written)}")
    return "\n".join(lines)

"""Pictures of a SCAE run (matplotlib PNGs): the learned templates, inputs with their
reconstructions and differences, and the validation accuracy over training."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402


def save_templates(templates: np.ndarray, path: str) -> None:
    """`[M, t, t, 1]` templates in [0, 1] as a grid, one titled panel per template."""
    m = len(templates)
    cols = int(math.ceil(math.sqrt(m)))
    rows = int(math.ceil(m / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows))
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i < m:
            ax.imshow(templates[i, ..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"template {i}", fontsize=8)
    fig.suptitle("learned part templates")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_reconstructions(images: np.ndarray, reconstructions: np.ndarray, path: str) -> None:
    """Rows of input / reconstruction / |difference| for `[N, H, W, 1]` images in [0, 1]."""
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.0), squeeze=False)
    names = ("input", "reconstruction", "|difference|")
    panels = (images, reconstructions, np.abs(images - reconstructions))
    for row, (name, values) in enumerate(zip(names, panels, strict=True)):
        for j in range(n):
            ax = axes[row, j]
            ax.imshow(values[j, ..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def validation_curve(run_dir: str, tag: str) -> list[tuple[int, float]]:
    """`(step, value)` of a validation scalar from the run's TensorBoard events."""
    acc = event_accumulator.EventAccumulator(
        os.path.join(run_dir, "validation"), size_guidance={"tensors": 0}
    )
    acc.Reload()
    if tag not in acc.Tags()["tensors"]:
        return []
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def save_accuracy_curve(run_dir: str, path: str, target: float = 0.987) -> None:
    """Validation k-means accuracy (prior and posterior presences) against training steps, with
    the paper's figure as a dashed line."""
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for kind in ("prior", "posterior"):
        curve = validation_curve(run_dir, f"{kind}_kmeans_accuracy")
        if curve:
            steps, values = zip(*curve, strict=True)
            ax.plot(steps, 100 * np.asarray(values), marker="o", label=f"{kind} presences")
    ax.axhline(100 * target, linestyle="--", color="gray", label=f"paper {100 * target:.1f}%")
    ax.set_xlabel("training step (batch 128)")
    ax.set_ylabel("validation accuracy, 10-cluster k-means (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

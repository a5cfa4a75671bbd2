"""Pictures of a SCAE run (matplotlib PNGs): the learned templates, inputs with their
reconstructions and differences, and the validation accuracy over training."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common import summaries  # noqa: E402


def _show(ax, image: np.ndarray) -> None:
    """`[H, W, 1]` in grey or `[H, W, 3]` in colour, values clipped to [0, 1]."""
    image = np.clip(image, 0.0, 1.0)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")


def save_templates(templates: np.ndarray, path: str) -> None:
    """`[M, t, t, 1]` templates in [0, 1] as a grid, one titled panel per template."""
    m = len(templates)
    cols = int(math.ceil(math.sqrt(m)))
    rows = int(math.ceil(m / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows))
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i < m:
            _show(ax, templates[i])
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
            _show(ax, values[j])
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_accuracy_curve(run_dirs: str | dict[str, str], path: str, target: float = 0.987) -> None:
    """Validation k-means accuracy (prior and posterior presences) against training steps, with
    the paper's figure as a dashed line and each curve's last value written beside it.

    Args:
      run_dirs: a run folder, or `label -> run folder` for several runs (one colour per run;
        prior presences solid, posterior dotted).
      path: the PNG to write.
      target: the paper's accuracy (fraction).
    """
    runs = {"": run_dirs} if isinstance(run_dirs, str) else run_dirs
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    finals = []  # (last step, last value, colour) of every curve, labelled after the loop
    for i, (label, run_dir) in enumerate(runs.items()):
        for kind, style in (("prior", "-"), ("posterior", ":")):
            curve = summaries.validation_curve(run_dir, f"{kind}_kmeans_accuracy")
            if not curve:
                continue
            steps, values = zip(*curve, strict=True)
            percent = 100 * np.asarray(values)
            name = f"{label}, {kind} presences" if label else f"{kind} presences"
            ax.plot(steps, percent, style, marker="o", color=f"C{i}", label=name)
            finals.append((steps[-1], percent[-1], f"C{i}"))
    text_y = -np.inf
    for step, value, colour in sorted(finals, key=lambda f: f[1]):
        text_y = max(value, text_y + 4.0)  # labels at least 4 points apart
        ax.annotate(f"{value:.1f}", (step, value), xytext=(step * 1.02, text_y), textcoords="data",
                    fontsize=8, color=colour, ha="left", va="center")  # fmt: skip
    if finals:
        ax.set_xlim(right=max(f[0] for f in finals) * 1.1)
    ax.axhline(100 * target, linestyle="--", color="gray", label=f"paper {100 * target:.1f}%")
    ax.set_xlabel("training step (batch 128)")
    ax.set_ylabel("validation accuracy, 10-cluster k-means (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_tsne(
    features: np.ndarray,
    labels: np.ndarray,
    path: str,
    max_points: int = 2000,
    perplexity: float = 50.0,
    seed: int = 0,
    what: str = "posterior presences",
) -> None:
    """A 2-D t-SNE (scikit-learn, perplexity 50 as in the reference code's evaluation) of
    `[N, K]` features, coloured by the true digit; a fixed random subset of `max_points`.

    Raises:
      ValueError: fewer than 5 points.
    """
    from sklearn.manifold import TSNE

    if len(features) < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {len(features)}.")
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(features))[:max_points]
    x, y = np.asarray(features, np.float64)[keep], np.asarray(labels)[keep]
    perplexity = min(perplexity, (len(x) - 1) / 3)
    embedded = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    fig, ax = plt.subplots(figsize=(6.5, 6.0))
    cmap = plt.get_cmap("tab10")
    for digit in np.unique(y):
        sel = y == digit
        ax.scatter(*embedded[sel].T, s=5, color=cmap(int(digit) % 10), label=str(digit))
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(f"t-SNE of {len(x)} test images' {what}")
    ax.legend(title="digit", markerscale=3, fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_presences(
    images: np.ndarray, prior: np.ndarray, posterior: np.ndarray, labels: np.ndarray, path: str
) -> None:
    """Per example (a row): the input and its object capsules' prior presences and posterior
    masses as viridis strips over the K capsules (0 to 1, shared colour bar)."""
    n, k = prior.shape
    fig, axes = plt.subplots(
        n, 3, figsize=(2 + 0.35 * k * 2, 1.1 * n), squeeze=False,
        gridspec_kw={"width_ratios": [1, 0.3 * k, 0.3 * k]},
    )  # fmt: skip
    mappable = None
    for i in range(n):
        _show(axes[i, 0], images[i])
        axes[i, 0].set_ylabel(f"digit {labels[i]}", fontsize=8)
        for j, (name, values) in enumerate((("prior", prior), ("posterior", posterior)), 1):
            mappable = axes[i, j].imshow(values[i][None], cmap="viridis", vmin=0, vmax=1)
            axes[i, j].set_yticks([])
            axes[i, j].set_xticks(range(0, k, max(1, k // 8)))
            if i == 0:
                axes[i, j].set_title(f"{name} presence per object capsule", fontsize=9)
        axes[i, 0].set_xticks([])
        axes[i, 0].set_yticks([])
    axes[-1, 1].set_xlabel("object capsule")
    axes[-1, 2].set_xlabel("object capsule")
    fig.colorbar(mappable, ax=axes[:, 1:].ravel().tolist(), fraction=0.02)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_object_reconstructions(
    images: np.ndarray, per_object: np.ndarray, prior: np.ndarray, path: str
) -> None:
    """Per example (a row): the input, then what each object capsule draws (`[N, K, H, W, 1]`
    from `SCAE.object_reconstructions`), titled with its prior presence; capsules of presence
    at least 0.5 are framed in orange."""
    n, k = per_object.shape[:2]
    fig, axes = plt.subplots(n, k + 1, figsize=(0.9 * (k + 1), 1.05 * n), squeeze=False)
    for i in range(n):
        _show(axes[i, 0], images[i])
        axes[i, 0].set_ylabel("input" if i == 0 else "", fontsize=7)
        for j in range(k):
            ax = axes[i, j + 1]
            _show(ax, per_object[i, j])
            ax.set_title(f"{prior[i, j]:.2f}", fontsize=6, pad=1)
            if prior[i, j] >= 0.5:
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:orange")
                    spine.set_linewidth(2)
            if i == n - 1:
                ax.set_xlabel(f"capsule {j}", fontsize=6)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("what each object capsule draws (title: its prior presence)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

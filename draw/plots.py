"""Pictures of DRAW: the canvas after every step, with the read (red) and write (green)
windows drawn as boxes, as TensorBoard images, PNG grids and an animated GIF (the figure DRAW
is known for, Gregor et al. 2015, Figs. 1, 6-7).

Canvases are shown as Bernoulli means `sigmoid(c_t)`, upsampled `scale` times (nearest
neighbour) so that 28-pixel digits are large enough to see; a box spans the outermost filter
centres of its window (`common.attention.filterbank_window`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from common import attention, summaries

READ_COLOUR = (255, 60, 60)
WRITE_COLOUR = (60, 220, 60)


def window_boxes(params: attention.FilterbankParams | None, glimpse_size: int):
    """`[T, N, 4]` boxes `(x_min, y_min, x_max, y_max)` in pixels, or None."""
    if params is None:
        return None
    return attention.filterbank_window(params, glimpse_size).numpy()


def render_frames(
    probs: np.ndarray,
    read_boxes: np.ndarray | None = None,
    write_boxes: np.ndarray | None = None,
    scale: int = 4,
) -> np.ndarray:
    """Grey canvases `[T, N, H, W]` in [0, 1] -> RGB uint8 `[T, N, H*scale, W*scale, 3]` with
    the boxes of step t (`[T, N, 4]`, pixels) drawn on frame t."""
    probs = np.asarray(probs)
    steps, num, height, width = probs.shape
    grey = (np.clip(probs, 0, 1) * 255).astype(np.uint8)
    frames = np.empty([steps, num, height * scale, width * scale, 3], np.uint8)
    for t in range(steps):
        for n in range(num):
            img = Image.fromarray(grey[t, n]).resize((width * scale, height * scale), Image.NEAREST)
            img = img.convert("RGB")
            pen = ImageDraw.Draw(img)
            for boxes, colour in ((read_boxes, READ_COLOUR), (write_boxes, WRITE_COLOUR)):
                if boxes is None:
                    continue
                x0, y0, x1, y1 = ((np.asarray(boxes[t, n]) + 0.5) * scale).tolist()
                pen.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=colour)
            frames[t, n] = np.asarray(img)
    return frames


def tile(images: np.ndarray, columns: int, gap: int = 2) -> np.ndarray:
    """`[N, h, w, 3]` uint8 -> one `[rows*(h+gap)-gap, columns*(w+gap)-gap, 3]` image, row-major,
    on a mid-grey background."""
    num, h, w, c = images.shape
    rows = -(-num // columns)
    out = np.full([rows * (h + gap) - gap, columns * (w + gap) - gap, c], 128, np.uint8)
    for i in range(num):
        r, col = divmod(i, columns)
        out[r * (h + gap) : r * (h + gap) + h, col * (w + gap) : col * (w + gap) + w] = images[i]
    return out


def shown_steps(num_steps: int, count: int = 8) -> list[int]:
    """`count` 0-based steps spread evenly over `num_steps`, always ending with the last."""
    return sorted({int(round(s)) for s in np.linspace(0, num_steps - 1, min(count, num_steps))})


def _to_summary(image: np.ndarray) -> tf.Tensor:
    return tf.convert_to_tensor(image[None].astype(np.float32) / 255.0)


def steps_with_windows(x: tf.Tensor, out, model, scale: int = 3) -> tf.Tensor:
    """TensorBoard image `[1, h, w, 3]`: one row per example; the input, then the canvas at
    several steps with that step's read and write boxes."""
    steps = shown_steps(model.num_steps)
    probs = tf.sigmoid(out.canvas_logits).numpy()
    reads = window_boxes(out.windows.read, model.read_size)
    writes = window_boxes(out.windows.write, model.write_size)
    frames = render_frames(
        probs[steps],
        None if reads is None else reads[steps],
        None if writes is None else writes[steps],
        scale,
    )  # [S, N, h, w, 3]
    inputs = render_frames(np.asarray(x)[None], scale=scale)  # [1, N, h, w, 3]
    table = np.concatenate([inputs, frames], 0).transpose(1, 0, 2, 3, 4)  # [N, 1 + S, ...]
    return _to_summary(tile(table.reshape(-1, *table.shape[2:]), 1 + len(steps)))


def generation_steps(gen, model, scale: int = 3) -> tf.Tensor:
    """TensorBoard image: one row per sample, the canvas at several steps with write boxes."""
    steps = shown_steps(model.num_steps)
    probs = tf.sigmoid(gen.canvas_logits).numpy()
    writes = window_boxes(gen.write_windows, model.write_size)
    frames = render_frames(probs[steps], None, None if writes is None else writes[steps], scale)
    table = frames.transpose(1, 0, 2, 3, 4)
    return _to_summary(tile(table.reshape(-1, *table.shape[2:]), len(steps)))


def save_step_grids(frames: np.ndarray, directory: str, columns: int) -> list[str]:
    """One PNG per step, `step_<t>.png` (1-based t), each a grid of all samples at step t.

    Args:
      frames: `[T, N, h, w, 3]` uint8 (`render_frames`).
    """
    os.makedirs(directory, exist_ok=True)
    paths = []
    for t, frame in enumerate(frames):
        path = os.path.join(directory, f"step_{t + 1:03d}.png")
        Image.fromarray(tile(frame, columns)).save(path)
        paths.append(path)
    return paths


def save_gif(
    frames: np.ndarray, path: str, columns: int, frame_ms: int = 80, hold_ms: int = 1500
) -> str:
    """An animated GIF of the canvas being drawn: frame t is the grid of all samples at step t;
    the last frame is held for `hold_ms`; loops forever."""
    images = [Image.fromarray(tile(frame, columns)) for frame in frames]
    durations = [frame_ms] * (len(images) - 1) + [hold_ms]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=False
    )
    return path


def save_strip(frames: np.ndarray, steps: Sequence[int], path: str) -> str:
    """A PNG with one row per sample and one column per step in `steps` (0-based), each column
    titled with its 1-based step number."""
    table = frames[list(steps)].transpose(1, 0, 2, 3, 4)
    grid = tile(table.reshape(-1, *table.shape[2:]), len(steps))
    header = Image.new("RGB", (grid.shape[1], 16), (255, 255, 255))
    pen = ImageDraw.Draw(header)
    width = table.shape[3] + 2  # frame width plus the gap of `tile`
    for column, t in enumerate(steps):
        pen.text((column * width + 4, 2), f"step {t + 1}", fill=(0, 0, 0))
    image = Image.new("RGB", (grid.shape[1], grid.shape[0] + 16))
    image.paste(header, (0, 0))
    image.paste(Image.fromarray(grid), (0, 16))
    image.save(path)
    return path


def save_validation_curves(
    run_dirs: dict[str, str], path: str, reference: dict[str, float] | None = None
) -> str:
    """A PNG of the validation negative ELBO (nats) over training steps, one line per run
    (`label -> run folder`), each point labelled with its value; `reference` adds dashed
    horizontal lines (e.g. the paper's figures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, run_dir in run_dirs.items():
        steps, values = zip(*summaries.validation_curve(run_dir, "negative_elbo"), strict=True)
        ax.plot(steps, values, marker="o", label=label)
        ax.annotate(f"{values[-1]:.1f}", (steps[-1], values[-1]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)  # fmt: skip
    for label, value in (reference or {}).items():
        ax.axhline(value, linestyle="--", color="grey", linewidth=1)
        ax.annotate(f"{label}: {value}", (0, value), textcoords="offset points", xytext=(4, 3),
                    fontsize=8, color="grey", xycoords=("axes fraction", "data"))  # fmt: skip
    ax.set_xlabel("training step (batch 100)")
    ax.set_ylabel("validation negative ELBO (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

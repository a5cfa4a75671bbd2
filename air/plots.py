"""Pictures of AIR runs: glimpse boxes drawn on canvases, one colour per step, and the count
confusion matrix as an image with its counts."""

from __future__ import annotations

import numpy as np

STEP_COLOURS = np.array(
    [[1, 0, 0], [0, 1, 0], [0.2, 0.4, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], np.float32
)
_CONFUSION_CELL = 24  # pixels per cell of the confusion-matrix image


def _box_pixels(z_where: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """`(top, left, bottom, right)` pixel rows/cols (inclusive) of a `z_where` window."""
    s_x, s_y, t_x, t_y = (float(v) for v in z_where)
    cx, cy = (t_x + 1) * (width - 1) / 2, (t_y + 1) * (height - 1) / 2
    hx, hy = s_x * (width - 1) / 2, s_y * (height - 1) / 2
    clip = lambda v, n: int(np.clip(round(v), 0, n - 1))
    return clip(cy - hy, height), clip(cx - hx, width), clip(cy + hy, height), clip(cx + hx, width)


def draw_boxes(images: np.ndarray, z_where: np.ndarray, z_pres: np.ndarray) -> np.ndarray:
    """Draws the window of every present step in its colour (`STEP_COLOURS`).

    Args:
      images: `[B, H, W, 1 or 3]` in [0, 1].
      z_where: `[B, N, 4]`.
      z_pres: `[B, N]` in {0, 1}.

    Returns:
      `[B, H, W, 3]` float32 RGB copies with 1-pixel box outlines.
    """
    images = np.asarray(images, np.float32)
    rgb = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images.copy()
    _, height, width, _ = rgb.shape
    for b in range(rgb.shape[0]):
        for t in range(z_where.shape[1]):
            if z_pres[b, t] < 0.5:
                continue
            colour = STEP_COLOURS[t % len(STEP_COLOURS)]
            top, left, bottom, right = _box_pixels(z_where[b, t], height, width)
            rgb[b, top, left : right + 1] = colour
            rgb[b, bottom, left : right + 1] = colour
            rgb[b, top : bottom + 1, left] = colour
            rgb[b, top : bottom + 1, right] = colour
    return rgb


def confusion_image(confusion: np.ndarray) -> np.ndarray:
    """`[T, P]` counts -> `[1, T*c, P*c, 3]` image of the row-normalized matrix
    (rows: true count, columns: inferred count; brighter = more)."""
    confusion = np.asarray(confusion, np.float64)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    cells = np.kron(rows, np.ones([_CONFUSION_CELL, _CONFUSION_CELL]))
    cells[::_CONFUSION_CELL, :] = 0.5  # grid lines
    cells[:, ::_CONFUSION_CELL] = 0.5
    rgb = np.stack([cells, cells, 0.2 * np.ones_like(cells)], axis=-1)
    return rgb[None].astype(np.float32)

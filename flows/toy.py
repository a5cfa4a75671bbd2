"""2-D toy targets for normalizing flows, and their pictures.

Densities to fit by maximum likelihood, each with a stateless sampler:
- `two_moons`: two interleaved half circles with Gaussian noise;
- `eight_gaussians`: an equal mixture of 8 isotropic Gaussians on a circle (exact density);
- `checkerboard`: uniform on the 8 dark cells of a 4 x 4 board on [-2, 2]^2 (exact density);
- `pinwheel`: 5 curved arms (Johnson et al. 2016, "Composing graphical models with neural
  networks", sec. 5: radial std 0.3, tangential std 0.05, rate 0.25).

Unnormalized energies U1-U4 of Rezende & Mohamed (2015), Table 1 and Fig. 3, with
p(z) = exp(-U(z)) / Z, to fit by reverse KL:
  w1(z) = sin(2 pi z1 / 4), w2(z) = 3 exp(-((z1 - 1) / 0.6)^2 / 2),
  w3(z) = 3 sigmoid((z1 - 1) / 0.3),
  U1 = ((|z| - 2) / 0.4)^2 / 2 - log(exp(-((z1 - 2) / 0.6)^2 / 2) + exp(-((z1 + 2) / 0.6)^2 / 2)),
  U2 = ((z2 - w1) / 0.4)^2 / 2,
  U3 = -log(exp(-((z2 - w1) / 0.35)^2 / 2) + exp(-((z2 - w1 + w2) / 0.35)^2 / 2)),
  U4 = -log(exp(-((z2 - w1) / 0.4)^2 / 2) + exp(-((z2 - w1 + w3) / 0.35)^2 / 2)).
Deviation: U2-U4 do not grow along z1, so exp(-U) has an infinite integral on R^2 and the reverse
KL is unbounded below (q gains entropy by spreading along z1 for free). As the paper's figures
show them on [-4, 4]^2, `energy` adds a soft wall `((|z1| - 4)_+ / 0.2)^2 / 2` to U2-U4
(`confine=False` gives the formulas as printed); Z is then finite and `log_normalizer` computes
it by quadrature, so the reverse KL can be reported in nats.

Symbols: B batch (points), G grid points per axis.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

DENSITIES = ("two_moons", "eight_gaussians", "checkerboard", "pinwheel")
ENERGIES = ("u1", "u2", "u3", "u4")
TARGETS = DENSITIES + ENERGIES
EXACT_DENSITIES = ("eight_gaussians", "checkerboard")

PLOT_LIMIT = 4.0  # Pictures show [-4, 4]^2 (Rezende & Mohamed, Fig. 3).
ENERGY_WALL = 4.0  # U2-U4 are confined to |z1| <~ 4 ...
ENERGY_WALL_SCALE = 0.2  # ... by a quadratic wall of this width.
# Quadrature of log Z: [-6, 6]^2 holds the ring of U1 (radius 2, width 0.4) and the walls with a
# margin of 10 wall widths; 1201 points per axis resolve the narrowest feature (std 0.35) with
# ~35 points per std, so the midpoint rule is exact to far below float32 resolution.
LOG_Z_LIMIT = 6.0
LOG_Z_SIZE = 1201

TWO_MOONS_NOISE = 0.1  # std of the noise, before the x2 scaling
EIGHT_GAUSSIANS_RADIUS = 2.5
EIGHT_GAUSSIANS_STD = 0.25
PINWHEEL_ARMS = 5
PINWHEEL_RADIAL_STD = 0.3
PINWHEEL_TANGENTIAL_STD = 0.05
PINWHEEL_RATE = 0.25
PINWHEEL_SCALE = 2.0


def _check(name: str, allowed: tuple[str, ...]) -> None:
    if name not in allowed:
        raise ValueError(f"Unknown target {name!r}; expected one of {', '.join(allowed)}.")


def _seeds(seed, n: int) -> list[tf.Tensor]:
    """`n` independent stateless seeds from one."""
    seed = tf.convert_to_tensor(seed)
    return [tf.random.experimental.stateless_fold_in(seed, i) for i in range(n)]


def sample(name: str, num: int, seed, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Draws `num` points of the density `name`, deterministically given `seed`.

    Args:
      name: one of `DENSITIES`.
      num: B (a Python int or scalar tensor).
      seed: stateless seed, int `[2]`.
      dtype: float dtype of the result.

    Returns:
      `[B, 2]`.

    Raises:
      ValueError: for an unknown name (energies have no sampler).
    """
    _check(name, DENSITIES)
    s = _seeds(seed, 4)
    shape = tf.stack([num])
    if name == "two_moons":
        t = tf.random.stateless_uniform(shape, s[0], 0.0, math.pi, dtype)
        upper = tf.random.stateless_uniform(shape, s[1], dtype=dtype) < 0.5
        # Upper moon (cos t, sin t); lower moon (1 - cos t, 1/2 - sin t); centred at (1/2, 1/4).
        x = tf.where(upper, tf.cos(t), 1 - tf.cos(t)) - 0.5
        y = tf.where(upper, tf.sin(t), 0.5 - tf.sin(t)) - 0.25
        points = tf.stack([x, y], -1)
        noise = tf.random.stateless_normal(tf.stack([num, 2]), s[2], dtype=dtype)
        points += TWO_MOONS_NOISE * noise
        return 2.0 * points
    if name == "eight_gaussians":
        k = tf.random.stateless_uniform(shape, s[0], 0, 8, tf.int32)
        angle = tf.cast(k, dtype) * (math.pi / 4)
        centres = EIGHT_GAUSSIANS_RADIUS * tf.stack([tf.cos(angle), tf.sin(angle)], -1)
        noise = tf.random.stateless_normal(tf.stack([num, 2]), s[1], dtype=dtype)
        return centres + EIGHT_GAUSSIANS_STD * noise
    if name == "checkerboard":
        # Cell (i, j), i, j in {0..3}, covers [i - 2, i - 1] x [j - 2, j - 1]; dark: i + j even.
        cell = tf.random.stateless_uniform(shape, s[0], 0, 8, tf.int32)
        j = cell // 2
        i = 2 * (cell % 2) + j % 2  # i + j even.
        corner = tf.cast(tf.stack([i, j], -1), dtype) - 2.0
        return corner + tf.random.stateless_uniform(tf.stack([num, 2]), s[1], dtype=dtype)
    # Pinwheel: arm k; radial r = 1 + 0.3 e1, tangential t = 0.05 e2; the point (r, t) is rotated
    # by 2 pi k / K + rate * exp(r).
    k = tf.random.stateless_uniform(shape, s[0], 0, PINWHEEL_ARMS, tf.int32)
    e = tf.random.stateless_normal(tf.stack([num, 2]), s[1], dtype=dtype)
    r = 1.0 + PINWHEEL_RADIAL_STD * e[:, 0]
    t = PINWHEEL_TANGENTIAL_STD * e[:, 1]
    angle = tf.cast(k, dtype) * (2 * math.pi / PINWHEEL_ARMS) + PINWHEEL_RATE * tf.exp(r)
    c, s_ = tf.cos(angle), tf.sin(angle)
    return PINWHEEL_SCALE * tf.stack([c * r - s_ * t, s_ * r + c * t], -1)


def log_density(name: str, x) -> tf.Tensor:
    """The exact normalized log-density of `eight_gaussians` or `checkerboard` at `x: [B, 2]`.

    Returns:
      `[B]`; `-inf` outside the support of `checkerboard`.

    Raises:
      ValueError: for a density without a closed form.
    """
    _check(name, EXACT_DENSITIES)
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    if name == "eight_gaussians":
        angles = tf.range(8, dtype=dtype) * (math.pi / 4)
        centres = EIGHT_GAUSSIANS_RADIUS * tf.stack([tf.cos(angles), tf.sin(angles)], -1)  # [8, 2]
        sq = tf.reduce_sum(tf.square(x[:, None, :] - centres), -1)  # [B, 8]
        var = EIGHT_GAUSSIANS_STD**2
        log_n = -sq / (2 * var) - tf.math.log(tf.constant(2 * math.pi * var, dtype))
        return tf.reduce_logsumexp(log_n, -1) - math.log(8.0)
    cell = tf.floor(x) + 2.0  # [B, 2]
    inside = tf.reduce_all((cell >= 0) & (cell <= 3), -1)
    dark = tf.math.floormod(cell[:, 0] + cell[:, 1], 2.0) == 0
    return tf.where(inside & dark, tf.constant(-math.log(8.0), dtype), tf.constant(-np.inf, dtype))


def _gauss(a):
    return -0.5 * tf.square(a)


def energy(name: str, z, confine: bool = True) -> tf.Tensor:
    """U(z) of Rezende & Mohamed (2015), Table 1, at `z: [B, 2]` (module docstring).

    Args:
      name: one of `ENERGIES`.
      z: `[B, 2]`.
      confine: add the soft wall at |z1| = 4 to U2-U4 (module docstring).

    Returns:
      `[B]`.

    Raises:
      ValueError: for an unknown name.
    """
    _check(name, ENERGIES)
    z = tf.convert_to_tensor(z)
    z1, z2 = z[:, 0], z[:, 1]
    w1 = tf.sin(2 * math.pi * z1 / 4)
    if name == "u1":
        ring = -_gauss((tf.norm(z, axis=-1) - 2) / 0.4)
        modes = tf.stack([_gauss((z1 - 2) / 0.6), _gauss((z1 + 2) / 0.6)], -1)
        return ring - tf.reduce_logsumexp(modes, -1)
    if name == "u2":
        u = -_gauss((z2 - w1) / 0.4)
    elif name == "u3":
        w2 = 3 * tf.exp(_gauss((z1 - 1) / 0.6))
        u = -tf.reduce_logsumexp(
            tf.stack([_gauss((z2 - w1) / 0.35), _gauss((z2 - w1 + w2) / 0.35)], -1), -1
        )
    else:
        w3 = 3 * tf.sigmoid((z1 - 1) / 0.3)
        u = -tf.reduce_logsumexp(
            tf.stack([_gauss((z2 - w1) / 0.4), _gauss((z2 - w1 + w3) / 0.35)], -1), -1
        )
    if confine:
        u -= _gauss(tf.nn.relu(tf.abs(z1) - ENERGY_WALL) / ENERGY_WALL_SCALE)
    return u


def grid(limit: float, size: int) -> tuple[np.ndarray, float]:
    """Cell centres of a `size x size` grid on [-limit, limit]^2 and the cell area.

    Returns:
      `(points [G * G, 2] float64, area)`; point `i * G + j` has y index i (bottom to top) and
      x index j (left to right), so `values.reshape(G, G)[::-1]` is an image with y upwards.
    """
    step = 2 * limit / size
    centres = -limit + step * (np.arange(size) + 0.5)
    xs, ys = np.meshgrid(centres, centres)  # [G, G]: rows follow y.
    return np.stack([xs.ravel(), ys.ravel()], -1), step * step


@functools.cache
def log_normalizer(
    name: str, limit: float = LOG_Z_LIMIT, size: int = LOG_Z_SIZE, confine: bool = True
) -> float:
    """log Z = log of the integral of exp(-U) over [-limit, limit]^2 (midpoint rule, float64).

    With the wall (`confine=True`) exp(-U) < 1e-20 everywhere outside [-6, 6]^2 for every
    energy (U >= 50 there), so this is log Z on R^2 to float64 precision.
    """
    points, area = grid(limit, size)
    u = energy(name, tf.constant(points, tf.float64), confine).numpy()
    return float(np.log(area) + np.logaddexp.reduce(-u))


def target_log_prob_fn(name: str) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """A normalized log-density of the target when one is known, else None.

    Energies are normalized with `log_normalizer`; `two_moons` and `pinwheel` have none.
    """
    if name in EXACT_DENSITIES:
        return functools.partial(log_density, name)
    if name in ENERGIES:
        log_z = log_normalizer(name)
        return lambda z: -energy(name, z) - tf.cast(log_z, z.dtype)
    return None


# -- pictures ------------------------------------------------------------------------------------


def density_on_grid(
    log_prob_fn: Callable[[tf.Tensor], tf.Tensor], limit: float = PLOT_LIMIT, size: int = 128
) -> np.ndarray:
    """exp(log_prob_fn) on the grid as an image `[G, G]` with y upwards (non-finite -> 0)."""
    points, _ = grid(limit, size)
    log_p = np.asarray(log_prob_fn(tf.constant(points, tf.float32)), np.float64)
    p = np.exp(np.where(np.isfinite(log_p), log_p, -np.inf))
    return p.reshape(size, size)[::-1]


def histogram(samples, limit: float = PLOT_LIMIT, size: int = 128) -> np.ndarray:
    """2-D histogram of `samples: [B, 2]` as an image `[G, G]` with y upwards (non-finite
    samples are dropped)."""
    samples = np.asarray(samples, np.float64)
    samples = samples[np.all(np.isfinite(samples), -1)]
    counts, _, _ = np.histogram2d(
        samples[:, 1], samples[:, 0], bins=size, range=[[-limit, limit], [-limit, limit]]
    )
    return counts[::-1]


def colorize(image: np.ndarray) -> np.ndarray:
    """`[H, W]` non-negative values -> `[H, W, 3]` float32 RGB in [0, 1] (viridis, max -> 1)."""
    from matplotlib import colormaps

    top = float(np.max(image)) if np.size(image) else 0.0
    scaled = image / top if top > 0 else np.zeros_like(image)
    return colormaps["viridis"](scaled)[..., :3].astype(np.float32)


def save_figure(path: str, panels: dict[str, np.ndarray], title: str = "") -> None:
    """Saves `[G, G]` images (densities or histograms on [-4, 4]^2) side by side as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    extent = [-PLOT_LIMIT, PLOT_LIMIT, -PLOT_LIMIT, PLOT_LIMIT]
    for ax, (name, image) in zip(axes[0], panels.items(), strict=True):
        ax.imshow(image, extent=extent, cmap="viridis", interpolation="nearest")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

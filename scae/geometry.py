"""Capsule poses: from a network's 6 raw numbers to a 2-D affine transform, and back.

A part or object capsule predicts 6 unconstrained numbers `(u_sx, u_sy, u_theta, u_shear, u_tx,
u_ty)`, mapped (Kosiorek et al. 2019, sec. 2 and the reference code's
`capsules/math_ops.py:geometric_transform`) to

    s_x = sigmoid(u_sx) + 0.01,  s_y = sigmoid(u_sy) + 0.01,  theta = 2 pi u_theta,
    shear = tanh(5 u_shear),     t_x = tanh(5 u_tx),          t_y = tanh(5 u_ty),

and to the affine map `A = [[a, b, t_x], [c, d, t_y]]` of normalized image coordinates in
[-1, 1] with, writing `co = cos theta`, `si = sin theta`,

    a = s_x co + shear s_y si,   b = -s_x si + shear s_y co,   c = s_y si,   d = s_y co,

i.e. `[[a, b], [c, d]] = [[s_x, shear s_y], [0, s_y]] R(theta)`: a rotation, then scales and a
shear (`decompose` inverts it). A similarity transform
uses `s_x` for both axes and no shear. `to_homogeneous` gives the 3x3 form
`[[a, b, t_x], [c, d, t_y], [0, 0, 1]]` in which poses compose by matrix products: an
object-viewer pose OV and an object-part pose OP give the part's vote `OV @ OP` (paper eq. 5).

Symbols: `...` any batch shape (B, K, M).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf

MIN_SCALE = 0.01  # s = sigmoid(u) + MIN_SCALE: a template never shrinks to nothing
TANH_GAIN = 5.0  # shear and translation = tanh(TANH_GAIN * u)


class PoseParams(NamedTuple):
    """Geometric parameters of a pose, each `[...]`: scales (> 0), rotation in radians, shear
    and translation (normalized coordinates, in (-1, 1) when produced by `raw_to_params`)."""

    scale_x: tf.Tensor
    scale_y: tf.Tensor
    theta: tf.Tensor
    shear: tf.Tensor
    trans_x: tf.Tensor
    trans_y: tf.Tensor


def raw_to_params(raw: tf.Tensor) -> PoseParams:
    """`[..., 6]` raw network outputs -> `PoseParams` (the nonlinearities of the module
    docstring).

    Raises:
      ValueError: the last axis is not 6.
    """
    raw = tf.convert_to_tensor(raw)
    if raw.shape[-1] != 6:
        raise ValueError(f"A raw pose has 6 numbers on its last axis; got shape {raw.shape}.")
    u_sx, u_sy, u_theta, u_shear, u_tx, u_ty = tf.unstack(raw, axis=-1)
    return PoseParams(
        scale_x=tf.sigmoid(u_sx) + MIN_SCALE,
        scale_y=tf.sigmoid(u_sy) + MIN_SCALE,
        theta=2.0 * math.pi * u_theta,
        shear=tf.tanh(TANH_GAIN * u_shear),
        trans_x=tf.tanh(TANH_GAIN * u_tx),
        trans_y=tf.tanh(TANH_GAIN * u_ty),
    )


def params_to_affine(params: PoseParams, similarity: bool = False) -> tf.Tensor:
    """`PoseParams` -> `[..., 2, 3]` affine matrices `[[a, b, t_x], [c, d, t_y]]`.

    With `similarity`, `s_x` scales both axes and the shear is ignored.
    """
    co, si = tf.cos(params.theta), tf.sin(params.theta)
    if similarity:
        s = params.scale_x
        a, b, c, d = s * co, -s * si, s * si, s * co
    else:
        sx, sy, shear = params.scale_x, params.scale_y, params.shear
        a, b = sx * co + shear * sy * si, -sx * si + shear * sy * co
        c, d = sy * si, sy * co
    rows = [tf.stack([a, b, params.trans_x], -1), tf.stack([c, d, params.trans_y], -1)]
    return tf.stack(rows, axis=-2)


def raw_to_affine(raw: tf.Tensor, similarity: bool = False) -> tf.Tensor:
    """`[..., 6]` raw network outputs -> `[..., 2, 3]` affine matrices."""
    return params_to_affine(raw_to_params(raw), similarity)


def decompose(affine: tf.Tensor) -> PoseParams:
    """The `PoseParams` of `[..., 2, 3]` (or `[..., 3, 3]`) non-similarity affine matrices: the
    inverse of `params_to_affine` for positive scales.

    From the second row, `s_y = |(c, d)|` and `theta = atan2(c, d)`; then `s_x = a co - b si`
    and `shear = (a si + b co) / s_y`.
    """
    affine = tf.convert_to_tensor(affine)
    a, b, tx = affine[..., 0, 0], affine[..., 0, 1], affine[..., 0, 2]
    c, d, ty = affine[..., 1, 0], affine[..., 1, 1], affine[..., 1, 2]
    sy = tf.sqrt(c**2 + d**2)
    theta = tf.atan2(c, d)
    co, si = tf.cos(theta), tf.sin(theta)
    return PoseParams(
        scale_x=a * co - b * si,
        scale_y=sy,
        theta=theta,
        shear=(a * si + b * co) / sy,
        trans_x=tx,
        trans_y=ty,
    )


def to_homogeneous(affine: tf.Tensor) -> tf.Tensor:
    """`[..., 2, 3]` -> `[..., 3, 3]` with last row `[0, 0, 1]`."""
    affine = tf.convert_to_tensor(affine)
    last = tf.broadcast_to(
        tf.constant([0.0, 0.0, 1.0], affine.dtype), tf.concat([tf.shape(affine)[:-2], [3]], 0)
    )
    return tf.concat([affine, last[..., tf.newaxis, :]], axis=-2)


def compose(first: tf.Tensor, second: tf.Tensor) -> tf.Tensor:
    """`first @ second` of `[..., 3, 3]` homogeneous transforms (apply `second`, then `first`):
    the vote `OV @ OP` of the paper's eq. 5 is `compose(OV, OP)`."""
    return tf.linalg.matmul(first, second)


def apply(affine: tf.Tensor, points: tf.Tensor) -> tf.Tensor:
    """Applies `[..., 2, 3]` (or `[..., 3, 3]`) affine maps to `[..., P, 2]` points `(x, y)`."""
    affine = tf.convert_to_tensor(affine)
    linear, shift = affine[..., :2, :2], affine[..., :2, 2]
    return tf.linalg.matmul(points, linear, transpose_b=True) + shift[..., tf.newaxis, :]

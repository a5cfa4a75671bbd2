"""The Object Capsule Autoencoder's decoder and part likelihood (Kosiorek et al. 2019, sec. 2.2,
eqs. 5-6; the reference code's `capsules/capsule.py`), and SCAE's sparsity losses (sec. 2.3).

Each object capsule k reads its row of the Set Transformer's output and predicts, with MLPs of
its own (weights not shared between capsules; the reference code's two `BatchMLP`s: features ->
128 -> 32 capsule parameters, then those and a constant 1 -> 128 -> outputs): its presence
logit, an object-viewer pose OV_k (6 raw numbers), a small input-dependent deformation of its M
object-part poses, one presence logit and one scale per vote. The object-part poses are
`OP_{k,m} = static_{k,m} + dynamic_{k,m}` (raw numbers; the static part is learned, the dynamic
part is penalized by L2), and part m's vote from object k is the composition `OV_k OP_{k,m}`
(paper eq. 5), whose top two rows (6 numbers) are compared with part m's affine pose.

Part likelihood (paper eq. 6): every present part is a mixture over the K objects' votes, plus
a "dummy" component that explains parts no object claims (the reference code's, with log density
and mixing logit both `-2 log 10`):

    log p(x_m) = logsumexp_k [ log pi_{k,m} + sum_dims log N(x_m | mu_{k,m}, lambda_{k,m}^2) ],

weighted by the part's presence `d_m` and summed over parts. `pi_{k,m}` is `a_k a_{k,m}` as the
reference code uses it (unnormalized), or normalized over all votes as in the paper
(`normalize=True`).

Symbols: B batch, K object capsules, M parts, C classes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import sonnet as snt
import tensorflow as tf

from common import precision
from scae import geometry

DUMMY_LOG_VALUE = -2.0 * np.log(10.0)  # the dummy component's log density and mixing logit


class ObjectCapsules(NamedTuple):
    """What `CapsuleDecoder` predicts.

    Attributes:
      presence_logit: `[B, K]` object presence logits (noise included when asked for).
      ov_raw: `[B, K, 6]` raw object-viewer poses.
      op_raw: `[B, K, M, 6]` raw object-part poses (static + dynamic).
      op_dynamic: `[B, K, M, 6]` the input-dependent part of `op_raw`.
      vote_presence_logit: `[B, K, M]` per-vote presence logits.
      vote_scale: `[B, K, M]` per-vote standard deviations (> 0).
    """

    presence_logit: tf.Tensor
    ov_raw: tf.Tensor
    op_raw: tf.Tensor
    op_dynamic: tf.Tensor
    vote_presence_logit: tf.Tensor
    vote_scale: tf.Tensor

    def votes(self) -> tf.Tensor:
        """`[B, K, M, 6]` vote poses: the top two rows of `OV_k OP_{k,m}` (paper eq. 5)."""
        ov = geometry.to_homogeneous(geometry.raw_to_affine(self.ov_raw))[:, :, tf.newaxis]
        op = geometry.to_homogeneous(geometry.raw_to_affine(self.op_raw))
        vote = geometry.compose(ov, op)  # [B, K, M, 3, 3]
        return flatten_pose(vote)

    def vote_presence(self) -> tf.Tensor:
        """`[B, K, M]` vote presence probabilities `a_k a_{k,m}`."""
        return tf.sigmoid(self.presence_logit)[..., tf.newaxis] * tf.sigmoid(
            self.vote_presence_logit
        )


def flatten_pose(affine: tf.Tensor) -> tf.Tensor:
    """`[..., 2 or 3, 3]` -> `[..., 6]`: the top two rows, row-major."""
    shape = tf.shape(affine)
    return tf.reshape(affine[..., :2, :], tf.concat([shape[:-2], [6]], 0))


class _PerCapsuleLinear(snt.Module):
    """`[B, K, D] -> [B, K, N]` with separate weights for every capsule k."""

    def __init__(self, num_capsules: int, output_size: int, with_bias: bool = True, name=None):
        super().__init__(name=name)
        self.num_capsules, self.output_size, self.with_bias = num_capsules, output_size, with_bias

    @snt.once
    def _initialize(self, inputs: tf.Tensor):
        fan_in = int(inputs.shape[-1])
        init = snt.initializers.TruncatedNormal(stddev=1.0 / np.sqrt(fan_in))
        self.w = tf.Variable(
            init([self.num_capsules, fan_in, self.output_size], inputs.dtype), name="w"
        )
        if self.with_bias:
            self.b = tf.Variable(
                tf.zeros([self.num_capsules, self.output_size], inputs.dtype), name="b"
            )

    def __call__(self, inputs: tf.Tensor) -> tf.Tensor:
        self._initialize(inputs)
        out = tf.einsum("bkd,kdn->bkn", inputs, self.w)
        return out + self.b if self.with_bias else out


class CapsuleDecoder(snt.Module):
    """`[B, K, D]` object-capsule features -> `ObjectCapsules` (module docstring).

    Each capsule: if `params_size`, a hidden layer of `hidden_size` ReLU units and a linear map to
    `params_size` capsule parameters, to which a constant 1 is appended (the reference code's
    "capsule exists" input); then a hidden layer of `hidden_size` ReLU units and one linear map
    (no bias on the dynamic object-part output, so that the learned static poses stay separate)
    to `M * 6 + 6 + 1 + M + M` numbers; biases are added to the other outputs.
    """

    def __init__(
        self,
        num_capsules: int,
        num_parts: int,
        hidden_size: int = 128,
        noise_scale: float = 4.0,
        params_size: int | None = 32,
        name: str | None = None,
    ):
        """Raises:
        ValueError: a size < 1 (`params_size` may be None: no parameter layer).
        """
        super().__init__(name=name)
        if min(num_capsules, num_parts, hidden_size, params_size or 1) < 1:
            raise ValueError(
                f"num_capsules, num_parts, hidden_size, params_size must be >= 1; got "
                f"{num_capsules}, {num_parts}, {hidden_size}, {params_size}."
            )
        self.num_capsules, self.num_parts, self.noise_scale = num_capsules, num_parts, noise_scale
        m = num_parts
        self._sizes = [m * 6, 6, 1, m, m]  # dynamic OP, OV, presence, vote presences, vote scales
        self.params_size = params_size
        if params_size:
            self._params_hidden = _PerCapsuleLinear(num_capsules, hidden_size, name="params_hidden")
            self._params = _PerCapsuleLinear(num_capsules, params_size, name="params")
        self._hidden = _PerCapsuleLinear(num_capsules, hidden_size, name="hidden")
        self._out = _PerCapsuleLinear(num_capsules, sum(self._sizes), with_bias=False, name="out")
        self.bias = tf.Variable(tf.zeros([num_capsules, sum(self._sizes[1:])]), name="bias")
        self.op_static = tf.Variable(
            tf.random.stateless_normal([num_capsules, num_parts, 6], [1, 2]) * 0.1, name="op_static"
        )

    def _mlps(self, features: tf.Tensor) -> tf.Tensor:
        if self.params_size:
            params = self._params(tf.nn.relu(self._params_hidden(features)))
            features = tf.concat([params, tf.ones_like(params[..., :1])], axis=-1)
        return self._out(tf.nn.relu(self._hidden(features)))

    def __call__(self, features: tf.Tensor, noise_seed: tf.Tensor | None = None) -> ObjectCapsules:
        """Args:
        features: `[B, K, D]`, row k for capsule k (the Set Transformer's output).
        noise_seed: stateless seed of the `U(-noise_scale/2, noise_scale/2)` noise on both
          presence logits (training); None: no noise.
        """
        # The per-capsule MLPs in the mixed-precision policy's dtype; the rest in float32.
        out = precision.run(self._mlps, features)  # [B, K, P]
        m = self.num_parts
        op_dyn = tf.reshape(out[..., : m * 6], [-1, self.num_capsules, m, 6])
        rest = out[..., m * 6 :] + self.bias
        ov, logit, vote_logit, scale = tf.split(rest, self._sizes[1:], axis=-1)
        logit = logit[..., 0]
        if noise_seed is not None and self.noise_scale:
            seeds = tf.random.experimental.stateless_split(noise_seed, 2)
            noise = lambda x, s: (
                (tf.random.stateless_uniform(tf.shape(x), s) - 0.5) * self.noise_scale
            )
            logit += noise(logit, seeds[0])
            vote_logit += noise(vote_logit, seeds[1])
        return ObjectCapsules(
            presence_logit=logit,
            ov_raw=ov,
            op_raw=self.op_static + op_dyn,
            op_dynamic=op_dyn,
            vote_presence_logit=vote_logit,
            vote_scale=tf.nn.softplus(scale + 0.5) + 0.01,  # the reference code's vote scale
        )


class PartLikelihood(NamedTuple):
    """`part_log_likelihood`'s result.

    Attributes:
      log_prob: `[B]` `sum_m d_m log p(x_m)` in nats (paper eq. 6).
      posterior: `[B, M, K]` each part's posterior over the objects (the dummy dropped).
      prior_presence: `[B, K]` `u_k = max_m a_k a_{k,m}`.
      posterior_mass: `[B, K]` `v_k = sum_m posterior_{m,k} / M`.
    """

    log_prob: tf.Tensor
    posterior: tf.Tensor
    prior_presence: tf.Tensor
    posterior_mass: tf.Tensor


def part_log_likelihood(
    part_poses: tf.Tensor,
    part_presence: tf.Tensor,
    votes: tf.Tensor,
    vote_presence: tf.Tensor,
    vote_scale: tf.Tensor,
    normalize: bool = False,
) -> PartLikelihood:
    """The part likelihood of paper eq. 6 with the reference code's dummy component.

    Args:
      part_poses: `[B, M, 6]` parts' affine poses (`flatten_pose` of their matrices).
      part_presence: `[B, M]` `d_m`.
      votes: `[B, K, M, 6]`.
      vote_presence: `[B, K, M]` `a_k a_{k,m}`.
      vote_scale: `[B, K, M]` standard deviations.
      normalize: divide the mixing weights by `sum_{k,m} a_k a_{k,m}` (the paper) instead of
        using them as they are (the reference code).
    """
    diff = (part_poses[:, tf.newaxis] - votes) / vote_scale[..., tf.newaxis]  # [B, K, M, 6]
    log_normal = tf.reduce_sum(
        -0.5 * tf.square(diff) - tf.math.log(vote_scale[..., tf.newaxis]) - 0.5 * np.log(2 * np.pi),
        axis=-1,
    )  # [B, K, M]
    log_mix = tf.math.log(vote_presence)
    if normalize:
        log_mix -= tf.math.log(tf.reduce_sum(vote_presence, axis=[1, 2], keepdims=True))
    dummy = tf.fill(tf.shape(log_mix[:, :1]), tf.constant(DUMMY_LOG_VALUE, log_mix.dtype))
    joint = tf.concat([log_mix + log_normal, 2.0 * dummy], axis=1)  # [B, K + 1, M]
    log_p = tf.reduce_logsumexp(joint, axis=1)  # [B, M]
    posterior = tf.transpose(tf.nn.softmax(joint, axis=1)[:, :-1], [0, 2, 1])  # [B, M, K]
    return PartLikelihood(
        log_prob=tf.reduce_sum(part_presence * log_p, axis=-1),
        posterior=posterior,
        prior_presence=tf.reduce_max(vote_presence, axis=-1),
        posterior_mass=tf.reduce_mean(posterior, axis=1),
    )


class Sparsity(NamedTuple):
    """The four sparsity terms of paper sec. 2.3 (all scalars; how they enter the loss is in the
    docstring of `sparsity_losses`)."""

    prior_within: tf.Tensor
    prior_between: tf.Tensor
    posterior_within: tf.Tensor
    posterior_between: tf.Tensor


def _entropy(p: tf.Tensor, axis: int = -1) -> tf.Tensor:
    return -tf.reduce_sum(p * tf.math.log(p + 1e-8), axis=axis)


def sparsity_losses(
    prior_presence: tf.Tensor, posterior_mass: tf.Tensor, num_classes: int = 10
) -> Sparsity:
    """SCAE's sparsity terms (paper sec. 2.3; the reference code's `l2` prior and `entropy`
    posterior types).

    With `u = prior_presence [B, K]` and `v = posterior_mass [B, K]`:
    - `prior_within = mean_b (sum_k u_bk - K / C)^2` (each example uses about K / C capsules);
    - `prior_between = mean_k (sum_b u_bk - B / C)^2` (each capsule is used in about B / C
      examples);
    - `posterior_within = mean_b H(v_b / sum_k v_bk)` (to be minimized: few objects per example);
    - `posterior_between = H(sum_b v_b / sum_bk v_bk)` (to be maximized: every object used).
    The training loss adds the first three (weighted) and subtracts the fourth.
    """
    b = tf.cast(tf.shape(prior_presence)[0], prior_presence.dtype)
    k = tf.cast(tf.shape(prior_presence)[1], prior_presence.dtype)
    within = tf.reduce_mean(tf.square(tf.reduce_sum(prior_presence, 1) - k / num_classes))
    between = tf.reduce_mean(tf.square(tf.reduce_sum(prior_presence, 0) - b / num_classes))
    per_example = posterior_mass / (tf.reduce_sum(posterior_mass, 1, keepdims=True) + 1e-8)
    total = tf.reduce_sum(posterior_mass, 0)
    return Sparsity(
        prior_within=within,
        prior_between=between,
        posterior_within=tf.reduce_mean(_entropy(per_example)),
        posterior_between=_entropy(total / (tf.reduce_sum(total) + 1e-8)),
    )

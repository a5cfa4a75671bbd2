"""Set Transformer (Lee et al. 2019, "Set Transformer", sec. 3), the OCAE encoder of Stacked
Capsule Autoencoders (Kosiorek et al. 2019, sec. 2.2), with presence-weighted attention.

- Multi-head attention: `Att(Q, K, V) = softmax(Q K^T / sqrt(d_k) + log p) V` per head, where
  `p` is the presence of each key (a part). The `log p` term makes the attention weight of key j
  proportional to `p_j exp(q . k_j / sqrt(d_k))`: a part of presence 0 gets weight exactly 0 and
  cannot influence any output, and a half-present part counts half. (The reference code
  subtracts `1e32 (1 - p)` from the logits instead, which on continuous presences collapses the
  attention onto the most present part.) Keras' `MultiHeadAttention` takes only boolean masks,
  hence this small implementation.
- MAB(X, Y) = LN(H + rFF(H)), H = LN(X + Att(X, Y, Y)) (Lee et al. eq. 6); SAB(X) = MAB(X, X),
  with H multiplied by each part's presence before its layer norm (the reference code's
  `SelfAttention`), so an absent part's own row carries nothing forward.
- Pooling with one learned seed vector per object capsule, `pooling=`:
  `"attention"` (the reference code's `SetTransformer`): the plain multi-head attention of the
  seeds over the parts, `Att(S, Z, Z)`, so each output is a presence-weighted mix of the parts;
  `"mab"` (Lee et al. eq. 11, PMA_k(Z) = MAB(S, Z)): adds the seed back and normalizes, so a
  constant seed term is part of every output.
- `SetTransformer`: a linear embedding, `num_layers` SABs, a linear map to `output_size`, then the
  pooling: `[B, M, D_in] -> [B, K, output_size]`, invariant to permutations of the parts.

Symbols: B batch, M parts (set size), K seeds (object capsules), D feature sizes.
"""

from __future__ import annotations

import numpy as np
import sonnet as snt
import tensorflow as tf

# Logit of a key whose presence is exactly 0: exp(-1e4) underflows to 0 in float32 and float64, so
# the key gets weight 0 (and zero gradient) unless every key of a row is absent (then the weights
# are uniform instead of NaN).
ABSENT_LOG_PRESENCE = -1e4


def log_presence(presence: tf.Tensor) -> tf.Tensor:
    """`log p` with `ABSENT_LOG_PRESENCE` where `p == 0`."""
    presence = tf.convert_to_tensor(presence)
    safe = tf.where(presence > 0, presence, tf.ones_like(presence))
    absent = tf.fill(tf.shape(presence), tf.constant(ABSENT_LOG_PRESENCE, presence.dtype))
    return tf.where(presence > 0, tf.math.log(safe), absent)


class MultiHeadAttention(snt.Module):
    """Presence-weighted multi-head attention (module docstring): `[B, Nq, Dq], [B, Nk, Dk]
    -> [B, Nq, output_size]`."""

    def __init__(self, num_heads: int, key_size: int, output_size: int, name: str | None = None):
        super().__init__(name=name)
        if min(num_heads, key_size, output_size) < 1:
            raise ValueError(
                f"num_heads, key_size and output_size must be >= 1; got {num_heads}, {key_size}, "
                f"{output_size}."
            )
        self.num_heads, self.key_size = num_heads, key_size
        size = num_heads * key_size
        self._q = snt.Linear(size, name="query")
        self._k = snt.Linear(size, name="key")
        self._v = snt.Linear(size, name="value")
        self._out = snt.Linear(output_size, name="output")

    def _split_heads(self, x: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(x)
        x = tf.reshape(x, [shape[0], shape[1], self.num_heads, self.key_size])
        return tf.transpose(x, [0, 2, 1, 3])  # [B, heads, N, d]

    def __call__(
        self, queries: tf.Tensor, keys: tf.Tensor, key_presence: tf.Tensor | None = None
    ) -> tf.Tensor:
        """Args:
        queries: `[B, Nq, Dq]`.
        keys: `[B, Nk, Dk]` (also the values).
        key_presence: `[B, Nk]` in [0, 1]; None: all present.
        """
        q = self._split_heads(self._q(queries))
        k = self._split_heads(self._k(keys))
        v = self._split_heads(self._v(keys))
        logits = tf.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(self.key_size)
        if key_presence is not None:
            logits += log_presence(tf.cast(key_presence, logits.dtype))[:, None, None, :]
        attended = tf.einsum("bhqk,bhkd->bhqd", tf.nn.softmax(logits, axis=-1), v)
        shape = tf.shape(attended)
        merged = tf.reshape(
            tf.transpose(attended, [0, 2, 1, 3]),
            [shape[0], shape[2], self.num_heads * self.key_size],
        )
        return self._out(merged)


class MAB(snt.Module):
    """Multihead attention block MAB(X, Y) (Lee et al. eq. 6):
    `[B, Nx, D], [B, Ny, D] -> [B, Nx, D]`."""

    def __init__(self, size: int, num_heads: int = 1, name: str | None = None):
        super().__init__(name=name)
        key_size = -(-size // num_heads)  # ceil, as the reference code's per-head size
        self._attention = MultiHeadAttention(num_heads, key_size, size, name="attention")
        self._norm_1 = snt.LayerNorm(-1, create_scale=True, create_offset=True, name="norm_1")
        self._norm_2 = snt.LayerNorm(-1, create_scale=True, create_offset=True, name="norm_2")
        self._ff = snt.nets.MLP([2 * size, size], name="feedforward")

    def __call__(
        self,
        x: tf.Tensor,
        y: tf.Tensor,
        y_presence: tf.Tensor | None = None,
        x_presence: tf.Tensor | None = None,
    ):
        """`x_presence` `[B, Nx]`: multiplies the residual sum of row i (SAB: `x` is `y`)."""
        h = x + self._attention(x, y, y_presence)
        if x_presence is not None:
            h *= tf.cast(x_presence, h.dtype)[..., tf.newaxis]
        h = self._norm_1(h)
        return self._norm_2(h + self._ff(h))


class SetTransformer(snt.Module):
    """`[B, M, D_in]` parts (with presences) -> `[B, K, output_size]`, permutation invariant."""

    def __init__(
        self,
        num_seeds: int,
        output_size: int,
        hidden_size: int = 16,
        num_layers: int = 3,
        num_heads: int = 1,
        pooling: str = "attention",
        name: str | None = None,
    ):
        """Defaults: the reference code's MNIST encoder (embedding 16, 3 SABs, 1 head, plain
        attention pooling); the reference maps to 256 before pooling (`output_size`).

        Raises:
          ValueError: any size < 1 (`num_layers` may be 0), or `pooling` not `attention` / `mab`.
        """
        super().__init__(name=name)
        if min(num_seeds, output_size, hidden_size, num_heads) < 1 or num_layers < 0:
            raise ValueError(
                "num_seeds, output_size, hidden_size, num_heads must be >= 1, num_layers >= 0."
            )
        if pooling not in ("attention", "mab"):
            raise ValueError(f"pooling must be 'attention' or 'mab', got {pooling!r}.")
        self.pooling = pooling
        self.num_seeds, self.output_size = num_seeds, output_size
        self._embed = snt.Linear(hidden_size, name="embed")
        self._layers = [MAB(hidden_size, num_heads, name=f"sab_{i}") for i in range(num_layers)]
        self._project = snt.Linear(output_size, name="project")
        if pooling == "mab":
            self._pool = MAB(output_size, num_heads, name="pma")
        else:
            self._pool = MultiHeadAttention(
                num_heads, -(-output_size // num_heads), output_size, name="pma"
            )
        self.seeds = tf.Variable(
            tf.random.stateless_normal([num_seeds, output_size], [0, 1]) / np.sqrt(output_size),
            name="seeds",
        )

    def encode(self, parts: tf.Tensor, presence: tf.Tensor | None = None) -> tf.Tensor:
        """The permutation-equivariant part: `[B, M, D_in] -> [B, M, output_size]`."""
        h = self._embed(parts)
        for layer in self._layers:
            h = layer(h, h, presence, presence)
        return self._project(h)

    def __call__(self, parts: tf.Tensor, presence: tf.Tensor | None = None) -> tf.Tensor:
        """Args:
          parts: `[B, M, D_in]`.
          presence: `[B, M]` part presences in [0, 1]; None: all present.

        Returns:
          `[B, K, output_size]`.
        """
        h = self.encode(parts, presence)
        seeds = tf.broadcast_to(
            tf.cast(self.seeds, h.dtype)[tf.newaxis],
            [tf.shape(h)[0], self.num_seeds, self.output_size],
        )
        return self._pool(seeds, h, presence)

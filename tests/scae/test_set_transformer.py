"""scae/set_transformer.py: attention against NumPy, permutation invariance of the pooled
outputs (equivariance of the encoder), and absent parts that cannot influence anything."""

import numpy as np
import tensorflow as tf

from scae import set_transformer

B, M, D = 3, 6, 5


class AttentionTest(tf.test.TestCase):
    def test_presence_weighted_attention_against_numpy(self):
        att = set_transformer.MultiHeadAttention(num_heads=2, key_size=4, output_size=3)
        rng = np.random.default_rng(0)
        q = rng.normal(size=(B, 2, D)).astype(np.float32)
        k = rng.normal(size=(B, M, D)).astype(np.float32)
        p = rng.uniform(size=(B, M)).astype(np.float32)
        out = att(tf.constant(q), tf.constant(k), tf.constant(p)).numpy()
        proj = lambda layer, x: x @ layer.w.numpy() + layer.b.numpy()
        heads = lambda x: x.reshape(B, -1, 2, 4).transpose(0, 2, 1, 3)
        qh, kh, vh = heads(proj(att._q, q)), heads(proj(att._k, k)), heads(proj(att._v, k))
        # Weights proportional to p_j exp(q . k_j / sqrt(d)).
        w = p[:, None, None, :] * np.exp(np.einsum("bhqd,bhkd->bhqk", qh, kh) / 2.0)
        w /= w.sum(-1, keepdims=True)
        merged = np.einsum("bhqk,bhkd->bhqd", w, vh).transpose(0, 2, 1, 3).reshape(B, 2, 8)
        self.assertAllClose(out, proj(att._out, merged), atol=1e-5)

    def test_log_presence(self):
        got = set_transformer.log_presence(tf.constant([0.5, 0.0, 1.0])).numpy()
        self.assertAllClose(got, [np.log(0.5), -1e4, 0.0])


class SetTransformerTest(tf.test.TestCase):
    POOLING = "attention"

    def setUp(self):
        super().setUp()
        self.model = set_transformer.SetTransformer(
            num_seeds=4, output_size=7, num_heads=2, pooling=self.POOLING
        )
        rng = np.random.default_rng(1)
        self.x = tf.constant(rng.normal(size=(B, M, D)), tf.float32)
        self.p = tf.constant(rng.uniform(0.1, 1.0, size=(B, M)), tf.float32)

    def test_pooled_outputs_are_invariant_to_permuting_the_parts(self):
        out = self.model(self.x, self.p)
        self.assertEqual(out.shape, [B, 4, 7])
        perm = np.random.default_rng(2).permutation(M)
        permuted = self.model(tf.gather(self.x, perm, axis=1), tf.gather(self.p, perm, axis=1))
        self.assertAllClose(out, permuted, atol=1e-5)

    def test_encoder_is_equivariant(self):
        enc = self.model.encode(self.x, self.p)
        perm = np.random.default_rng(3).permutation(M)
        permuted = self.model.encode(
            tf.gather(self.x, perm, axis=1), tf.gather(self.p, perm, axis=1)
        )
        self.assertAllClose(tf.gather(enc, perm, axis=1), permuted, atol=1e-5)

    def test_parts_of_presence_zero_do_not_change_the_outputs(self):
        p = self.p.numpy()
        p[:, [1, 4]] = 0.0
        p = tf.constant(p)
        x_other = self.x.numpy()
        x_other[:, [1, 4]] = np.random.default_rng(4).normal(size=(B, 2, D)) * 100
        out = self.model(self.x, p)
        self.assertAllEqual(out, self.model(tf.constant(x_other), p))
        # Nor do they get any gradient.
        x = tf.Variable(self.x)
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(self.model(x, p))
        grad = tape.gradient(total, x).numpy()
        self.assertAllEqual(grad[:, [1, 4]], np.zeros([B, 2, D]))
        self.assertGreater(np.abs(grad[:, 0]).sum(), 0.0)
        # Dropping them gives the same outputs as keeping them absent.
        keep = [0, 2, 3, 5]
        dropped = self.model(tf.gather(self.x, keep, axis=1), tf.gather(p, keep, axis=1))
        self.assertAllClose(out, dropped, atol=1e-5)

    def test_bad_sizes(self):
        with self.assertRaises(ValueError):
            set_transformer.SetTransformer(num_seeds=0, output_size=4)
        with self.assertRaisesRegex(ValueError, "pooling"):
            set_transformer.SetTransformer(num_seeds=2, output_size=4, pooling="mean")

    def test_one_present_part(self):
        """With a single present part every key weight sits on it: plain attention pooling
        returns the same vector (the part's projected value) for every seed; the MAB pooling adds
        each seed back, so its outputs differ between seeds."""
        p = np.zeros([B, M], np.float32)
        p[:, 2] = 0.7
        out = self.model(self.x, tf.constant(p)).numpy()  # [B, K, 7]
        pool = self.model._pool
        if self.POOLING == "attention":
            h = self.model.encode(self.x, tf.constant(p))[:, 2:3]  # [B, 1, 7]
            expected = pool._out(pool._v(h)).numpy()  # one head-merged value, projected
            self.assertAllClose(out, np.broadcast_to(expected, out.shape), atol=1e-5)
        else:
            self.assertGreater(np.abs(out[:, 0] - out[:, 1]).max(), 1e-3)


class MABPoolingSetTransformerTest(SetTransformerTest):
    POOLING = "mab"


if __name__ == "__main__":
    tf.test.main()

"""scae/objects.py against NumPy: votes as OV @ OP, the part likelihood of paper eq. 6 with the
dummy component, and the sparsity losses on hand-computed tensors."""

import numpy as np
import tensorflow as tf
from scipy import special

from scae import objects

B, K, M = 2, 3, 4


def _np_affine3(raw):
    """3x3 homogeneous matrix from 6 raw numbers, written out in NumPy (scae/geometry.py)."""
    sig = lambda u: 1 / (1 + np.exp(-u))
    sx, sy = sig(raw[0]) + 0.01, sig(raw[1]) + 0.01
    th, sh, tx, ty = (
        2 * np.pi * raw[2],
        np.tanh(5 * raw[3]),
        np.tanh(5 * raw[4]),
        np.tanh(5 * raw[5]),
    )
    c, s = np.cos(th), np.sin(th)
    return np.array(
        [[sx * c + sh * sy * s, -sx * s + sh * sy * c, tx], [sy * s, sy * c, ty], [0, 0, 1]]
    )


class CapsuleDecoderTest(tf.test.TestCase):
    PARAMS_SIZE = 3

    def setUp(self):
        super().setUp()
        self.decoder = objects.CapsuleDecoder(
            num_capsules=K, num_parts=M, hidden_size=8, params_size=self.PARAMS_SIZE
        )
        self.features = tf.random.stateless_normal([B, K, 5], [1, 2])

    def test_votes_are_ov_times_op(self):
        caps = self.decoder(self.features)
        votes = caps.votes().numpy()
        for b in range(B):
            for k in range(K):
                ov = _np_affine3(caps.ov_raw.numpy()[b, k])
                for m in range(M):
                    expected = (ov @ _np_affine3(caps.op_raw.numpy()[b, k, m]))[:2].ravel()
                    self.assertAllClose(votes[b, k, m], expected, atol=1e-5)

    def test_capsules_have_their_own_weights(self):
        changed = self.features.numpy()
        changed[:, 1] += 3.0  # only capsule 1's input
        a, b = self.decoder(self.features), self.decoder(tf.constant(changed))
        for name in ("presence_logit", "ov_raw", "vote_scale"):
            x, y = getattr(a, name).numpy(), getattr(b, name).numpy()
            self.assertAllEqual(x[:, [0, 2]], y[:, [0, 2]], msg=name)
            self.assertNotAllClose(x[:, 1], y[:, 1], msg=name)
        self.assertTrue(np.all(a.vote_scale.numpy() > 0.01))
        self.assertAllClose(
            a.op_raw - a.op_dynamic, np.broadcast_to(self.decoder.op_static, a.op_raw.shape)
        )

    def test_presence_noise_only_with_a_seed(self):
        clean, again = self.decoder(self.features), self.decoder(self.features)
        self.assertAllEqual(clean.presence_logit, again.presence_logit)
        noisy = self.decoder(self.features, noise_seed=tf.constant([3, 3]))
        diff = (noisy.vote_presence_logit - clean.vote_presence_logit).numpy()
        self.assertAllInRange(diff, -2.0, 2.0)
        self.assertGreater(np.abs(diff).max(), 0.1)


class NoParamsLayerCapsuleDecoderTest(CapsuleDecoderTest):
    PARAMS_SIZE = None


class PartLikelihoodTest(tf.test.TestCase):
    def _inputs(self):
        rng = np.random.default_rng(0)
        return (
            rng.normal(size=(B, M, 6)) * 0.5,  # part poses
            rng.uniform(size=(B, M)),  # part presence d_m
            rng.normal(size=(B, K, M, 6)) * 0.5,  # votes
            rng.uniform(0.05, 1.0, size=(B, K, M)),  # a_k a_km
            rng.uniform(0.2, 2.0, size=(B, K, M)),  # scales
        )

    def _numpy(self, x, d, mu, a, lam, normalize):
        log_n = (
            -0.5 * ((x[:, None] - mu) / lam[..., None]) ** 2
            - np.log(lam[..., None])
            - 0.5 * np.log(2 * np.pi)
        ).sum(-1)  # [B, K, M]
        w = a / a.sum(axis=(1, 2), keepdims=True) if normalize else a
        dummy = np.full((B, 1, M), 2 * (-2 * np.log(10)))  # log density + mixing logit
        joint = np.concatenate([np.log(w) + log_n, dummy], axis=1)
        log_p = special.logsumexp(joint, axis=1)  # [B, M]
        posterior = special.softmax(joint, axis=1)[:, :-1].transpose(0, 2, 1)
        return (d * log_p).sum(-1), posterior

    def test_against_numpy_eq_6_both_mixing_conventions(self):
        x, d, mu, a, lam = self._inputs()
        for normalize in (False, True):
            got = objects.part_log_likelihood(*map(tf.constant, (x, d, mu, a, lam)), normalize)
            log_p, posterior = self._numpy(x, d, mu, a, lam, normalize)
            self.assertAllClose(got.log_prob, log_p)
            self.assertAllClose(got.posterior, posterior)
            self.assertAllClose(got.prior_presence, a.max(-1))
            self.assertAllClose(got.posterior_mass, posterior.mean(1))

    def test_a_part_on_a_confident_vote_belongs_to_its_object(self):
        x, d, mu, a, lam = self._inputs()
        mu[:, 2, 1] = x[:, 1]  # object 2's vote for part 1 is exact and sharp
        lam[:, 2, 1] = 0.01
        got = objects.part_log_likelihood(*map(tf.constant, (x, d, mu, a, lam)))
        self.assertAllClose(got.posterior[:, 1, 2], [1.0, 1.0], atol=1e-6)


class SparsityTest(tf.test.TestCase):
    def test_hand_computed_values(self):
        u = tf.constant([[1.0, 0.0, 0.5, 0.5], [0.0, 1.0, 0.0, 0.0]])  # B = 2, K = 4
        v = tf.constant([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
        s = objects.sparsity_losses(u, v, num_classes=2)  # K / C = 2, B / C = 1
        # Rows sum to 2 and 1: ((2 - 2)^2 + (1 - 2)^2) / 2 = 0.5.
        self.assertAllClose(s.prior_within, 0.5)
        # Columns sum to 1, 1, 0.5, 0.5: (0 + 0 + 0.25 + 0.25) / 4 = 0.125.
        self.assertAllClose(s.prior_between, 0.125)
        # Per example: H(0.5, 0.5) = log 2 and H(1) = 0 -> mean log(2) / 2.
        self.assertAllClose(s.posterior_within, np.log(2) / 2, atol=1e-6)
        # Aggregate (0.25, 0.25, 0, 0.5): H = 2 * 0.25 log 4 + 0.5 log 2 = 1.5 log 2.
        self.assertAllClose(s.posterior_between, 1.5 * np.log(2), atol=1e-6)


if __name__ == "__main__":
    tf.test.main()

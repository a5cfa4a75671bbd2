"""scae/geometry.py against NumPy: the pose nonlinearities, the affine matrix, its decomposition,
composition of homogeneous transforms and their action on points."""

import numpy as np
import tensorflow as tf

from scae import geometry


def _np_affine(sx, sy, theta, shear, tx, ty):
    """[[s_x, shear s_y], [0, s_y]] R(theta), then the translation."""
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    linear = np.array([[sx, shear * sy], [0.0, sy]]) @ rotation
    return np.concatenate([linear, [[tx], [ty]]], axis=1)


class GeometryTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.rng = np.random.default_rng(0)

    def test_raw_to_params_nonlinearities(self):
        raw = self.rng.normal(size=(5, 6))
        p = geometry.raw_to_params(tf.constant(raw))
        sigmoid = lambda u: 1 / (1 + np.exp(-u))
        self.assertAllClose(p.scale_x, sigmoid(raw[:, 0]) + 0.01)
        self.assertAllClose(p.scale_y, sigmoid(raw[:, 1]) + 0.01)
        self.assertAllClose(p.theta, 2 * np.pi * raw[:, 2])
        self.assertAllClose(p.shear, np.tanh(5 * raw[:, 3]))
        self.assertAllClose(p.trans_x, np.tanh(5 * raw[:, 4]))
        self.assertAllClose(p.trans_y, np.tanh(5 * raw[:, 5]))
        with self.assertRaisesRegex(ValueError, "6 numbers"):
            geometry.raw_to_params(tf.zeros([2, 4]))

    def test_affine_matches_rotation_then_scale_and_shear(self):
        raw = self.rng.normal(size=(7, 6))
        p = geometry.raw_to_params(tf.constant(raw))
        affine = geometry.params_to_affine(p).numpy()
        for i in range(7):
            expected = _np_affine(*(float(v[i]) for v in p))
            self.assertAllClose(affine[i], expected)

    def test_identity_and_similarity(self):
        one, zero = tf.ones([1], tf.float64), tf.zeros([1], tf.float64)
        identity = geometry.params_to_affine(geometry.PoseParams(one, one, zero, zero, zero, zero))
        self.assertAllClose(identity[0], np.eye(2, 3))
        p = geometry.raw_to_params(tf.constant(self.rng.normal(size=(4, 6))))
        similar = geometry.params_to_affine(p, similarity=True).numpy()
        for i in range(4):
            linear = similar[i, :, :2]  # a scaled rotation: L L^T = s^2 I, no shear
            self.assertAllClose(linear @ linear.T, float(p.scale_x[i]) ** 2 * np.eye(2))

    def test_decompose_round_trips(self):
        raw = self.rng.normal(size=(50, 6)) * [1, 1, 0.15, 0.2, 0.2, 0.2]  # |theta| < pi
        p = geometry.raw_to_params(tf.constant(raw))
        back = geometry.decompose(geometry.params_to_affine(p))
        for name, want, got in zip(p._fields, p, back, strict=True):
            self.assertAllClose(got, want, atol=1e-10, msg=name)
        # And from a homogeneous matrix.
        homogeneous = geometry.to_homogeneous(geometry.params_to_affine(p))
        self.assertAllClose(geometry.decompose(homogeneous).shear, p.shear, atol=1e-10)

    def test_compose_is_applying_in_sequence(self):
        first = geometry.to_homogeneous(geometry.raw_to_affine(self.rng.normal(size=(3, 6))))
        second = geometry.to_homogeneous(geometry.raw_to_affine(self.rng.normal(size=(3, 6))))
        points = tf.constant(self.rng.normal(size=(3, 10, 2)))
        composed = geometry.apply(geometry.compose(first, second), points)
        in_sequence = geometry.apply(first, geometry.apply(second, points))
        self.assertAllClose(composed, in_sequence)
        # Against NumPy homogeneous coordinates.
        h = np.concatenate([points.numpy(), np.ones([3, 10, 1])], -1)
        expected = np.einsum("bij,bpj->bpi", first.numpy() @ second.numpy(), h)[..., :2]
        self.assertAllClose(composed, expected)
        self.assertAllClose(
            geometry.to_homogeneous(tf.zeros([2, 5, 2, 3]))[..., 2, :],
            np.tile([0, 0, 1.0], [2, 5, 1]),
        )


if __name__ == "__main__":
    tf.test.main()

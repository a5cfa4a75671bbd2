"""scae/parts.py (the PCAE) against NumPy: attention pooling, template rendering under the
identity and a pure translation, and the per-pixel mixture likelihood (paper eq. 4)."""

import numpy as np
import tensorflow as tf
from scipy import special

from scae import geometry, parts


def _identity_poses(batch, num_parts):
    return tf.tile(tf.constant(np.eye(2, 3), tf.float32)[None, None], [batch, num_parts, 1, 1])


class AttentionPoolTest(tf.test.TestCase):
    def test_softmax_over_positions_weights_the_values(self):
        rng = np.random.default_rng(0)
        values = rng.normal(size=(2, 3, 4, 5, 7)).astype(np.float32)  # [B, h, w, M, D]
        logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
        out = parts.attention_pool(tf.constant(values), tf.constant(logits)).numpy()
        w = special.softmax(logits.reshape(2, 12, 5), axis=1)  # over positions
        expected = np.einsum("bpm,bpmd->bmd", w, values.reshape(2, 12, 5, 7))
        self.assertAllClose(out, expected, atol=1e-5)
        # Weights sum to one: a constant map pools to that constant.
        const = parts.attention_pool(tf.ones([2, 3, 4, 5, 7]) * 3.5, tf.constant(logits))
        self.assertAllClose(const, 3.5 * np.ones([2, 5, 7]), atol=1e-5)


class PartEncoderTest(tf.test.TestCase):
    def test_shapes_and_presence_noise_only_with_a_seed(self):
        encoder = parts.PartEncoder(num_parts=5, num_features=3, channels=(8, 8), strides=(2, 1))
        x = tf.random.stateless_uniform([64, 40, 40, 1], [1, 2])
        clean = encoder(x)
        self.assertEqual(clean.pose_raw.shape, [64, 5, 6])
        self.assertEqual(clean.presence_logit.shape, [64, 5])
        self.assertEqual(clean.features.shape, [64, 5, 3])
        self.assertAllEqual(encoder(x).presence_logit, clean.presence_logit)
        noisy = encoder(x, noise_seed=tf.constant([3, 4]))
        noise = (noisy.presence_logit - clean.presence_logit).numpy()
        self.assertAllInRange(noise, -2.0, 2.0)
        self.assertAllClose(noise.mean(), 0.0, atol=0.1)  # U(-2, 2): sd 1.15 / sqrt(320)
        self.assertAllEqual(noisy.pose_raw, clean.pose_raw)
        with self.assertRaisesRegex(ValueError, "num_parts"):
            parts.PartEncoder(num_parts=0)


class TemplateDecoderTest(tf.test.TestCase):
    def test_identity_pose_reproduces_the_template(self):
        decoder = parts.TemplateDecoder(num_parts=3, template_size=11, seed=1)
        rendered = decoder.render(_identity_poses(2, 3), (11, 11))
        expected = np.broadcast_to(decoder.templates.numpy()[None], [2, 3, 11, 11, 1])
        self.assertAllClose(rendered.templates, expected, atol=1e-6)
        self.assertAllClose(rendered.alpha_logits, np.zeros([2, 3, 11, 11]))

    def test_pure_translation_shifts_the_template(self):
        decoder = parts.TemplateDecoder(num_parts=2, template_size=11, seed=2)
        k = 3  # pixels to the right, and 2 down for the second part
        poses = np.tile(np.eye(2, 3), [1, 2, 1, 1])
        poses[0, 0, 0, 2] = 2 * k / 10  # t_x = 2 k / (W - 1)
        poses[0, 1, 1, 2] = 2 * 2 / 10
        rendered = decoder.render(tf.constant(poses, tf.float32), (11, 11)).templates.numpy()
        t = decoder.templates.numpy()[..., 0]
        right = np.zeros_like(t[0])
        right[:, k:] = t[0][:, :-k]
        down = np.zeros_like(t[1])
        down[2:, :] = t[1][:-2, :]
        self.assertAllClose(rendered[0, 0, ..., 0], right, atol=1e-5)
        self.assertAllClose(rendered[0, 1, ..., 0], down, atol=1e-5)

    def test_one_present_template_is_a_gaussian_likelihood(self):
        decoder = parts.TemplateDecoder(
            num_parts=1, template_size=8, output_scale=0.3, background=False, seed=3
        )
        poses = geometry.raw_to_affine(tf.random.stateless_normal([2, 1, 6], [5, 6]))
        rendered = decoder.render(poses, (16, 16))
        y = tf.random.stateless_uniform([2, 16, 16, 1], [7, 8])
        got = decoder.log_likelihood(y, rendered, presence_logit=tf.fill([2, 1], 20.0))
        mean = rendered.templates.numpy()[:, 0]
        closed = -0.5 * ((y.numpy() - mean) / 0.3) ** 2 - np.log(0.3 * np.sqrt(2 * np.pi))
        self.assertAllClose(got, closed.sum(axis=(1, 2, 3)), rtol=1e-5)

    def test_mixture_weights_are_presence_times_alpha_with_a_background(self):
        decoder = parts.TemplateDecoder(num_parts=2, template_size=6, seed=4)
        decoder.alpha_variables.assign(
            tf.random.stateless_normal(decoder.alpha_variables.shape, [1, 1])
        )
        decoder.background_mixing_raw.assign(0.7)
        decoder.background_intensity_raw.assign(-1.0)
        rendered = decoder.render(_identity_poses(1, 2), (6, 6))
        logit = tf.constant([[0.4, -1.3]])
        y = tf.random.stateless_uniform([1, 6, 6, 1], [2, 3])
        got = decoder.log_likelihood(y, rendered, logit).numpy()
        # NumPy: weights d_m exp(alpha_m) and exp(softplus(0.7)) for the background, normalized.
        d = 1 / (1 + np.exp(-logit.numpy()[0]))
        alpha = decoder.alpha_variables.numpy()[..., 0]  # identity pose: the maps themselves
        w = np.concatenate(
            [d[:, None, None] * np.exp(alpha), np.full([1, 6, 6], np.exp(np.log1p(np.exp(0.7))))]
        )
        w /= w.sum(0)
        means = np.concatenate(
            [decoder.templates.numpy()[..., 0], np.full([1, 6, 6], 1 / (1 + np.e))]
        )
        dens = np.exp(-0.5 * (y.numpy()[0, ..., 0] - means) ** 2) / np.sqrt(2 * np.pi)
        self.assertAllClose(got[0], np.log((w * dens).sum(0)).sum(), rtol=1e-5)
        recon = decoder.reconstruction(rendered, logit).numpy()[0, ..., 0]
        self.assertAllClose(recon, (w * means).sum(0), atol=1e-6)

    def test_every_variable_gets_a_gradient_through_the_pcae(self):
        encoder = parts.PartEncoder(num_parts=4, num_features=2, channels=(8, 8), strides=(2, 1))
        decoder = parts.TemplateDecoder(num_parts=4, template_size=5)
        x = tf.random.stateless_uniform([3, 20, 20, 1], [9, 9])
        with tf.GradientTape() as tape:
            caps = encoder(x, noise_seed=tf.constant([1, 2]))
            rendered = parts.render_poses(decoder, caps, (20, 20))
            loss = -tf.reduce_mean(decoder.log_likelihood(x, rendered, caps.presence_logit))
        variables = encoder.trainable_variables + decoder.trainable_variables
        grads = tape.gradient(loss, variables)
        for v, g in zip(variables, grads, strict=True):
            if "features" in v.name:
                continue
            self.assertIsNotNone(g, v.name)
            self.assertTrue(np.all(np.isfinite(g)), v.name)
        self.assertTrue(np.isfinite(float(loss)))

    def test_colour_scales_each_channel_of_each_part(self):
        # Bilinear resampling is linear per channel, so rendering coloured templates equals
        # colouring the rendered ones; the alpha maps are not coloured.
        decoder = parts.TemplateDecoder(num_parts=3, template_size=5, channels=3, colorize=True)
        plain = parts.TemplateDecoder(num_parts=3, template_size=5, channels=3, seed=0)
        features = tf.random.stateless_normal([2, 3, 4], [4, 4])
        poses = tf.constant(np.tile(np.eye(2, 3) * [[0.6], [0.8]], [2, 3, 1, 1]), tf.float32)
        coloured = decoder.render(poses, (9, 9), features)
        base = plain.render(poses, (9, 9))
        colours = decoder.colours(features).numpy()  # [2, 3, 3] in (0, 1)
        self.assertAllInRange(colours, 0.0, 1.0)
        self.assertAllClose(
            coloured.templates, base.templates * colours[:, :, None, None, :], atol=1e-6
        )
        self.assertAllClose(coloured.alpha_logits, base.alpha_logits)
        # Features of one example change only that example's colours.
        other = features.numpy()
        other[1] += 1.0
        again = decoder.render(poses, (9, 9), tf.constant(other)).templates.numpy()
        self.assertAllClose(again[0], coloured.templates[0])
        self.assertNotAllClose(again[1], coloured.templates[1])
        with self.assertRaisesRegex(ValueError, "features"):
            decoder.render(poses, (9, 9))

    def test_template_init_is_in_the_unit_interval_and_validated(self):
        init = parts._template_init(4, 5, 1, seed=0)
        self.assertEqual(init.shape, (4, 5, 5, 1))
        self.assertAllInRange(init, 0.0, 1.0)
        with self.assertRaisesRegex(ValueError, "orthogonal"):
            parts._template_init(30, 5, 1, seed=0)


if __name__ == "__main__":
    tf.test.main()

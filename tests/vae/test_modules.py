"""Tests for vae.modules: shapes, parameter counts, a NumPy re-derivation of log w."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from scipy import special

from vae import estimators, mlps, modules

B, K = 3, 4


def _dense(fan_in, fan_out):
    return fan_in * fan_out + fan_out


# Hand-computed from Burda sec. 5 (two heads per Gaussian: mean and log sigma).
_NUM_PARAMS = {
    1: dict(
        inference=_dense(784, 200) + _dense(200, 200) + 2 * _dense(200, 50),  # 217,300
        generative=_dense(50, 200) + _dense(200, 200) + _dense(200, 784),  # 207,984
    ),
    2: dict(
        inference=(
            _dense(784, 200)
            + _dense(200, 200)
            + 2 * _dense(200, 100)  # q(h1|x)
            + _dense(100, 100)
            + _dense(100, 100)
            + 2 * _dense(100, 50)  # q(h2|h1)
        ),  # 267,700
        generative=(
            _dense(100, 200)
            + _dense(200, 200)
            + _dense(200, 784)  # p(x|h1)
            + _dense(50, 100)
            + _dense(100, 100)
            + 2 * _dense(100, 100)  # p(h1|h2)
        ),  # 253,384
    ),
}


def _binary_images(seed, shape=(B, 28, 28, 1)):
    return (np.random.default_rng(seed).random(shape) > 0.5).astype(np.float32)


def _np_trunk(trunk, h):
    for layer in trunk.layers:
        h = np.tanh(h @ layer.w.numpy().astype(np.float64) + layer.b.numpy())
    return h


def _np_gaussian(mlp, h):
    t = _np_trunk(mlp.trunk, h)
    loc = t @ mlp.loc_layer.w.numpy().astype(np.float64) + mlp.loc_layer.b.numpy()
    log_scale = t @ mlp.log_scale_layer.w.numpy().astype(np.float64) + mlp.log_scale_layer.b.numpy()
    return loc, np.exp(log_scale)


def _np_gaussian_log_prob(z, loc, scale):
    return np.sum(-0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi), -1)


def _np_bernoulli_log_prob(x, mlp, h):
    t = _np_trunk(mlp.trunk, h)
    logits = t @ mlp.logits_layer.w.numpy().astype(np.float64) + mlp.logits_layer.b.numpy()
    # log sigmoid(l) = -log(1 + e^-l), log(1 - sigmoid(l)) = -log(1 + e^l).
    return np.sum(-x * np.logaddexp(0, -logits) - (1 - x) * np.logaddexp(0, logits), -1)


class ModulesTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        tf.random.set_seed(0)
        self.x = _binary_images(0)
        self.seed = tf.constant([3, 7], tf.int32)

    @parameterized.parameters(1, 2)
    def test_shapes_and_parameter_counts(self, layers):
        model = modules.make_model(layers)
        with self.assertRaises(ValueError):  # Variables are created lazily.
            _ = model.inference_variables
        out = model.log_weights(self.x, K, self.seed)
        for t in (out.log_w, out.log_px_given_z, out.log_pz, out.log_qz):
            self.assertEqual(t.shape, (K, B))
        self.assertEqual([z.shape for z in out.z], [(K, B, d) for d in model.latent_sizes])
        self.assertEqual(out.posterior.batch_shape, (B,))
        self.assertEqual(out.posterior.event_shape, (model.latent_sizes[0],))
        self.assertAllClose(out.log_w, out.log_px_given_z + out.log_pz - out.log_qz)
        count = lambda vs: sum(int(np.prod(v.shape)) for v in vs)
        self.assertEqual(count(model.inference_variables), _NUM_PARAMS[layers]["inference"])
        self.assertEqual(count(model.generative_variables), _NUM_PARAMS[layers]["generative"])
        # The two groups partition the trainable variables.
        ids = {id(v) for v in model.inference_variables + model.generative_variables}
        self.assertEqual(ids, {id(v) for v in model.trainable_variables})
        self.assertEqual(model.sample(5, self.seed).shape, (5, 784))
        self.assertEqual(model.reconstruct(self.x, self.seed).shape, (B, 784))
        for means in (model.posterior_mean(self.x), model.posterior_mean(self.x, 3, self.seed)):
            self.assertEqual([m.shape for m in means], [(B, d) for d in model.latent_sizes])
        # Flattened and image-shaped inputs agree.
        flat = model.log_weights(self.x.reshape(B, 784), K, self.seed)
        self.assertAllClose(flat.log_w, out.log_w)

    @parameterized.parameters(1, 2)
    def test_log_w_matches_numpy(self, layers):
        model = modules.make_model(layers, mlps.output_bias_from_mean(self.x.mean(0)))
        out = model.log_weights(self.x, K, self.seed)
        # The same stateless noise as the module draws (one device).
        seeds = tf.random.experimental.stateless_split(self.seed, num=layers)
        x = self.x.reshape(B, 784).astype(np.float64)
        h, zs, log_q = x, [], 0.0
        for i, (enc, d) in enumerate(zip(model.encoders, model.latent_sizes, strict=True)):
            eps = tf.random.stateless_normal([K, B, d], seeds[i]).numpy().astype(np.float64)
            loc, scale = _np_gaussian(enc, h)
            h = loc + scale * eps
            log_q = log_q + _np_gaussian_log_prob(h, loc, scale)
            zs.append(h)
        log_p = _np_gaussian_log_prob(zs[-1], 0.0, 1.0)
        if layers == 2:
            loc, scale = _np_gaussian(model.decoders[1], zs[1])
            log_p = log_p + _np_gaussian_log_prob(zs[0], loc, scale)
        log_px = _np_bernoulli_log_prob(x, model.decoders[0], zs[0])
        for i, z in enumerate(zs):
            self.assertAllClose(out.z[i], z, rtol=1e-4, atol=1e-4)
        self.assertAllClose(out.log_qz, log_q, rtol=1e-5, atol=1e-3)
        self.assertAllClose(out.log_pz, log_p, rtol=1e-5, atol=1e-3)
        self.assertAllClose(out.log_px_given_z, log_px, rtol=1e-5, atol=1e-3)
        self.assertAllClose(out.log_w, log_px + log_p - log_q, rtol=1e-5, atol=1e-3)

    @parameterized.parameters(1, 2)
    def test_seeds_and_tf_function(self, layers):
        model = modules.make_model(layers)
        a = model.log_weights(self.x, K, self.seed)
        b = model.log_weights(self.x, K, self.seed)
        c = model.log_weights(self.x, K, self.seed + 1)
        self.assertAllEqual(a.log_w, b.log_w)
        self.assertTrue(np.all(np.abs(a.log_w - c.log_w) > 0))

        @tf.function
        def graph_fn(x, seed):
            return model.log_weights(x, K, seed)

        g = graph_fn(tf.constant(self.x), self.seed)
        self.assertAllClose(g.log_w, a.log_w, rtol=1e-5)
        self.assertAllClose(g.posterior.mean(), a.posterior.mean(), rtol=1e-5)
        sample = tf.function(lambda s: model.sample(2, s))
        self.assertAllClose(sample(self.seed), model.sample(2, self.seed), rtol=1e-5)
        recon = tf.function(lambda x, s: model.reconstruct(x, s))
        self.assertAllClose(recon(self.x, self.seed), model.reconstruct(self.x, self.seed))
        means = tf.function(lambda x: model.posterior_mean(x))
        for got, want in zip(means(self.x), model.posterior_mean(self.x), strict=True):
            self.assertAllClose(got, want, rtol=1e-5, atol=1e-6)

    @parameterized.parameters(1, 2)
    def test_gradients_finite_for_every_variable(self, layers):
        model = modules.make_model(layers)
        model.log_weights(self.x, K, self.seed)  # Build.
        with tf.GradientTape() as tape:
            out = model.log_weights(self.x, K, self.seed)
            loss = -tf.reduce_mean(estimators.iwae_bound(out.log_w))
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g in zip(model.trainable_variables, grads, strict=True):
            self.assertIsNotNone(g, v.name)
            self.assertTrue(np.all(np.isfinite(g)), v.name)
            self.assertGreater(np.max(np.abs(g)), 0.0, v.name)

    def test_piwae_split_gradients(self):
        # Generative grads of IWAE_{MK} and inference grads of MIWAE(M, K).
        model = modules.make_model(1)
        model.log_weights(self.x, 4, self.seed)
        with tf.GradientTape(persistent=True) as tape:
            log_w = model.log_weights(self.x, 4, self.seed).log_w
            gen, inf = estimators.training_objectives("piwae", log_w, num_groups=2)
            gen_loss, inf_loss = -tf.reduce_mean(gen), -tf.reduce_mean(inf)
        g_gen = tape.gradient(gen_loss, model.generative_variables)
        g_inf = tape.gradient(inf_loss, model.inference_variables)
        self.assertTrue(all(g is not None for g in g_gen + g_inf))
        # The inference objective differs from IWAE_{MK}, so do its gradients.
        g_inf_iwae = tape.gradient(gen_loss, model.inference_variables)
        self.assertNotAllClose(g_inf[0], g_inf_iwae[0])

    def test_output_bias_init(self):
        mean = np.linspace(0.0, 1.0, 784).astype(np.float32)  # Includes 0 and 1.
        bias = mlps.output_bias_from_mean(mean.reshape(28, 28))
        expected = special.logit(np.clip(mean.astype(np.float64), 1e-3, 1 - 1e-3))
        self.assertAllClose(bias, expected, rtol=1e-6)
        for layers in (1, 2):
            model = modules.make_model(layers, output_bias_init=bias)
            model.log_weights(self.x, 1, self.seed)
            self.assertAllClose(model.decoders[0].logits_layer.b, expected, rtol=1e-6)
            # All other biases start at zero.
            for v in model.trainable_variables:
                if v.name.endswith("b:0") and v is not model.decoders[0].logits_layer.b:
                    self.assertAllEqual(v, tf.zeros_like(v))

    def test_glorot_uniform_weights(self):
        model = modules.make_model(1)
        model.log_weights(self.x, 1, self.seed)
        w = model.encoders[0].trunk.layers[0].w.numpy()  # [784, 200]
        limit = np.sqrt(6.0 / (784 + 200))
        self.assertLessEqual(np.max(np.abs(w)), limit)
        self.assertAllClose(np.var(w), limit**2 / 3, rtol=0.05)
        # Mean and log-sigma heads start different (unlike YB's same-seed layers).
        enc = model.encoders[0]
        self.assertNotAllClose(enc.loc_layer.w, enc.log_scale_layer.w)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "output_bias_init"):
            mlps.BernoulliMLP((10,), 784, output_bias_init=np.zeros(10))
        with self.assertRaisesRegex(ValueError, "num_stochastic_layers"):
            modules.make_model(3)
        with self.assertRaisesRegex(ValueError, "latent_sizes"):
            modules.IWAEModel([mlps.GaussianMLP((4,), 2)], [mlps.BernoulliMLP((4,), 6)], [3])
        with self.assertRaisesRegex(ValueError, "same nonzero length"):
            modules.IWAEModel([], [], [])
        with self.assertRaisesRegex(ValueError, "seed"):
            modules.make_model(2).posterior_mean(self.x, num_samples=2)


if __name__ == "__main__":
    tf.test.main()

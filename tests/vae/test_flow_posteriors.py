"""Tests for the flow posteriors of vae.modules (planar, radial, IAF).

log q(z|x) against a NumPy re-derivation with an autodiff Jacobian of the
composed map; the exact-inverse `log_prob` of the returned distribution; a grid
integral (the density is normalized) and a Monte-Carlo mean (samples follow
it); tf.function and XLA; gradients and a few training steps; the default
config's model is the old Gaussian one; end-to-end runs of the binaries.
"""

import json
import os
import shutil
import time

import ml_collections
import numpy as np
import tensorflow as tf
import tf_keras
from absl.testing import parameterized

from common import distribute, experiment
from tests import binaries
from vae import estimators, flow_posteriors, mlps, modules
from vae import experiment as vae_experiment
from vae.configs import iwae

B, K = 3, 4
FLOWS = ("planar", "radial", "iaf")


def _binary_images(seed, shape=(B, 784)):
    return (np.random.default_rng(seed).random(shape) > 0.5).astype(np.float32)


def _np_linear(layer, h):
    return h @ layer.w.numpy().astype(np.float64) + layer.b.numpy().astype(np.float64)


def _np_encoder(enc, x):
    """Base mean, scale and flow head of a `FlowPosteriorMLP`, in NumPy."""
    t = x
    for layer in enc.trunk.layers:
        t = np.tanh(_np_linear(layer, t))
    return (
        _np_linear(enc.loc_layer, t),
        np.exp(_np_linear(enc.log_scale_layer, t)),
        _np_linear(enc.flow_layer, t),
    )


def _softplus(x):
    return tf.math.log1p(tf.exp(-tf.abs(x))) + tf.maximum(x, 0.0)


def _flow_map(enc, z, params):
    """f_K o ... o f_1 (z) from the formulas, not from common.bijectors.

    z: `[N, D]`; params: `[N, P]` flow head. Planar: Rezende & Mohamed eq. (10)
    with u_hat from their appendix A.1; radial: eq. (14), alpha = softplus(a),
    beta = -alpha + softplus(b'); IAF: z <- (z - m) exp(-s), [m, s] = MADE(z, h).
    """
    d = enc.latent_size
    if enc.flow == "iaf":
        for made in enc.mades:
            shift, log_scale = made(tf.cast(z, tf.float32), conditional_input=params)
            z = (tf.cast(z, tf.float32) - shift) * tf.exp(-log_scale)
        return z
    per = (2 * d + 1) if enc.flow == "planar" else d + 2
    for k in range(enc.num_flows):
        p = params[:, k * per : (k + 1) * per]
        if enc.flow == "planar":
            w, u, b = p[:, :d], p[:, d : 2 * d], p[:, 2 * d]
            wu = tf.reduce_sum(w * u, -1, keepdims=True)
            u_hat = u + (-1.0 + _softplus(wu) - wu) * w / tf.reduce_sum(w * w, -1, keepdims=True)
            z = z + u_hat * tf.tanh(tf.reduce_sum(w * z, -1) + b)[:, None]
        else:
            centre, alpha = p[:, :d], _softplus(p[:, d])
            beta = -alpha + _softplus(p[:, d + 1])
            r = tf.norm(z - centre, axis=-1)
            z = z + (beta / (alpha + r))[:, None] * (z - centre)
    return z


class FlowPosteriorTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        tf.random.set_seed(0)
        self.x = _binary_images(0)
        self.seed = tf.constant([3, 7], tf.int32)

    @parameterized.parameters(*FLOWS)
    def test_log_q_matches_numpy_and_autodiff_jacobian(self, flow):
        model = modules.make_model(1, posterior=flow, num_flows=3)
        out = model.log_weights(self.x, K, self.seed)
        enc = model.encoders[0]
        d = enc.latent_size
        loc, scale, params = _np_encoder(enc, self.x.astype(np.float64))
        # The module's noise (one device, one layer).
        eps = tf.random.stateless_normal(
            [K, B, d], tf.random.experimental.stateless_split(self.seed, 1)[0]
        )
        z0 = loc + scale * eps.numpy().astype(np.float64)  # [K, B, D]
        log_q0 = np.sum(
            -0.5 * ((z0 - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi), -1
        )
        flat_params = np.tile(params, (K, 1))  # [K*B, P], row k*B + b is example b.
        dtype = tf.float32 if flow == "iaf" else tf.float64  # MADE weights are float32.
        z0_t = tf.constant(z0.reshape(K * B, d), dtype)  # fresh tensors (no bijector cache)
        with tf.GradientTape() as tape:
            tape.watch(z0_t)
            z_k = _flow_map(enc, z0_t, tf.constant(flat_params, dtype))
        jacobian = tape.batch_jacobian(z_k, z0_t).numpy().astype(np.float64)  # [K*B, D, D]
        sign, log_det = np.linalg.slogdet(jacobian)
        self.assertTrue(np.all(sign > 0))  # orientation-preserving, invertible
        expected_z = z_k.numpy().reshape(K, B, d)
        expected_log_q = log_q0 - log_det.reshape(K, B)
        self.assertAllClose(out.z[0], expected_z, rtol=1e-4, atol=1e-4)
        self.assertAllClose(out.log_qz, expected_log_q, rtol=1e-5, atol=2e-3)
        self.assertAllClose(out.log_w, out.log_px_given_z + out.log_pz - out.log_qz)
        # The flow is not the identity: log q differs from the base density.
        self.assertGreater(np.max(np.abs(expected_log_q - log_q0)), 0.1)

    @parameterized.parameters((f, layers) for f in FLOWS for layers in (1, 2))
    def test_shapes_exact_inverse_tf_function_and_xla(self, flow, layers):
        model = modules.make_model(layers, posterior=flow, num_flows=2)
        out = model.log_weights(self.x, K, self.seed)
        for t in (out.log_w, out.log_px_given_z, out.log_pz, out.log_qz):
            self.assertEqual(t.shape, (K, B))
            self.assertTrue(np.all(np.isfinite(t)))
        self.assertEqual([z.shape for z in out.z], [(K, B, d) for d in model.latent_sizes])
        self.assertEqual(out.posterior.batch_shape, (B,))
        self.assertEqual(out.posterior.event_shape, (model.latent_sizes[0],))
        # log q(z_1|x) through the distribution's exact inverse, on a fresh tensor.
        log_q1 = out.posterior.log_prob(tf.constant(out.z[0].numpy()))
        if layers == 1:
            self.assertAllClose(log_q1, out.log_qz, rtol=1e-5, atol=1e-3)
        graph = tf.function(lambda x, s: model.log_weights(x, K, s).log_w)
        self.assertAllClose(graph(self.x, self.seed), out.log_w, rtol=1e-5, atol=1e-3)

        # XLA draws other noise than the CPU kernel (also for the Gaussian
        # model), so check the compiled log q against the exact density instead.
        @tf.function(jit_compile=True)
        def compiled(x, s):
            o = model.log_weights(x, K, s)
            return o.z[0], o.log_qz, o.log_w

        z1, log_qz, log_w = compiled(self.x, self.seed)
        self.assertTrue(np.all(np.isfinite(log_w)))
        if layers == 1:
            q1 = model.encoders[0](tf.constant(self.x))
            self.assertAllClose(log_qz, q1.log_prob(tf.constant(z1.numpy())), rtol=1e-5, atol=1e-3)
        # Sampling, reconstruction and (Monte-Carlo) posterior means.
        self.assertEqual(model.reconstruct(self.x, self.seed).shape, (B, 784))
        for means in (model.posterior_mean(self.x), model.posterior_mean(self.x, 3, self.seed)):
            self.assertEqual([m.shape for m in means], [(B, d) for d in model.latent_sizes])
            self.assertTrue(all(np.all(np.isfinite(m)) for m in means))
        z = out.posterior.sample(5, seed=self.seed)
        self.assertEqual(z.shape, (5, B, model.latent_sizes[0]))

    @parameterized.parameters(*FLOWS)
    def test_density_integrates_to_one_and_samples_follow_it(self, flow):
        # D = 2: integrate q(z|x) on a grid and compare its mean with samples.
        net = flow_posteriors.FlowPosteriorMLP(
            (8,), 2, flow, num_flows=3, iaf_hidden_units=(16,), context_size=4, seed=1
        )
        q = net(tf.constant(np.random.default_rng(1).normal(size=(1, 5)) * 0.5, tf.float32))
        # [-6, 6]^2 holds the mass; further out (|z| > ~8) the IAF's inverse (its sequential
        # direction, exp(-log_scale) compounding over 3 layers) overflows float32 to -inf / NaN.
        h = 0.04
        grid = np.arange(-6.0, 6.0 + h / 2, h)
        zz = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 1, 2)
        log_q = q.log_prob(tf.constant(zz, tf.float32)).numpy().astype(np.float64)
        self.assertTrue(np.all(np.isfinite(log_q)))
        density = np.exp(log_q)
        mass = density.sum() * h * h
        self.assertAllClose(mass, 1.0, atol=1e-2)
        grid_mean = (density[:, :, None] * zz).sum((0, 1)) * h * h / mass
        samples = q.sample(20_000, seed=tf.constant([5, 6])).numpy()[:, 0]  # [N, 2]
        self.assertTrue(np.all(np.isfinite(samples)))
        stderr = samples.std(0) / np.sqrt(len(samples))
        self.assertTrue(np.all(np.abs(samples.mean(0) - grid_mean) < 4 * stderr + 1e-3))

    @parameterized.parameters(*FLOWS)
    def test_every_variable_gets_a_gradient_and_training_raises_the_elbo(self, flow):
        model = modules.make_model(1, posterior=flow, num_flows=2)
        x = _binary_images(1, (16, 784))
        model.log_weights(x, 1, self.seed)  # Build.
        flow_vars = [v for v in model.encoders[0].trainable_variables if "trunk" not in v.name]
        self.assertNotEmpty(flow_vars)
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(estimators.iwae_bound(model.log_weights(x, K, self.seed).log_w))
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g in zip(model.trainable_variables, grads, strict=True):
            self.assertIsNotNone(g, v.name)
            self.assertTrue(np.all(np.isfinite(g)), v.name)
            self.assertGreater(np.max(np.abs(g)), 0.0, v.name)

        opt = tf_keras.optimizers.Adam(1e-3)
        eval_seed = tf.constant([9, 9])

        @tf.function
        def elbo():
            return tf.reduce_mean(estimators.elbo(model.log_weights(x, 64, eval_seed).log_w))

        @tf.function
        def step(s):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(estimators.elbo(model.log_weights(x, 4, s).log_w))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

        before = float(elbo())
        flow_before = [v.numpy() for v in flow_vars]
        for i in range(20):
            step(tf.constant([i, 0]))
        self.assertGreater(float(elbo()), before + 1.0)
        for v, old in zip(flow_vars, flow_before, strict=True):
            self.assertNotAllClose(v, old, msg=v.name)

    def test_all_estimators_and_piwae_groups(self):
        model = modules.make_model(1, posterior="iaf", num_flows=2)
        model.log_weights(self.x, 6, self.seed)
        inference_ids = {id(v) for v in model.inference_variables}
        for made in model.encoders[0].mades:
            self.assertTrue(all(id(v) in inference_ids for v in made.trainable_variables))
        for name, kwargs in (
            ("elbo", {}),
            ("iwae", {}),
            ("miwae", {"num_groups": 2}),
            ("ciwae", {"beta": 0.5}),
            ("piwae", {"num_groups": 2}),
        ):
            with tf.GradientTape() as tape:
                log_w = model.log_weights(self.x, 6, self.seed).log_w
                o = estimators.training_objectives(name, log_w, **kwargs)
                loss = -tf.reduce_mean(o.inference)
            grads = tape.gradient(loss, model.inference_variables)
            for v, g in zip(model.inference_variables, grads, strict=True):
                self.assertIsNotNone(g, f"{name}: {v.name}")
                self.assertTrue(np.all(np.isfinite(g)), f"{name}: {v.name}")

    def test_checkpoint_round_trip(self):
        for flow in FLOWS:
            a = modules.make_model(1, posterior=flow, num_flows=2)
            a.log_weights(self.x, 1, self.seed)
            path = tf.train.Checkpoint(model=a).save(os.path.join(self.get_temp_dir(), flow))
            b = modules.make_model(1, posterior=flow, num_flows=2)  # other initial values
            b.log_weights(self.x, 1, self.seed)
            self.assertNotAllClose(
                a.log_weights(self.x, K, self.seed).log_w, b.log_weights(self.x, K, self.seed).log_w
            )
            tf.train.Checkpoint(model=b).restore(path).assert_consumed()
            self.assertAllEqual(
                a.log_weights(self.x, K, self.seed).log_w, b.log_weights(self.x, K, self.seed).log_w
            )

    @parameterized.parameters(1, 2)
    def test_default_config_builds_the_old_gaussian_model(self, layers):
        config = iwae.get_config("smoke")
        self.assertEqual(config.model.posterior, "gaussian")
        self.assertEqual(config.model.num_flows, 0)
        config.model.num_stochastic_layers = layers
        tf.random.set_seed(3)
        model = vae_experiment.build_model(config)
        self.assertTrue(all(isinstance(e, mlps.GaussianMLP) for e in model.encoders))
        # A config written before flow posteriors existed (old run folders).
        old_config = iwae.get_config("smoke")
        old_config.model = ml_collections.ConfigDict({"num_stochastic_layers": layers})
        tf.random.set_seed(3)
        old = vae_experiment.build_model(old_config)
        for u, v in zip(model.trainable_variables, old.trainable_variables, strict=True):
            self.assertAllEqual(u, v)
        out = model.log_weights(self.x, K, self.seed)
        # The pre-flow algorithm of log_weights, written out: z = mu + sigma eps,
        # log q = Normal log-density at z, layer by layer.
        seeds = tf.random.experimental.stateless_split(self.seed, num=layers)
        h, log_q = tf.constant(self.x), 0.0
        for i, (enc, d) in enumerate(zip(model.encoders, model.latent_sizes, strict=True)):
            q = enc(h)
            eps = distribute.global_batch_normal([K, B, d], seeds[i], batch_axis=1)
            h = q.mean() + q.stddev() * eps
            log_q += q.log_prob(h)
            self.assertAllEqual(out.z[i], h)
        self.assertAllEqual(out.log_qz, log_q)
        self.assertAllEqual(out.log_w, old.log_weights(self.x, K, self.seed).log_w)

    def test_bad_arguments_are_clear_errors(self):
        with self.assertRaisesRegex(ValueError, "gaussian, planar, radial, iaf"):
            modules.make_model(1, posterior="sylvester")
        with self.assertRaisesRegex(ValueError, "num_flows"):
            modules.make_model(1, num_flows=3)
        with self.assertRaisesRegex(ValueError, "num_flows"):
            flow_posteriors.FlowPosteriorMLP((4,), 2, "planar", num_flows=0)
        with self.assertRaisesRegex(ValueError, "context_size"):
            flow_posteriors.FlowPosteriorMLP((4,), 2, "iaf", num_flows=1, context_size=0)
        config = iwae.get_config("smoke")
        config.model.posterior = "nice"
        with self.assertRaisesRegex(ValueError, "model.posterior.*gaussian, planar, radial, iaf"):
            vae_experiment.build_model(config)
        config.model.posterior = "gaussian"
        config.model.num_flows = 10
        with self.assertRaisesRegex(ValueError, "model.num_flows"):
            vae_experiment.VAETask(config)  # before any data is loaded


class FlowPosteriorEndToEndTest(tf.test.TestCase, parameterized.TestCase):
    """`vae.train` / `vae.evaluate` with each flow posterior on real MNIST."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.results = os.path.join(
            os.environ.get("TEST_TMPDIR", "/tmp"), f"vae_flow_e2e_{os.getpid()}_{time.time_ns()}"
        )

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.results, ignore_errors=True)
        super().tearDownClass()

    def _train(self, flow, name, *extra):
        binaries.run(
            "vae.train",
            "--config=vae/configs/iwae.py:smoke",
            f"--config.model.posterior={flow}",
            "--config.model.num_flows=2",
            "--config.loop.num_steps=6",
            "--config.loop.checkpoint_every=3",
            "--config.loop.eval_every=6",
            "--config.loop.image_every=6",
            "--config.optimizer.schedule=constant",
            "--config.eval.num_test_images=50",
            f"--results_dir={self.results}",
            f"--run_name={name}",
            *extra,
            timeout=900,  # seconds; the runs take ~20 s on an idle 2-core machine
        )
        return os.path.join(self.results, name, "1")

    @parameterized.parameters(*FLOWS)
    def test_train_evaluate_and_restore(self, flow):
        run_dir = self._train(flow, flow)
        with open(os.path.join(run_dir, "metrics.json")) as f:
            metrics = json.load(f)
        self.assertEqual(metrics["step"], 6)
        self.assertTrue(np.isfinite(metrics["nll"]))
        restored = experiment.load_from_checkpoint(run_dir)
        self.assertEqual(restored.model.encoders[0].flow, flow)
        x = tf.cast(tf.random.stateless_uniform([4, 784], [1, 2]) > 0.5, tf.float32)
        again = experiment.load_from_checkpoint(run_dir)
        self.assertAllEqual(
            restored.model.log_weights(x, 5, tf.constant([3, 4])).log_w,
            again.model.log_weights(x, 5, tf.constant([3, 4])).log_w,
        )

    def test_resume_reaches_the_uninterrupted_parameters(self):
        reference = self._train("planar", "ref", "--config.eval.after_training=False")
        first = self._train(
            "planar", "resumed", "--config.loop.num_steps=3", "--config.eval.after_training=False"
        )
        self._train("planar", "resumed", "--resume", "--config.eval.after_training=False")
        a = experiment.load_from_checkpoint(reference).model.trainable_variables
        b = experiment.load_from_checkpoint(first).model.trainable_variables
        self.assertEqual(experiment.checkpoint_step(experiment.latest_checkpoint(first)), 6)
        for u, v in zip(a, b, strict=True):
            self.assertAllEqual(u, v, msg=u.name)


if __name__ == "__main__":
    tf.test.main()

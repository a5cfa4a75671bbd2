"""Tests for air/model.py and air/modules.py: shapes, eager vs tf.function, gradients of every
variable, the analytic KL terms against NumPy, and the collapse-preventing initializations."""

import itertools

import numpy as np
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras
from absl.testing import parameterized
from scipy import special, stats

from air import (
    NumStepsDistribution,
    experiment,
    model,
    modules,
    objective,
    truncated_geometric_prior,
)
from air.configs import air as air_configs

tfd = tfp.distributions

H = W = 24
N = 3
D = 4


def _tiny_air(likelihood="gaussian", normalized_prior=True, **kwargs) -> model.AIR:
    return model.AIR(
        input_encoder=modules.InputEncoder([16]),
        core=snt.LSTM(16),
        where_head=modules.WhereHead([16]),
        presence_head=modules.PresenceHead([8]),
        glimpse_encoder=modules.GlimpseEncoder(D, [16]),
        glimpse_decoder=modules.GlimpseDecoder((6, 6), hidden_sizes=[16]),
        canvas_shape=(H, W),
        max_steps=N,
        likelihood=likelihood,
        normalized_prior=normalized_prior,
        **kwargs,
    )


def _images(batch=5, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(size=[batch, H, W, 1]), tf.float32)


def _np_table(logits):
    """q(n) by enumerating the 2^N Bernoulli sequences of presence variables."""
    p = special.expit(np.asarray(logits, np.float64))
    table = np.zeros(p.shape[:-1] + (p.shape[-1] + 1,))
    for bits in itertools.product([0, 1], repeat=p.shape[-1]):
        bits = np.array(bits)
        weight = np.prod(np.where(bits == 1, p, 1 - p), axis=-1)
        table[..., p.shape[-1] if bits.all() else int(np.argmin(bits))] += weight
    return table


def _np_prior(s, normalized):
    k = np.arange(N + 1)
    log_p = np.log1p(-s) + k * np.log(s)
    if normalized:
        log_p[N] = N * np.log(s)
    return log_p


class AIRTest(tf.test.TestCase, parameterized.TestCase):
    def test_output_shapes(self):
        out = _tiny_air()(_images(), tf.constant([1, 2]), 0.2)
        expected = dict(
            canvas=[5, H, W, 1],
            writes=[5, N, H, W, 1],
            crops=[5, N, 6, 6, 1],
            z_where=[5, N, 4],
            z_what=[5, N, D],
            step_logits=[5, N],
            presence_probs=[5, N],
            z_pres=[5, N],
            num_steps=[5],
            log_q_num_steps=[5],
            log_likelihood=[5],
            kl_num_steps=[5],
            kl_what=[5, N],
            kl_where=[5, N],
            kl_z=[5],
            log_weight=[5],
        )
        for name, shape in expected.items():
            self.assertEqual(getattr(out, name).shape, shape, name)
            self.assertTrue(np.all(np.isfinite(getattr(out, name))), name)
        self.assertEqual(out.num_steps.dtype, tf.int32)
        self.assertEqual(out.elbo.shape, [5])

    def test_eager_equals_tf_function(self):
        air = _tiny_air()
        x, seed = _images(), tf.constant([3, 4])
        eager = air(x, seed, 0.2)
        graph = tf.function(air.__call__)(x, seed, tf.constant(0.2, tf.float64))
        for name in model.AIROutput._fields:
            self.assertAllClose(getattr(eager, name), getattr(graph, name), atol=1e-5, msg=name)

    def test_seeds(self):
        air, x = _tiny_air(), _images()
        a, b = air(x, tf.constant([0, 1]), 0.2), air(x, tf.constant([0, 2]), 0.2)
        self.assertAllEqual(a.z_what, air(x, tf.constant([0, 1]), 0.2).z_what)
        self.assertNotAllClose(a.z_what, b.z_what)
        mode_a = air(x, tf.constant([0, 1]), 0.2, deterministic=True)
        mode_b = air(x, tf.constant([5, 6]), 0.2, deterministic=True)
        self.assertAllEqual(mode_a.canvas, mode_b.canvas)
        self.assertAllEqual(mode_a.num_steps, np.argmax(_np_table(mode_a.step_logits), -1))

    @parameterized.parameters(True, False)
    def test_kl_num_steps_equals_a_direct_sum(self, normalized):
        s = 0.3
        out = _tiny_air(normalized_prior=normalized)(_images(), tf.constant([0, 7]), s)
        q = _np_table(out.step_logits.numpy())
        expected = np.sum(q * (np.log(q) - _np_prior(s, normalized)), axis=-1)
        self.assertAllClose(out.kl_num_steps, expected, rtol=1e-5)
        if normalized:
            dist = NumStepsDistribution(step_logits=out.step_logits)
            tfp_kl = tfd.kl_divergence(dist, truncated_geometric_prior(s, N))
            self.assertAllClose(out.kl_num_steps, tfp_kl, rtol=1e-5)

    def test_terms_are_consistent(self):
        air = _tiny_air()
        x = _images()
        out = air(x, tf.constant([2, 3]), 0.2)
        q = _np_table(out.step_logits.numpy())
        # P(n >= t) from the table, and z_pres / the canvas from the sampled n.
        self.assertAllClose(
            out.presence_probs, np.cumsum(q[:, ::-1], -1)[:, ::-1][:, 1:], atol=1e-6
        )
        self.assertAllEqual(out.z_pres, np.arange(N)[None] < out.num_steps.numpy()[:, None])
        canvas = np.sum(out.z_pres.numpy()[:, :, None, None, None] * out.writes.numpy(), 1)
        self.assertAllClose(out.canvas, canvas)
        ll = stats.norm(canvas, 0.3).logpdf(x.numpy()).sum((1, 2, 3))
        self.assertAllClose(out.log_likelihood, ll, rtol=1e-5)
        self.assertAllClose(
            out.kl_z, np.sum(out.presence_probs * (out.kl_what + out.kl_where), 1), rtol=1e-6
        )
        self.assertAllClose(
            out.log_q_num_steps, np.log(q[np.arange(5), out.num_steps.numpy()]), atol=1e-5
        )
        self.assertAllClose(out.elbo, out.log_likelihood - out.kl_num_steps - out.kl_z)

    def test_monte_carlo_log_weight_has_the_analytic_elbo_as_mean(self):
        # E_q[log w] = ELBO: checks that weighting the analytic KLs by P(n >= t) is exact.
        air = _tiny_air()
        x = tf.tile(_images(1), [4000, 1, 1, 1])
        out = air(x, tf.constant([9, 9]), 0.2)
        log_w, elbo = out.log_weight.numpy(), out.elbo.numpy()
        stderr = np.sqrt(log_w.var() / len(log_w) + elbo.var() / len(elbo))
        self.assertLess(abs(log_w.mean() - elbo.mean()), 5 * stderr)

    def test_bernoulli_likelihood(self):
        x = tf.cast(_images() > 0.5, tf.float32)
        out = _tiny_air("bernoulli")(x, tf.constant([0, 0]), 0.2)
        p = np.clip(out.canvas.numpy(), model.BERNOULLI_EPS, 1 - model.BERNOULLI_EPS)
        self.assertAllClose(out.log_likelihood, stats.bernoulli(p).logpmf(x.numpy()).sum((1, 2, 3)))

    def test_per_example_prior(self):
        air, x = _tiny_air(), _images()
        s = tf.constant([0.1, 0.2, 0.3, 0.4, 0.5], tf.float64)
        out = air(x, tf.constant([0, 0]), s)
        for i in (0, 4):
            single = air(x, tf.constant([0, 0]), float(s[i]))
            self.assertAllClose(out.kl_num_steps[i], single.kl_num_steps[i])
            self.assertAllClose(out.log_weight[i], single.log_weight[i])

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "likelihood"):
            _tiny_air("poisson")
        with self.assertRaisesRegex(ValueError, "where_prior_std"):
            _tiny_air(where_prior_std=(1.0, 0.0, 1.0, 1.0))


class PriorTest(tf.test.TestCase):
    def test_normalized_and_unnormalized_tables(self):
        for s in (1e-3, 0.3, 0.9):
            normalized = model.num_steps_prior_log_probs(s, N, normalized=True)
            self.assertAllClose(normalized, _np_prior(s, True))
            self.assertAllClose(tf.reduce_logsumexp(normalized), 0.0, atol=1e-12)
            self.assertAllClose(model.num_steps_prior_log_probs(s, N, False), _np_prior(s, False))

    def test_extreme_step_probs_are_clipped_and_finite(self):
        for s in (0.0, 1.0, 1.0 - 1e-15):
            table = model.num_steps_prior_log_probs(tf.constant(s, tf.float64), N, True)
            self.assertTrue(np.all(np.isfinite(table)), s)
        near_one = model.num_steps_prior_log_probs(tf.constant(1 - 1e-15, tf.float64), N, False)
        self.assertAllClose(near_one, np.full([N + 1], np.log(1e-15)), rtol=1e-3)

    def test_schedule(self):
        prior = air_configs.get_config("reference").prior
        s = lambda step: float(objective.prior_step_prob(prior, step))
        self.assertEqual(s(0), prior.initial)
        self.assertEqual(s(prior.hold_steps), prior.initial)
        self.assertAllClose(s(prior.hold_steps + prior.decay_steps), prior.final)
        self.assertAllClose(s(10**7), prior.final)
        # Exponential: log s is linear in the step; halfway is the geometric mean.
        mid = s(prior.hold_steps + prior.decay_steps // 2)
        self.assertAllClose(np.log(mid), 0.5 * (np.log(prior.initial) + np.log(prior.final)))
        fixed = air_configs.get_config("cpu").prior
        self.assertEqual(float(objective.prior_step_prob(fixed, 12345)), fixed.step_prob)


class ModulesTest(tf.test.TestCase):
    def test_initializations_that_prevent_collapse(self):
        hidden = tf.random.stateless_normal([256, 32], seed=[0, 1])
        # Dim initial glimpses: ~ sigmoid(-2) = 0.12.
        decoder = modules.GlimpseDecoder((10, 10), hidden_sizes=[32], output_bias=-2.0)
        self.assertBetween(float(tf.reduce_mean(decoder(hidden[:, :8]))), 0.06, 0.2)
        # Steps start on: p ~ sigmoid(1) = 0.73.
        presence = modules.PresenceHead([16], bias_init=1.0)
        self.assertBetween(float(tf.reduce_mean(tf.sigmoid(presence(hidden)))), 0.6, 0.85)
        # Small initial where-variance (KAIR: ~0.97).
        where = modules.WhereHead([16], std_init=0.1, scale_init=0.4)
        q = where(hidden)
        self.assertBetween(float(tf.reduce_mean(q.distribution.scale)), 0.07, 0.15)
        scales = where.squash(q.mean())[:, :2]
        self.assertBetween(float(tf.reduce_mean(scales)), 0.3, 0.5)

    def test_where_squash_range_and_scale_code(self):
        where = modules.WhereHead([4], min_scale=0.1)
        u = tf.constant([[-50.0, 50.0, -50.0, 50.0], [0.0, 0.0, 0.0, 0.0]])
        z = where.squash(u).numpy()
        self.assertAllClose(z[0], [0.1, 1.0, -1.0, 1.0])
        self.assertAllClose(z[1], [0.55, 0.55, 0.0, 0.0])
        for scale in (0.2, 0.4, 0.9):
            code = where.squash(tf.fill([1, 4], where.scale_code(scale)))
            self.assertAllClose(code[0, 0], scale)
        with self.assertRaisesRegex(ValueError, "scale"):
            where.scale_code(0.05)

    def test_one_scale_where_head_is_the_papers_three_dimensional_z_where(self):
        where = modules.WhereHead([8], num_scales=1, scale_init=0.5)
        dist = where(tf.zeros([2, 5]))
        self.assertEqual(dist.event_shape, [3])
        u = tf.constant([[0.3, 2.0, -1.0], [-0.7, 0.0, 0.5]])
        z = where.squash(u).numpy()
        s = 0.1 + 0.9 / (1 + np.exp(-u.numpy()[:, 0]))
        self.assertAllClose(z, np.stack([s, s, np.tanh([2.0, 0.0]), np.tanh([-1.0, 0.5])], 1))
        # The initial mean window has the configured scale on both axes.
        self.assertAllClose(where.squash(dist.mean())[:, :2], 0.5 * np.ones([2, 2]), atol=0.05)
        with self.assertRaisesRegex(ValueError, "num_scales"):
            modules.WhereHead([8], num_scales=3)

    def test_air_with_one_scale_trains_a_step(self):
        config = air_configs.get_config("smoke")
        config.model.where_scales = 1
        learner = experiment.build_model(config)
        images = tf.random.stateless_uniform([4, 50, 50, 1], seed=[1, 2])
        out = learner.air(images, tf.constant([0, 1]), 0.5)
        self.assertEqual(out.z_where.shape, [4, 3, 4])
        self.assertAllEqual(out.z_where[..., 0], out.z_where[..., 1])  # s_x = s_y
        self.assertTrue(np.all(np.isfinite(out.kl_where.numpy())))

    def test_baseline_ignores_gradients_of_latents(self):
        baseline = modules.Baseline([8])
        z = tf.Variable(tf.ones([3, 2, 4]))
        with tf.GradientTape() as tape:
            b = baseline(tf.zeros([3, 5, 5, 1]), [z])
        self.assertEqual(b.shape, [3])
        self.assertIsNone(tape.gradient(b, z))


class GradientTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("reinforce_elbo", "reinforce", "elbo", 1, False),
        ("reinforce_iwae_nvil", "reinforce", "iwae", 2, True),
        ("vimco", "vimco", "iwae", 2, False),
    )
    def test_every_variable_gets_finite_gradients_after_one_step(
        self, estimator, bound, particles, nvil
    ):
        config = air_configs.get_config("smoke")
        config.objective.estimator = estimator
        config.objective.bound = bound
        config.objective.num_particles = particles
        config.objective.nvil_normalization = nvil
        if estimator == "vimco":
            config.objective.baseline = False
            config.objective.centering = False
        learner = experiment.build_model(config)
        groups = {"model": learner.air.trainable_variables}
        if learner.baseline is not None:
            groups["baseline"] = learner.baseline.trainable_variables
        optimizers = {name: tf_keras.optimizers.Adam(1e-3) for name in groups}
        x = tf.constant(np.random.default_rng(0).uniform(size=[4, 50, 50, 1]) ** 8, tf.float32)
        for step in range(2):
            with tf.GradientTape(persistent=True) as tape:
                losses = objective.compute_losses(
                    learner, x, tf.constant([0, step]), 0.01, config.objective
                )
                totals = {"model": tf.reduce_mean(losses.model_loss)}
                if losses.baseline_loss is not None:
                    totals["baseline"] = tf.reduce_mean(losses.baseline_loss)
            self.assertEqual(set(totals), set(groups))
            for name, variables in groups.items():
                grads = tape.gradient(totals[name], variables)
                for g, v in zip(grads, variables, strict=True):
                    self.assertIsNotNone(g, f"{v.name} ({name}) gets no gradient")
                    self.assertTrue(np.all(np.isfinite(g)), f"{v.name} ({name}): non-finite")
                optimizers[name].apply_gradients(zip(grads, variables, strict=True))
            for value in losses.metrics.values():
                self.assertEqual(value.shape, [4])
                self.assertTrue(np.all(np.isfinite(value)))


if __name__ == "__main__":
    tf.test.main()

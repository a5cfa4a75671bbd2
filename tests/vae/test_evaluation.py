"""The figures `vae.evaluate` reports, against independent references: the test log-likelihood
and bounds from chunked samples (NumPy on a known table of log-weights), active units (NumPy
variance of the Gaussian posterior means), the gradient SNR per data point (closed form on a
linear-Gaussian model), the paper's learning-rate schedule (Burda et al. sec. 5's 3^i formula)
and PIWAE's routing of its two objectives to the two parameter groups."""

from typing import NamedTuple

import numpy as np
import tensorflow as tf
from scipy import special

from vae import experiment as vae_experiment
from vae import modules
from vae.configs import iwae


class _LogW(NamedTuple):
    log_w: tf.Tensor


class _TableModel(tf.Module):
    """`log_weights` hands out consecutive rows of a fixed `[S, N]` table of log-weights, one
    column per image (an image's index is its pixel [0, 0]): the chunks of one image's S samples
    are rows 0..S-1 in order, whatever the seed."""

    def __init__(self, table: np.ndarray):
        super().__init__()
        self.table = tf.constant(table, tf.float32)
        self.row = tf.Variable(0, dtype=tf.int32)

    def log_weights(self, x, num_samples, seed):
        del seed
        columns = tf.cast(x[:, 0, 0, 0], tf.int32)  # [B]
        rows = tf.range(self.row, self.row + num_samples) % self.table.shape[0]
        self.row.assign((self.row + num_samples) % self.table.shape[0])
        return _LogW(tf.gather(tf.gather(self.table, rows), columns, axis=1))  # [chunk, B]


def _log_mean_exp(a, axis=0):
    return special.logsumexp(a, axis=axis) - np.log(a.shape[axis])


class EvaluateLogLikelihoodTest(tf.test.TestCase):
    def test_chunks_and_regrouping_match_an_unchunked_numpy_computation(self):
        num_images, num_samples = 7, 12
        table = np.random.default_rng(0).normal(size=(num_samples, num_images)) * 4 - 90
        images = np.zeros([num_images, 28, 28, 1], np.float32)
        images[:, 0, 0, 0] = np.arange(num_images)
        dataset = tf.data.Dataset.from_tensor_slices({"image": images}).batch(3)  # 3 + 3 + 1
        result = vae_experiment.evaluate_log_likelihood(
            _TableModel(table),
            dataset,
            num_samples,
            4,
            seed=0,
            bound_ks=(1, 3, 12, 50),
            progress=False,
        )
        log_p = _log_mean_exp(table)  # [N], all 12 samples of each image
        self.assertAllClose(result["log_likelihood"], log_p.mean(), atol=1e-4)
        self.assertAllClose(result["nll"], -log_p.mean(), atol=1e-4)
        self.assertAllClose(
            result["nll_stderr"], log_p.std(ddof=1) / np.sqrt(num_images), atol=1e-4
        )
        self.assertAllClose(result["elbo"], table.mean(), atol=1e-4)
        for k in (1, 3, 12):  # IWAE-k averaged over the 12 / k disjoint groups of k samples
            groups = table.reshape(num_samples // k, k, num_images)
            self.assertAllClose(
                result[f"iwae_bound_k{k}"], _log_mean_exp(groups, axis=1).mean(), atol=1e-4
            )
        self.assertNotIn("iwae_bound_k50", result)  # k > num_samples is skipped
        self.assertEqual((result["num_images"], result["num_samples"]), (7, 12))

    def test_chunk_size_must_divide(self):
        with self.assertRaisesRegex(ValueError, "chunk_samples"):
            vae_experiment.evaluate_log_likelihood(
                _TableModel(np.zeros([12, 1])), tf.data.Dataset.range(0), 12, 5, seed=0
            )


class ActiveUnitsTest(tf.test.TestCase):
    def test_activity_is_the_variance_over_images_of_the_posterior_means(self):
        model = modules.make_model(1)
        rng = np.random.default_rng(1)
        x = (rng.random([50, 784]) < 0.3).astype(np.float32)
        model.log_weights(tf.constant(x[:2]), 1, tf.constant([0, 0]))  # build the variables
        # Burda et al. sec. 5.2: A_u = Cov_x(E_q(u|x)[u]); q(z|x) is a Gaussian whose mean is
        # the encoder's mean, so no sampling is involved for one stochastic layer.
        means = model.encoders[0](tf.constant(x)).mean().numpy()  # [50, 50]
        activity = means.var(axis=0)
        threshold = float(np.median(activity))  # half the units on each side
        dataset = tf.data.Dataset.from_tensor_slices({"image": x.reshape(50, 28, 28, 1)}).batch(16)
        result = vae_experiment.active_units(model, dataset, threshold, seed=0)
        self.assertAllClose(result["unit_activity"][0], activity, rtol=1e-4, atol=1e-7)
        self.assertEqual(result["active_units"], int((activity > threshold).sum()))
        self.assertEqual(result["active_units_per_layer"], [int((activity > threshold).sum())])


class _LinearGaussian(tf.Module):
    """p(z) = N(0, 1), p(x | z) = N(z + theta, 1), q(z | x) = N(mu, sigma^2), sigma fixed.

    With K = 1 the reparameterized ELBO gradients of one data point x are Gaussian in the noise:
    g_mu = x - theta - 2 mu - 2 sigma eps and g_theta = x - theta - mu - sigma eps, so their SNRs
    are |x - theta - 2 mu| / (2 sigma) and |x - theta - mu| / sigma.
    """

    def __init__(self, mu: float, sigma: float, theta: float):
        super().__init__()
        self.mu = tf.Variable(mu, dtype=tf.float64)
        self.theta = tf.Variable(theta, dtype=tf.float64)
        self.sigma = sigma
        self.inference_variables = (self.mu,)
        self.generative_variables = (self.theta,)

    def log_weights(self, x, num_samples, seed):
        x = tf.cast(tf.reshape(x, [-1]), tf.float64)  # [B]
        eps = tf.random.stateless_normal([num_samples, tf.shape(x)[0]], seed, dtype=tf.float64)
        z = self.mu + self.sigma * eps
        normal = lambda v, loc, scale: (
            -0.5 * ((v - loc) / scale) ** 2 - np.log(scale * np.sqrt(2 * np.pi))
        )
        log_w = (
            normal(z, 0.0, 1.0) + normal(x, z + self.theta, 1.0) - normal(z, self.mu, self.sigma)
        )
        return _LogW(log_w)


class GradientSnrTest(tf.test.TestCase):
    def test_per_data_point_snr_matches_the_closed_form(self):
        mu, sigma, theta = 0.3, 0.5, 0.2
        model = _LinearGaussian(mu, sigma, theta)
        config = iwae.get_config("smoke")
        config.objective.estimator = "elbo"
        config.objective.num_samples = 1
        config.objective.num_groups = 1
        x = np.array([1.5, -0.4])
        result = vae_experiment.gradient_snr(
            model, config, tf.constant(x.reshape(2, 1)), repeats=4000, seed=3
        )
        snr_mu = np.abs(x - theta - 2 * mu) / (2 * sigma)  # [0.7, 1.2]
        snr_theta = np.abs(x - theta - mu) / sigma  # [2.0, 1.8]
        # Standard error of an SNR estimate from R draws: sqrt((1 + SNR^2 / 2) / R) < 0.04.
        self.assertAllClose(result["gradient_snr_inference"], snr_mu.mean(), atol=0.06)
        self.assertAllClose(result["gradient_snr_generative"], snr_theta.mean(), atol=0.08)
        # The SNR of the batch-mean gradient would be 0.35 and 0.14 here: not what eq. 13 is.
        self.assertEqual(result["gradient_snr_num_images"], 2)
        self.assertEqual(result["gradient_snr_repeats"], 4000)

    def test_snr_per_parameter_drops_constant_parameters(self):
        draws = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, -2.0]])
        self.assertAllClose(
            vae_experiment.snr_per_parameter(draws), [2.0 / np.sqrt(2.0), 1.0 / np.sqrt(2.0)]
        )


class PaperScheduleTest(tf.test.TestCase):
    def test_stage_i_lasts_3_to_the_i_epochs_at_1e_3_times_10_to_the_minus_i_over_7(self):
        config = iwae.get_config("paper")
        steps_per_epoch = 7
        schedule = vae_experiment._paper_schedule(config, steps_per_epoch)
        # Burda et al. sec. 5: passes i = 0..7 of 3^i epochs, 3280 epochs in all.
        first_epoch_of_stage = np.concatenate([[0], np.cumsum([3**i for i in range(8)])])
        self.assertEqual(first_epoch_of_stage[-1], 3280)
        for i in range(8):
            lr = 1e-3 * 10 ** (-i / 7)
            start = first_epoch_of_stage[i] * steps_per_epoch
            end = first_epoch_of_stage[i + 1] * steps_per_epoch - 1
            for step in (start, (start + end) // 2, end):
                self.assertAllClose(float(schedule(step)), lr, rtol=1e-6, msg=f"stage {i}")
        # After the last stage the rate stays at the last value.
        self.assertAllClose(float(schedule(10**7)), 1e-4, rtol=1e-6)


class PiwaeRoutingTest(tf.test.TestCase):
    def test_each_group_gets_the_gradient_of_its_own_bound(self):
        config = iwae.get_config("smoke")
        config.objective.estimator = "piwae"
        config.objective.num_groups, config.objective.num_samples = 2, 3  # M, K
        task = vae_experiment.build_task(config)
        groups = task.param_groups()
        inference, generative = groups["inference"].variables, groups["generative"].variables
        ids = lambda vs: {id(v) for v in vs}
        self.assertEqual(ids(inference), ids(task.model.inference_variables))
        self.assertEqual(ids(generative), ids(task.model.generative_variables))
        self.assertFalse(ids(inference) & ids(generative))
        self.assertEqual(ids(inference) | ids(generative), ids(task.model.trainable_variables))

        x = tf.constant(task.data.validation.images[:4].reshape(4, 28, 28, 1) > 127, tf.float32)
        seed = tf.constant([5, 6])
        with tf.GradientTape(persistent=True) as tape:
            losses = task.step({"image": x}, seed).losses
            # References written from primitives: log w is [M*K, B], group-major.
            log_w = task.model.log_weights(x, 6, seed).log_w
            iwae_mk = tf.reduce_logsumexp(log_w, 0) - np.log(6.0)
            grouped = tf.reshape(log_w, [2, 3, -1])
            miwae = tf.reduce_mean(tf.reduce_logsumexp(grouped, 1) - np.log(3.0), 0)
            inference_loss = tf.reduce_mean(losses["inference"])
            generative_loss = tf.reduce_mean(losses["generative"])
            miwae_loss, iwae_loss = -tf.reduce_mean(miwae), -tf.reduce_mean(iwae_mk)
        for loss, reference, variables in (
            (inference_loss, miwae_loss, inference),
            (generative_loss, iwae_loss, generative),
        ):
            got = tape.gradient(loss, variables)
            want = tape.gradient(reference, variables)
            for g, w in zip(got, want, strict=True):
                self.assertAllClose(g, w, rtol=1e-4, atol=1e-6)
        # The routing matters: phi's MIWAE gradient is not its IWAE_{MK} gradient.
        other = tape.gradient(iwae_loss, inference)
        mine = tape.gradient(inference_loss, inference)
        self.assertNotAllClose(mine[0], other[0])


if __name__ == "__main__":
    tf.test.main()

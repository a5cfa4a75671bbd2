"""The AIR training objective: the prior's step probability over training, and the model and
baseline losses of one batch (Eslami et al. 2016, sec. 2.2 and appendix; Mnih & Gregor 2014 for
NVIL; Mnih & Rezende 2016 for VIMCO). Symbols: B batch, K particles, N max steps."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import ml_collections
import tensorflow as tf

from air import estimators, model

if TYPE_CHECKING:
    from air.experiment import Learner


def prior_step_prob(prior: ml_collections.ConfigDict, step) -> tf.Tensor:
    """The prior's success probability `s` at training step `step`, float64 scalar.

    'fixed': `prior.step_prob`. 'exponential' (KAIR master, `scripts/multi_mnist.py`):
    `s = max(final, initial (final / initial)^(max(step - hold, 0) / decay_steps))`,
    computed in log space in float64 so `1 - 1e-15` is not rounded to 1.
    """
    if prior.schedule == "fixed":
        return tf.constant(prior.step_prob, tf.float64)
    step = tf.cast(step, tf.float64)
    progress = tf.maximum(step - prior.hold_steps, 0.0) / prior.decay_steps
    log_initial, log_final = math.log(prior.initial), math.log(prior.final)
    log_s = log_initial + progress * (log_final - log_initial)
    return tf.exp(tf.maximum(log_s, min(log_initial, log_final)))


class Losses(NamedTuple):
    """What `compute_losses` returns.

    Attributes:
      model_loss: `[B]` loss of the AIR parameters (bound + score-function surrogate).
      baseline_loss: `[B]` loss of the baseline parameters, or None.
      metrics: name -> `[B]` per-example values.
      output: the `AIROutput` of the `[K * B]` tiled batch (particle-major).
    """

    model_loss: tf.Tensor
    baseline_loss: tf.Tensor | None
    metrics: dict[str, tf.Tensor]
    output: model.AIROutput


def compute_losses(
    learner: Learner,
    images: tf.Tensor,
    seed: tf.Tensor,
    step_prob: tf.Tensor,
    objective: ml_collections.ConfigDict,
    counts: tf.Tensor | None = None,
    update_stats: bool = True,
    plain_reinforce: bool = False,
) -> Losses:
    """Per-example losses and metrics of one batch (see the module docstring).

    Args:
      learner: the `Learner`.
      images: `[B, H, W, 1]`.
      seed: `[2]` stateless seed.
      step_prob: the prior's success probability `s`.
      objective: `config.objective`.
      counts: optional `[B]` true digit counts, for the `count_accuracy` metric.
      update_stats: update NVIL's running statistics.
      plain_reinforce: ignore the baseline and NVIL (for the gradient-variance
        ablation); only for `estimator=reinforce`.
    """
    k = objective.num_particles
    batch = tf.shape(images)[0]
    x = tf.tile(images, [k, 1, 1, 1]) if k > 1 else images  # [K*B, H, W, 1]
    out = learner.air(x, seed, step_prob)
    per_particle = lambda t: tf.reshape(t, [k, batch])  # [K*B] -> [K, B]
    log_w = per_particle(out.log_weight)
    log_q = per_particle(out.log_q_num_steps)
    elbo = per_particle(out.elbo)
    metrics = {
        "elbo": tf.reduce_mean(elbo, 0),
        "log_likelihood": tf.reduce_mean(per_particle(out.log_likelihood), 0),
        "kl_num_steps": tf.reduce_mean(per_particle(out.kl_num_steps), 0),
        "kl_what": tf.reduce_mean(
            per_particle(tf.reduce_sum(out.presence_probs * out.kl_what, 1)), 0
        ),
        "kl_where": tf.reduce_mean(
            per_particle(tf.reduce_sum(out.presence_probs * out.kl_where, 1)), 0
        ),
        "num_steps": tf.reduce_mean(per_particle(tf.cast(out.num_steps, tf.float32)), 0),
        "expected_num_steps": tf.reduce_mean(per_particle(tf.reduce_sum(out.presence_probs, 1)), 0),
        "prior_step_prob": tf.fill([batch], tf.cast(step_prob, tf.float32)),
    }
    if counts is not None:
        correct = tf.cast(
            tf.equal(out.num_steps, tf.cast(tf.tile(counts, [k]), tf.int32)), tf.float32
        )
        metrics["count_accuracy"] = tf.reduce_mean(per_particle(correct), 0)
    if k > 1:
        metrics["iwae_bound"] = estimators.iwae_bound(log_w)

    if objective.estimator == "vimco":
        return Losses(estimators.vimco_loss(log_w, log_q), None, metrics, out)

    if objective.bound == "elbo":
        bound_loss = -tf.reduce_mean(elbo, 0)  # [B]
        cost = -per_particle(out.log_likelihood)  # reconstruction NLL of the sampled n
    else:
        bound = estimators.iwae_bound(log_w)
        bound_loss = -bound
        cost = tf.tile(-bound[None], [k, 1])
    cost = tf.stop_gradient(cost)
    baseline_module = None if plain_reinforce else learner.baseline
    nvil = None if plain_reinforce else learner.nvil
    if baseline_module is not None:
        b = per_particle(baseline_module(x, [out.z_what, out.z_where]))
    else:
        b = tf.zeros_like(cost)
    baseline_target = cost
    if nvil is not None:
        # NVIL (Mnih & Gregor 2014, Alg. 1): the running mean c is an input-independent
        # baseline, so b learns the residual cost - c (optionally divided by max(1, std)).
        baseline_target = cost - nvil.mean
        signal = nvil(cost - b, update=update_stats)
    else:
        signal = cost - b
    surrogate = estimators.score_function_surrogate(log_q, signal)  # [K, B]
    metrics["learning_signal"] = tf.reduce_mean(signal, 0)
    metrics["learning_signal_sq"] = tf.reduce_mean(tf.square(signal), 0)
    model_loss = bound_loss + tf.reduce_mean(surrogate, 0)
    baseline_loss = None
    if baseline_module is not None:
        baseline_loss = tf.reduce_mean(estimators.baseline_loss(baseline_target, b), 0)
    return Losses(model_loss, baseline_loss, metrics, out)

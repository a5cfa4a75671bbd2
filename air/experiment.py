"""Wiring of the AIR experiments: data, model, estimators, optimizers, evaluation.

The generic loop in `common.training` runs `AIRTask`; `air.train` and
`air.evaluate` are thin binaries around `build_task` and `evaluate_run`.

Objectives (config `objective`), all per example and minimized:

- `estimator=reinforce, bound=elbo` (paper, KAIR): `-ELBO` with analytic KL
  terms (`air.model`) plus the score-function surrogate for `n` whose cost is
  the reconstruction NLL of the sampled `n` (the only term that depends on
  the sample; REFERENCES.md 5.6), minus the neural baseline and NVIL's running
  mean (`objective.centering`), optionally divided by NVIL's running standard
  deviation (`objective.nvil_normalization`; off by default, see
  `air.estimators.NVILNormalizer`). With K > 1 particles the K estimates are averaged.
- `estimator=reinforce, bound=iwae`: `-IWAE_K` (Monte-Carlo log weights) plus
  a surrogate per particle with cost `-IWAE_K` (the exact score-function
  coefficient of the bound) minus the baseline `b(x, z_k)`.
- `estimator=vimco` (needs `bound=iwae`, K >= 2): `air.estimators.vimco_loss`
  (Mnih & Rezende 2016), no learned baseline.

The baseline MLP is its own parameter group with its own optimizer at
`objective.baseline_lr_multiplier` times the learning rate (KAIR: 10x).

Symbols: B batch, K particles, N max steps, H = W = canvas size.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, NamedTuple

import ml_collections
import numpy as np
import sonnet as snt
import tensorflow as tf
import tf_keras
from absl import logging

from air import estimators, model, modules
from common import datasets, summaries, training

ESTIMATORS = ("reinforce", "vimco")
BOUNDS = ("elbo", "iwae")
PRIOR_SCHEDULES = ("fixed", "exponential")
OPTIMIZERS = ("rmsprop", "adam")
# One colour per step for the glimpse boxes (red, green, blue, then yellow, magenta, cyan).
STEP_COLOURS = np.array(
    [[1, 0, 0], [0, 1, 0], [0.2, 0.4, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], np.float32
)
_CONFUSION_CELL = 24  # pixels per cell of the confusion-matrix image


class Learner(snt.Module):
    """Everything an AIR run trains and checkpoints.

    Attributes:
      air: the `air.model.AIR` model.
      baseline: `air.modules.Baseline`, or None (VIMCO, or no baseline).
      nvil: `air.estimators.NVILNormalizer` (running-mean centring and optional
        variance normalization of the learning signal), or None.
    """

    def __init__(
        self,
        air: model.AIR,
        baseline: modules.Baseline | None = None,
        nvil: estimators.NVILNormalizer | None = None,
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.air = air
        self.baseline = baseline
        self.nvil = nvil


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError, naming the field, for an inconsistent config."""
    obj = config.objective
    if obj.estimator not in ESTIMATORS:
        raise ValueError(f"objective.estimator must be one of {ESTIMATORS}; got {obj.estimator!r}.")
    if obj.bound not in BOUNDS:
        raise ValueError(f"objective.bound must be one of {BOUNDS}; got {obj.bound!r}.")
    if obj.num_particles < 1:
        raise ValueError(f"objective.num_particles must be >= 1; got {obj.num_particles}.")
    if obj.estimator == "vimco":
        if obj.bound != "iwae" or obj.num_particles < 2:
            raise ValueError(
                "objective.estimator=vimco needs objective.bound=iwae and "
                f"objective.num_particles >= 2; got {obj.bound!r} and {obj.num_particles}."
            )
        if obj.baseline or obj.centering or obj.nvil_normalization:
            raise ValueError(
                "VIMCO uses leave-one-out baselines: set objective.baseline, "
                "objective.centering and objective.nvil_normalization to False."
            )
    if obj.nvil_normalization and not obj.centering:
        raise ValueError("objective.nvil_normalization=True needs objective.centering=True.")
    if config.prior.schedule not in PRIOR_SCHEDULES:
        raise ValueError(
            f"prior.schedule must be one of {PRIOR_SCHEDULES}; got {config.prior.schedule!r}."
        )
    if config.optimizer.name not in OPTIMIZERS:
        raise ValueError(
            f"optimizer.name must be one of {OPTIMIZERS}; got {config.optimizer.name!r}."
        )
    if config.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {config.batch_size}.")


def build_air(config: ml_collections.ConfigDict) -> model.AIR:
    """The AIR model of `config.model` (variables not yet created)."""
    m = config.model
    glimpse = (m.glimpse_size, m.glimpse_size)
    where_head = modules.WhereHead(
        m.where_hidden,
        std_init=m.where_std_init,
        min_scale=m.min_where_scale,
        scale_init=m.where_scale_prior_mean or None,
        name="where",
    )
    scale_loc = where_head.scale_code(m.where_scale_prior_mean) if m.where_scale_prior_mean else 0.0
    return model.AIR(
        input_encoder=modules.InputEncoder(m.input_encoder_hidden, name="input_encoder"),
        core=snt.LSTM(m.lstm_size, name="core"),
        where_head=where_head,
        presence_head=modules.PresenceHead(
            m.presence_hidden, bias_init=m.presence_bias_init, name="presence"
        ),
        glimpse_encoder=modules.GlimpseEncoder(
            m.what_size, m.glimpse_encoder_hidden, name="glimpse_encoder"
        ),
        glimpse_decoder=modules.GlimpseDecoder(
            glimpse,
            hidden_sizes=m.glimpse_decoder_hidden,
            output=m.decoder_output,
            output_bias=m.decoder_output_bias,
            output_multiplier=m.output_multiplier,
            name="glimpse_decoder",
        ),
        canvas_shape=(config.data.canvas_size, config.data.canvas_size),
        max_steps=m.max_steps,
        likelihood=m.likelihood,
        output_std=m.output_std,
        normalized_prior=config.prior.normalized,
        where_prior_loc=[scale_loc, scale_loc, 0.0, 0.0],
        where_prior_std=[m.where_scale_prior_std, m.where_scale_prior_std, 1.0, 1.0],
    )


def build_model(config: ml_collections.ConfigDict) -> Learner:
    """The `Learner` of `config` with all its variables created.

    Raises:
      ValueError: for an inconsistent config.
    """
    validate_config(config)
    obj = config.objective
    use_baseline = obj.estimator == "reinforce" and obj.baseline
    learner = Learner(
        build_air(config),
        modules.Baseline(obj.baseline_hidden, name="baseline") if use_baseline else None,
        estimators.NVILNormalizer(obj.nvil_decay, obj.nvil_normalization, name="nvil")
        if obj.centering
        else None,
    )
    size = config.data.canvas_size
    out = learner.air(tf.zeros([1, size, size, 1]), tf.constant([0, 0]), 0.5)
    if learner.baseline is not None:
        learner.baseline(tf.zeros([1, size, size, 1]), [out.z_what, out.z_where])
    return learner


def prior_step_prob(prior: ml_collections.ConfigDict, step) -> tf.Tensor:
    """The prior's success probability `s` at training step `step`, float64 scalar.

    'fixed': `prior.step_prob`. 'exponential' (KAIR master, REFERENCES.md 5.4):
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


def make_optimizer(opt: ml_collections.ConfigDict, learning_rate: float):
    """RMSProp (KAIR: momentum 0.9, centred) or Adam, from tf_keras (Sonnet 2
    optimizers refuse `tf.distribute` strategies other than Sonnet's)."""
    if opt.name == "rmsprop":
        return tf_keras.optimizers.RMSprop(
            learning_rate,
            rho=opt.rho,
            momentum=opt.momentum,
            epsilon=opt.epsilon,
            centered=opt.centered,
            jit_compile=False,
        )
    return tf_keras.optimizers.Adam(learning_rate, epsilon=opt.epsilon, jit_compile=False)


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


# -- images -------------------------------------------------------------------------------------


def _box_pixels(z_where: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """`(top, left, bottom, right)` pixel rows/cols (inclusive) of a `z_where` window."""
    s_x, s_y, t_x, t_y = (float(v) for v in z_where)
    cx, cy = (t_x + 1) * (width - 1) / 2, (t_y + 1) * (height - 1) / 2
    hx, hy = s_x * (width - 1) / 2, s_y * (height - 1) / 2
    clip = lambda v, n: int(np.clip(round(v), 0, n - 1))
    return clip(cy - hy, height), clip(cx - hx, width), clip(cy + hy, height), clip(cx + hx, width)


def draw_boxes(images: np.ndarray, z_where: np.ndarray, z_pres: np.ndarray) -> np.ndarray:
    """Draws the window of every present step in its colour (`STEP_COLOURS`).

    Args:
      images: `[B, H, W, 1 or 3]` in [0, 1].
      z_where: `[B, N, 4]`.
      z_pres: `[B, N]` in {0, 1}.

    Returns:
      `[B, H, W, 3]` float32 RGB copies with 1-pixel box outlines.
    """
    images = np.asarray(images, np.float32)
    rgb = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images.copy()
    _, height, width, _ = rgb.shape
    for b in range(rgb.shape[0]):
        for t in range(z_where.shape[1]):
            if z_pres[b, t] < 0.5:
                continue
            colour = STEP_COLOURS[t % len(STEP_COLOURS)]
            top, left, bottom, right = _box_pixels(z_where[b, t], height, width)
            rgb[b, top, left : right + 1] = colour
            rgb[b, bottom, left : right + 1] = colour
            rgb[b, top : bottom + 1, left] = colour
            rgb[b, top : bottom + 1, right] = colour
    return rgb


def confusion_image(confusion: np.ndarray) -> np.ndarray:
    """`[T, P]` counts -> `[1, T*c, P*c, 3]` image of the row-normalized matrix
    (rows: true count, columns: inferred count; brighter = more)."""
    confusion = np.asarray(confusion, np.float64)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    cells = np.kron(rows, np.ones([_CONFUSION_CELL, _CONFUSION_CELL]))
    cells[::_CONFUSION_CELL, :] = 0.5  # grid lines
    cells[:, ::_CONFUSION_CELL] = 0.5
    rgb = np.stack([cells, cells, 0.2 * np.ones_like(cells)], axis=-1)
    return rgb[None].astype(np.float32)


# -- the task ------------------------------------------------------------------------------------


def _load_data(config: ml_collections.ConfigDict) -> datasets.MultiMnist:
    d = config.data
    return datasets.load_multi_mnist(
        d.data_dir or None,
        d.source,
        canvas_size=d.canvas_size,
        max_digits=d.max_digits,
        digit_scale=d.digit_scale,
        num_train=d.num_train,
        num_test=d.num_test,
        seed=d.seed,
    )


def _prefix(split: datasets.MultiMnistSplit, num: int) -> datasets.MultiMnistSplit:
    if not num:
        return split
    return datasets.MultiMnistSplit(*(a[:num] for a in split))


class AIRTask:
    """`common.training.Task` for AIR on multi-MNIST."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        validate_config(config)
        self.data = _load_data(config)
        self.model = build_model(config)
        self.global_batch_size = config.batch_size
        lr = config.optimizer.learning_rate
        self.optimizer = make_optimizer(config.optimizer, lr)
        self.baseline_optimizer = None
        if self.model.baseline is not None:
            self.baseline_optimizer = make_optimizer(
                config.optimizer, lr * config.objective.baseline_lr_multiplier
            )
        self._evaluator = Evaluator(self.model, config)

    def current_step_prob(self) -> tf.Tensor:
        """The prior's `s` at the model optimizer's step (checkpointed with it)."""
        return prior_step_prob(self.config.prior, self.optimizer.iterations)

    # -- data --------------------------------------------------------------------------------
    def train_dataset(self, start_step: int) -> tf.data.Dataset:
        return datasets.multi_mnist_train_dataset(
            self.data.train, self.global_batch_size, self.config.seed, start_step
        )

    def validation_dataset(self) -> tf.data.Dataset | None:
        split = _prefix(self.data.test, self.config.eval.num_validation_images)
        return datasets.multi_mnist_eval_dataset(split, self.config.eval.batch_size)

    # -- training ----------------------------------------------------------------------------
    def param_groups(self) -> dict[str, training.ParamGroup]:
        groups = {"model": training.ParamGroup(self.model.air.trainable_variables, self.optimizer)}
        if self.model.baseline is not None:
            groups["baseline"] = training.ParamGroup(
                self.model.baseline.trainable_variables, self.baseline_optimizer
            )
        return groups

    def step(self, batch, seed) -> training.StepOutput:
        losses = compute_losses(
            self.model,
            batch["image"],
            seed,
            self.current_step_prob(),
            self.config.objective,
            counts=batch.get("count"),
        )
        out = {"model": losses.model_loss}
        if losses.baseline_loss is not None:
            out["baseline"] = losses.baseline_loss
        return training.StepOutput(out, losses.metrics)

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, dataset: tf.data.Dataset, seed: tf.Tensor) -> dict[str, float]:
        metrics = self._evaluator(dataset, seed, self.current_step_prob())
        return {k: v for k, v in metrics.items() if isinstance(v, float)}

    def images(self, batch, seed) -> dict[str, tf.Tensor]:
        return self._evaluator.images(batch["image"][:16], seed, self.current_step_prob())


def build_task(config: ml_collections.ConfigDict) -> AIRTask:
    return AIRTask(config)


class Evaluator:
    """Held-out metrics and TensorBoard images of a `Learner`."""

    def __init__(self, learner: Learner, config: ml_collections.ConfigDict):
        self.learner = learner
        self.config = config
        self.max_digits = config.data.max_digits
        self.max_steps = config.model.max_steps
        self._batch_fn = tf.function(self._batch, reduce_retracing=True)

    def _batch(self, images, counts, seed, step_prob):
        air = self.learner.air
        seeds = tf.random.experimental.stateless_split(seed, 3)
        out = air(images, seeds[0], step_prob)
        mode = air(images, seeds[1], step_prob, deterministic=True)
        k = self.config.eval.num_particles
        batch = tf.shape(images)[0]
        tiled = air(tf.tile(images, [k, 1, 1, 1]), seeds[2], step_prob)
        counts = tf.cast(counts, tf.int32)
        return {
            "elbo": out.elbo,
            f"iwae_bound_k{k}": estimators.iwae_bound(tf.reshape(tiled.log_weight, [k, batch])),
            "log_likelihood": out.log_likelihood,
            "kl_num_steps": out.kl_num_steps,
            "kl_what": tf.reduce_sum(out.presence_probs * out.kl_what, 1),
            "kl_where": tf.reduce_sum(out.presence_probs * out.kl_where, 1),
            "num_steps": tf.cast(out.num_steps, tf.float32),
            "expected_num_steps": tf.reduce_sum(out.presence_probs, 1),
            "count_accuracy": tf.cast(tf.equal(out.num_steps, counts), tf.float32),
            "count_accuracy_mode": tf.cast(tf.equal(mode.num_steps, counts), tf.float32),
            "_inferred": out.num_steps,
        }

    def __call__(self, dataset: tf.data.Dataset, seed: tf.Tensor, step_prob) -> dict[str, Any]:
        """Means over `dataset` of the per-image metrics, plus `confusion_matrix`
        (`[max_digits + 1, max_steps + 1]` ints: rows true count, columns the
        sampled inferred count) and `num_images`."""
        sums: dict[str, float] = {}
        confusion = np.zeros([self.max_digits + 1, self.max_steps + 1], np.int64)
        num = 0
        step_prob = tf.cast(step_prob, tf.float64)
        for i, batch in enumerate(dataset):
            values = self._batch_fn(
                batch["image"],
                batch["count"],
                tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int32), i),
                step_prob,
            )
            inferred = values.pop("_inferred").numpy()
            np.add.at(confusion, (batch["count"].numpy(), inferred), 1)
            for name, v in values.items():
                sums[name] = sums.get(name, 0.0) + float(tf.reduce_sum(v))
            num += len(inferred)
        metrics: dict[str, Any] = {k: v / max(num, 1) for k, v in sums.items()}
        metrics["prior_step_prob"] = float(step_prob)
        metrics["confusion_matrix"] = confusion
        metrics["num_images"] = num
        return metrics

    def images(self, images: tf.Tensor, seed: tf.Tensor, step_prob) -> dict[str, tf.Tensor]:
        """Input, reconstruction and per-step glimpse boxes (`STEP_COLOURS`), `[1, ., ., 3]`."""
        out = self.learner.air(images, seed, step_prob)
        z_where, z_pres = out.z_where.numpy(), out.z_pres.numpy()
        recon = np.clip(out.canvas.numpy(), 0.0, 1.0)
        columns = int(math.ceil(math.sqrt(len(recon))))
        grid = lambda a: summaries.image_grid(a, columns)
        return {
            "input": grid(np.repeat(images.numpy(), 3, -1)),
            "reconstruction": grid(np.repeat(recon, 3, -1)),
            "glimpse_boxes": grid(draw_boxes(images.numpy(), z_where, z_pres)),
            "reconstruction_boxes": grid(draw_boxes(recon, z_where, z_pres)),
        }


# -- gradient variance -------------------------------------------------------------------------


def gradient_variance(
    learner: Learner,
    config: ml_collections.ConfigDict,
    images: tf.Tensor,
    step_prob,
    repeats: int,
    seed: int,
) -> dict[str, float]:
    """Per-parameter variance of the stochastic gradient of the model loss.

    Draws `repeats` gradients on the same `images` (fresh latent samples each
    time) and reports the variance across draws averaged over parameters,
    for all AIR parameters and for the presence head alone (whose gradient
    comes only through `log q(n)` and the KL weights). For REINFORCE, the
    same without baseline and NVIL (`_no_baseline`) measures what the
    variance reduction buys (K-AIR: ~1e3 without vs ~1e-1 with a baseline).

    Raises:
      ValueError: if `repeats < 2`.
    """
    if repeats < 2:
        raise ValueError(f"gradient variance needs >= 2 repeats; got {repeats}.")
    air = learner.air
    variables = air.trainable_variables
    presence = [i for i, v in enumerate(variables) if "presence" in v.name]
    step_prob = tf.cast(step_prob, tf.float64)

    def make(plain: bool):
        @tf.function
        def draw(s):
            with tf.GradientTape() as tape:
                losses = compute_losses(
                    learner,
                    images,
                    s,
                    step_prob,
                    config.objective,
                    update_stats=False,
                    plain_reinforce=plain,
                )
                loss = tf.reduce_mean(losses.model_loss)
            grads = tape.gradient(loss, variables)
            return [tf.reshape(g, [-1]) for g in grads]

        return draw

    variants = {"": False}
    if config.objective.estimator == "reinforce":
        variants["_no_baseline"] = True
    result = {}
    for suffix, plain in variants.items():
        draw = make(plain)
        samples = [draw(tf.constant([seed, r], tf.int32)) for r in range(repeats)]
        per_var = [
            np.stack([s[i].numpy() for s in samples]).var(0, ddof=1) for i in range(len(variables))
        ]
        result["gradient_variance" + suffix] = float(np.mean(np.concatenate(per_var)))
        result["gradient_variance_presence" + suffix] = float(
            np.mean(np.concatenate([per_var[i] for i in presence]))
        )
    return result


# -- test-set evaluation (air.evaluate) ---------------------------------------------------------


def evaluate_run(run_dir: str, checkpoint_path: str | None = None) -> dict[str, Any]:
    """Evaluates a run on the held-out multi-MNIST test split.

    Writes `metrics.json` (count accuracy, confusion matrix, ELBO, IWAE-k
    bound, KL terms, mean number of steps, gradient variance) and TensorBoard
    scalars and images (confusion matrix, glimpse boxes) under `run_dir/test`.

    Raises:
      common.experiment.RunError: bad run folder or checkpoint.
    """
    from common import experiment

    restored = experiment.load_from_checkpoint(run_dir, checkpoint_path)
    config, learner = restored.config, restored.model
    data = _load_data(config)
    test = _prefix(data.test, config.eval.num_test_images)
    dataset = datasets.multi_mnist_eval_dataset(test, config.eval.batch_size)
    step_prob = prior_step_prob(config.prior, restored.step)
    logging.info(
        "Evaluating %s (step %d) on %d held-out images.",
        restored.checkpoint_path,
        restored.step,
        len(test.images),
    )
    evaluator = Evaluator(learner, config)
    seed = tf.constant([config.seed, 10_000], tf.int32)
    metrics: dict[str, Any] = {"step": restored.step, "checkpoint": restored.checkpoint_path}
    metrics.update(evaluator(dataset, seed, step_prob))
    confusion = metrics["confusion_matrix"]
    metrics["confusion_matrix"] = confusion.tolist()
    if config.eval.gradient_variance_repeats:
        images = tf.constant(
            test.images[: config.eval.gradient_variance_batch, ..., None] / 255.0, tf.float32
        )
        metrics.update(
            gradient_variance(
                learner,
                config,
                images,
                step_prob,
                config.eval.gradient_variance_repeats,
                config.seed,
            )
        )
    tmp = os.path.join(run_dir, "metrics.json.tmp")
    with open(tmp, "w") as f:
        json.dump(metrics, f, indent=2)
    os.replace(tmp, os.path.join(run_dir, "metrics.json"))
    writer = tf.summary.create_file_writer(os.path.join(run_dir, "test"))
    with writer.as_default():
        for name, v in metrics.items():
            if isinstance(v, float):
                tf.summary.scalar(name, v, step=restored.step)
        tf.summary.image("confusion_matrix", confusion_image(confusion), step=restored.step)
        x = tf.constant(test.images[:16, ..., None] / 255.0, tf.float32)
        for name, image in evaluator.images(x, seed, step_prob).items():
            tf.summary.image(name, image, step=restored.step)
    writer.flush()
    return metrics


def format_metrics(run_dir: str, metrics: dict[str, Any]) -> str:
    """A short human-readable summary of `evaluate_run`'s metrics."""
    lines = [
        f"Held-out multi-MNIST results for {run_dir} (step {metrics['step']}, "
        f"{metrics['num_images']} images):",
        f"  count accuracy: {metrics['count_accuracy']:.4f} (sampled n), "
        f"{metrics['count_accuracy_mode']:.4f} (mode)",
        "  confusion matrix (rows: true count 0.., columns: inferred count 0..):",
    ]
    lines += [f"    {row}" for row in metrics["confusion_matrix"]]
    lines.append(f"  ELBO: {metrics['elbo']:.2f} nats")
    for name in sorted(k for k in metrics if k.startswith("iwae_bound_k")):
        lines.append(f"  IWAE bound k = {name[len('iwae_bound_k') :]}: {metrics[name]:.2f} nats")
    lines.append(
        f"  KL n / what / where: {metrics['kl_num_steps']:.2f} / {metrics['kl_what']:.2f} / "
        f"{metrics['kl_where']:.2f} nats"
    )
    lines.append(
        f"  mean steps: {metrics['num_steps']:.3f} (sampled), "
        f"{metrics['expected_num_steps']:.3f} (expected)"
    )
    for name in sorted(k for k in metrics if k.startswith("gradient_variance")):
        lines.append(f"  {name}: {metrics[name]:.4g}")
    lines.append(f"  written to {os.path.join(run_dir, 'metrics.json')}")
    return "\n".join(lines)

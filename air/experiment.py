"""Wiring of the AIR experiments: the model from a config and the training task.

The generic loop in `common.training` runs `AIRTask`; `air.train` and
`air.evaluate` are thin binaries around `build_task` and
`air.evaluation.evaluate_run`. The losses of one batch are in `air.objective`,
the multi-MNIST data in `air.data`, pictures in `air.plots`.

Objectives (config `objective`), all per example and minimized:

- `estimator=reinforce, bound=elbo` (paper, KAIR): `-ELBO` with analytic KL
  terms (`air.model`) plus the score-function surrogate for `n` whose cost is
  the reconstruction NLL of the sampled `n` (the only term that depends on
  the sample; the reference code's `air_model.py`), minus the neural baseline and NVIL's running
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

import ml_collections
import sonnet as snt
import tensorflow as tf

from air import data as multi_mnist
from air import estimators, model, modules
from air.evaluation import Evaluator
from air.objective import compute_losses, prior_step_prob
from common import optimizers, training

ESTIMATORS = ("reinforce", "vimco")
BOUNDS = ("elbo", "iwae")
PRIOR_SCHEDULES = ("fixed", "exponential")


CONFIG_RANGES = {  # checked by `common.cli.check_config` before a run starts
    "model.max_steps": ">= 1",
    "model.glimpse_size": ">= 1",
    "model.what_size": ">= 1",
    "model.lstm_size": ">= 1",
    "model.where_scales": "in [1, 2]",
    "model.min_where_scale": "in [0, 1)",
    "model.output_std": "> 0",
    "model.where_std_init": "> 0",
    "data.canvas_size": ">= 1",
    "data.max_digits": ">= 0",
    "data.num_train": ">= 1",
    "objective.num_particles": ">= 1",
    "eval.num_particles": ">= 1",
    "optimizer.epsilon": "> 0",
}


def check_config(config: ml_collections.ConfigDict) -> None:
    """Relations `CONFIG_RANGES` cannot state.

    Raises:
      ValueError: a glimpse larger than the canvas, or a digit that does not fit on it.
    """
    size, canvas = config.model.glimpse_size, config.data.canvas_size
    if size > canvas:
        raise ValueError(
            f"config.model.glimpse_size = {size} is larger than the canvas "
            f"(config.data.canvas_size = {canvas}): expected at most {canvas}."
        )
    digit = round(28 * config.data.get("digit_scale", 1.0))
    if digit > canvas:
        raise ValueError(
            f"config.data.canvas_size = {canvas} cannot hold a {digit}-pixel digit "
            f"(config.data.digit_scale = {config.data.digit_scale}): expected >= {digit}."
        )


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
    if config.optimizer.name not in optimizers.OPTIMIZERS:
        raise ValueError(
            f"optimizer.name must be one of {optimizers.OPTIMIZERS}; got {config.optimizer.name!r}."
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
        num_scales=m.get("where_scales", 2),
        name="where",
    )
    n = where_head.num_scales
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
        where_prior_loc=[scale_loc] * n + [0.0, 0.0],
        where_prior_std=[m.where_scale_prior_std] * n + [1.0, 1.0],
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


class AIRTask:
    """`common.training.Task` for AIR on multi-MNIST."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        validate_config(config)
        self.data = multi_mnist.load_from_config(config)
        self.model = build_model(config)
        self.global_batch_size = config.batch_size
        lr = config.optimizer.learning_rate
        self.optimizer = optimizers.make_optimizer(config.optimizer, lr)
        self.baseline_optimizer = None
        if self.model.baseline is not None:
            self.baseline_optimizer = optimizers.make_optimizer(
                config.optimizer, lr * config.objective.baseline_lr_multiplier
            )
        self._evaluator = Evaluator(self.model, config)

    def current_step_prob(self) -> tf.Tensor:
        """The prior's `s` at the model optimizer's step (checkpointed with it)."""
        return prior_step_prob(self.config.prior, self.optimizer.iterations)

    # -- data --------------------------------------------------------------------------------
    def train_dataset(self, start_step: int) -> tf.data.Dataset:
        return multi_mnist.multi_mnist_train_dataset(
            self.data.train, self.global_batch_size, self.config.seed, start_step
        )

    def validation_dataset(self) -> tf.data.Dataset | None:
        # Validation images are made of held-out MNIST training digits: never the test split.
        split = multi_mnist.prefix(self.data.validation, self.config.eval.num_validation_images)
        return multi_mnist.multi_mnist_eval_dataset(split, self.config.eval.batch_size)

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

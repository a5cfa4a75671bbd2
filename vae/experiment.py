"""Wiring of the VAE/IWAE experiments: data, model, optimizer, objectives,
evaluation. The generic loop in `common.training` runs it.

Symbols: B batch, K importance samples per group, M groups, D_x = 784 pixels.
"""

from __future__ import annotations

import math
import os
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
import tf_keras
import tqdm
from absl import logging

from common import experiment, optimizers, summaries, training
from common.data import mnist as mnist_data
from common.data import pipelines
from vae import estimators, mlps, modules

CONFIG_RANGES = {  # checked by `common.cli.check_config` before a run starts
    "objective.num_samples": ">= 1",
    "objective.num_groups": ">= 1",
    "model.num_stochastic_layers": "in [1, 2]",
    "model.num_flows": ">= 0",
    "model.context_size": ">= 1",
    "model.iaf_hidden_units": ">= 1",
    "data.validation_size": "in [0, 59999]",
    "eval.num_samples": ">= 1",
    "eval.chunk_samples": ">= 1",
    "eval.validation_num_samples": ">= 1",
    "eval.num_test_images": ">= 0",
    "optimizer.beta_1": "in [0, 1)",
    "optimizer.beta_2": "in [0, 1)",
    "optimizer.epsilon": "> 0",
}


def posterior_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The posterior arguments of `modules.make_model` from `config.model`.

    Configs written before flow posteriors existed (old run folders) lack
    these fields and get the Gaussian posterior they were trained with.

    Raises:
      ValueError: for an unknown `model.posterior` or `model.num_flows` set
        with the Gaussian posterior.
    """
    model = config.model
    posterior = model.get("posterior", "gaussian")
    if posterior not in modules.POSTERIORS:
        raise ValueError(
            f"Unknown model.posterior {posterior!r}; expected one of "
            f"{', '.join(modules.POSTERIORS)}."
        )
    if posterior == "gaussian":
        if model.get("num_flows", 0):
            raise ValueError(
                f"model.num_flows={model.num_flows} is only used by the planar, radial and iaf "
                "posteriors; set model.posterior or leave num_flows at 0."
            )
        return {}
    return dict(
        posterior=posterior,
        num_flows=int(model.get("num_flows", 0)),
        iaf_hidden_units=tuple(int(h) for h in model.get("iaf_hidden_units", (200, 200))),
        context_size=int(model.get("context_size", 50)),
        iaf_log_scale_bound=model.get("iaf_log_scale_bound", None),
    )


def build_model(
    config: ml_collections.ConfigDict, output_bias_init: np.ndarray | None = None
) -> modules.IWAEModel:
    """The model of `config` with all its variables created.

    Args:
      config: a `vae/configs/iwae.py` config.
      output_bias_init: `[784]` initial Bernoulli logits bias (Burda et al.:
        the logit of the mean training image); ignored values are fine when
        the variables are restored from a checkpoint afterwards.

    Raises:
      ValueError: for a bad `config.model` (see `posterior_kwargs`).
    """
    model = modules.make_model(
        config.model.num_stochastic_layers, output_bias_init, **posterior_kwargs(config)
    )
    model.log_weights(tf.zeros([1, 784]), num_samples=1, seed=tf.constant([0, 0]))
    return model


def _paper_schedule(config, steps_per_epoch: int):
    """Burda et al. sec. 5: stage i = 0..7 lasts 3^i epochs at 1e-3 * 10^(-i/7).

    Keras' `PiecewiseConstantDecay` keeps value i while `step <= boundary_i` and is called with
    the number of updates made so far, so stage i ends at the step before the first update of
    its next epoch: `boundary_i = (sum_{j<=i} 3^j) * steps_per_epoch - 1`.
    """
    boundaries, epochs = [], 0
    for i in range(7):
        epochs += 3**i
        boundaries.append(epochs * steps_per_epoch - 1)
    values = [config.optimizer.learning_rate * 10 ** (-i / 7) for i in range(8)]
    return tf_keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """Adam (`common.optimizers`) with the configured learning-rate schedule.

    Raises:
      ValueError: for an unknown schedule.
    """
    opt = config.optimizer
    if opt.schedule not in ("paper", *optimizers.SCHEDULES):
        raise ValueError(
            f"Unknown optimizer.schedule {opt.schedule!r}; expected paper, "
            f"{', '.join(optimizers.SCHEDULES)}."
        )
    if opt.schedule == "paper":
        lr = _paper_schedule(config, steps_per_epoch)
    else:
        lr = optimizers.learning_rate_schedule(opt, config.loop.num_steps)
    return optimizers.make_optimizer(opt, lr)


def _objective_kwargs(config) -> dict[str, Any]:
    obj = config.objective
    kwargs = {"num_groups": obj.num_groups}
    if obj.estimator == "ciwae":
        kwargs["beta"] = obj.beta
    return kwargs


def _as_images(x: tf.Tensor) -> tf.Tensor:
    return tf.reshape(x, [-1, 28, 28, 1])


class VAETask:
    """`common.training.Task` for the IWAE-family experiments on MNIST."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        obj = config.objective
        # Fail on a bad objective before loading data or building anything.
        estimators.training_objectives(
            obj.estimator,
            tf.zeros([obj.num_samples * obj.num_groups, 1]),
            **_objective_kwargs(config),
        )
        posterior_kwargs(config)  # ... and on a bad posterior.
        if config.data.dataset != "mnist":
            raise ValueError(f"data.dataset must be 'mnist', got {config.data.dataset!r}.")
        if config.data.binarization not in ("dynamic", "static"):
            raise ValueError(
                f"data.binarization must be dynamic or static, got {config.data.binarization!r}."
            )
        self.data_dir = config.data.data_dir or None
        self.data = mnist_data.load_mnist(
            self.data_dir, config.data.source, config.data.validation_size
        )
        mean_image = self.data.train.images.reshape(-1, 784).mean(0) / 255.0
        self.model = build_model(config, mlps.output_bias_from_mean(mean_image))
        self.global_batch_size = config.batch_size
        self.steps_per_epoch = pipelines.steps_per_epoch(
            len(self.data.train.images), config.batch_size
        )
        self.optimizer = make_optimizer(config, self.steps_per_epoch)
        self.num_samples = obj.num_samples * obj.num_groups
        self._eval_fn = tf.function(self._eval_log_w)

    # -- data ------------------------------------------------------------------
    def train_dataset(self, start_step: int) -> tf.data.Dataset:
        transform = (
            "dynamic_binarize" if self.config.data.binarization == "dynamic" else "static_binarize"
        )
        seed = (
            self.config.seed
            if transform == "dynamic_binarize"
            else self.config.data.binarization_seed
        )
        batch = self.global_batch_size
        ds = pipelines.train_dataset(
            self.data.train.images, batch, seed, transform, start_step, data_dir=self.data_dir
        )
        # Static batch shape, so replicas split it evenly and noise shapes are static.
        return ds.map(lambda e: {"image": tf.ensure_shape(e["image"], [batch, 28, 28, 1])})

    def _binarized_eval(self, images: np.ndarray, batch_size: int) -> tf.data.Dataset:
        """Evaluation data: binarized once with a fixed seed (Burda et al.; YB seed 123)."""
        return pipelines.eval_dataset(
            images,
            batch_size,
            "static_binarize",
            seed=self.config.data.binarization_seed,
            data_dir=self.data_dir,
        )

    def validation_dataset(self) -> tf.data.Dataset | None:
        if not len(self.data.validation.images):
            return None
        return self._binarized_eval(self.data.validation.images, 100)

    def test_dataset(self) -> tf.data.Dataset:
        images = self.data.test.images
        if self.config.eval.num_test_images:
            images = images[: self.config.eval.num_test_images]
        return self._binarized_eval(images, self.config.eval.batch_size)

    # -- training --------------------------------------------------------------
    def param_groups(self) -> dict[str, training.ParamGroup]:
        if self.config.objective.estimator == "piwae":
            # Rainforth et al. sec. 4: theta on IWAE_{MK}, phi on MIWAE(M, K).
            return {
                "inference": training.ParamGroup(self.model.inference_variables, self.optimizer),
                "generative": training.ParamGroup(self.model.generative_variables, self.optimizer),
            }
        return {"model": training.ParamGroup(self.model.trainable_variables, self.optimizer)}

    def step(self, batch, seed) -> training.StepOutput:
        out = self.model.log_weights(batch["image"], self.num_samples, seed)
        objectives = estimators.training_objectives(
            self.config.objective.estimator, out.log_w, **_objective_kwargs(self.config)
        )
        if self.config.objective.estimator == "piwae":
            losses = {"inference": -objectives.inference, "generative": -objectives.generative}
        else:
            losses = {"model": -objectives.generative}
        metrics = {
            "objective": objectives.generative,
            "elbo": estimators.elbo(out.log_w),
            "iwae_bound": estimators.iwae_bound(out.log_w),
            "log_px_given_z": tf.reduce_mean(out.log_px_given_z, 0),
            "kl": tf.reduce_mean(out.log_qz - out.log_pz, 0),
        }
        return training.StepOutput(losses, metrics)

    # -- evaluation ------------------------------------------------------------
    def _eval_log_w(self, x, num_samples, seed):
        return self.model.log_weights(x, num_samples, seed).log_w

    def evaluate(self, dataset: tf.data.Dataset, seed: tf.Tensor) -> dict[str, float]:
        """ELBO and IWAE-k bound (k = eval.validation_num_samples), in nats."""
        k = self.config.eval.validation_num_samples
        elbo, iwae, n = 0.0, 0.0, 0
        for i, batch in enumerate(dataset):
            log_w = self._eval_fn(
                batch["image"], k, tf.random.experimental.stateless_fold_in(seed, i)
            )
            elbo += float(tf.reduce_sum(estimators.elbo(log_w)))
            iwae += float(tf.reduce_sum(estimators.iwae_bound(log_w)))
            n += int(log_w.shape[1])
        return {"elbo": elbo / n, f"iwae_bound_k{k}": iwae / n}

    def images(self, batch, seed) -> dict[str, tf.Tensor]:
        x = batch["image"][:32]
        return {
            "input": summaries.image_grid(x, 8),
            "reconstruction": summaries.image_grid(_as_images(self.model.reconstruct(x, seed)), 8),
            "samples": summaries.image_grid(_as_images(self.model.sample(32, seed)), 8),
        }


def build_task(config: ml_collections.ConfigDict) -> VAETask:
    return VAETask(config)


# -- test-set evaluation (vae.evaluate) -----------------------------------------


def evaluate_log_likelihood(
    model: modules.IWAEModel,
    dataset: tf.data.Dataset,
    num_samples: int,
    chunk_samples: int,
    seed: int,
    bound_ks: tuple[int, ...] = (1, 5, 50),
    progress: bool = True,
) -> dict[str, float]:
    """Test log-likelihood and bounds from `num_samples` importance samples.

    For every image the `[num_samples]` log-weights are drawn in chunks of
    `chunk_samples` (memory), then: `log_likelihood` = IWAE_{num_samples}
    (Burda et al. sec. 5, k = 5000); `elbo` = mean log-weight; `iwae_bound_k{k}`
    = the average of IWAE_k over the `num_samples / k` disjoint groups
    (an unbiased, low-variance estimate of the IWAE-k bound, i.e.
    MIWAE(num_samples/k, k)). All in nats per image, averaged over images;
    `nll` = -log_likelihood with its standard error `nll_stderr`.

    Raises:
      ValueError: if `chunk_samples` does not divide `num_samples` or a k in
        `bound_ks` does not divide `num_samples`.
    """
    if num_samples % chunk_samples:
        raise ValueError(f"eval.chunk_samples={chunk_samples} must divide {num_samples}.")
    ks = [k for k in bound_ks if k <= num_samples]
    for k in ks:
        if num_samples % k:
            raise ValueError(f"bound k={k} must divide num_samples={num_samples}.")

    @tf.function
    def chunk(x, s):
        return model.log_weights(x, chunk_samples, s).log_w  # [chunk, B]

    base = tf.constant([seed, 5000], tf.int32)
    per_image: dict[str, list[np.ndarray]] = {}
    total = dataset.cardinality().numpy()
    bar = tqdm.tqdm(dataset, total=total, desc="log-likelihood", disable=not progress, unit="batch")
    for i, batch in enumerate(bar):
        parts = []
        for j in range(num_samples // chunk_samples):
            s = tf.random.experimental.stateless_fold_in(
                base, i * (num_samples // chunk_samples) + j
            )
            parts.append(chunk(batch["image"], s))
        log_w = tf.concat(parts, axis=0)  # [num_samples, B]
        values = {
            "log_likelihood": estimators.iwae_bound(log_w),
            "elbo": estimators.elbo(log_w),
        }
        for k in ks:
            values[f"iwae_bound_k{k}"] = estimators.miwae_bound(log_w, num_samples // k)
        for name, v in values.items():
            per_image.setdefault(name, []).append(v.numpy())
    result = {}
    for name, parts in per_image.items():
        v = np.concatenate(parts)
        result[name] = float(v.mean())
    ll = np.concatenate(per_image["log_likelihood"])
    result["nll"] = -result["log_likelihood"]
    result["nll_stderr"] = float(ll.std(ddof=1) / math.sqrt(len(ll))) if len(ll) > 1 else 0.0
    result["num_images"] = int(len(ll))
    result["num_samples"] = int(num_samples)
    return result


def active_units(
    model: modules.IWAEModel, dataset: tf.data.Dataset, threshold: float, seed: int
) -> dict[str, Any]:
    """Active latent units (Burda et al. sec. 5.2): unit u of layer l is active
    when A_u = Cov_x(E_{q(u|x)}[u]) > `threshold`.

    Returns:
      `{"active_units": total, "active_units_per_layer": [n_1, ...],
        "unit_activity": [[A_u, ...] per layer]}`.
    """
    fn = tf.function(lambda x: model.posterior_mean(x, 100, tf.constant([seed, 7])))
    means = None
    for batch in dataset:
        out = [m.numpy() for m in fn(batch["image"])]
        means = (
            [[m] for m in out]
            if means is None
            else [a + [m] for a, m in zip(means, out, strict=False)]
        )
    activity = [np.concatenate(m).var(axis=0) for m in means]
    per_layer = [int((a > threshold).sum()) for a in activity]
    return {
        "active_units": int(sum(per_layer)),
        "active_units_per_layer": per_layer,
        "unit_activity": [a.tolist() for a in activity],
    }


def snr_per_parameter(draws: np.ndarray) -> np.ndarray:
    """`|mean| / std` over the first axis of `[R, ...]` gradient draws (Rainforth et al. 2018,
    eq. 13), per parameter; parameters whose draws never vary (std 0) are dropped.

    Returns:
      `[P']` float64, P' <= the number of parameters.
    """
    d = np.asarray(draws, np.float64).reshape(len(draws), -1)
    std = d.std(axis=0, ddof=1)
    keep = std > 0
    return np.abs(d.mean(0)[keep]) / std[keep]


def gradient_snr(
    model: modules.IWAEModel,
    config: ml_collections.ConfigDict,
    images: tf.Tensor,
    repeats: int,
    seed: int,
) -> dict[str, float]:
    """Gradient signal-to-noise ratio per data point (Rainforth et al. 2018, eq. 13).

    Eq. 13 is the SNR of the gradient estimate for *one* data point: for image n and each
    parameter, `SNR = |E[g_n]| / std(g_n)` over `repeats` independent draws of the estimator on
    that image alone (its `num_samples * num_groups` importance samples redrawn each time). The
    inference parameters' `g_n` is the gradient of the image's inference objective, the
    generative parameters' that of its generative objective (as in training). We average the SNR
    over parameters, then over the images; the SNR of a batch-mean gradient over B images would
    be up to sqrt(B) larger and is not what the paper plots.

    The R draws of one image are one batch of R copies of it (independent samples per copy),
    differentiated per example with `GradientTape.jacobian`.

    Returns:
      `{"gradient_snr_inference", "gradient_snr_generative"}` (means over images and
      parameters), `gradient_snr_num_images`, `gradient_snr_repeats`.

    Raises:
      ValueError: `repeats` < 2.
    """
    if repeats < 2:
        raise ValueError(f"The gradient SNR needs >= 2 repeats, got {repeats}.")
    obj = config.objective
    num = obj.num_samples * obj.num_groups
    inf_vars, gen_vars = model.inference_variables, model.generative_variables

    @tf.function
    def per_example_grads(x, s):
        """`x: [R, ...]` copies of one image -> per-copy gradients `[R, ...]` per variable."""
        with tf.GradientTape(persistent=True) as tape:
            log_w = model.log_weights(x, num, s).log_w  # [num, R]
            o = estimators.training_objectives(obj.estimator, log_w, **_objective_kwargs(config))
        g_inf = tape.jacobian(o.inference, inf_vars)  # each [R, *shape]
        g_gen = tape.jacobian(o.generative, gen_vars)
        flat = lambda gs: tf.concat([tf.reshape(g, [repeats, -1]) for g in gs], 1)
        return flat(g_inf), flat(g_gen)

    snr_inf, snr_gen = [], []
    for n in range(int(images.shape[0])):
        x = tf.repeat(images[n : n + 1], repeats, axis=0)  # [R, ...]
        gi, gg = per_example_grads(x, tf.constant([seed, n], tf.int32))
        snr_inf.append(snr_per_parameter(gi.numpy()).mean())
        snr_gen.append(snr_per_parameter(gg.numpy()).mean())
    return {
        "gradient_snr_inference": float(np.mean(snr_inf)),
        "gradient_snr_generative": float(np.mean(snr_gen)),
        "gradient_snr_num_images": int(images.shape[0]),
        "gradient_snr_repeats": int(repeats),
    }


def evaluate_run(
    run_dir: str,
    checkpoint_path: str | None = None,
    num_samples: int | None = None,
    snr_repeats: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluates a run on the test split and writes `metrics.json` and
    TensorBoard scalars under `run_dir/test`.

    Raises:
      common.experiment.RunError: bad run folder or checkpoint.
    """
    restored = experiment.load_from_checkpoint(run_dir, checkpoint_path)
    config, model = restored.config, restored.model
    task_config = ml_collections.ConfigDict(config.to_dict())
    data_dir = config.data.data_dir or None
    mnist = mnist_data.load_mnist(data_dir, config.data.source, config.data.validation_size)
    images = mnist.test.images
    if config.eval.num_test_images:
        images = images[: config.eval.num_test_images]
    test = pipelines.eval_dataset(
        images,
        config.eval.batch_size,
        "static_binarize",
        config.data.binarization_seed,
        data_dir=data_dir,
    )
    k = num_samples or config.eval.num_samples
    logging.info(
        "Evaluating %s (step %d) on %d test images, k = %d.",
        restored.checkpoint_path,
        restored.step,
        len(images),
        k,
    )
    metrics: dict[str, Any] = {"step": restored.step, "checkpoint": restored.checkpoint_path}
    metrics.update(
        evaluate_log_likelihood(
            model, test, k, min(config.eval.chunk_samples, k), config.seed, progress=progress
        )
    )
    big_batches = pipelines.eval_dataset(
        images, 1000, "static_binarize", config.data.binarization_seed, data_dir=data_dir
    )
    metrics.update(
        active_units(model, big_batches, config.eval.active_units_threshold, config.seed)
    )
    if snr_repeats:
        x = next(iter(big_batches))["image"][:100]
        metrics.update(gradient_snr(model, task_config, x, snr_repeats, config.seed))
    experiment.write_json(os.path.join(run_dir, "metrics.json"), metrics)
    summaries.write_test_metrics(run_dir, metrics, restored.step)
    return metrics


def format_metrics(run_dir: str, metrics: dict[str, Any]) -> str:
    """A short human-readable summary of `evaluate_run`'s metrics."""
    lines = [
        f"Test results for {run_dir} (step {metrics['step']}, {metrics['num_images']} images):",
        f"  NLL (k = {metrics['num_samples']}): {metrics['nll']:.2f} "
        f"+- {metrics['nll_stderr']:.2f} nats",
        f"  ELBO: {metrics['elbo']:.2f} nats",
    ]
    for name in sorted(k for k in metrics if k.startswith("iwae_bound_k")):
        lines.append(f"  IWAE bound k = {name[len('iwae_bound_k') :]}: {metrics[name]:.2f} nats")
    lines.append(f"  active units: {metrics['active_units']} {metrics['active_units_per_layer']}")
    if "gradient_snr_inference" in metrics:
        lines.append(
            f"  gradient SNR per data point (Rainforth eq. 13; mean over parameters and "
            f"{metrics['gradient_snr_num_images']} images, {metrics['gradient_snr_repeats']} "
            f"draws each): inference {metrics['gradient_snr_inference']:.4f}, generative "
            f"{metrics['gradient_snr_generative']:.4f}"
        )
    lines.append(f"  written to {os.path.join(run_dir, 'metrics.json')}")
    return "\n".join(lines)

"""Wiring of the SCAE experiments: model from a config, the training task, validation accuracy.

`common.training.train` runs `SCAETask`; `scae.train` and `scae.evaluate` are thin binaries
around `build_task` and `scae.evaluation.evaluate_run`. Validation (every `loop.eval_every`
steps) fits 10-cluster k-means on the validation images' object presences and reports the
matched accuracy there (a curve of how well the objects cluster), plus the online linear probes'
accuracy and the likelihoods.

Symbols: B batch, M parts, K objects, C classes.
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np
import tensorflow as tf
import tf_keras

from common import optimizers, summaries, training
from scae import clustering, data, model, objects, parts
from scae.set_transformer import SetTransformer

CONFIG_RANGES = {  # checked by `common.cli.check_config` before a run starts
    "model.num_parts": ">= 1",
    "model.num_objects": ">= 1",
    "model.template_size": ">= 1",
    "model.part_features": ">= 0",
    "model.encoder_channels": ">= 1",
    "model.encoder_strides": ">= 1",
    "model.set_transformer_size": ">= 1",
    "model.set_transformer_heads": ">= 1",
    "model.set_transformer_layers": ">= 0",
    "model.object_hidden_size": ">= 1",
    "model.object_feature_size": ">= 1",
    "model.object_params_size": ">= 0",
    "model.presence_noise": ">= 0",
    "data.validation_size": ">= 0",
    "eval.clusters": ">= 1",
    "eval.num_train_images": ">= 0",
    "eval.num_test_images": ">= 0",
    "loss.dynamic_l2": ">= 0",
    "loss.part_likelihood": ">= 0",
    "optimizer.epsilon": "> 0",
}


def check_config(config: ml_collections.ConfigDict) -> None:
    """Relations `CONFIG_RANGES` cannot state.

    Raises:
      ValueError: templates larger than the image.
    """
    size, image = config.model.template_size, data.image_shape(config)[0]
    if size > image:
        raise ValueError(
            f"config.model.template_size = {size} is larger than the {image}-pixel image: "
            f"expected at most {image}."
        )


def build_model(config: ml_collections.ConfigDict) -> model.SCAE:
    """The SCAE of `config.model` with its variables created (one call on a dummy batch).

    Raises:
      ValueError: bad sizes (from the modules).
    """
    m = config.model
    height, width, channels = data.image_shape(config)
    scae = model.SCAE(
        part_encoder=parts.PartEncoder(
            m.num_parts,
            m.part_features,
            tuple(m.encoder_channels),
            tuple(m.encoder_strides),
            noise_scale=m.presence_noise,
            name="part_encoder",
        ),
        template_decoder=parts.TemplateDecoder(
            m.num_parts,
            m.template_size,
            channels=channels,
            output_scale=m.output_scale,
            use_alpha=m.use_alpha,
            template_nonlinearity=m.template_nonlinearity,
            seed=config.seed,
            colorize=m.get("colorize_templates", False),
            name="template_decoder",
        ),
        set_transformer=SetTransformer(
            m.num_objects,
            m.object_feature_size,
            m.set_transformer_size,
            m.set_transformer_layers,
            m.set_transformer_heads,
            pooling=m.get("set_transformer_pooling", "mab"),  # runs stored before it: "mab"
            name="set_transformer",
        ),
        capsule_decoder=objects.CapsuleDecoder(
            m.num_objects,
            m.num_parts,
            m.object_hidden_size,
            noise_scale=m.presence_noise,
            params_size=m.get("object_params_size", 0) or None,  # runs stored before it: none
            name="capsule_decoder",
        ),
        image_shape=(height, width),
        num_classes=config.data.num_classes,
        normalize_part_mixture=m.normalize_part_mixture,
        name="scae",
    )
    scae(tf.zeros([1, height, width, channels]))
    return scae


def make_optimizer(config: ml_collections.ConfigDict) -> tf_keras.optimizers.Optimizer:
    """`common.optimizers` with, if `optimizer.use_lr_schedule`, the exponential decay the
    reference code builds (and, as released, never uses)."""
    opt = config.optimizer
    lr = opt.learning_rate
    if opt.use_lr_schedule:
        lr = tf_keras.optimizers.schedules.ExponentialDecay(
            opt.learning_rate, opt.decay_steps, opt.decay_rate
        )
    return optimizers.make_optimizer(opt, lr)


def presences(
    scae: model.SCAE, dataset: tf.data.Dataset, noise_seed: tf.Tensor | None = None
) -> dict[str, np.ndarray]:
    """`{"prior": [N, K], "posterior": [N, K], "prior_probe": [N], "posterior_probe": [N],
    "label": [N], "rec_ll": [N], "part_log_prob": [N]}` over `dataset` (in order)."""

    @tf.function
    def batch_fn(images, seed, targets):
        out = scae(images, seed, targets)
        return {
            "prior": out.part_likelihood.prior_presence,
            "posterior": out.part_likelihood.posterior_mass,
            "prior_probe": tf.argmax(out.probe_logits["prior"], -1),
            "posterior_probe": tf.argmax(out.probe_logits["posterior"], -1),
            "rec_ll": out.rec_ll,
            "part_log_prob": out.part_likelihood.log_prob,
        }

    collected: dict[str, list[np.ndarray]] = {}
    for i, batch in enumerate(dataset):
        seed = (
            None if noise_seed is None else tf.random.experimental.stateless_fold_in(noise_seed, i)
        )
        values = batch_fn(batch["image"], seed, batch.get("target"))
        values["label"] = batch["label"]
        for name, v in values.items():
            collected.setdefault(name, []).append(np.asarray(v))
    return {name: np.concatenate(v) for name, v in collected.items()}


class SCAETask:
    """`common.training.Task` for SCAE on 40x40 shifted MNIST."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.data = data.load_splits(config)
        self.model = build_model(config)
        self.global_batch_size = config.batch_size
        self.optimizer = make_optimizer(config)

    def train_dataset(self, start_step: int) -> tf.data.Dataset:
        return data.train_batches(self.config, self.data.train, start_step)

    def validation_dataset(self) -> tf.data.Dataset:
        split = data.prefix(self.data.validation, self.config.eval.num_validation_images)
        return data.eval_batches(self.config, split, self.config.eval.batch_size)

    def param_groups(self) -> dict[str, training.ParamGroup]:
        return {"model": training.ParamGroup(self.model.trainable_variables, self.optimizer)}

    def step(self, batch, seed) -> training.StepOutput:
        out = self.model(
            batch["image"], noise_seed=tf.cast(seed, tf.int32), targets=batch.get("target")
        )
        loss, metrics = model.loss_terms(out, batch["label"], self.config.loss)
        return training.StepOutput({"model": loss}, metrics)

    def evaluate(self, dataset: tf.data.Dataset, seed: tf.Tensor) -> dict[str, float]:
        """Validation: 10-cluster k-means accuracy of prior and posterior presences (fitted and
        scored on the validation images), the probes' accuracy and the likelihoods."""
        noise = tf.cast(seed, tf.int32) if self.config.eval.presence_noise else None
        values = presences(self.model, dataset, noise)
        labels = values["label"]
        metrics = {
            "rec_ll": float(values["rec_ll"].mean()),
            "part_log_prob": float(values["part_log_prob"].mean()),
        }
        for kind in ("prior", "posterior"):
            result = clustering.kmeans_accuracy(
                values[kind], labels, {"validation": (values[kind], labels)}, seed=self.config.seed
            )
            metrics[f"{kind}_kmeans_accuracy"] = result.accuracy["validation"]
            metrics[f"{kind}_probe_accuracy"] = float(np.mean(values[f"{kind}_probe"] == labels))
        return metrics

    def images(self, batch, seed) -> dict[str, tf.Tensor]:
        x = batch["image"][:16]
        target = batch.get("target", batch["image"])[:16]  # what the templates explain
        out = self.model(x, targets=target)
        recon = self.model.template_decoder.reconstruction(out.rendered, out.parts.presence_logit)
        columns = int(math.ceil(math.sqrt(len(x))))
        upsample = lambda im: tf.image.resize(im, [80, 80], method="nearest")
        templates = upsample(self.model.template_decoder.templates)
        k, m = self.model.capsule_decoder.num_capsules, self.model.capsule_decoder.num_parts
        # Per-example grids for 4 examples: a row each, a column per object capsule / part.
        few = self.model(x[:4], targets=target[:4])
        flat = lambda t: tf.reshape(t, [-1, *t.shape[2:]])
        per_object = tf.clip_by_value(self.model.object_reconstructions(few), 0, 1)
        presence = out.part_likelihood.prior_presence  # [16, K] as 10x10-pixel cells
        cells = tf.image.resize(
            presence[tf.newaxis, ..., tf.newaxis], [10 * len(x), 10 * k], method="nearest"
        )
        return {
            "object_reconstructions": summaries.image_grid(flat(per_object), k),
            "transformed_templates": summaries.image_grid(flat(few.rendered.templates), m),
            "prior_presence": cells,
            "input": summaries.image_grid(upsample(x), columns),
            "target": summaries.image_grid(upsample(target), columns),
            "reconstruction": summaries.image_grid(
                upsample(tf.clip_by_value(recon, 0, 1)), columns
            ),
            "difference": summaries.image_grid(upsample(tf.abs(recon - target)), columns),
            "templates": summaries.image_grid(templates),
        }


def build_task(config: ml_collections.ConfigDict) -> SCAETask:
    return SCAETask(config)

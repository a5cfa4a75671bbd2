r"""Training steps per second of SCAE (Kosiorek et al. 2019) on 40x40 MNIST-sized input, and the
share of the forward pass spent in each part of the model.

One step = the loss of `scae.model.loss_terms` on a batch (PCAE alone: the negative image
log-likelihood only), its gradients w.r.t. all variables, and an Adam update. Models
(`--models`): `pcae` (part encoder + template decoder) and `scae` (the whole model: PCAE, Set
Transformer, capsule decoder, part likelihood, sparsity, probes), with the sizes of a config
variant (`--variant`, default `cpu`: 24 parts, 24 objects, 11x11 templates). Modes: eager,
function (`tf.function`), xla (`jit_compile=True`). Inputs are random `[B, 40, 40, 1]` images.

The share table times the forward pass of each part alone (`tf.function`, same batch): the part
encoder, the template decoder (render + likelihood), the Set Transformer, and the capsule
decoder with the part likelihood.

  python benchmarks/scae_step.py                               # batch 128, cpu sizes
  python benchmarks/scae_step.py --variant=smoke --batch_size=8 --steps=2 --repeats=1
"""

from __future__ import annotations

import time

import _timing  # benchmarks/, the script's folder
import tensorflow as tf
import tf_keras
from absl import app, flags

from scae import data, geometry, model, objects
from scae import experiment as scae_experiment
from scae.configs import mnist as mnist_configs

MODELS = ("pcae", "scae")
MODES = ("eager", "function", "xla")

_MODELS = flags.DEFINE_list("models", list(MODELS), f"Any of {MODELS}.")
_MODES = flags.DEFINE_list("modes", list(MODES), f"Any of {MODES}.")
_VARIANT = flags.DEFINE_enum(
    "variant", "cpu", list(mnist_configs.VARIANTS), "Config variant whose sizes are timed."
)
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size B (the paper's 128).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed training steps per repeat.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps before timing.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats per cell; the median is reported.")


def _step_fn(scae: model.SCAE, which: str, config, mode: str):
    variables = (
        scae.part_encoder.trainable_variables + scae.template_decoder.trainable_variables
        if which == "pcae"
        else scae.trainable_variables
    )
    optimizer = tf_keras.optimizers.Adam(1e-4)
    optimizer.build(variables)

    def step(x, labels, seed):
        with tf.GradientTape() as tape:
            if which == "pcae":
                caps = scae.part_encoder(x, seed)
                rendered = scae.template_decoder.render(
                    geometry.raw_to_affine(caps.pose_raw), scae.image_shape, caps.features
                )
                loss = -tf.reduce_mean(
                    scae.template_decoder.log_likelihood(x, rendered, caps.presence_logit)
                )
            else:
                loss, _ = model.loss_terms(scae(x, seed), labels, config.loss)
                loss = tf.reduce_mean(loss)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    return step if mode == "eager" else tf.function(step, jit_compile=(mode == "xla"))


def _forward_shares(scae: model.SCAE, x: tf.Tensor, repeats: int) -> dict[str, float]:
    """Seconds per forward pass of each part (tf.function), and of the whole model."""
    caps = scae.part_encoder(x)
    affine = geometry.raw_to_affine(caps.pose_raw)
    poses = objects.flatten_pose(affine)
    ocae_in = scae._ocae_input(caps, poses)
    features = scae.set_transformer(ocae_in, caps.presence)

    def likelihood():
        objs = scae.capsule_decoder(features)
        return objects.part_log_likelihood(
            poses, caps.presence, objs.votes(), objs.vote_presence(), objs.vote_scale
        ).log_prob

    parts = {
        "part encoder": lambda: scae.part_encoder(x).presence_logit,
        "template decoder": lambda: scae.template_decoder.log_likelihood(
            x,
            scae.template_decoder.render(affine, scae.image_shape, caps.features),
            caps.presence_logit,
        ),
        "set transformer": lambda: scae.set_transformer(ocae_in, caps.presence),
        "capsule decoder + part likelihood": likelihood,
        "whole forward pass": lambda: scae(x).rec_ll,
    }
    seconds = {}
    for name, fn in parts.items():
        f = tf.function(fn)
        f().numpy()  # trace
        start = time.perf_counter()
        for _ in range(repeats):
            out = f()
        out.numpy()
        seconds[name] = (time.perf_counter() - start) / repeats
    return seconds


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    for flag, values, allowed in (
        ("models", _MODELS.value, MODELS),
        ("modes", _MODES.value, MODES),
    ):
        if set(values) - set(allowed):
            raise app.UsageError(f"--{flag} got {values}; allowed: {allowed}.")
    if _BATCH.value < 1:
        raise app.UsageError("--batch_size must be >= 1.")
    _timing.check_flags(_STEPS.value, _REPEATS.value, _WARMUP.value)
    config = mnist_configs.get_config(_VARIANT.value)
    b = _BATCH.value
    x = tf.random.stateless_uniform([b, data.CANVAS_SIZE, data.CANVAS_SIZE, 1], [0, 1])
    labels = tf.random.stateless_uniform([b], [0, 2], maxval=10, dtype=tf.int64)
    _timing.print_machine()
    m = config.model
    print(
        f"SCAE `{_VARIANT.value}` sizes: {m.num_parts} parts, {m.num_objects} objects, "
        f"{m.template_size}x{m.template_size} templates; B = {b}, 40x40 images; step = loss + "
        f"grads + Adam; steps/s = median of {_REPEATS.value} x {_STEPS.value} steps."
    )
    print(f"{'model':<6} {'mode':<9} {'steps/s':>8} {'s/step':>8}")
    for which in [w for w in MODELS if w in _MODELS.value]:
        for mode in [md for md in MODES if md in _MODES.value]:
            scae = scae_experiment.build_model(config)
            step = _step_fn(scae, which, config, mode)
            rate = _timing.median_steps_per_second(
                lambda i, step=step: step(x, labels, tf.constant([0, i])),
                _WARMUP.value,
                _STEPS.value,
                _REPEATS.value,
                f"{which} {mode}",
            )
            print(f"{which:<6} {mode:<9} {rate:8.2f} {1 / rate:8.3f}", flush=True)
    shares = _forward_shares(scae_experiment.build_model(config), x, _REPEATS.value)
    total = shares.pop("whole forward pass")
    print(f"forward pass (tf.function): {total * 1000:.1f} ms; share of it per part:")
    for name, seconds in shares.items():
        print(f"  {name:<34} {seconds * 1000:8.1f} ms  {100 * seconds / total:5.1f}%")


if __name__ == "__main__":
    app.run(main)

r"""Training steps per second of AIR per gradient estimator: eager vs tf.function vs XLA.

One step = `air.objective.compute_losses` on a batch (the model loss with its
score-function surrogate, and the baseline loss when there is a baseline),
gradients of each loss w.r.t. its parameter group, and an RMSProp update per
group (as in `common.training`), with the model of the chosen config variant
(default `reference`: LSTM 256, MLPs 2x256, 3 steps, 20x20 glimpses). Estimators:

  reinforce  ELBO + REINFORCE with the neural baseline and centring (K = 1)
  nvil       as reinforce, plus NVIL variance normalization
  vimco      importance-weighted bound with VIMCO, K = --vimco_particles

Inputs are random sparse 50x50 images: AIR's cost is dense and does not depend
on pixel values. Each cell: `--warmup` untimed steps (tracing/compilation),
then `--repeats` timed runs of `--steps` steps; the median rate is printed.

Example (quick):
  python benchmarks/air_step.py --steps=3 --warmup=1 --repeats=1 --modes=function \
      --estimators=reinforce --variant=smoke --batch_size=8
"""

from __future__ import annotations

import _timing  # benchmarks/, the script's folder
import numpy as np
import tensorflow as tf
import tf_keras
from absl import app, flags

from air import experiment, objective
from air.configs import air as air_configs

MODES = ("eager", "function", "xla")
ESTIMATORS = ("reinforce", "nvil", "vimco")

_ESTIMATORS = flags.DEFINE_list("estimators", list(ESTIMATORS), f"Any of {ESTIMATORS}.")
_MODES = flags.DEFINE_list(
    "modes",
    list(MODES),
    "Execution modes: eager, function (tf.function), xla (tf.function(jit_compile=True)).",
)
_VARIANT = flags.DEFINE_enum(
    "variant", "reference", list(air_configs.VARIANTS), "Config variant whose model is timed."
)
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size B (the reference uses 64).")
_VIMCO_PARTICLES = flags.DEFINE_integer("vimco_particles", 5, "K for vimco (KAIR iwae_naive: 5).")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed training steps per repeat.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps before timing.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats per cell; the median is reported.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the inputs, weights and noise.")


def _config(estimator: str):
    config = air_configs.get_config(_VARIANT.value)
    obj = config.objective
    if estimator == "nvil":
        obj.nvil_normalization = True
    elif estimator == "vimco":
        obj.update(
            dict(
                estimator="vimco",
                bound="iwae",
                num_particles=_VIMCO_PARTICLES.value,
                baseline=False,
                centering=False,
                nvil_normalization=False,
            )
        )
    config.optimizer.name = "rmsprop"
    return config


def _make_step(learner, config, optimizers, mode: str):
    groups = {"model": learner.air.trainable_variables}
    if learner.baseline is not None:
        groups["baseline"] = learner.baseline.trainable_variables

    def step(x, seed):
        with tf.GradientTape(persistent=True) as tape:
            losses = objective.compute_losses(learner, x, seed, 0.01, config.objective)
            totals = {"model": tf.reduce_mean(losses.model_loss)}
            if losses.baseline_loss is not None:
                totals["baseline"] = tf.reduce_mean(losses.baseline_loss)
        for name, variables in groups.items():
            grads = tape.gradient(totals[name], variables)
            optimizers[name].apply_gradients(zip(grads, variables, strict=True))
        return totals["model"]

    if mode == "eager":
        return step
    return tf.function(step, jit_compile=(mode == "xla"))


def _steps_per_second(estimator: str, mode: str) -> float:
    tf.random.set_seed(_SEED.value)
    config = _config(estimator)
    size = config.data.canvas_size
    rng = np.random.default_rng(_SEED.value)
    x = tf.constant(rng.uniform(size=[_BATCH.value, size, size, 1]) ** 8, tf.float32)
    learner = experiment.build_model(config)
    optimizers = {"model": tf_keras.optimizers.RMSprop(1e-4, momentum=0.9, centered=True)}
    optimizers["model"].build(learner.air.trainable_variables)
    if learner.baseline is not None:
        optimizers["baseline"] = tf_keras.optimizers.RMSprop(1e-3, momentum=0.9, centered=True)
        optimizers["baseline"].build(learner.baseline.trainable_variables)
    step = _make_step(learner, config, optimizers, mode)
    seeds = [tf.constant([_SEED.value, i]) for i in range(_WARMUP.value + _STEPS.value)]
    return _timing.median_steps_per_second(
        lambda i: step(x, seeds[i]),
        _WARMUP.value,
        _STEPS.value,
        _REPEATS.value,
        f"{estimator} {mode}",
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    for name, values, allowed in (
        ("estimators", _ESTIMATORS.value, ESTIMATORS),
        ("modes", _MODES.value, MODES),
    ):
        bad = set(values) - set(allowed)
        if bad:
            raise app.UsageError(f"--{name} got {sorted(bad)}; allowed: {allowed}.")
    if min(_STEPS.value, _REPEATS.value, _BATCH.value) < 1 or _WARMUP.value < 0:
        raise app.UsageError("--steps, --repeats and --batch_size must be >= 1, --warmup >= 0.")
    if _VIMCO_PARTICLES.value < 2:
        raise app.UsageError("--vimco_particles must be >= 2.")
    modes = [m for m in MODES if m in _MODES.value]
    estimators = [e for e in ESTIMATORS if e in _ESTIMATORS.value]

    _timing.print_machine()
    print(
        f"Model: air/configs/air.py:{_VARIANT.value}, B = {_BATCH.value}. Steps/s = median of "
        f"{_REPEATS.value} x {_STEPS.value} steps after {_WARMUP.value} warm-up steps; step = "
        "losses + grads + RMSProp per parameter group."
    )
    header = f"{'estimator':>10} {'K':>3} " + " ".join(f"{m:>10}" for m in modes)
    print(header)
    print("-" * len(header))
    for estimator in estimators:
        k = _VIMCO_PARTICLES.value if estimator == "vimco" else 1
        cells = [f"{_steps_per_second(estimator, m):10.2f}" for m in modes]
        print(f"{estimator:>10} {k:>3} " + " ".join(cells), flush=True)
    print("(steps/s; higher is better)")


if __name__ == "__main__":
    app.run(main)

r"""Training steps per second of the IWAE paper's MLPs: eager vs tf.function vs XLA.

One step = K-sample IWAE bound (Burda et al. 2016, eq. 8) on a batch, its
gradients w.r.t. all variables, and a `tf_keras.optimizers.Adam(1e-3,
epsilon=1e-4)` update. Inputs are random binary images: the cost of these
dense MLPs does not depend on the pixel values, so no dataset is needed.

Each cell: `--warmup` untimed steps (tracing/compilation), then `--repeats`
timed runs of `--steps` steps; the median rate is printed.

Example (quick):
  python benchmarks/vae_step.py --steps=20 --layers=1 --batch_sizes=20 --ks=5
"""

from __future__ import annotations

import _timing  # benchmarks/, the script's folder
import numpy as np
import tensorflow as tf
import tf_keras
from absl import app, flags

from vae import estimators, modules

MODES = ("eager", "function", "xla")

_LAYERS = flags.DEFINE_list(
    "layers", ["1", "2"], "Numbers of stochastic layers to run (1: 784-200-200-50; 2: two layers)."
)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["20", "100"], "Batch sizes B to run.")
_KS = flags.DEFINE_list("ks", ["1", "5", "50"], "Numbers of importance samples K to run.")
_MODES = flags.DEFINE_list(
    "modes",
    list(MODES),
    "Execution modes: eager, function (tf.function), xla (tf.function(jit_compile=True)).",
)
_STEPS = flags.DEFINE_integer("steps", 100, "Timed training steps per repeat.")
_WARMUP = flags.DEFINE_integer(
    "warmup", 5, "Untimed steps before timing (tracing and XLA compilation)."
)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats per cell; the median is reported.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random inputs, weights and noise.")


def _parse_ints(name: str, values: list[str], allowed=None) -> list[int]:
    try:
        ints = [int(v) for v in values]
    except ValueError as e:
        raise app.UsageError(f"--{name} must be a list of ints, got {values}.") from e
    if any(v < 1 for v in ints) or (allowed is not None and not set(ints) <= set(allowed)):
        raise app.UsageError(f"--{name} got {values}; allowed: {allowed or 'positive ints'}.")
    return ints


def _make_step(model, optimizer, k: int, mode: str):
    """Returns `step(x, seed) -> loss` running one IWAE-K training step."""
    variables = model.trainable_variables

    def step(x, seed):
        with tf.GradientTape() as tape:
            log_w = model.log_weights(x, k, seed).log_w  # [K, B]
            loss = -tf.reduce_mean(estimators.iwae_bound(log_w))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    if mode == "eager":
        return step
    return tf.function(step, jit_compile=(mode == "xla"))


def _steps_per_second(layers: int, batch: int, k: int, mode: str) -> float:
    tf.random.set_seed(_SEED.value)
    rng = np.random.default_rng(_SEED.value)
    x = tf.constant((rng.random((batch, 784)) > 0.5).astype(np.float32))
    model = modules.make_model(layers)
    model.log_weights(x, 1, tf.constant([0, 0]))  # Create variables outside tf.function.
    optimizer = tf_keras.optimizers.Adam(1e-3, epsilon=1e-4)
    optimizer.build(model.trainable_variables)
    step = _make_step(model, optimizer, k, mode)
    seeds = [tf.constant([_SEED.value, i]) for i in range(_WARMUP.value + _STEPS.value)]
    return _timing.median_steps_per_second(
        lambda i: step(x, seeds[i]),
        _WARMUP.value,
        _STEPS.value,
        _REPEATS.value,
        f"layers={layers} B={batch} K={k} {mode}",
    )


def main(argv):
    del argv
    layers = _parse_ints("layers", _LAYERS.value, allowed=(1, 2))
    batch_sizes = _parse_ints("batch_sizes", _BATCH_SIZES.value)
    ks = _parse_ints("ks", _KS.value)
    bad = set(_MODES.value) - set(MODES)
    if bad:
        raise app.UsageError(f"--modes got {sorted(bad)}; allowed: {MODES}.")
    _timing.check_flags(_STEPS.value, _REPEATS.value, _WARMUP.value)
    modes = [m for m in MODES if m in _MODES.value]

    _timing.print_machine()
    print(
        f"Inputs: random binary images (speed does not depend on data). "
        f"Steps/s = median of {_REPEATS.value} x {_STEPS.value} steps "
        f"after {_WARMUP.value} warm-up steps; step = IWAE-K loss + grads + Adam."
    )
    header = f"{'layers':>6} {'B':>5} {'K':>4} " + " ".join(f"{m:>10}" for m in modes)
    print(header)
    print("-" * len(header))
    for num_layers in layers:
        for batch in batch_sizes:
            for k in ks:
                cells = [f"{_steps_per_second(num_layers, batch, k, m):10.1f}" for m in modes]
                print(f"{num_layers:>6} {batch:>5} {k:>4} " + " ".join(cells), flush=True)
    print("(steps/s; higher is better)")


if __name__ == "__main__":
    app.run(main)

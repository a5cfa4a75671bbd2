r"""Mixed precision on this machine: training steps/s of every package under `float32`,
`mixed_bfloat16` and `mixed_float16` (`common.precision`), and how far the bound moves.

Speed: `common.training.train` (the training binaries' loop: input pipeline, `tf.function`
step, Adam, summaries) runs `--steps` steps of a package's config with `--config.precision` set
to each policy; the figure is TensorBoard's `steps_per_second` over the last `--timed_steps`
steps (the first steps, with tracing, are not timed). Same config, batch and compile mode
(`tf.function`, no XLA) for every policy, one after the other in one process.

Bound difference: on the float32 run's final weights and one validation batch with one noise
seed, the training loss and metrics (e.g. the IWAE bound or the negative ELBO, in nats) are
computed under float32 and under each mixed policy; the largest relative difference is printed
(the same weights: this is the arithmetic's effect, not a different training run).

  python benchmarks/mixed_precision.py                       # all packages, cpu configs
  python benchmarks/mixed_precision.py --packages=vae,draw --policies=float32,mixed_bfloat16
"""

from __future__ import annotations

import importlib
import os
import tempfile
import time

import _timing  # benchmarks/, the script's folder
import numpy as np
import tensorflow as tf
from absl import app, flags
from tensorboard.backend.event_processing import event_accumulator

from common import experiment, precision, training

# package -> (config module, variant, steps, timed steps, summary interval)
CELLS = {
    "vae": ("vae.configs.iwae", "cpu", 600, 400, 200),
    "flows": ("flows.configs.mnist", "cpu", 300, 200, 100),
    "air": ("air.configs.air", "cpu", 150, 100, 50),
    "draw": ("draw.configs.mnist", "cpu", 120, 80, 40),
    "scae": ("scae.configs.mnist", "cpu", 60, 40, 20),
}

_PACKAGES = flags.DEFINE_list("packages", list(CELLS), f"Any of {list(CELLS)}.")
_POLICIES = flags.DEFINE_list(
    "policies", list(precision.POLICIES), f"Any of {list(precision.POLICIES)}."
)
_SCALE = flags.DEFINE_float(
    "steps_scale", 1.0, "Multiplies every package's step counts (e.g. 0.1 for a quick check)."
)


def _config(package: str, policy: str, steps: int, summary_every: int):
    module, variant, *_ = CELLS[package]
    config = importlib.import_module(module).get_config(variant)
    config.precision = policy
    # Every package trains in this one process, whose thread pools can be sized only before its
    # first op: all of them run on TensorFlow's default pools.
    config.inter_op_threads = config.intra_op_threads = 0
    loop = config.loop
    loop.num_steps = steps
    loop.summary_every = loop.log_every = summary_every
    loop.eval_every = loop.checkpoint_every = loop.image_every = 10 * steps  # not in the timing
    if "early_stopping" in config:
        config.early_stopping.enabled = False
    return config


def _steps_per_second(run_dir: str, timed_steps: int, steps: int) -> float:
    """The mean `steps_per_second` of the summaries covering the last `timed_steps` steps."""
    acc = event_accumulator.EventAccumulator(
        os.path.join(run_dir, "train"), size_guidance={"tensors": 0}
    )
    acc.Reload()
    events = [
        (e.step, float(tf.make_ndarray(e.tensor_proto)))
        for e in acc.Tensors("steps_per_second")
        if e.step > steps - timed_steps
    ]
    if not events:
        raise RuntimeError(f"No steps_per_second after step {steps - timed_steps} in {run_dir}.")
    return float(np.mean([v for _, v in events]))


def _losses(task, batch, seed, policy: str) -> dict[str, float]:
    with precision.policy(policy):
        out = tf.function(task.step)(batch, seed)
    values = {**{f"loss/{k}": v for k, v in out.losses.items()}, **out.metrics}
    return {k: float(tf.reduce_mean(v)) for k, v in values.items()}


def _bound_differences(package: str, run_dir: str, policies: list[str]) -> dict[str, str]:
    config = _config(package, "float32", 1, 1)
    tf.random.set_seed(config.seed)
    build_task = importlib.import_module(config.experiment).build_task
    task = build_task(config)
    checkpoint = tf.train.Checkpoint(model=task.model)
    experiment.restore(checkpoint, tf.train.latest_checkpoint(run_dir), run_dir)
    dataset = task.validation_dataset() or task.train_dataset(0)
    batch = next(iter(dataset))
    seed = tf.constant([7, 11], tf.int32)
    reference = _losses(task, batch, seed, "float32")
    out = {}
    for policy in policies:
        if policy == "float32":
            continue
        values = _losses(task, batch, seed, policy)
        rel = {
            k: abs(values[k] - v) / max(abs(v), 1e-12)
            for k, v in reference.items()
            if np.isfinite(v) and abs(v) > 1e-6
        }
        worst = max(rel, key=rel.get)
        loss = next(k for k in reference if k.startswith("loss/"))
        out[policy] = (
            f"{loss} {reference[loss]:.4f} -> {values[loss]:.4f} "
            f"(largest relative difference {rel[worst]:.2e}, {worst})"
        )
    return out


def main(argv):
    del argv
    unknown = set(_PACKAGES.value) - set(CELLS) | set(_POLICIES.value) - set(precision.POLICIES)
    if unknown:
        raise app.UsageError(f"Unknown packages or policies: {sorted(unknown)}.")
    _timing.print_machine()
    results_dir = tempfile.mkdtemp(prefix="mixed_precision_")
    for package in _PACKAGES.value:
        _, variant, steps, timed, every = CELLS[package]
        steps, timed = max(3, int(steps * _SCALE.value)), max(2, int(timed * _SCALE.value))
        every = max(1, int(every * _SCALE.value))
        print(f"\n{package} ({variant} config; {steps} steps, the last {timed} timed)")
        run_dirs = {}
        for policy in _POLICIES.value:
            config = _config(package, policy, steps, every)
            run_dir = os.path.join(results_dir, package, policy)
            os.makedirs(run_dir)
            with open(os.path.join(run_dir, "config.json"), "w") as f:
                f.write(config.to_json())
            build_task = importlib.import_module(config.experiment).build_task
            start = time.perf_counter()
            training.train(config, run_dir, build_task)
            rate = _steps_per_second(run_dir, timed, steps)
            run_dirs[policy] = run_dir
            print(
                f"  {policy:15s} {rate:8.2f} steps/s  ({time.perf_counter() - start:.0f} s "
                "with data loading and tracing)",
                flush=True,
            )
        if "float32" in run_dirs:
            for policy, text in _bound_differences(
                package, run_dirs["float32"], _POLICIES.value
            ).items():
                print(f"  same weights, {policy}: {text}")


if __name__ == "__main__":
    app.run(main)

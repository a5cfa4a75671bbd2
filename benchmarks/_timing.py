"""Timing shared by the step benchmarks (`benchmarks/*_step.py`, run as scripts)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from absl import app


def check_flags(steps: int, repeats: int, warmup: int) -> None:
    """Raises `app.UsageError` unless steps, repeats >= 1 and warmup >= 0."""
    if min(steps, repeats) < 1 or warmup < 0:
        raise app.UsageError("--steps and --repeats must be >= 1, --warmup >= 0.")


def print_machine() -> None:
    """Prints the TensorFlow version, the CPU and the usable cores and GPUs."""
    print(f"TensorFlow {tf.__version__}, {platform.processor() or platform.machine()}")
    print(
        f"CPU cores: {os.cpu_count()} (usable: {len(os.sched_getaffinity(0))}); "
        f"GPUs: {len(tf.config.list_physical_devices('GPU'))}"
    )


def median_steps_per_second(
    step: Callable[[int], object], warmup: int, steps: int, repeats: int, what: str
) -> float:
    """Median over `repeats` timed runs of `steps` calls, after `warmup` untimed calls.

    `step(i)` runs call i (0-based, warm-up calls first) and returns its loss (a scalar tensor);
    converting the last loss of a run to a float waits for the run to finish.

    Raises:
      RuntimeError: the last loss of a run is not finite (`what` names the cell).
    """
    return interleaved_medians({what: step}, warmup, steps, repeats)[what]


def interleaved_medians(
    cells: dict[str, Callable[[int], object]], warmup: int, steps: int, repeats: int
) -> dict[str, float]:
    """Steps/s of several cells, their timed runs alternating: cell A's run 1, B's run 1, A's
    run 2, ... so that a drift of the machine's speed during the benchmark (other tenants, clock
    changes) falls on every cell alike. Median over `repeats` runs of `steps` calls each, after
    `warmup` untimed calls of every cell; `step(i)` as in `median_steps_per_second`.

    Raises:
      RuntimeError: the last loss of a cell's run is not finite.
    """
    for step in cells.values():
        for i in range(warmup):
            float(step(i))
    rates = {name: [] for name in cells}
    for _ in range(repeats):
        for name, step in cells.items():
            start = time.perf_counter()
            for i in range(steps):
                loss = step(warmup + i)
            loss = float(loss)  # Waits for the last step.
            rates[name].append(steps / (time.perf_counter() - start))
            if not np.isfinite(loss):
                raise RuntimeError(f"Non-finite loss {loss} for {name}.")
    return {name: statistics.median(r) for name, r in rates.items()}

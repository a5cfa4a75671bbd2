"""Early stopping on the validation log-likelihood (MAF paper appendix: patience in epochs, keep
the best model) inside one call of `common.training.train`."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import ml_collections
import tensorflow as tf
from absl import logging

from common import experiment, training
from common.data import pipelines
from flows import data as flows_data
from flows.tasks import MnistDensityTask, UciDensityTask, load_uci_data

EARLY_STOPPING_FILE = "early_stopping.json"
BEST_DIR = "best"


class EarlyStopping:
    """Patience-based early stopping on a validation score (higher is better).

    MAF App.: stop when the validation log-likelihood has not improved for `patience` epochs and
    keep the best model. Steps are global training steps; a non-finite score never improves.
    """

    def __init__(self, patience_steps: int):
        if patience_steps < 1:
            raise ValueError(f"patience_steps must be positive, got {patience_steps}.")
        self.patience_steps = patience_steps
        self.best_step: int | None = None
        self.best_value = -math.inf
        self.best_checkpoint: str | None = None  # relative to the run folder
        self.history: list[tuple[int, float]] = []

    @property
    def last_step(self) -> int:
        return self.history[-1][0] if self.history else 0

    def update(self, step: int, value: float) -> bool:
        """Records the score at `step`; returns True when it is a new best."""
        if self.history and step <= self.last_step:
            raise ValueError(f"Scores must come in step order: {step} after {self.last_step}.")
        self.history.append((int(step), float(value)))
        if math.isfinite(value) and value > self.best_value:
            self.best_step, self.best_value = int(step), float(value)
            return True
        return False

    @property
    def should_stop(self) -> bool:
        since = self.last_step - (self.best_step if self.best_step is not None else 0)
        return bool(self.history) and since >= self.patience_steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "patience_steps": self.patience_steps,
            "best_step": self.best_step,
            "best_value": self.best_value if math.isfinite(self.best_value) else None,
            "best_checkpoint": self.best_checkpoint,
            "history": [list(h) for h in self.history],
            "stopped": self.should_stop,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EarlyStopping:
        state = cls(d["patience_steps"])
        state.best_step = d["best_step"]
        state.best_value = -math.inf if d["best_value"] is None else d["best_value"]
        state.best_checkpoint = d["best_checkpoint"]
        state.history = [(int(s), float(v)) for s, v in d["history"]]
        return state


def load_early_stopping(run_dir: str) -> EarlyStopping | None:
    path = os.path.join(run_dir, EARLY_STOPPING_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return EarlyStopping.from_dict(json.load(f))


def _best_manager(model: tf.Module, run_dir: str) -> tf.train.CheckpointManager:
    """Keeps the best model alone in `<run_dir>/best/model.ckpt-<step>`, readable by
    `experiment.load_from_checkpoint(run_dir, path)`; saving deletes the previous best."""
    return tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model),
        os.path.join(run_dir, BEST_DIR),
        max_to_keep=1,
        checkpoint_name=experiment.CHECKPOINT_NAME,
    )


def _build_density_task(config: ml_collections.ConfigDict) -> MnistDensityTask | UciDensityTask:
    return UciDensityTask(config) if config.task == "uci" else MnistDensityTask(config)


def train_with_early_stopping(
    config: ml_collections.ConfigDict, run_dir: str, resume_from: str | None
) -> tuple[training.TrainResult, EarlyStopping | None]:
    """Trains an MNIST or UCI density with early stopping (`early_stopping.patience_epochs > 0`)
    or for `loop.num_steps`.

    Validation runs every `early_stopping.eval_every_epochs` epochs inside one call of
    `common.training.train` (its `after_validation` hook), which saves a checkpoint there; the
    hook records the score in `early_stopping.json`, keeps the best model in `best/` and stops
    the loop after `patience_epochs` epochs without improvement.

    Returns:
      The loop's `TrainResult` and the early-stopping state (None without early stopping).

    Raises:
      ValueError: early stopping with a strategy other than `default` (see module docstring).
    """
    es = config.early_stopping
    if es.patience_epochs <= 0:
        return training.train(config, run_dir, _build_density_task, resume_from), None
    if config.strategy != "default" or config.num_cpu_devices > 1:
        raise ValueError(
            "Early stopping validates and sets batch-norm statistics on one in-memory task "
            "between training steps, which needs strategy='default'; use "
            f"early_stopping.patience_epochs=0 for strategy={config.strategy!r}."
        )
    uci_data = load_uci_data(config) if config.task == "uci" else None  # loaded once
    num_train = len(uci_data.train) if uci_data is not None else flows_data.num_train_images(config)
    per_epoch = pipelines.steps_per_epoch(num_train, config.batch_size)
    every = es.eval_every_epochs * per_epoch
    state = load_early_stopping(run_dir) or EarlyStopping(es.patience_epochs * per_epoch)
    step = experiment.checkpoint_step(resume_from) if resume_from else 0
    task, best = None, None

    def build(train_config):
        nonlocal task
        if uci_data is not None:
            task = UciDensityTask(train_config, uci_data)
        else:
            task = MnistDensityTask(train_config)
        return task

    def after_validation(step: int, metrics: dict[str, float]) -> bool:
        """Records the validation score, keeps the best checkpoint; True stops training."""
        nonlocal best
        if step <= state.last_step:  # already recorded (a resumed run)
            return state.should_stop
        value = metrics["log_likelihood"]
        if state.update(step, value):
            best = best or _best_manager(task.model, run_dir)
            path = best.save(checkpoint_number=step)
            state.best_checkpoint = os.path.relpath(path, run_dir)  # the run folder may move
        logging.info(
            "epoch %.2f: validation log-likelihood %.2f (best %.2f at epoch %.2f)",
            step / per_epoch,
            value,
            state.best_value,
            (state.best_step or 0) / per_epoch,
        )
        experiment.write_json(os.path.join(run_dir, EARLY_STOPPING_FILE), state.to_dict())
        return state.should_stop

    result = training.TrainResult(step, {}, {}, False)
    if not state.should_stop and step < config.loop.num_steps:
        # One call of the loop: validation every `every` steps through the hook, so the step
        # function compiles once (not once per epoch) and a signal is handled at any step.
        train_config = ml_collections.ConfigDict(config.to_dict())
        train_config.loop.eval_every = every
        train_config.loop.image_every = min(config.loop.image_every, every)
        result = training.train(train_config, run_dir, build, resume_from, after_validation)
        if result.interrupted:
            return result, state
        step = result.step
    if state.should_stop:
        logging.info(
            "Early stopping at epoch %.2f: no improvement for %d epochs.",
            step / per_epoch,
            es.patience_epochs,
        )
    return result, state

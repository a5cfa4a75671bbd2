"""Wiring of the flows experiments; the generic loop in `common.training` runs them.

- `task = "mnist"`: density estimation of dequantized MNIST in logit space as in the MAF paper
  (Papamakarios et al. 2017, sec. 4.3 and appendix): MAF(5), RealNVP(5)
  (Dinh et al. 2017) or MADE (Germain et al. 2015), Adam, L2 weight decay, early stopping on the
  validation log-likelihood with a patience in epochs, batch-norm statistics of the training set at
  evaluation, test log-likelihood in nats (logit space, +- 2 standard errors) and bits/pixel.
- `task = "uci"`: the same density estimation on the MAF paper's UCI data sets and BSDS300
  (`flows.uci`; MAF Table 1), test log-likelihood in nats (+- 2 standard errors).
- `task = "toy"`: 2-D densities by maximum likelihood and the energies U1-U4 of Rezende & Mohamed
  (2015) by reverse KL (`flows.toy`).

Early stopping: `train_and_evaluate` runs `common.training.train` once, validating every
`early_stopping.eval_every_epochs` epochs through the loop's `after_validation` hook, which
records the score in `early_stopping.json`, keeps the best model in `<run_dir>/best/` and stops
the loop after `patience_epochs` epochs without improvement.

Symbols: B batch, D event size (784 for MNIST, 6-63 for UCI, 2 for the toys), N examples.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from common import training
from flows.density import build_model  # noqa: F401  (config.experiment's build_model)
from flows.early_stopping import train_with_early_stopping
from flows.evaluation import evaluate_run
from flows.tasks import MnistDensityTask, UciDensityTask
from flows.toy_task import ToyTask

CONFIG_RANGES = {  # checked by `common.cli.check_config` before a run starts
    "model.num_layers": ">= 1",
    "model.num_components": ">= 1",
    "model.hidden_units": ">= 1",
    "data.num_train_images": ">= 0",
    "data.validation_size": ">= 0",
    "eval.num_samples": ">= 1",
    "eval.num_test_images": ">= 0",
    "eval.num_validation_images": ">= 0",
    "early_stopping.patience_epochs": ">= 1",
    "early_stopping.eval_every_epochs": ">= 1",
    "optimizer.beta_1": "in [0, 1)",
    "optimizer.beta_2": "in [0, 1)",
    "optimizer.epsilon": "> 0",
    "optimizer.weight_decay": ">= 0",
}


def build_task(config: ml_collections.ConfigDict):
    """The `common.training.Task` of `config.task`."""
    if config.task == "mnist":
        return MnistDensityTask(config)
    if config.task == "toy":
        return ToyTask(config)
    if config.task == "uci":
        return UciDensityTask(config)
    raise ValueError(f"config.task must be mnist, uci or toy, got {config.task!r}.")


def train_run(
    config: ml_collections.ConfigDict, run_dir: str, resume_from: str | None = None
) -> training.TrainResult:
    """Trains the run (MNIST and UCI: with early stopping)."""
    if config.task in ("mnist", "uci"):
        result, _ = train_with_early_stopping(config, run_dir, resume_from)
        return result
    return training.train(config, run_dir, build_task, resume_from)


def train_and_evaluate(
    config: ml_collections.ConfigDict, run_dir: str, resume_from: str | None = None
) -> dict[str, Any] | None:
    """Trains (`train_run`) and evaluates the run.

    Returns:
      The metrics written to `metrics.json`, or None when interrupted, on a non-chief worker or
      when `eval.after_training` is False.
    """
    result = train_run(config, run_dir, resume_from)
    if result.interrupted or not result.is_chief or not config.eval.after_training:
        return None
    return evaluate_run(run_dir)

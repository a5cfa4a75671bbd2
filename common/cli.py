"""Command-line plumbing shared by the training and evaluation binaries."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import ml_collections
import tensorflow as tf
from absl import app, flags, logging
from ml_collections import config_flags

from common import distribute, experiment, precision, training
from common.data import mnist

# Errors about the user's input, files or run (not bugs): reported in one line.
USER_ERRORS = (experiment.RunError, mnist.DataError, training.NonFiniteError, ValueError)


def _one_line(error: Exception) -> str:
    """The last meaningful line of an exception's message (ml_collections wraps its hint, e.g.
    `Did you mean "num_samples"`, in a KeyError inside an AttributeError)."""
    text = str(error)
    if "\\n" in text:  # an escaped message, repr'd by the wrapping exception
        text = text.encode().decode("unicode_escape")
    lines = [line.strip(" '\"") for line in text.splitlines() if line.strip(" '\"")]
    return lines[-1] if lines else type(error).__name__


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing for the binaries (`app.run(main, flags_parser=cli.parse_flags)`), with
    one line, not a traceback, for a bad `--config.<field>=<value>` override.

    An unknown flag or a bad flag value gets absl's usual message; an unknown config field or a
    value of the wrong type (raised from inside `ml_collections` while the flags are parsed) gets
    `error: --config...: <what is wrong>`. Both exit with status 1 before anything runs.
    """
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        # ml_collections embeds a config file's whole traceback: keep its first and last lines.
        text = lines[0] if len(lines) <= 1 else f"{lines[0]} {lines[-1]}"
        sys.stderr.write(f"FATAL Flags parsing error: {text}\n")
        sys.stderr.write("Pass --helpshort or --helpfull to see help on flags.\n")
        sys.exit(1)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        _bad_override(e, argv)


def _bad_override(error: Exception, argv: list[str]) -> None:
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    where = f" in {' '.join(overrides)}" if overrides else ""
    message = _one_line(error)
    if isinstance(error, (AttributeError, KeyError)) and "Did you mean" not in message:
        message = f"the config has no field {message!r}"
    sys.stderr.write(f"error: bad --config override{where}: {message}\n")
    sys.exit(1)


def define_config(default: str, help_text: str):
    """`--config`, a config file and variant with `--config.<field>=<value>` overrides.

    `ml_collections` applies the overrides when the flag is defined (it reads them from
    `sys.argv`), so an unknown field or a wrong type surfaces here, at import: it becomes one line
    on stderr and exit status 1 (`parse_flags` does the same for errors found while parsing).
    """
    try:
        return config_flags.DEFINE_config_file("config", default, help_text, lock_config=True)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        _bad_override(e, sys.argv)


def config_value(config_flag) -> ml_collections.ConfigDict:
    """The config of `--config`.

    Raises:
      experiment.RunError: the config file cannot be read (`ml_collections` defers that error
        to the first use of the value), naming the file and the reason.
    """
    value = config_flag.value
    try:
        value.get("experiment")  # a file that failed to load raises only when used
        return value
    except OSError as e:
        raise experiment.RunError(f"--config could not be loaded: {_one_line(e)}") from e


def define_run_flags(default_run_name: str) -> None:
    """Flags every training binary takes besides `--config`."""
    flags.DEFINE_string(
        "results_dir",
        "results",
        "Folder that holds the run folders: each run goes to <results_dir>/<run_name>/<N>/.",
    )
    flags.DEFINE_string(
        "run_name", default_run_name, "Name of the experiment; runs are numbered below it."
    )
    flags.DEFINE_bool(
        "resume",
        False,
        "Continue the newest run of --run_name from its latest checkpoint, with the config "
        "stored in that run; --config.<field>=<value> given now still override it.",
    )
    flags.DEFINE_string(
        "checkpoint",
        "",
        "With --resume: a specific checkpoint prefix to continue from (e.g. an earlier one "
        "when the newest is damaged). Default: the newest in the run folder.",
    )


def _explicit_overrides(argv: list[str]) -> list[str]:
    """Dotted config fields set on the command line (`--config.a.b=v`)."""
    names = []
    for arg in argv:
        if arg.startswith("--config."):
            names.append(arg[len("--config.") :].split("=", 1)[0])
    return names


def _get(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def _set(config, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        config = config[part]
    config[last] = value


def prepare_run(
    config: ml_collections.ConfigDict,
    results_dir: str,
    run_name: str,
    resume: bool,
    checkpoint: str,
    argv: list[str] | None = None,
) -> tuple[ml_collections.ConfigDict, str, str | None]:
    """Creates (or finds, with `resume`) the run folder and records the run.

    With `config.strategy == "multi_worker"` every worker of the cluster gets the run folder the
    chief chose (`distribute.chief_value` on its number), and only the chief records the run.

    Returns:
      `(config, run_dir, resume_from)`: on resume the stored config with this
      command line's explicit `--config.*` overrides applied, and the
      checkpoint to continue from (None for a new run, or a resumed run that
      had not reached its first checkpoint).

    Raises:
      experiment.RunError: `--resume` without a run to resume, or a
        `--checkpoint` that does not exist.
    """
    argv = list(sys.argv if argv is None else argv)
    if checkpoint and not resume:
        raise experiment.RunError("--checkpoint only makes sense with --resume.")
    try:
        return _prepare_run(config, results_dir, run_name, resume, checkpoint, argv)
    except OSError as e:  # a read-only or full disk, a file where a folder should be
        raise experiment.write_failure(
            "the run folder", e.filename or os.path.join(results_dir, run_name), e
        ) from e


def check_config(config: ml_collections.ConfigDict) -> None:
    """Checks `config` against `training.COMMON_RANGES`, its experiment module's
    `CONFIG_RANGES` and, if the module has one, its `check_config(config)` (relations between
    fields, e.g. a glimpse no larger than the canvas).

    Raises:
      ValueError: naming the field, its value and what was expected.
    """
    module = importlib.import_module(config.experiment)
    precision.compute_dtype(config.get("precision", "float32"))
    training.check_ranges(config, training.COMMON_RANGES)
    training.check_ranges(config, getattr(module, "CONFIG_RANGES", {}))
    if hasattr(module, "check_config"):
        module.check_config(config)


def _prepare_run(config, results_dir, run_name, resume, checkpoint, argv):
    strategy = None
    if config.get("strategy") == "multi_worker":
        strategy = distribute.make_strategy("multi_worker")
    chief = strategy is None or distribute.is_chief(strategy)
    if resume:
        run_dir = experiment.latest_run_dir(results_dir, run_name)
        if strategy is not None:
            run_dir = _chief_run_dir(strategy, results_dir, run_name, run_dir)
        stored = experiment.load_config(run_dir)
        for name in _explicit_overrides(argv):
            _set(stored, name, _get(config, name))
        config = stored
        check_config(config)
        resume_from = checkpoint or experiment.latest_checkpoint(run_dir)
        if checkpoint and not os.path.exists(checkpoint + ".index"):
            raise experiment.RunError(f"--checkpoint {checkpoint!r} does not exist.")
        logging.info("Resuming %s from %s", run_dir, resume_from or "its start (no checkpoint)")
    else:
        check_config(config)  # before anything is created
        run_dir = experiment.new_run_dir(results_dir, run_name) if chief else None
        if strategy is not None:
            run_dir = _chief_run_dir(strategy, results_dir, run_name, run_dir)
        resume_from = None
        logging.info("New run folder %s", run_dir)
    if chief:
        experiment.write_run_info(run_dir, config, argv)
    return config, run_dir, resume_from


def _chief_run_dir(
    strategy: tf.distribute.Strategy, results_dir: str, run_name: str, run_dir: str | None
) -> str:
    """The chief's `<results_dir>/<run_name>/<N>` (its `run_dir`; None on the other workers),
    agreed by every worker."""
    number = distribute.chief_value(strategy, int(os.path.basename(run_dir)) if run_dir else 0)
    return os.path.join(results_dir, run_name, str(number))


def task_trainer(build_task) -> Callable[[ml_collections.ConfigDict, str, str | None], Any]:
    """The `train_fn` of `train_main` for a package whose training is `training.train` of its
    `build_task(config)`."""

    def train_fn(config, run_dir, resume_from):
        return training.train(config, run_dir, build_task, resume_from)

    return train_fn


def train_main(
    config_flag,
    train_fn: Callable[[ml_collections.ConfigDict, str, str | None], training.TrainResult],
    evaluate_run: Callable[[str], dict],
    format_metrics: Callable[[str, dict], str],
) -> Callable[[list[str]], None]:
    """The `main` of a training binary: prepares the run folder (`prepare_run`), trains with
    `train_fn(config, run_dir, resume_from)`, then, unless training was interrupted, this process
    is a non-chief worker or `config.eval.after_training` is False, evaluates the run
    (`evaluate_run(run_dir)`, which writes `metrics.json`) and prints `format_metrics`. Errors
    about the user's input exit 1 with one line (`run_or_fail`)."""

    def train_and_evaluate():
        f = flags.FLAGS
        config, run_dir, resume_from = prepare_run(
            config_value(config_flag), f.results_dir, f.run_name, f.resume, f.checkpoint
        )
        result = train_fn(config, run_dir, resume_from)
        if result.interrupted or not result.is_chief or not config.eval.after_training:
            return None
        return run_dir, evaluate_run(run_dir)

    def main(argv: list[str]) -> None:
        no_extra_args(argv)
        out = run_or_fail(train_and_evaluate)
        if out is not None:
            print(format_metrics(*out))

    return main


def no_extra_args(argv: list[str]) -> None:
    """Rejects positional arguments (absl already rejects unknown flags)."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")


def run_or_fail(fn, *args, **kwargs):
    """Returns `fn(*args, **kwargs)`; a `USER_ERRORS` exception exits with status
    1 and a one-line message instead of a traceback."""
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as e:
        fail(e)


def fail(error: Exception) -> None:
    """Exits with status 1 and a one-line message (`error: ...`); the traceback, for
    developers, goes to the log at --verbosity=1."""
    logging.debug("%s", error, exc_info=True)
    sys.exit(f"error: {error}")

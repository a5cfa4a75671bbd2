"""Run folders, stored configs and checkpoints (the forge conventions, in TF2).

A run lives in `<results_dir>/<run_name>/<N>/`, N = 1, 2, ... incremented per new
run. Each run folder holds:

- `config.json`: the full resolved `ml_collections.ConfigDict`, enough to
  rebuild the model without the command line (`load_config`);
- `flags.json`: the command line, the git commit (when run from a checkout),
  the date and the versions of Python, TF, Sonnet and TFP;
- `git_diff.txt`: uncommitted changes at launch, appended on every (re)start;
- `model.ckpt-<step>.*` and `checkpoint`: `tf.train.CheckpointManager` files;
- TensorBoard event files in `train/`, `validation/` and `test/`;
- `metrics.json`: written by the evaluation binaries.

`load_from_checkpoint(run_dir)` rebuilds the model from `config.json` alone and
restores its variables, e.g. in a notebook.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from typing import Any, NamedTuple

import ml_collections
import tensorflow as tf

CONFIG_FILE = "config.json"
FLAGS_FILE = "flags.json"
# The layout of a run folder this code writes and reads; a folder written by a newer layout is
# refused rather than misread. Folders from before the field existed are layout 1.
RUN_FORMAT = 1
GIT_DIFF_FILE = "git_diff.txt"
CHECKPOINT_NAME = "model.ckpt"


class RunError(RuntimeError):
    """A run folder or checkpoint that cannot be used; the message says why."""


def write_failure(what: str, path: str, error: BaseException) -> RunError:
    """A `RunError` for a write that failed (disk full, read-only or missing folder): names
    `path` and the operating system's reason, e.g. "No space left on device"."""
    reason = getattr(error, "strerror", None) or str(getattr(error, "message", error))
    reason = re.sub(r"\s*\[Op:\w+\]$", "", reason.split(";")[-1].strip())
    return RunError(f"Could not write {what} in {path!r}: {reason}.")


def _numbered_runs(run_root: str) -> list[int]:
    if not os.path.isdir(run_root):
        return []
    return sorted(int(d) for d in os.listdir(run_root) if d.isdigit())


def new_run_dir(results_dir: str, run_name: str) -> str:
    """Creates and returns `<results_dir>/<run_name>/<N>` with N one past the
    largest existing number (1 for the first run). Safe against two processes
    starting at once: `os.mkdir` fails for the loser, which takes the next N."""
    run_root = os.path.join(results_dir, run_name)
    os.makedirs(run_root, exist_ok=True)
    while True:
        runs = _numbered_runs(run_root)
        run_dir = os.path.join(run_root, str(runs[-1] + 1 if runs else 1))
        try:
            os.mkdir(run_dir)
            return run_dir
        except FileExistsError:
            continue


def latest_run_dir(results_dir: str, run_name: str) -> str:
    """The highest-numbered run folder of `run_name`.

    Raises:
      RunError: if there is none.
    """
    run_root = os.path.join(results_dir, run_name)
    runs = _numbered_runs(run_root)
    if not runs:
        raise RunError(
            f"--resume: no run folder to resume under {run_root!r}; start a new run "
            "without --resume, or pass the --results_dir/--run_name of an existing run."
        )
    return os.path.join(run_root, str(runs[-1]))


def _git(*args: str) -> str | None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def versions() -> dict[str, str]:
    """Versions of the interpreter and the libraries a result depends on."""
    import sonnet as snt
    import tensorflow_probability as tfp

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "sonnet": snt.__version__,
        "tensorflow_probability": tfp.__version__,
    }


def write_json(path: str, obj: Any) -> None:
    """Writes `obj` as JSON atomically (a temporary file, then `os.replace`)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def write_run_info(run_dir: str, config: ml_collections.ConfigDict, argv: Sequence[str]) -> None:
    """Writes `config.json`, `flags.json` and appends to `git_diff.txt`.

    On resume `config.json` is rewritten with the (possibly extended) config,
    and `flags.json` keeps the history of command lines under `restarts`.
    """
    write_json(os.path.join(run_dir, CONFIG_FILE), json.loads(config.to_json_best_effort()))
    flags_path = os.path.join(run_dir, FLAGS_FILE)
    now = datetime.datetime.now().isoformat(timespec="seconds")
    commit = _git("rev-parse", "HEAD")
    entry = {
        "run_format": RUN_FORMAT,
        "argv": list(argv),
        "date": now,
        "git_commit": commit.strip() if commit else None,
        "host": platform.node(),
        "versions": versions(),
    }
    if os.path.exists(flags_path):
        with open(flags_path) as f:
            info = json.load(f)
        info.setdefault("restarts", []).append(entry)
    else:
        info = dict(entry)
    write_json(flags_path, info)
    diff = _git("diff", "HEAD")
    with open(os.path.join(run_dir, GIT_DIFF_FILE), "a") as f:
        f.write(f"=== {now} commit {entry['git_commit']}\n{diff or ''}\n")


def load_config(run_dir: str) -> ml_collections.ConfigDict:
    """The config stored in `run_dir/config.json`.

    Raises:
      RunError: when `run_dir` is not a run folder.
    """
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise RunError(
            f"{run_dir!r} is not a run folder: it has no {CONFIG_FILE}. Pass the folder "
            "a training binary created, e.g. results/vae/1."
        )
    check_run_format(run_dir)
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path!r} is damaged (not JSON: {e}); the run cannot be rebuilt.") from e


def check_run_format(run_dir: str) -> None:
    """Refuses a run folder written by a newer version of this code (its `flags.json` records
    a `run_format` above `RUN_FORMAT`, at the start or at any restart).

    Raises:
      RunError: a newer layout, or a damaged `flags.json`.
    """
    path = os.path.join(run_dir, FLAGS_FILE)
    if not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            info = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path!r} is damaged (not JSON: {e}).") from e
    found = max(int(e.get("run_format", 1)) for e in [info, *info.get("restarts", [])])
    if found > RUN_FORMAT:
        raise RunError(
            f"{run_dir!r} was written by a newer version of this code (run folder format "
            f"{found}; this code reads format {RUN_FORMAT}). Update the code (git pull, "
            "pip install -e .) to use it; nothing was changed."
        )


def checkpoint_paths(run_dir: str) -> list[str]:
    """Checkpoint prefixes in `run_dir`, oldest first."""
    state = tf.train.get_checkpoint_state(run_dir)
    return list(state.all_model_checkpoint_paths) if state else []


def latest_checkpoint(run_dir: str) -> str | None:
    """The newest checkpoint prefix in `run_dir`, or None."""
    return tf.train.latest_checkpoint(run_dir)


def checkpoint_step(path: str) -> int:
    match = re.search(r"-(\d+)$", path)
    return int(match.group(1)) if match else -1


def restore(checkpoint: tf.train.Checkpoint, path: str, run_dir: str) -> None:
    """Restores `checkpoint` from `path` and checks that every variable that
    exists now was found in the file.

    Raises:
      RunError: naming the file when it is truncated, corrupt or does not match
        the model. Nothing on disk is changed.
    """
    try:
        status = checkpoint.restore(path)
        status.assert_existing_objects_matched()
        status.expect_partial()  # e.g. optimizer slots when only the model is restored
    except Exception as e:  # the reader raises OpError, IndexError, ValueError, ...
        others = [p for p in checkpoint_paths(run_dir) if p != path]
        hint = (
            f" Earlier checkpoints in this run: {', '.join(os.path.basename(p) for p in others)}."
            " To resume from one of them, pass --checkpoint=<path>; no file was modified."
            if others
            else " No file was modified."
        )
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunError(
            f"Cannot restore checkpoint {path!r}: it is truncated, corrupt or was written "
            f"by a different model ({type(e).__name__}: {first_line}).{hint}"
        ) from e


class Restored(NamedTuple):
    """What `load_from_checkpoint` returns."""

    model: Any
    config: ml_collections.ConfigDict
    step: int
    checkpoint_path: str


def load_from_checkpoint(run_dir: str, checkpoint_path: str | None = None) -> Restored:
    """Rebuilds the model of a run from its stored config and restores it.

    The model is built by `<config.experiment>.build_model(config)` (e.g.
    `vae.experiment.build_model`), so the current source is used with the
    run's own hyperparameters; only the model's variables are restored.

    Args:
      run_dir: a run folder, e.g. `results/vae/3`.
      checkpoint_path: a checkpoint prefix; default the newest in `run_dir`.

    Raises:
      RunError: not a run folder, no checkpoint, or an unreadable checkpoint.
    """
    config = load_config(run_dir)
    if checkpoint_path is None:
        checkpoint_path = latest_checkpoint(run_dir)
        if checkpoint_path is None:
            raise RunError(f"Run folder {run_dir!r} holds no checkpoint yet.")
    experiment = importlib.import_module(config.experiment)
    model = experiment.build_model(config)
    restore(tf.train.Checkpoint(model=model), checkpoint_path, run_dir)
    return Restored(model, config, checkpoint_step(checkpoint_path), checkpoint_path)

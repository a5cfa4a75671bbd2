"""The bad-input matrix: for one binary, every case generated from its config schema (unknown
fields, wrong types, out-of-range values from `common.training.COMMON_RANGES` and the package's
`CONFIG_RANGES`, unknown choices) plus missing / corrupt data, foreign / corrupt / newer run
folders and bad flags; each case runs the binary as a user would and records its exit code, the
error lines on stderr and whether any file in the sandbox changed.

  python -m tests.bad_inputs <binary> <sandbox> <report.json>

`<sandbox>` must hold what `make_sandbox` writes. Each case runs in a child forked from this
process after the heavy imports (TensorFlow, the package) and before any TensorFlow op, with
`runpy` running the binary's module as `__main__` (a fresh import: its flags are defined in the
child), so the matrix costs seconds per binary instead of a process start per case.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import random
import runpy
import shutil
import sys
import traceback

import ml_collections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# binary -> its package's smoke config (train binaries) or the package whose run folders it
# reads (evaluation binaries).
TRAIN = {
    "vae.train": ("vae/configs/iwae.py", "smoke", "data.source"),
    "flows.train": ("flows/configs/mnist.py", "smoke", "data.source"),
    "air.train": ("air/configs/air.py", "smoke", "data.source"),
    "draw.train": ("draw/configs/mnist.py", "smoke", "data.mnist_source"),
    "scae.train": ("scae/configs/mnist.py", "smoke", "data.source"),
}
EVALUATE = {
    "vae.evaluate": "vae.train",
    "flows.evaluate": "flows.train",
    "air.evaluate": "air.train",
    "draw.evaluate": "draw.train",
    "draw.generate": "draw.train",
    "scae.evaluate": "scae.train",
}
# Flags of the evaluation binaries with a range (flag, bad value, what the error names).
EVALUATE_FLAGS = {
    "draw.generate": [("num_samples", "0", "num_samples"), ("scale", "0", "scale")],
    "draw.evaluate": [("num_samples", "-1", "num_samples")],
    "vae.evaluate": [("num_samples", "-1", "num_samples"), ("gradient_snr_repeats", "1", "snr")],
}
BINARIES = (*TRAIN, *EVALUATE)
# Every config field gets an unknown-field and a wrong-type case with GENMODELS_FULL_MATRIX=1;
# otherwise (the test suite's default, for its time budget) a fixed sample of SAMPLE fields.
FULL = os.environ.get("GENMODELS_FULL_MATRIX") == "1"
SAMPLE = 25
# Choice fields (strings) with an invalid value; the error must name the value or the field.
CHOICES = ("precision", "strategy", "optimizer.name", "optimizer.schedule", "model.flow")


@dataclasses.dataclass
class Case:
    kind: str
    argv: list[str]
    expect: list[str]  # the error line must contain one of these (case-insensitive)


def _config(binary: str) -> ml_collections.ConfigDict:
    path, variant, _ = TRAIN[binary]
    module = path[: -len(".py")].replace("/", ".")
    return importlib.import_module(module).get_config(variant)


def _leaves(config, prefix=""):
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _field_type(config, path: str):
    *parents, last = path.split(".")
    for part in parents:
        config = config[part]
    return config.get_type(last)


def _typo(name: str) -> str:
    """A near miss of `name` (two adjacent letters swapped, or one letter doubled)."""
    for i in range(len(name) // 2, len(name) - 1):
        swapped = name[:i] + name[i + 1] + name[i] + name[i + 2 :]
        if swapped != name:
            return swapped
    return name + name[-1]


def _out_of_range(spec: str, value) -> list[str]:
    from common import training

    low, low_inclusive, high, high_inclusive = training.parse_range(spec)
    as_int = isinstance(value, int | list | tuple) and not isinstance(value, bool)
    as_int = as_int and all(
        isinstance(v, int) for v in (value if isinstance(value, list | tuple) else [value])
    )
    step = 1 if as_int else 0.5
    bad = []
    if low is not None:
        bad.append(low - step if low_inclusive else low)
    if high is not None:
        bad.append(high + step if high_inclusive else high)
    fmt = (lambda v: str(int(v))) if as_int else (lambda v: repr(float(v)))
    if isinstance(value, list | tuple):
        return [f"[{fmt(v)}]" if isinstance(value, list) else f"({fmt(v)},)" for v in bad]
    return [fmt(v) for v in bad]


def train_cases(binary: str, sandbox: str) -> list[Case]:
    from common import training

    path, variant, source_field = TRAIN[binary]
    config = _config(binary)
    leaves = dict(_leaves(config))
    base = [f"--config={path}:{variant}", f"--results_dir={sandbox}/results"]
    cases = []
    for field in leaves:
        *parents, last = field.split(".")
        typo = ".".join([*parents, _typo(last)])
        cases.append(Case("unknown field", [*base, f"--config.{typo}=1"], [typo]))
        kind = _field_type(config, field)
        if kind is bool:
            cases.append(Case("wrong type", [*base, f"--config.{field}=maybe"], [field]))
        elif kind in (int, float):
            cases.append(Case("wrong type", [*base, f"--config.{field}=abc"], [field]))
    if not FULL:  # a fixed sample of each kind, the same in every run
        sample = random.Random(binary)
        for kind in ("unknown field", "wrong type"):
            of_kind = [c for c in cases if c.kind == kind]
            if len(of_kind) > SAMPLE:
                keep = {id(c) for c in sample.sample(of_kind, SAMPLE)}
                cases = [c for c in cases if c.kind != kind or id(c) in keep]
    cases.append(Case("unknown field", [*base, "--config.no_such_section.size=1"], ["no_such"]))
    module = importlib.import_module(config.experiment)
    ranges = {**training.COMMON_RANGES, **getattr(module, "CONFIG_RANGES", {})}
    for field, spec in ranges.items():
        value = leaves.get(field)
        if value is None or isinstance(value, bool | str):
            continue
        for bad in _out_of_range(spec, value):
            cases.append(Case("out of range", [*base, f"--config.{field}={bad}"], [field]))
    for field in CHOICES:
        if field in leaves:
            cases.append(
                Case(
                    "unknown choice",
                    [*base, f"--config.{field}=no_such_choice"],
                    ["no_such_choice", field.split(".")[-1]],
                )
            )
    relations = {
        "air.train": [
            ("model.glimpse_size", "51", "glimpse_size"),
            ("data.canvas_size", "20", "canvas_size"),
        ],
        "scae.train": [("model.template_size", "41", "template_size")],
    }
    for field, bad, named in relations.get(binary, []):
        cases.append(Case("out of range", [*base, f"--config.{field}={bad}"], [named]))
    data = [f"--config.{source_field}=idx"]
    cases += [
        Case(
            "missing data",
            [*base, *data, f"--config.data.data_dir={sandbox}/empty_data"],
            ["empty_data"],
        ),
        Case(
            "corrupt data",
            [*base, *data, f"--config.data.data_dir={sandbox}/corrupt_data"],
            ["corrupt_data"],
        ),
        Case("unknown flag", [*base, "--no_such_flag=1"], ["no_such_flag"]),
        Case("bad variant", [f"--config={path}:no_such_variant", *base[1:]], ["no_such_variant"]),
        Case(
            "missing config file",
            [f"--config=no_such_dir/{os.path.basename(path)}:smoke", *base[1:]],
            ["no_such_dir"],
        ),
        Case("no run to resume", [*base, "--resume", "--run_name=never_ran"], ["never_ran"]),
        Case("checkpoint without resume", [*base, "--checkpoint=x"], ["--checkpoint"]),
        Case(
            "missing checkpoint",
            [
                *base,
                "--resume",
                f"--run_name={_package(binary)}_good",
                f"--checkpoint={sandbox}/nothing/model.ckpt-1",
            ],
            ["does not exist"],
        ),
    ]
    for run_name, expect in RUN_FOLDER_CASES.items():
        cases.append(
            Case(
                f"resume: {run_name}",
                [*base, "--resume", f"--run_name={_package(binary)}_{run_name}"],
                expect,
            )
        )
    return cases


# Run folders in the sandbox (results/<package>_<name>/1) and what the error must name.
RUN_FOLDER_CASES = {
    "foreign": ["different model"],  # another package's checkpoint (vae: another config's)
    "newer": ["newer version"],  # flags.json from a newer layout
    "corrupt": ["truncated", "corrupt"],  # the newest checkpoint's data file cut in half
    "bad_config": ["config.json"],  # config.json not JSON
}


def _package(binary: str) -> str:
    return binary.split(".")[0]


def evaluate_cases(binary: str, sandbox: str) -> list[Case]:
    package = _package(binary)
    runs = f"{sandbox}/results"
    cases = [
        Case("missing flag", [], ["run_dir"]),
        Case(
            "unknown flag",
            [f"--run_dir={runs}/{package}_good/1", "--no_such_flag=1"],
            ["no_such_flag"],
        ),
        Case("no run folder", [f"--run_dir={sandbox}/no/such/run"], ["no/such/run"]),
        Case("no checkpoint", [f"--run_dir={runs}/{package}_empty/1"], ["checkpoint"]),
        Case(
            "missing checkpoint",
            [f"--run_dir={runs}/{package}_good/1", f"--checkpoint={sandbox}/nothing/model.ckpt-1"],
            ["nothing/model.ckpt-1", "does not exist"],
        ),
    ]
    for run_name, expect in RUN_FOLDER_CASES.items():
        cases.append(
            Case(f"run folder: {run_name}", [f"--run_dir={runs}/{package}_{run_name}/1"], expect)
        )
    for flag, bad, named in EVALUATE_FLAGS.get(binary, []):
        cases.append(
            Case("out of range", [f"--run_dir={runs}/{package}_good/1", f"--{flag}={bad}"], [named])
        )
    return cases


def snapshot(root: str) -> dict[str, str]:
    """`{path: sha1}` of every file under `root`."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha1(f.read()).hexdigest()
    return out


def run_case(binary: str, case: Case, log: str) -> int:
    """Runs `binary` with `case.argv` in a forked child (stdout and stderr to `log`)."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.argv = [binary, *case.argv]
            try:
                runpy.run_module(binary, run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as e:
                if isinstance(e.code, str):
                    sys.stderr.write(e.code + "\n")
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:  # noqa: BLE001 - reported as a traceback, a failed case
                traceback.print_exc()
                code = 2
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def error_lines(text: str) -> list[str]:
    """The lines a user reads as the error (the rest is the log)."""
    return [
        line
        for line in text.splitlines()
        if line.startswith(("error:", "FATAL Flags parsing error", "Traceback"))
    ]


# Files a resume attempt records in its run folder before the checkpoint is read (the
# command line under `restarts`, the config, the code's diff); they are appended to or
# rewritten with the same values, never lost.
RUN_RECORDS = ("flags.json", "config.json", "git_diff.txt")


def make_sandbox(sandbox: str) -> None:
    """Data folders and run folders the cases use, from one real 2-step `vae` run:
    `empty_data/`, `corrupt_data/mnist/` (the real IDX files cut in half), and for each package
    `results/<package>_<name>/1` with `name` in good (its config, a real checkpoint: of its
    own model for vae, another model's otherwise), empty (no checkpoint) and `RUN_FOLDER_CASES`.
    """
    import subprocess

    from common.data import mnist

    mnist.load_mnist()  # the real files, fetched and checked if they are not there yet
    source = os.path.join(mnist.default_data_dir(), "mnist")
    os.makedirs(os.path.join(sandbox, "empty_data"))
    corrupt = os.path.join(sandbox, "corrupt_data", "mnist")
    os.makedirs(corrupt)
    for name, _ in mnist.MNIST_FILES.values():
        with open(os.path.join(source, name), "rb") as f:
            data = f.read()
        with open(os.path.join(corrupt, name), "wb") as f:
            f.write(data[: len(data) // 2])
    src = os.path.join(sandbox, "src")
    subprocess.run(
        [
            sys.executable, "-m", "vae.train", "--config=vae/configs/iwae.py:smoke",
            "--config.loop.num_steps=2", "--config.loop.checkpoint_every=1",
            "--config.eval.after_training=False", f"--results_dir={src}", "--run_name=vae",
        ],
        check=True, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    vae_run = os.path.join(src, "vae", "1")
    results = os.path.join(sandbox, "results")
    for binary in TRAIN:
        package = _package(binary)
        config = _config(binary)
        foreign = config.copy_and_resolve_references()
        if package == "vae":
            foreign.model.num_stochastic_layers = 2  # another config of the same model
        for name in ("good", "empty", *RUN_FOLDER_CASES):
            run = os.path.join(results, f"{package}_{name}", "1")
            shutil.copytree(vae_run, run)
            stored = foreign if name != "good" else config
            with open(os.path.join(run, "config.json"), "w") as f:
                f.write(stored.to_json_best_effort())
            if name == "empty":
                for entry in os.listdir(run):
                    if entry.startswith(("model.ckpt", "checkpoint")):
                        os.remove(os.path.join(run, entry))
            elif name == "newer":
                with open(os.path.join(run, "flags.json")) as f:
                    info = json.load(f)
                info["run_format"] = 999
                with open(os.path.join(run, "flags.json"), "w") as f:
                    json.dump(info, f)
            elif name == "corrupt":
                newest = tf_latest_checkpoint(run) + ".data-00000-of-00001"
                with open(newest, "rb") as f:
                    data = f.read()
                with open(newest, "wb") as f:
                    f.write(data[: len(data) // 2])
            elif name == "bad_config":
                with open(os.path.join(run, "config.json"), "w") as f:
                    f.write("{not json")


def tf_latest_checkpoint(run_dir: str) -> str:
    """The newest checkpoint prefix named in `run_dir/checkpoint` (read without TensorFlow)."""
    with open(os.path.join(run_dir, "checkpoint")) as f:
        first = f.readline()  # model_checkpoint_path: "model.ckpt-2"
    return os.path.join(run_dir, first.split('"')[1])


def main(argv: list[str]) -> None:
    if argv[1] == "--make-sandbox":
        make_sandbox(argv[2])
        return
    binary, sandbox, report_path = argv[1:4]
    os.chdir(ROOT)
    # The heavy imports happen once, here, before the fork (no TensorFlow op runs in this
    # process); the binary's own module is imported by each child.
    train = EVALUATE.get(binary, binary)
    importlib.import_module(_config(train).experiment)
    cases = train_cases(binary, sandbox) if binary in TRAIN else evaluate_cases(binary, sandbox)
    logs = os.path.join(sandbox, "logs", binary)
    os.makedirs(logs, exist_ok=True)
    watched = os.path.join(sandbox, "results")
    report = []
    before = snapshot(watched)
    for i, case in enumerate(cases):
        log = os.path.join(logs, f"{i:03d}.txt")
        code = run_case(binary, case, log)
        after = snapshot(watched)
        with open(log, errors="replace") as f:
            text = f.read()
        changed = sorted(p for p, h in before.items() if after.get(p) != h)
        # New run folders are removed so that the next case sees the same sandbox.
        folders = {os.path.join(*p.split(os.sep)[:2]) for p in before}
        for path in sorted(set(after) - set(before)):
            top = os.path.join(*path.split(os.sep)[:2])
            if top not in folders:
                shutil.rmtree(os.path.join(watched, top), ignore_errors=True)
        # The next case starts from this state: hashing the sandbox once per case, not twice.
        before = {p: h for p, h in after.items() if os.path.join(*p.split(os.sep)[:2]) in folders}
        report.append(
            dict(
                kind=case.kind,
                argv=case.argv,
                expect=case.expect,
                exit_code=code,
                error_lines=error_lines(text),
                changed=changed,
                log=log,
            )
        )
    with open(report_path, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv)

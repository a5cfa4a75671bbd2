"""The bad-input matrix (`tests/bad_inputs.py`) for every binary: each case must end with a
non-zero exit code and exactly one error line (no traceback) that names the field, flag, value
or file at fault, and must leave every file in the sandbox as it was (a failed resume may only
record itself in the run's `flags.json`, `config.json` and `git_diff.txt`).

The counts per binary are printed (`pytest -s`) and written to `<tmp>/bad_inputs_counts.json`.
By default the misspelt-field and wrong-type cases are a fixed sample of 25 fields per training
binary; GENMODELS_FULL_MATRIX=1 gives every field its cases (the README's counts).
"""

import collections
import json
import os
import re
import subprocess
import sys

import pytest

from tests import bad_inputs, binaries

# At least this many cases per binary (the matrix grows with the configs; a drop means the
# generation broke).
MIN_CASES = {**{b: 80 for b in bad_inputs.TRAIN}, **{b: 9 for b in bad_inputs.EVALUATE}}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bad_inputs"))
    subprocess.run(
        [sys.executable, "-m", "tests.bad_inputs", "--make-sandbox", root],
        check=True, cwd=binaries.ROOT, env=binaries.env(), capture_output=True, timeout=600,
    )  # fmt: skip
    return root


def _failures(report):
    failures = []
    for case in report:
        lines = case["error_lines"]
        problems = []
        if case["exit_code"] == 0:
            problems.append("exit code 0")
        if len(lines) != 1 or lines[0].startswith("Traceback"):
            problems.append(f"{len(lines)} error lines: {lines[:3]}")
        elif not any(e.lower() in lines[0].lower() for e in case["expect"]):
            problems.append(f"the error does not name any of {case['expect']}: {lines[0]}")
        touched = [p for p in case["changed"] if os.path.basename(p) not in bad_inputs.RUN_RECORDS]
        if touched:
            problems.append(f"changed or deleted {touched}")
        if problems:
            failures.append(f"{case['kind']} {case['argv']}: {'; '.join(problems)} ({case['log']})")
    return failures


@pytest.mark.parametrize("binary", bad_inputs.BINARIES)
def test_every_bad_input_is_one_clear_line_and_changes_nothing(binary, sandbox):
    report_path = os.path.join(sandbox, f"{binary}.json")
    subprocess.run(
        [sys.executable, "-m", "tests.bad_inputs", binary, sandbox, report_path],
        check=True, cwd=binaries.ROOT, env=binaries.env(), capture_output=True, timeout=900,
    )  # fmt: skip
    with open(report_path) as f:
        report = json.load(f)
    kinds = collections.Counter(case["kind"].split(":")[0] for case in report)
    print(f"\n{binary}: {len(report)} bad inputs, all checked: {dict(kinds)}")
    counts_path = os.path.join(sandbox, "bad_inputs_counts.json")
    counts = json.load(open(counts_path)) if os.path.exists(counts_path) else {}
    counts[binary] = dict(total=len(report), **kinds)
    with open(counts_path, "w") as f:
        json.dump(counts, f, indent=1)
    assert len(report) >= MIN_CASES[binary]
    failures = _failures(report)
    assert not failures, f"{len(failures)} of {len(report)} cases:\n" + "\n".join(failures)


def test_check_ranges_on_hand_written_cases():
    import ml_collections

    from common import training

    config = ml_collections.ConfigDict(dict(a=1, b=0.0, c=[2, 3], d=dict(e=0.5), f=1.0, g=(1, 0)))
    ok = {"a": ">= 1", "c": ">= 2", "d.e": "in [0, 1)", "missing.field": ">= 5", "b": "in [0, 1]"}
    training.check_ranges(config, ok)  # absent fields are skipped
    for ranges, named in [
        ({"a": "> 1"}, "config.a = 1"),
        ({"b": "> 0"}, "config.b = 0.0"),
        ({"c": ">= 3"}, "config.c = [2, 3]"),
        ({"f": "in [0, 1)"}, "config.f = 1.0"),
        ({"d.e": "in (0.5, 2]"}, "config.d.e = 0.5"),
        ({"g": ">= 1"}, "config.g = (1, 0)"),
    ]:
        with pytest.raises(ValueError, match=re.escape(named)):
            training.check_ranges(config, ranges)
    with pytest.raises(ValueError, match="Bad range spec"):
        training.parse_range("between 1 and 2")

"""Every script in benchmarks/ runs at tiny sizes and prints its table, so that a benchmark
cannot rot between the runs that produce the README's figures."""

import os
import re
import subprocess
import sys

import pytest

from tests import binaries

TINY = {
    "vae_step.py": [
        "--layers=1,2",
        "--batch_sizes=4",
        "--ks=1,3",
        "--modes=eager,function,xla",
    ],
    "air_step.py": [
        "--variant=smoke",
        "--batch_size=4",
        "--vimco_particles=2",
        "--modes=eager,function",
    ],
    "draw_step.py": [
        "--variant=smoke",
        "--batch_size=4",
        "--modes=eager,function,xla",
        "--precision=mixed_bfloat16",
    ],
    "scae_step.py": [
        "--variant=smoke",
        "--batch_size=4",
        "--modes=eager,function,xla",
    ],
    "mixed_precision.py": ["--packages=vae", "--steps_scale=0.02"],  # no --steps etc.
    "flows_step.py": [
        "--event_size=6",
        "--hidden_units=8,8",
        "--num_layers=2",
        "--batch_size=4",
        "--modes=eager,function,xla",
        # PyTorch is not installed with the project: its rows must say they are skipped.
        "--models=ours,tfp,nflows",
    ],
}
COMMON = ["--steps=2", "--warmup=1", "--repeats=1"]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(binaries.ROOT, "benchmarks", script), *args],
        cwd=binaries.ROOT,
        env=binaries.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_runs_at_tiny_sizes_and_prints_rates(script):
    proc = _run(script, *TINY[script], *(COMMON if script != "mixed_precision.py" else []))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rates = [float(r) for r in re.findall(r"\b(\d+\.\d+)\b", proc.stdout)]
    assert rates and all(r > 0 for r in rates), proc.stdout
    assert "steps/s" in proc.stdout


def test_every_benchmark_script_is_covered():
    scripts = {
        f
        for f in os.listdir(os.path.join(binaries.ROOT, "benchmarks"))
        if f.endswith(".py") and not f.startswith("_")
    }
    assert scripts == set(TINY)


def test_flows_benchmark_skips_missing_pytorch_with_a_message():
    proc = _run("flows_step.py", *TINY["flows_step.py"], *COMMON)
    if "nflows     eager" in proc.stdout:
        pytest.skip("nflows is importable here")
    assert "nflows     skipped" in proc.stdout, proc.stdout


def test_bad_flag_is_a_clear_error():
    proc = _run("flows_step.py", "--torch_modes=jit")
    assert proc.returncode != 0
    assert "--torch_modes" in proc.stderr


def test_draw_benchmark_times_the_keras_baseline_in_float32():
    proc = _run("draw_step.py", "--variant=smoke", "--batch_size=4", "--modes=function", *COMMON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = re.search(r"^function \(unrolled\)\s+([\d.]+)\s+([\d.]+)\s+\S+\s+([\d.]+)\s+([\d.]+)$",
                    proc.stdout, re.M)  # fmt: skip
    assert row, proc.stdout
    assert all(float(v) > 0 for v in row.groups()), proc.stdout  # ours and the Keras port

"""Running the project's binaries from tests, as a user would: a subprocess of
`python -m <module>` in the repository root."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env() -> dict:
    """The test process's environment with the repository on PYTHONPATH."""
    result = dict(os.environ)
    result["PYTHONPATH"] = ROOT + os.pathsep + result.get("PYTHONPATH", "")
    result.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return result


def run(module, *args, check=True, timeout=300) -> subprocess.CompletedProcess:
    """Runs `python -m module *args`; with `check`, a non-zero exit fails the
    test with the end of the binary's stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc

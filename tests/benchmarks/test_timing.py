"""benchmarks/_timing.py: the interleaved timer alternates its cells and rejects a non-finite
loss."""

import math
import os
import sys

import pytest

from tests import binaries

sys.path.insert(0, os.path.join(binaries.ROOT, "benchmarks"))
import _timing  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


def test_interleaved_medians_alternate_the_cells():
    calls = []

    def cell(name):
        return lambda i: calls.append((name, i)) or 1.0

    rates = _timing.interleaved_medians({"a": cell("a"), "b": cell("b")}, 1, 2, 3)
    warmup = [("a", 0), ("b", 0)]
    run = lambda name: [(name, 1), (name, 2)]  # noqa: E731
    assert calls == warmup + (run("a") + run("b")) * 3
    assert set(rates) == {"a", "b"} and all(r > 0 for r in rates.values())


def test_interleaved_medians_reject_a_non_finite_loss():
    with pytest.raises(RuntimeError, match="bad"):
        _timing.interleaved_medians({"ok": lambda i: 1.0, "bad": lambda i: math.nan}, 0, 1, 1)

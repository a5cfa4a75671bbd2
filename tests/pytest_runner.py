"""Runs one test file with pytest: the `main` of every `py_test` in tests/BUILD.

  python tests/pytest_runner.py tests/vae/test_estimators.py

Bazel runs it from the runfiles root, where the repository's packages are importable.
"""

import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))

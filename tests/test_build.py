"""The BUILD files are true (tests/build_check.py), and the check catches what it should."""

import os
import shutil
import tempfile

import pytest

from tests import build_check

# The real checkout, also under `bazel test`, whose runfiles are symlinks to its files (a runfiles
# tree holds only declared files, so it would hide an unlisted one).
REPOSITORY = os.path.dirname(os.path.dirname(os.path.realpath(build_check.__file__)))


def test_the_repository_build_files_are_true():
    assert build_check.problems(REPOSITORY) == []


@pytest.fixture
def fake_repo():
    root = tempfile.mkdtemp(prefix="build_check_")
    os.makedirs(os.path.join(root, "common"))
    os.makedirs(os.path.join(root, "vae"))
    files = {
        "common/__init__.py": "",
        "common/bounds.py": "X = 1\n",
        "common/BUILD": 'py_library(name = "common", srcs = ["__init__.py", "bounds.py"])\n',
        "vae/__init__.py": "",
        "vae/model.py": "from common import bounds\n",
        "vae/BUILD": (
            'py_library(name = "vae", srcs = ["__init__.py", "model.py"], deps = ["//common"])\n'
        ),
    }
    for path, text in files.items():
        with open(os.path.join(root, path), "w") as f:
            f.write(text)
    yield root
    shutil.rmtree(root)


def test_a_true_fake_repository_passes(fake_repo):
    assert build_check.problems(fake_repo) == []


def test_an_unlisted_file_fails_the_check(fake_repo):
    with open(os.path.join(fake_repo, "vae", "extra.py"), "w") as f:
        f.write("")
    assert build_check.problems(fake_repo) == ["vae/extra.py: listed by no BUILD target"]


def test_a_listed_file_that_does_not_exist_fails_the_check(fake_repo):
    os.remove(os.path.join(fake_repo, "common", "bounds.py"))
    found = build_check.problems(fake_repo)
    assert found == ["//common:common: lists common/bounds.py, which does not exist"]


def test_an_import_without_a_dependency_fails_the_check(fake_repo):
    with open(os.path.join(fake_repo, "vae", "BUILD"), "w") as f:
        f.write('py_library(name = "vae", srcs = ["__init__.py", "model.py"])\n')
    found = build_check.problems(fake_repo)
    assert found == [
        "//vae:vae: vae/model.py imports common (in //common:common) without depending on it"
    ]

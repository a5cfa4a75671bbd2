"""Checks that the Bazel BUILD files describe the repository truly (tests/test_build.py).

A BUILD file here is a list of rule calls (`py_library`, `py_binary`, `py_test`, `package`,
`exports_files`), possibly inside a list comprehension over a literal table, which Python can
read as well as Bazel (Starlark is a subset of Python); `read_targets` evaluates each file with
functions that record the targets instead of building them.

`problems(root)` lists, one line each:
- a Python file under a source folder that no target lists in its `srcs`;
- a `srcs` entry that does not exist;
- a target whose source imports a module of this repository that lives in another target it does
  not depend on directly (Bazel's strict dependencies: no reaching into a package's files without
  depending on it).
"""

from __future__ import annotations

import ast
import os
from typing import NamedTuple

SOURCE_FOLDERS = ("common", "vae", "flows", "air", "draw", "scae", "benchmarks", "tests")


class Target(NamedTuple):
    label: str  # "//pkg:name"
    package: str  # "pkg"
    srcs: tuple[str, ...]  # paths relative to the repository root
    deps: tuple[str, ...]  # absolute labels


def _absolute(label: str, package: str) -> str:
    if label.startswith(":"):
        return f"//{package}{label}"
    if label.startswith("//") and ":" not in label:
        return f"{label}:{label.rsplit('/', 1)[-1]}"  # //common -> //common:common
    return label


def read_targets(root: str) -> list[Target]:
    """Every rule of every `<folder>/BUILD` (and a top-level BUILD, if any) under `root`."""
    targets: list[Target] = []
    for folder in ("", *SOURCE_FOLDERS):
        path = os.path.join(root, folder, "BUILD")
        if not os.path.isfile(path):
            continue

        def rule(package=folder, **kwargs):
            srcs = tuple(os.path.normpath(os.path.join(package, s)) for s in kwargs.get("srcs", []))
            deps = tuple(_absolute(d, package) for d in kwargs.get("deps", []))
            targets.append(Target(f"//{package}:{kwargs['name']}", package, srcs, deps))

        names = {"py_library": rule, "py_binary": rule, "py_test": rule}
        names.update(package=lambda **kw: None, exports_files=lambda *a, **kw: None)
        with open(path) as f:
            exec(compile(f.read(), path, "exec"), {"__builtins__": {}, **names})  # noqa: S102
    return targets


def _python_files(root: str) -> list[str]:
    out = []
    for folder in SOURCE_FOLDERS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, folder)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            out += [
                os.path.relpath(os.path.join(dirpath, f), root)
                for f in filenames
                if f.endswith(".py")
            ]
    return sorted(out)


def _imported_modules(path: str) -> set[str]:
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
            modules |= {f"{node.module}.{a.name}" for a in node.names}
    return modules


def _module_file(root: str, module: str) -> str | None:
    """The repository file that defines `module` (a module or a package's `__init__.py`)."""
    parts = module.split(".")
    if parts[0] not in SOURCE_FOLDERS:
        return None
    for candidate in (os.path.join(*parts) + ".py", os.path.join(*parts, "__init__.py")):
        if os.path.isfile(os.path.join(root, candidate)):
            return candidate
    return None  # an attribute (`from flows import make_flow`): its module is checked too


def problems(root: str) -> list[str]:
    """Everything that makes the BUILD files untrue (module docstring); empty when they are."""
    targets = read_targets(root)
    owners: dict[str, list[str]] = {}
    for t in targets:
        for s in t.srcs:
            owners.setdefault(s, []).append(t.label)
    found = []
    for path in _python_files(root):
        if path not in owners:
            found.append(f"{path}: listed by no BUILD target")
    for t in targets:
        for s in t.srcs:
            if not os.path.isfile(os.path.join(root, s)):
                found.append(f"{t.label}: lists {s}, which does not exist")
    for t in targets:
        allowed = {t.label, *t.deps}
        for s in t.srcs:
            if not os.path.isfile(os.path.join(root, s)):
                continue
            missing: dict[str, str] = {}  # owning target -> the first module imported from it
            for module in sorted(_imported_modules(os.path.join(root, s))):
                target_file = _module_file(root, module)
                if target_file is None or target_file not in owners:
                    continue
                if not allowed & set(owners[target_file]):
                    missing.setdefault(" / ".join(owners[target_file]), module)
            found += [
                f"{t.label}: {s} imports {module} (in {owner}) without depending on it"
                for owner, module in missing.items()
            ]
    return found

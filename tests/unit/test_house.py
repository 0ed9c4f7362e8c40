"""House rules read from the source itself (``ast``, nothing imported): driftloop's packages
use only the public names of their dependencies and import only what pyproject declares;
functions stay small where the deployables live."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kernel", "registry", "training", "monitoring", "serving", "controller", "backtest",
            "driftloop")
# Underscore names that are documented public API: namedtuple's methods (and SQLAlchemy's
# Row, which keeps them: ``Row._mapping``, ``Row._asdict``), ``os._exit``. The underscore
# there only keeps them apart from field or column names.
DOCUMENTED = frozenset({"_replace", "_asdict", "_fields", "_field_defaults", "_make", "_mapping",
                        "_exit"})


def _private(name: str) -> bool:
    """A single leading underscore: not a dunder (``__init__``) nor an enum sunder
    (``_missing_``), which are public protocol names."""
    return name.startswith("_") and not name.endswith("_")


@cache
def _modules() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), filename=str(path))
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _ours(module: str | None, level: int = 0) -> bool:
    return level > 0 or (module or "").split(".")[0] in PACKAGES


def _targets(node: ast.AST) -> Iterator[str]:
    """Names bound by an assignment target: ``x``, ``self._x``, ``a, b``, ``*rest``."""
    if isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield node.attr
    elif isinstance(node, ast.Tuple | ast.List):
        for element in node.elts:
            yield from _targets(element)
    elif isinstance(node, ast.Starred):
        yield from _targets(node.value)


@cache
def _defined() -> frozenset[str]:
    """Every name driftloop's own code defines: functions, classes, parameters, assignment
    targets (``self._x = ...`` included), loop and ``with`` targets, import aliases."""
    names: set[str] = set()
    for tree in _modules().values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    names.update(_targets(target))
            elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor
                            | ast.comprehension | ast.NamedExpr):
                names.update(_targets(node.target))
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                names.update(_targets(node.optional_vars))
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
    return frozenset(names)


def _private_uses(path: Path, tree: ast.Module) -> Iterator[str]:
    where = path.relative_to(ROOT)
    defined = _defined()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not _ours(node.module, node.level):
            module = node.module or ""
            if any(_private(part) for part in module.split(".")):
                yield f"{where}:{node.lineno}: from {module} import (a private module)"
            for alias in node.names:
                if _private(alias.name):
                    yield f"{where}:{node.lineno}: from {module} import {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if not _ours(alias.name) and any(_private(p) for p in alias.name.split(".")):
                    yield f"{where}:{node.lineno}: import {alias.name}"
        elif isinstance(node, ast.Attribute):
            if _private(node.attr) and node.attr not in defined | DOCUMENTED:
                yield f"{where}:{node.lineno}: .{node.attr}"
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            name = node.args[1].value
            if _private(name) and name not in defined | DOCUMENTED:
                yield f"{where}:{node.lineno}: {node.func.id}(..., {name!r})"


def test_the_walk_sees_every_package() -> None:
    seen = {path.relative_to(ROOT).parts[0] for path in _modules()}
    assert seen == set(PACKAGES)


# The one accepted exception, with its reason: scikit-learn has no public way to read a
# fitted HistGradientBoosting model's trees, and the exact tree fast path needs them. It is
# read in one function; a version is served on that path only when its scores equal
# scikit-learn's within 1e-6 on the reference rows at load, so a release that changes the
# attribute makes the version fall back to scikit-learn, never serve wrong scores.
EXCEPTIONS = frozenset({"serving/fastpath/trees.py: ._predictors"})


def test_no_private_names_of_dependencies() -> None:
    """``from x import _y``, ``import x._y``, ``obj._y`` or ``getattr(obj, "_y")`` where
    ``_y`` is nothing driftloop defines: a dependency's internals, which a release may
    change without notice. Use its public API (or define the name here)."""
    found = [use for path, tree in _modules().items() for use in _private_uses(path, tree)]
    unexcused = [use for use in found
                 if f"{use.split(':')[0]}: {use.rsplit(': ', 1)[1]}" not in EXCEPTIONS]
    assert unexcused == []
    excused = {f"{use.split(':')[0]}: {use.rsplit(': ', 1)[1]}" for use in found}
    assert excused == EXCEPTIONS  # an exception no longer needed is removed from the list


def test_the_private_name_check_catches_what_it_should() -> None:
    tree = ast.parse("from prometheus_client.metrics import _use_created\n"
                     "import filelock._native\n"
                     "from evidently.legacy.calculations.stattests.registry import get_stattest\n"
                     "from .x import _ours\n"
                     "h._upper_bounds\n"
                     "getattr(h, '_buckets', None)\n"
                     "self._lock\n"
                     "point._replace(x=1)\n"
                     "obj.__dict__\n")
    found = list(_private_uses(ROOT / "kernel" / "example.py", tree))
    assert [f.split(": ", 1)[1] for f in found] == [
        "from prometheus_client.metrics import _use_created", "import filelock._native",
        "._upper_bounds", "getattr(..., '_buckets')"]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"],
                    *(r for extra in project.get("optional-dependencies", {}).values() for r in extra)]
    return {_normalise(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def test_every_third_party_import_is_declared() -> None:
    """A dependency imported but only installed because another one needs it (starlette
    through fastapi, requests through mlflow) breaks when that one stops needing it."""
    declared, providers = _declared(), packages_distributions()
    undeclared = []
    for path, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top in PACKAGES or top in sys.stdlib_module_names or top == "__future__":
                    continue
                dists = {_normalise(d) for d in providers.get(top, [top])}
                if not dists & declared:
                    undeclared.append(f"{path.relative_to(ROOT)}:{node.lineno}: {top} "
                                      f"({', '.join(sorted(dists))})")
    assert undeclared == []


def _function_lengths(package: str) -> Iterator[tuple[int, str]]:
    for path, tree in _modules().items():
        if path.relative_to(ROOT).parts[0] != package:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno:
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                yield node.end_lineno - first + 1, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"


@pytest.mark.parametrize("package", ["serving", "controller"])
def test_functions_of_the_deployables_are_under_60_lines(package: str) -> None:
    length, where = max(_function_lengths(package))
    assert length < 60, f"{where} is {length} lines"

"""Guard: a version must change whenever the code or data that decides a number changes.

``suites/versions.json`` records, for each built-in suite, its version together with the hash of
its data and of its scoring code, and under ``measurement`` the runner's measurement version
(:data:`dpo_harness.evaluation.measure.MEASUREMENT_VERSION`) with the hash of the code that
defines the measurements (:data:`~dpo_harness.evaluation.measure.MEASUREMENT_MODULES`), and under ``user-suites`` the
version of the code that scores suites declared in YAML (:data:`dpo_harness.suites.user.CODE_VERSION`,
part of every user suite's declaration hash) with the hash of its modules. Code
hashes are over the AST without docstrings, import statements and type annotations, so
comments, formatting, typing and moving a module do not count; anything that computes
differently does. A test fails when a hash
moves while the version stays; after bumping the version, record the new hashes with::

    python -m dpo_harness.tools.versions --update

Baselines carry the suite versions, data hashes and the measurement version in their
compatibility key, so a bump makes the gate refuse stale baselines instead of comparing apples
with oranges.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import inspect
import json
import sys
from pathlib import Path

import dpo_harness.suites as builtin_suites
import dpo_harness.suites.user as user_suites
from dpo_harness.evaluation import measure
from dpo_harness.evaluation.suite import Suite, available_suites
from dpo_harness.files import atomic_write_text

__all__ = [
    "MEASUREMENT",
    "USER_SUITES",
    "VERSIONS_FILE",
    "check",
    "code_hash",
    "current",
    "modules_hash",
    "recorded",
]

# Beside the built-in suites (suites/ in a checkout, dpo_harness/suites/ when installed).
VERSIONS_FILE = Path(builtin_suites.__file__).resolve().parent / "versions.json"


class _DropAnnotations(ast.NodeTransformer):
    """``y: int = a`` → ``y = a``; a bare ``y: int`` → nothing (it computes nothing)."""

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | None:
        if node.value is None:
            return None
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Remove docstrings, imports and type annotations: none changes what the code computes."""
    tree = _DropAnnotations().visit(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            node.annotation = None
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node.returns = None
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            kept = [n for n in body if not isinstance(n, ast.Import | ast.ImportFrom)]
            node.body = kept or [ast.Pass()]  # type: ignore[attr-defined]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list) or not body:
            continue
        first = body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return tree


def _drop_class_versions(tree: ast.AST) -> ast.AST:
    """Remove ``version = ...`` from class bodies (a built-in suite's own version)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            kept = [
                n
                for n in node.body
                if not (
                    isinstance(n, ast.Assign)
                    and [getattr(t, "id", None) for t in n.targets] == ["version"]
                )
            ]
            node.body = kept or [ast.Pass()]
    return tree


def modules_hash(names: tuple[str, ...], *, without_suite_versions: bool = False) -> str:
    """Hash of the code of these modules (AST without docstrings and imports).

    ``without_suite_versions``: also without the ``version`` of the suite classes in them. The
    user-suite entry hashes built-in suite modules for their scoring functions; their versions
    are already in every user suite's declaration hash, and a built-in suite's data change
    (which bumps its version) must not force a bump of the user-suite code version.
    """
    h = hashlib.sha256()
    for name in names:
        tree = _strip_docstrings(ast.parse(inspect.getsource(importlib.import_module(name))))
        if without_suite_versions:
            tree = _drop_class_versions(tree)
        h.update(ast.dump(tree).encode())
    return "sha256:" + h.hexdigest()[:16]


def code_hash(cls: type[Suite]) -> str:
    """Hash of the suite's module and the modules it declares in ``scoring_modules``."""
    return modules_hash((cls.__module__, *cls.scoring_modules))


MEASUREMENT = "measurement"  # the versions.json entry of the runner's measurement code
USER_SUITES = "user-suites"  # the entry of the code that scores suites declared in YAML


def current() -> dict[str, dict[str, str]]:
    out = {}
    for name, cls in sorted(available_suites().items()):
        if not cls.__module__.startswith("dpo_harness.suites."):
            continue  # third-party suites keep their own discipline
        out[name] = {
            "version": cls.version,
            "data_hash": cls(None).data_hash(),
            "code_hash": code_hash(cls),
        }
    out[MEASUREMENT] = {
        "version": measure.MEASUREMENT_VERSION,
        "code_hash": modules_hash(measure.MEASUREMENT_MODULES),
    }
    out[USER_SUITES] = {
        "version": user_suites.CODE_VERSION,
        "code_hash": modules_hash(user_suites.SCORING_MODULES, without_suite_versions=True),
    }
    return out


def recorded() -> dict[str, dict[str, str]]:
    return json.loads(VERSIONS_FILE.read_text(encoding="utf-8")) if VERSIONS_FILE.is_file() else {}


def check() -> list[str]:
    """Problems, one sentence each; empty when every suite is consistent with versions.json."""
    problems = []
    rec = recorded()
    for name, now in current().items():
        old = rec.get(name)
        if old is None:
            problems.append(f"{name!r} is not recorded in versions.json: run --update")
            continue
        changed = [k for k in ("data_hash", "code_hash") if old.get(k) != now.get(k)]
        label = {MEASUREMENT: "the measurement code", USER_SUITES: "the user-suite code"}.get(
            name, f"suite {name!r}"
        )
        if changed and old["version"] == now["version"]:
            if name == MEASUREMENT:
                problems.append(
                    f"the runner's measurement code ({', '.join(measure.MEASUREMENT_MODULES)}) "
                    f"changed but MEASUREMENT_VERSION is still {now['version']}: bump `version`"
                )
                continue
            if name == USER_SUITES:
                problems.append(
                    f"the user-suite scoring code ({', '.join(user_suites.SCORING_MODULES)}) "
                    f"changed but dpo_harness.suites.user.CODE_VERSION is still "
                    f"{now['version']}: bump `version`"
                )
                continue
            what = " and ".join("data" if k == "data_hash" else "scoring code" for k in changed)
            problems.append(
                f"suite {name!r} changed its {what} but is still version {now['version']}: bump `version`"
            )
        elif old["version"] != now["version"] and (changed or old != now):
            problems.append(f"{label} is now version {now['version']}: record it with --update")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--update", action="store_true", help="record the current versions and hashes"
    )
    args = parser.parse_args(argv)
    problems = check()
    if args.update:
        blocking = [p for p in problems if "bump `version`" in p]
        if blocking:
            print("\n".join(blocking), file=sys.stderr)
            return 1
        atomic_write_text(VERSIONS_FILE, json.dumps(current(), indent=2, sort_keys=True) + "\n")
        print(f"recorded {VERSIONS_FILE}")
        return 0
    print("\n".join(problems) or "all suite versions are consistent")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

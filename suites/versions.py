"""Guard: a suite's version must change whenever its data or its scoring code changes.

``versions.json`` records, for each built-in suite, the version together with the hash of its
data and of its scoring code (the AST of its modules, without docstrings, so comments and
formatting do not count). A test fails when a hash moves while the version stays; after bumping
the version, record the new hashes with::

    python -m dpo_harness.suites.versions --update

Baselines carry the suite versions and data hashes in their compatibility key, so a bump makes
the gate refuse stale baselines instead of comparing apples with oranges.
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

from dpo_harness.io import atomic_write_text
from dpo_harness.suite import Suite, available_suites

__all__ = ["VERSIONS_FILE", "check", "code_hash", "current", "recorded"]

VERSIONS_FILE = Path(__file__).resolve().parent / "versions.json"


def _strip_docstrings(tree: ast.AST) -> ast.AST:
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


def code_hash(cls: type[Suite]) -> str:
    """Hash of the suite's module and the modules it declares in ``scoring_modules``."""
    h = hashlib.sha256()
    for name in (cls.__module__, *cls.scoring_modules):
        source = inspect.getsource(importlib.import_module(name))
        h.update(ast.dump(_strip_docstrings(ast.parse(source))).encode())
    return "sha256:" + h.hexdigest()[:16]


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
            problems.append(f"suite {name!r} is not recorded in versions.json: run --update")
            continue
        changed = [k for k in ("data_hash", "code_hash") if old[k] != now[k]]
        if changed and old["version"] == now["version"]:
            what = " and ".join("data" if k == "data_hash" else "scoring code" for k in changed)
            problems.append(
                f"suite {name!r} changed its {what} but is still version {now['version']}: bump `version`"
            )
        elif old["version"] != now["version"] and (changed or old != now):
            problems.append(
                f"suite {name!r} is now version {now['version']}: record it with --update"
            )
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

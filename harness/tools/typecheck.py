"""Type-check the whole project as the one package it installs as: ``python -m dpo_harness.tools.typecheck``.

Why a link tree: ``harness/``, ``plugins/`` and ``suites/`` install as ``dpo_harness``,
``dpo_harness.plugins`` and ``dpo_harness.suites`` (setuptools ``package-dir``), a mapping mypy
cannot follow — run on the folders, every ``dpo_harness`` import inside ``suites/`` and
``plugins/`` would be unresolved and silently ``Any``. Nor can mypy see through the editable
install's import hook. So this builds ``.typecheck/dpo_harness/`` — symbolic links arranged as
the installed package, rebuilt on every run so new modules are never missed — and runs mypy on
it and on ``tests/`` with the settings in ``pyproject.toml`` (strict for ``dpo_harness.*``).
Error paths point into ``.typecheck/``; each is a link to the real file.

Needs a source checkout (an editable install); exits 2 otherwise. Extra arguments go to mypy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["build_tree", "main"]

_MAPPING = {"plugins": "plugins", "suites": "suites"}  # dpo_harness.<name> -> <repo>/<dir>


def repo_root() -> Path | None:
    here = Path(__file__).resolve().parents[2]  # harness/tools/typecheck.py -> repo
    return here if (here / "pyproject.toml").is_file() and (here / "harness").is_dir() else None


def build_tree(root: Path) -> Path:
    """``<root>/.typecheck/dpo_harness`` laid out as the installed package, made of links."""
    tree = root / ".typecheck"
    shutil.rmtree(tree, ignore_errors=True)
    package = tree / "dpo_harness"
    package.mkdir(parents=True)
    for child in (root / "harness").iterdir():
        if child.name == "__pycache__":
            continue
        (package / child.name).symlink_to(child.resolve())
    for name, folder in _MAPPING.items():
        (package / name).symlink_to((root / folder).resolve())
    return tree


def main(argv: list[str] | None = None) -> int:
    root = repo_root()
    if root is None:
        print("typecheck: run it from a source checkout (pip install -e .)", file=sys.stderr)
        return 2
    build_tree(root)
    cmd = [sys.executable, "-m", "mypy", "-p", "dpo_harness", "-p", "tests", *(argv or [])]
    return subprocess.call(cmd, cwd=root)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

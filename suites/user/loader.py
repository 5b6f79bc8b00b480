"""From suite files to suites: read every declaration, load its rows, refuse name clashes.

A user suite may not take the name of a built-in or installed suite (its baselines would be
mistaken for theirs), nor be declared twice across the files given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dpo_harness.errors import BadInputError
from dpo_harness.evaluation.suite import available_suites
from dpo_harness.suites.user.base import UserSuite, declared_class
from dpo_harness.suites.user.declaration import (
    LmEvalEntry,
    LmEvalTask,
    OpenPromptsEntry,
    SuiteEntry,
    read_declarations,
)
from dpo_harness.suites.user.lm_eval import LmEvalSuite
from dpo_harness.suites.user.native import DomainItemsSuite, OpenPromptsSuite
from dpo_harness.suites.user.sources import load_rows, load_task_docs, rows_hash

__all__ = ["build_suite", "load_suite_files"]


def build_suite(entry: SuiteEntry, task: LmEvalTask | None, declared_in: Path) -> UserSuite:
    """One declared suite, with its rows loaded and checked (no model is needed)."""
    if isinstance(entry, LmEvalEntry):
        assert task is not None
        docs = load_task_docs(task, entry.task)
        return declared_class(LmEvalSuite, entry)(
            entry, task, docs, declared_in=declared_in, rows_hash=rows_hash(docs.rows)
        )
    rows = load_rows(entry.data, where=f"{declared_in}: suite {entry.name!r}")
    if isinstance(entry, OpenPromptsEntry):
        return declared_class(OpenPromptsSuite, entry)(
            entry, rows, declared_in=declared_in, rows_hash=rows_hash(rows.rows)
        )
    return declared_class(DomainItemsSuite, entry)(
        entry, rows, declared_in=declared_in, rows_hash=rows_hash(rows.rows)
    )


def load_suite_files(paths: Sequence[Path]) -> dict[str, UserSuite]:
    """Every suite declared in ``paths``, by name, in the order declared."""
    registered = available_suites()
    out: dict[str, UserSuite] = {}
    for path in paths:
        path = Path(path)
        for entry, task in read_declarations(path):
            if entry.name in registered:
                module = registered[entry.name].__module__
                what = "built-in" if module.startswith("dpo_harness.suites.") else "installed"
                raise BadInputError(
                    f"{path}: suite {entry.name!r} has the name of a {what} suite",
                    "rename it: a user suite cannot stand in for another suite (their baselines "
                    "would be confused)",
                )
            if entry.name in out:
                raise BadInputError(
                    f"{path}: suite {entry.name!r} is also declared in {out[entry.name].declared_in}",
                    "rename one of them (or pass the file once)",
                )
            out[entry.name] = build_suite(entry, task, path)
    return out

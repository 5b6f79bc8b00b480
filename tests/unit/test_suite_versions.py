"""A suite's version moves with its data and scoring code (see dpo_harness.tools.versions)."""

from __future__ import annotations

import pytest
from dpo_harness.tools import versions


def test_every_builtin_suite_matches_versions_json() -> None:
    assert versions.check() == []


def test_changed_data_without_a_version_bump_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    stale = versions.current()
    stale["adtech"]["data_hash"] = "sha256:0000000000000000"
    monkeypatch.setattr(versions, "recorded", lambda: stale)
    problems = versions.check()
    version = stale["adtech"]["version"]
    assert problems == [
        f"suite 'adtech' changed its data but is still version {version}: bump `version`"
    ]


def test_changed_code_without_a_version_bump_blocks_update(monkeypatch: pytest.MonkeyPatch) -> None:
    stale = versions.current()
    stale["repetition"]["code_hash"] = "sha256:0000000000000000"
    monkeypatch.setattr(versions, "recorded", lambda: stale)
    assert versions.main(["--update"]) == 1


def test_docstrings_and_comments_do_not_count_as_scoring_changes() -> None:
    import ast

    a = ast.parse('def f():\n    """doc"""\n    return 1  # why\n')
    b = ast.parse("def f():\n    return 1\n")
    assert ast.dump(versions._strip_docstrings(a)) == ast.dump(versions._strip_docstrings(b))

"""A suite's version moves with its data and scoring code (see dpo_harness.tools.versions)."""

from __future__ import annotations

from pathlib import Path

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


def test_a_suite_version_bump_does_not_move_the_user_suite_code_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user-suite entry hashes built-in suite modules for their scoring functions; a suite's
    own ``version`` (bumped for a data change) is left out, a changed function is not."""
    import sys

    from dpo_harness.tools.versions import modules_hash

    src = 'class S:\n    version = "{v}"\n\n\ndef score(x):\n    return x {op} 1\n'
    monkeypatch.syspath_prepend(str(tmp_path))
    hashes = {}
    for name, v, op in (("m_a", "4", "+"), ("m_b", "5", "+"), ("m_c", "5", "-")):
        (tmp_path / f"{name}.py").write_text(src.format(v=v, op=op))
        sys.modules.pop(name, None)
        hashes[name] = (
            modules_hash((name,), without_suite_versions=True),
            modules_hash((name,)),
        )
    assert hashes["m_a"][0] == hashes["m_b"][0] != hashes["m_c"][0]
    assert hashes["m_a"][1] != hashes["m_b"][1]  # the built-in suites' own hash still moves

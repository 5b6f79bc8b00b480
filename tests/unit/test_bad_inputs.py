"""Every bad input of tests/bad_input_cases.py that is refused before a model loads.

Each case must end with its exit code (2; 4 under the pytest plugin), one ``error:`` line that
names the problem, no traceback, and its after-checks (nothing written, earlier files intact).
The cases that load the demo model run in tests/integration/test_bad_inputs_model.py; the
table of all of them is docs/bad-inputs.md (benchmarks/bad_inputs.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_input_cases import CASES, Case, Outcome, run_case

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-inputs-shared")


def describe(outcome: Outcome) -> str:
    c = outcome.case
    return (
        f"{c.id}: exit {outcome.code} (expected {c.code}), traceback={outcome.traceback}, "
        f"'{c.words}' {'found' if c.words in outcome.output else 'NOT found'}, "
        f"one-line={outcome.one_line_error}, problems={outcome.problems}\n"
        f"command: {outcome.command}\n--- output ---\n{outcome.output[-4000:]}"
    )


def check(c: Case, tmp_path: Path, shared: Path) -> None:
    root = tmp_path / "sandbox"
    root.mkdir()
    outcome = run_case(c, root, shared)
    if outcome.skipped is not None:
        pytest.skip(outcome.skipped)
    assert outcome.ok, describe(outcome)


@pytest.mark.parametrize("c", [c for c in CASES if not c.model], ids=lambda c: c.id)
def test_bad_input_is_refused_in_one_line_before_any_model_loads(
    c: Case, tmp_path: Path, shared: Path
) -> None:
    check(c, tmp_path, shared)


def test_the_catalogue_covers_the_issue_and_the_doc_lists_every_case() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    from_issue = [c for c in CASES if c.origin.startswith("issue 11")]
    new = [c for c in CASES if c.origin == "new"]
    assert len(from_issue) >= 35 and len(new) >= 10, (len(from_issue), len(new))
    doc = (REPO / "docs" / "bad-inputs.md").read_text(encoding="utf-8")
    missing = [i for i in ids if f"`{i}`" not in doc]
    assert not missing, f"run python benchmarks/bad_inputs.py: not in the doc: {missing}"

"""The bad inputs of tests/bad_input_cases.py that are met only once the demo model loads.

Weights that do not fit their config, a broken tokenizer, a chat template the sandbox blocks, a
hostile pickle, an adapter of the wrong shape, a full disk under an evaluation or a training
run: each must be exit 2 (4 under pytest) with one line, no traceback, and nothing half-written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_input_cases import CASES, Case
from tests.unit.test_bad_inputs import check


@pytest.fixture(scope="session")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-inputs-shared")


@pytest.mark.parametrize("c", [c for c in CASES if c.model], ids=lambda c: c.id)
def test_bad_input_met_while_loading_is_refused_in_one_line(
    c: Case, tmp_path: Path, shared: Path
) -> None:
    check(c, tmp_path, shared)

"""Each suite catches the failure it exists for, and stays quiet on the healthy demo model."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from dpo_harness.cli import cli
from dpo_harness.evaluation.suite import available_suites
from dpo_harness.files import load_model_file
from dpo_harness.gate import GateDecision
from dpo_harness.schema import DEFAULT_SUITES, EvalReport

from tests.unit.test_suite_scoring import _seed_history


def _evaluate(ckpt: Path | None, suites: str, out: Path) -> tuple[int, str, EvalReport]:
    args = [
        "evaluate",
        *([str(ckpt)] if ckpt else []),
        "--suites",
        suites,
        "--out",
        str(out),
        "--quiet",
    ]
    result = CliRunner().invoke(cli, args)
    report = load_model_file(out / "report.json", EvalReport)
    return result.exit_code, result.output, report


def test_bang_model_fails_repetition_and_quotes_the_worst_responses(
    demo_variant: Callable[[str], Path], tmp_path: Path
) -> None:
    code, output, report = _evaluate(demo_variant("bang"), "repetition,fluency", tmp_path)
    assert code == 1
    rep = report.suite("repetition")
    assert rep.metric("degenerate_share").hard_limit_ok is False
    assert rep.metric("degenerate_share").value == 1.0
    assert rep.metric("longest_char_run").hard_limit_ok is False
    assert "repetition::degenerate_share worst" in output and "!!!!!!!!" in output.replace(
        "！", "!"
    )
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "repetition::longest_char_run worst" in markdown and "！！！！" in markdown


def test_english_model_fails_fluency(demo_variant: Callable[[str], Path], tmp_path: Path) -> None:
    code, output, report = _evaluate(demo_variant("english"), "fluency", tmp_path)
    assert code == 1
    m = report.suite("fluency").metric("japanese_share")
    assert m.hard_limit_ok is False and m.value is not None and m.value < 0.2
    assert "fluency::japanese_share" in output


def test_chinese_model_fails_fluency_on_drift(
    demo_variant: Callable[[str], Path], tmp_path: Path
) -> None:
    code, _, report = _evaluate(demo_variant("chinese"), "fluency", tmp_path)
    assert code == 1
    fl = report.suite("fluency")
    assert fl.metric("chinese_drift").hard_limit_ok is False
    # Kanji without kana in long sentences are Chinese: the Japanese-script share sees it too.
    assert fl.metric("japanese_share").hard_limit_ok is False
    assert any("no kana" in f.message for f in fl.findings)


def test_seed_trainer_state_is_diagnosed_as_hidden_nan(demo_dir: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint-800"
    shutil.copytree(demo_dir, ckpt)
    (ckpt / "trainer_state.json").write_text(
        json.dumps({"global_step": 800, "log_history": _seed_history()})
    )
    code, output, report = _evaluate(ckpt, "numerical", tmp_path / "out")
    assert code == 1
    num = report.suite("numerical")
    assert num.metric("training_log_errors").hard_limit_ok is False
    first = next(f for f in num.findings if f.metric == "training_log_errors")
    assert first.message.startswith("Hidden NaN run")
    assert "Hidden NaN run" in output


@pytest.mark.parametrize("suite", DEFAULT_SUITES)
def test_each_suite_sees_a_model_that_answers_nothing(
    suite: str, demo_variant: Callable[[str], Path], tmp_path: Path
) -> None:
    """Issue 12: no pass by absence. Each suite states which failure it must see in a model whose
    every answer is empty (``on_empty_answers``), and the gate shows exactly that."""
    expected = available_suites()[suite].on_empty_answers
    assert expected, f"{suite} states nothing about a model that answers nothing"
    result = CliRunner().invoke(
        cli,
        [
            "gate",
            str(demo_variant("empty")),
            "--base",
            "demo",
            "--suites",
            suite,
            "--out",
            str(tmp_path),
            "--quiet",
        ],
    )
    assert result.exit_code == 1, result.output
    decision = load_model_file(tmp_path / "decision.json", GateDecision)
    assert decision.decision == "refuse"
    got = {m: decision.verdict(f"{suite}::{m}").verdict.value for m in expected}
    assert got == dict(expected), "\n".join(decision.reasons)
    # Nothing gated passes by having nothing to compare.
    assert not any(
        v.verdict.value == "skipped" and "no value to compare" in v.reason
        for v in decision.verdicts
    )
    if "unscorable" in expected.values():
        assert "nothing scorable" in result.output and "UNSCORABLE" in result.output

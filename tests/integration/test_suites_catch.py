"""Each suite catches the failure it exists for, and stays quiet on the healthy demo model."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from dpo_harness.cli import cli
from dpo_harness.files import load_model_file
from dpo_harness.schema import EvalReport

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
    # Chinese is written in kanji, so the Japanese-script share alone would not catch it.
    assert fl.metric("japanese_share").hard_limit_ok is True
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

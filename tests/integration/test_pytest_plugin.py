"""The pytest plugin, run the way CI runs it: a pytest subprocess with the installed entry point."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "baselines" / "demo.json"

USER_TESTS = """
def test_ordinary_arithmetic():
    assert 1 + 1 == 2


def test_my_rule(dpo_report, dpo_decision, dpo_baseline, dpo_model):
    acc = dpo_report.suite("adtech").metric("mc_accuracy").value
    assert acc >= dpo_baseline.report.suite("adtech").metric("mc_accuracy").value - 0.05
    assert dpo_model.tokenizer.convert_ids_to_tokens(0) == "!"
    assert dpo_decision.decision in ("promote", "refuse")
"""


def _failed_metrics(result: pytest.RunResult) -> set[str]:
    out = set()
    for line in result.outlines:
        if line.startswith("FAILED dpo-harness::dpo["):
            out.add(line.split("dpo[", 1)[1].split("]", 1)[0])
    return out


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rfs", f"--dpo-baseline={BASELINE}", *args
    )


def test_demo_base_passes_every_item_with_junit_and_step_summary(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    junit = tmp_path / "junit.xml"
    result = _run(pytester, "--dpo-checkpoint=demo", "--dpo-base=demo", f"--junitxml={junit}")
    assert result.ret == 0, result.stdout.str()[-3000:]
    outcomes = result.parseoutcomes()
    assert (
        outcomes["passed"] == 39 and outcomes["skipped"] == 3
    )  # 37 metrics + lora/log skips + 2 user tests
    assert "dpo-harness gate: PROMOTE demo" in result.stdout.str()
    cases = ET.parse(junit).getroot().iter("testcase")
    names = [c.get("name") for c in cases]
    assert "dpo[fluency::japanese_share]" in names and "dpo[adtech::mc_accuracy]" in names
    assert len([n for n in names if n and n.startswith("dpo[")]) == 40  # one test case per metric
    assert summary.read_text(encoding="utf-8").startswith("# Gate: PROMOTE")


NAN_FAILS = {
    "numerical::nonfinite_parameters",
    "numerical::probe_nonfinite_share",
    "numerical::probe_max_abs_logit",
    "numerical::probe_entropy",
    "numerical::probe_top1_prob",
    "numerical::argmax_mode_share",
    "numerical::kl_from_reference",
    "numerical::heldout_bits_per_byte",
    "repetition::degenerate_share",
    "repetition::longest_char_run",
    "repetition::tail_loop_fraction",
    "repetition::char_seq_rep4",
    "repetition::symbol_share",
    "repetition::compression_excess",
    "repetition::eos_rate",
    "repetition::ngram_uniqueness",
    "repetition::self_bleu",
}


def test_nan_model_fails_exactly_the_numerical_and_repetition_items(
    pytester: pytest.Pytester, nan_model_dir: Path
) -> None:
    result = _run(
        pytester,
        f"--dpo-checkpoint={nan_model_dir}",
        "--dpo-base=demo",
        "--dpo-suites=numerical,repetition",
    )
    assert result.ret == 1
    # NaN weights: every logit statistic is NaN, and the greedy output is "!!!!" (token 0) everywhere.
    assert _failed_metrics(result) == NAN_FAILS
    text = result.stdout.str()
    assert "numerical::nonfinite_parameters hard-fail" in text
    assert "worst op-001: 1 (baseline 0): !!!!!!!!" in text  # the seed's "！！！！", quoted


BANG_FAILS = {
    "repetition::degenerate_share",
    "repetition::longest_char_run",
    "repetition::tail_loop_fraction",
    "repetition::char_seq_rep4",
    "repetition::symbol_share",
    "repetition::compression_excess",
    "repetition::eos_rate",
    "repetition::ngram_uniqueness",
    "repetition::self_bleu",
    "fluency::japanese_share",
    "fluency::sentence_end_ok",
    "fluency::symbol_token_share",
    "fluency::answer_nll_reference",
}


def test_bang_model_fails_exactly_the_repetition_and_fluency_items(
    pytester: pytest.Pytester, demo_variant: Callable[[str], Path]
) -> None:
    result = _run(
        pytester,
        f"--dpo-checkpoint={demo_variant('bang')}",
        "--dpo-base=demo",
        "--dpo-suites=repetition,fluency",
    )
    assert result.ret == 1
    assert _failed_metrics(result) == BANG_FAILS
    text = result.stdout.str()
    assert "fluency::answer_nll_reference regressed" in text
    assert "paired Δ:" in text and "margin:    0.7" in text


def test_plugin_is_inert_without_options_and_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    plain = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert plain.ret == 0 and plain.parseoutcomes() == {"passed": 1}
    off = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:dpo_harness")
    assert off.ret == 0 and off.parseoutcomes() == {"passed": 1}
    assert "dpo-harness" not in off.stdout.str()


def test_missing_checkpoint_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--dpo-checkpoint=/no/such/ckpt"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "checkpoint not found: /no/such/ckpt" in result.stderr.str()


def test_setup_errors_are_usage_errors_naming_the_pytest_options(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    no_dir = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--dpo-checkpoint=demo",
        "--dpo-base=demo",
        f"--dpo-baselines-dir={tmp_path / 'none'}",
    )
    assert no_dir.ret == pytest.ExitCode.USAGE_ERROR, no_dir.stdout.str()[-2000:]
    err = no_dir.stderr.str()
    assert "no stored baseline" in err and "--dpo-baseline" in err
    assert "failed" not in no_dir.stdout.str()  # not 38 failing metric items
    short = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--dpo-checkpoint=demo",
        f"--dpo-baseline={BASELINE}",
        "--dpo-max-new-tokens=8",
    )
    assert short.ret == pytest.ExitCode.USAGE_ERROR
    assert "not comparable" in short.stderr.str()


def test_under_xdist_the_model_is_evaluated_once_and_the_gate_is_reported_once(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    junit = tmp_path / "junit.xml"
    out = tmp_path / "gate"
    result = _run(
        pytester,
        "-n",
        "2",
        "--dpo-checkpoint=demo",
        "--dpo-base=demo",
        "--dpo-suites=numerical,adtech",
        f"--dpo-out={out}",
        f"--junitxml={junit}",
    )
    assert result.ret == 0, result.stdout.str()[-3000:]
    text = result.stdout.str()
    assert text.count("dpo-harness: evaluating demo") == 1  # the controller, before the workers
    assert text.count("dpo-harness gate: PROMOTE demo") == 1
    assert summary.read_text(encoding="utf-8").count("# Gate: PROMOTE") == 1
    report = (out / "report.json").read_text(encoding="utf-8")
    assert '"generations"' in report
    names = [c.get("name") for c in ET.parse(junit).getroot().iter("testcase")]
    dpo = [n for n in names if n and n.startswith("dpo[")]
    assert len(dpo) == len(set(dpo)) > 10  # one case per metric, each once

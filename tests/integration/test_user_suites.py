"""User suites end to end on the demo: baseline, gate (promote and refuse), the pytest plugin.

A suite from a JSONL file (the example's open prompts) and one from an lm-eval task YAML (40 of
the example's multiple-choice documents) are baselined into a directory of their own, then
gated exactly like the built-in suites.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from dpo_harness.cli import cli
from dpo_harness.files import load_model_file
from dpo_harness.gate import GateDecision
from dpo_harness.gate.baseline import load_baseline

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [*args, "--quiet"])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("user-suites")
    shutil.copy(EXAMPLES / "user-suites" / "prompts.jsonl", folder / "prompts.jsonl")
    (folder / "suites.yaml").write_text(
        "suites:\n"
        "  - name: open\n"
        "    version: '1'\n"
        "    kind: open_prompts\n"
        "    data: {path: prompts.jsonl}\n"
        "    fields: {prompt: question}\n",
        encoding="utf-8",
    )
    docs = (EXAMPLES / "lm-eval-adtech" / "adtech_mc.jsonl").read_text(encoding="utf-8")
    (folder / "mc.jsonl").write_text("\n".join(docs.splitlines()[:40]) + "\n", encoding="utf-8")
    task = (EXAMPLES / "lm-eval-adtech" / "adtech_mc.yaml").read_text(encoding="utf-8")
    task = task.replace("task: adtech_mc", "task: mc40").replace("adtech_mc.jsonl", "mc.jsonl")
    (folder / "mc40.yaml").write_text(task, encoding="utf-8")
    return folder


def _suite_args(files: Path) -> list[str]:
    return ["--suite-file", str(files / "suites.yaml"), "--suite-file", str(files / "mc40.yaml")]


@pytest.fixture(scope="module")
def baselines(files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("baselines-mine")
    code, output = _cli(
        "baseline", "create", "demo", "--suites", "open,mc40", *_suite_args(files),
        "--baselines-dir", str(out),
    )  # fmt: skip
    assert code == 0, output
    return out


def test_the_baseline_keys_user_suites_like_built_ins(baselines: Path, files: Path) -> None:
    stored = load_baseline(baselines / "demo.json")
    assert set(stored.key.suites) == {"open", "mc40"}
    for ident in stored.key.suites.values():
        assert ident.version in ("1", "1.0") and ident.data_hash.startswith("sha256:")
        assert ident.declaration_hash and ident.declared_in
    assert stored.key.suites["mc40"].declared_in == str(files / "mc40.yaml")
    assert stored.report.suite("mc40").metric("acc").per_sample.keys() == {
        str(k) for k in range(40)
    }


def test_the_demo_base_promotes_and_the_bang_variant_is_refused(
    baselines: Path, files: Path, demo_variant: Callable[[str], Path], tmp_path: Path
) -> None:
    common = [*_suite_args(files), "--baselines-dir", str(baselines), "--base", "demo"]
    code, output = _cli("gate", "demo", *common, "--out", str(tmp_path / "base"))
    assert code == 0, output
    assert "PROMOTE: demo" in output
    promoted = load_model_file(tmp_path / "base" / "decision.json", GateDecision)
    assert promoted.verdict("open::degenerate_share").verdict.value == "pass"
    assert promoted.verdict("mc40::acc").verdict.value == "pass"
    code, output = _cli("gate", str(demo_variant("bang")), *common, "--out", str(tmp_path / "bang"))
    assert code == 1, output
    decision = load_model_file(tmp_path / "bang" / "decision.json", GateDecision)
    assert decision.decision == "refuse"
    assert decision.verdict("open::degenerate_share").verdict.value == "hard-fail"
    assert decision.verdict("open::japanese_share").verdict.value == "hard-fail"


def test_the_lm_eval_suite_refuses_the_nan_variant(
    baselines: Path, files: Path, nan_model_dir: Path, tmp_path: Path
) -> None:
    code, output = _cli(
        "gate", str(nan_model_dir), "--suites", "mc40", *_suite_args(files),
        "--baselines-dir", str(baselines), "--base", "demo", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 1, output
    verdict = load_model_file(tmp_path / "decision.json", GateDecision).verdict("mc40::acc")
    assert verdict.candidate is not None and verdict.baseline is not None
    assert verdict.candidate < verdict.baseline and verdict.verdict.value in (
        "regressed",
        "inconclusive",
    )


def test_gating_without_the_suite_file_or_with_a_changed_declaration_is_refused(
    baselines: Path, files: Path, tmp_path: Path
) -> None:
    common = ["--baselines-dir", str(baselines), "--base", "demo", "--out", str(tmp_path)]
    code, output = _cli("gate", "demo", "--suite-file", str(files / "suites.yaml"), *common)
    assert code == 2, output
    assert "suite 'mc40' is a user suite" in output
    assert f"fix: pass its suites file: --suite-file {files / 'mc40.yaml'}" in output
    changed = tmp_path / "changed.yaml"
    task = (
        (files / "mc40.yaml").read_text(encoding="utf-8").replace("{{question}}", "Q: {{question}}")
    )
    changed.write_text(task.replace("mc.jsonl", str(files / "mc.jsonl")), encoding="utf-8")
    code, output = _cli("gate", "demo", "--suites", "mc40", "--suite-file", str(changed), *common)
    assert code == 2, output
    assert "suite 'mc40' is declared differently" in output
    assert "--baselines-dir" in output and "baseline update" not in output


def test_the_pytest_plugin_has_one_item_per_user_suite_metric(
    pytester: pytest.Pytester, baselines: Path, files: Path
) -> None:
    # under xdist: the controller evaluates, each worker builds the suites from the same options
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rfs", "-n", "2", "--dpo-checkpoint=demo", "--dpo-base=demo",
        f"--dpo-baselines-dir={baselines}", f"--dpo-suite-file={files / 'suites.yaml'}",
        f"--dpo-suite-file={files / 'mc40.yaml'}",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()[-3000:]
    out = result.stdout.str()
    assert "dpo-harness gate: PROMOTE demo" in out
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] + outcomes.get("skipped", 0) == 20 + 1  # open: 20 metrics, mc40: acc
    bad = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--dpo-checkpoint=demo", "--dpo-base=demo",
        f"--dpo-baselines-dir={baselines}", f"--dpo-suite-file={files / 'suites.yaml'}",
    )  # fmt: skip
    assert bad.ret == 4
    assert f"--dpo-suite-file {files / 'mc40.yaml'}" in bad.stderr.str()

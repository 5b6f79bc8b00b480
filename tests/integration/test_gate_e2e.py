"""The gate end to end on the demo: promote the base, refuse the broken variants, promote atomically."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from dpo_harness.cli import cli
from dpo_harness.files import load_model_file
from dpo_harness.gate import GateDecision
from dpo_harness.gate.baseline import load_baseline
from dpo_harness.gate.promotion import promote
from dpo_harness.suites.common import DATA_DIR

from tests.helpers import promotion_decision

REPO = Path(__file__).resolve().parents[2]
STORED = REPO / "baselines" / "demo.json"


def _gate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["gate", *args, "--quiet"])
    return result.exit_code, result.output


def test_stored_demo_baseline_is_valid_and_complete() -> None:
    b = load_baseline(STORED)
    assert b.base_model == "demo"
    assert set(b.key.suites) == {"numerical", "repetition", "fluency", "adtech"}
    assert all(
        m.per_sample
        for s in b.report.suites
        for m in s.metrics
        if m.margin is not None and s.name != "numerical"
    )
    assert b.report.provenance.reference_source == "self"


def test_demo_base_gated_against_its_stored_baseline_promotes(tmp_path: Path) -> None:
    code, out = _gate("demo", "--base", "demo", "--baseline", str(STORED), "--out", str(tmp_path))
    assert code == 0, out
    assert "PROMOTE: demo" in out
    decision = load_model_file(tmp_path / "decision.json", GateDecision)
    assert decision.decision == "promote"
    assert (tmp_path / "gate.md").read_text(encoding="utf-8").startswith("# Gate: PROMOTE")


def test_nan_model_is_refused_naming_the_metric(nan_model_dir: Path, tmp_path: Path) -> None:
    code, out = _gate(
        str(nan_model_dir), "--base", "demo", "--suites", "numerical", "--out", str(tmp_path)
    )
    assert code == 1, out
    decision = load_model_file(tmp_path / "decision.json", GateDecision)
    assert decision.decision == "refuse"
    assert decision.verdict("numerical::nonfinite_parameters").verdict.value == "hard-fail"
    assert any(
        "numerical::nonfinite_parameters fails its hard limit" in r for r in decision.reasons
    )
    # Issue 12: the broken tensor is named where people read, not only in report.json.
    tensor = "model.layers.1.mlp.down_proj.weight (stored in model.safetensors)"
    assert tensor in out
    assert tensor in (tmp_path / "gate.md").read_text(encoding="utf-8")


def test_bang_model_is_refused_naming_repetition(
    demo_variant: Callable[[str], Path], tmp_path: Path
) -> None:
    code, out = _gate(
        str(demo_variant("bang")),
        "--base",
        "demo",
        "--suites",
        "repetition,fluency",
        "--out",
        str(tmp_path),
    )
    assert code == 1, out
    assert "repetition::degenerate_share" in out
    decision = load_model_file(tmp_path / "decision.json", GateDecision)
    assert decision.verdict("repetition::degenerate_share").verdict.value == "hard-fail"
    assert decision.verdict("fluency::japanese_share").verdict.value == "hard-fail"


@pytest.fixture(scope="module")
def quiet_adapter(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter whose B is tiny but non-zero: 'trained', and behaves like its base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("quiet-adapter")
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(demo_dir)),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(1e-7)
    model.save_pretrained(str(out))
    return out


def test_adapter_baseline_is_found_from_its_base_and_promoted_atomically(
    quiet_adapter: Path, tmp_path: Path
) -> None:
    target = tmp_path / "promoted"
    code, out = _gate(
        str(quiet_adapter),
        "--baselines-dir",
        str(REPO / "baselines"),
        "--suites",
        "numerical,adtech",
        "--promote-to",
        str(target),
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 0, out
    names = {p.name for p in target.iterdir()}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "decision.json",
        "README.md",
    } <= names
    card = (target / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "library_name: peft" in card and "base_model:" in card
    assert "| numerical" in card
    decision = json.loads((target / "decision.json").read_text())
    assert decision["decision"] == "promote" and decision["promoted_to"] == str(target)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".promoted.")]
    assert leftovers == [".promoted.lock"], "no temp dirs left behind (the lock file stays)"


def test_refusal_leaves_the_promote_directory_untouched(
    demo_variant: Callable[[str], Path], demo_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "promoted"
    promote(demo_dir, target, promotion_decision(demo_dir))  # the model in production
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    code, _ = _gate(
        str(demo_variant("english")),
        "--base",
        "demo",
        "--suites",
        "fluency",
        "--promote-to",
        str(target),
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 1
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    records = list((tmp_path / "promoted.refusals").glob("*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["decision"] == "refuse"


def test_promote_to_a_directory_of_user_files_is_refused_before_evaluating(
    tmp_path: Path,
) -> None:
    target = tmp_path / "project"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    result = CliRunner().invoke(
        cli, ["gate", "demo", "--base", "demo", "--promote-to", str(target), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert "not an earlier dpo-harness promotion" in result.output
    assert "stage 1" not in result.output and not (tmp_path / "report.json").exists()
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def _small_items(path: Path, n: int = 12) -> Path:
    lines = (DATA_DIR / "adtech" / "items.jsonl").read_text(encoding="utf-8").splitlines()
    mc = [line for line in lines if '"multiple_choice"' in line][:n]
    path.write_text("\n".join(mc) + "\n", encoding="utf-8")
    return path


def test_incompatible_baseline_is_refused_with_what_differs(tmp_path: Path) -> None:
    items = _small_items(tmp_path / "items.jsonl")
    code, out = _gate(
        "demo",
        "--base",
        "demo",
        "--baseline",
        str(STORED),
        "--suites",
        "adtech",
        "--suite-data",
        f"adtech={items}",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2
    assert "suite 'adtech' data changed" in out
    # The fix for the user's own data never overwrites the stored (shipped) baseline.
    assert "baseline update" not in out
    assert f"dpo-harness baseline create demo --suite-data adtech={items}" in out
    assert "--baselines-dir" in out


def test_baseline_update_after_a_data_change_reports_exactly_what_moved(tmp_path: Path) -> None:
    bdir = tmp_path / "baselines"
    items = _small_items(tmp_path / "items.jsonl", n=30)
    runner = CliRunner()
    args = [
        "--baselines-dir",
        str(bdir),
        "--suites",
        "adtech,repetition",
        "--suite-data",
        f"adtech={items}",
        "--quiet",
    ]
    first = runner.invoke(cli, ["baseline", "create", "demo", *args])
    assert first.exit_code == 0, first.output
    # Change one item's correct answer: only the adtech accuracy metrics can move.
    rows = [json.loads(line) for line in items.read_text(encoding="utf-8").splitlines()]
    rows[0]["answer"] = (rows[0]["answer"] + 1) % 4
    items.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8"
    )
    second = runner.invoke(cli, ["baseline", "update", "demo", *args])
    assert second.exit_code == 0, second.output
    report_md = next((bdir / "reports").glob("demo-*.md")).read_text(encoding="utf-8")
    assert "suite adtech data changed" in report_md
    moved_line = next(line for line in report_md.splitlines() if "metrics moved" in line)
    moved = set(moved_line.split(": ", 1)[1].split(", ")) if ": " in moved_line else set()
    assert moved and all(m.startswith("adtech::") for m in moved), moved_line
    assert not any(m.startswith("repetition::") for m in moved)
    assert len(list((bdir / "history" / "demo").glob("*.json"))) == 1
    # the diff command compares the two stored files the same way
    hist = next((bdir / "history" / "demo").glob("*.json"))
    diff = runner.invoke(cli, ["baseline", "diff", str(hist), str(bdir / "demo.json")])
    assert diff.exit_code == 0 and moved_line in diff.output
    show = runner.invoke(cli, ["baseline", "show", "--baselines-dir", str(bdir)])
    assert show.exit_code == 0 and "demo.json" in show.output
    # A second update with nothing changed leaves the (tracked) file byte for byte as it was.
    before = (bdir / "demo.json").read_bytes()
    again = runner.invoke(cli, ["baseline", "update", "demo", *args])
    assert again.exit_code == 0 and "nothing changed" in again.output, again.output
    assert (bdir / "demo.json").read_bytes() == before
    assert len(list((bdir / "reports").glob("demo-*.md"))) == 1
    named = runner.invoke(cli, ["baseline", "show", "demo", "--baselines-dir", str(bdir)])
    assert named.exit_code == 0 and "max_new_tokens=" in named.output, named.output


def test_gate_resolves_and_fingerprints_each_model_once(
    demo_variant: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dpo_harness.evaluation.loading as loading

    resolved: list[str] = []
    fingerprinted: list[str] = []
    real_resolve = loading.resolve_checkpoint
    real_fp = getattr(loading, "files_fingerprint")  # noqa: B009 (imported, not exported)

    def counting_resolve(ref: str | None, **kw: object) -> loading.CheckpointSpec:
        spec = real_resolve(ref, **kw)  # type: ignore[arg-type]
        resolved.append(str(spec.path))
        return spec

    def counting_fp(files: object, **kw: object) -> str:
        items = list(files)  # type: ignore[call-overload]
        fingerprinted.append(str(Path(items[0][1]).parent))
        return str(real_fp(items, **kw))

    monkeypatch.setattr(loading, "resolve_checkpoint", counting_resolve)
    monkeypatch.setattr(loading, "files_fingerprint", counting_fp)
    bang = demo_variant("bang")
    code, out = _gate(
        str(bang), "--base", "demo", "--suites", "numerical", "--out", str(tmp_path / "o")
    )
    assert code == 1, out
    demo = str(Path(loading.demo_model_dir()).resolve())
    assert sorted(resolved) == sorted([str(bang.resolve()), demo]), resolved
    assert sorted(fingerprinted) == sorted([str(bang.resolve()), demo]), fingerprinted
    # One model resident at a time: the base was loaded by the runner after the candidate's
    # last request (the candidate released first), not beside it.
    report = json.loads((tmp_path / "o" / "report.json").read_text(encoding="utf-8"))
    assert report["provenance"]["runner_stats"]["model_loads"] == 1
    assert report["provenance"]["reference_source"] == "base-option"


def test_a_base_failing_its_own_hard_limits_is_refused_and_accepted_with_a_policy_file(
    tmp_path: Path,
) -> None:
    """Issue 12: answers cut at max_new_tokens make the base fail eos_rate's hard limit; every
    candidate would fail it too. baseline create stops (exit 1), names the limit and its value,
    and says how to go on; the same base is accepted under a policy file, which the baseline keeps."""
    bdir = tmp_path / "baselines"
    args = ["--suites", "repetition", "--max-new-tokens", "8", "--baselines-dir", str(bdir)]
    runner = CliRunner()
    refused = runner.invoke(cli, ["baseline", "create", "demo", *args, "--quiet"])
    assert refused.exit_code == 1, refused.output
    assert "repetition::eos_rate = " in refused.output and "(limit >= 0.5)" in refused.output
    assert "--policy" in refused.output and "--max-new-tokens (now 8)" in refused.output
    assert not (bdir / "demo.json").exists()
    policy = tmp_path / "short.yaml"
    policy.write_text(
        "description: answers are cut at 8 new tokens on purpose\n"
        "metrics:\n"
        "  repetition::eos_rate:\n"
        "    hard_limits: {}\n"
        "    gated: false\n"
        "    reason: 8 new tokens cut every answer\n",
        encoding="utf-8",
    )
    accepted = runner.invoke(
        cli, ["baseline", "create", "demo", *args, "--policy", str(policy), "--quiet"]
    )
    assert accepted.exit_code == 0, accepted.output
    stored = load_baseline(bdir / "demo.json")
    assert stored.key.policy is not None and "repetition::eos_rate" in stored.key.policy.metrics
    # The readable summary: the policy, a table with the power columns, no Python dict.
    shown = runner.invoke(cli, ["baseline", "show", "demo", "--baselines-dir", str(bdir)])
    assert shown.exit_code == 0, shown.output
    assert "{'" not in shown.output and "max_new_tokens=8" in shown.output
    assert "repetition::eos_rate: not gated, hard limit none" in shown.output
    assert "resolves margin ≥" in shown.output and "false refusal" in shown.output
    # Candidates are gated under the baseline's policy; another policy is refused before loading.
    gate_args = ["demo", "--base", "demo", "--baselines-dir", str(bdir), *args[:4]]
    code, out = _gate(*gate_args, "--out", str(tmp_path / "g1"))
    assert code == 0, out
    other = tmp_path / "other.yaml"
    other.write_text("metrics:\n  repetition::eos_rate:\n    margin: 0.3\n", encoding="utf-8")
    code, out = _gate(*gate_args, "--policy", str(other), "--out", str(tmp_path / "g2"))
    assert code == 2 and "gate policy" in out and "--policy" in out


def test_a_bad_policy_file_names_the_field_and_the_file_before_evaluating(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("metrics:\n  repetition::eos_rate:\n    margin: -1\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        ["baseline", "create", "demo", "--policy", str(policy), "--baselines-dir", str(tmp_path)],
    )
    assert result.exit_code == 2, result.output
    assert str(policy) in result.output and "metrics.repetition::eos_rate.margin" in result.output
    assert not (tmp_path / "demo.json").exists()

"""The DPO plugin and train-and-gate on the demo: promotion, the seed's NaN, over-optimisation, bad data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from dpo_harness.cli import cli
from dpo_harness.gate.baseline import load_baseline
from dpo_harness.plugins.dpo.run_config import DPORunConfig
from dpo_harness.training.plugin import get_plugin
from dpo_harness.training.train_and_gate import train_and_gate
from huggingface_hub import ModelCard, ModelCardData
from transformers import TrainerCallback

from tests.helpers import torchrun

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[2]
BASELINES = REPO / "baselines"


@pytest.fixture(autouse=True)
def _stored_baselines(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read the committed demo baseline; never write beside it.
    monkeypatch.setenv("DPO_HARNESS_BASELINES", str(BASELINES))


def _tiny_config(tmp_path: Path, **training: Any) -> DPORunConfig:
    settings = dict(
        precision="fp32",
        per_device_train_batch_size=4,
        learning_rate=3e-5,
        max_steps=10,
        logging_steps=1,
        save_steps=5,
    )
    settings.update(training)
    return DPORunConfig.model_validate(
        {
            "model": "demo",
            "output_dir": str(tmp_path / "run"),
            "dataset": {"path": "demo", "split": "train", "split_field": "split"},
            "training": settings,
            "evaluation": {"suites": ["numerical", "adtech"]},
        }
    )


def test_demo_train_and_gate_promotes_without_losing_domain_accuracy(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["train-and-gate", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "PROMOTED:" in result.output
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["outcome"] == "promoted"
    best = next(c for c in summary["candidates"] if c["name"] == summary["promoted"])
    base_acc = (
        load_baseline(BASELINES / "demo.json").report.suite("adtech").metric("mc_accuracy").value
    )
    assert (
        base_acc is not None and best["primary_value"] >= base_acc - 0.05
    )  # never worse than the gate's margin
    promoted = out / "promoted"
    assert (promoted / "adapter_model.safetensors").is_file() and (promoted / "README.md").is_file()
    # The demo gates live: each checkpoint when it was saved; the final weights are those of
    # the last checkpoint, so they are not evaluated again.
    assert all(c["gated_live"] for c in summary["candidates"])
    assert [c["name"] for c in summary["candidates"]] == ["checkpoint-40", "checkpoint-80"]
    assert not (out / "gate" / "final").exists()
    # A hub-ready card: language, the base's hub id, a model-index, a title naming the model.
    card = ModelCard((promoted / "README.md").read_text(encoding="utf-8"))
    data = card.data
    assert isinstance(data, ModelCardData)
    assert data.language == "ja" and data.base_model == "dpo-harness/demo"
    assert data.eval_results and data.model_name == out.name
    assert card.text.lstrip().startswith(f"# {out.name}\n")
    adapter_cfg = json.loads((promoted / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == "dpo-harness/demo"
    verified = CliRunner().invoke(cli, ["verify", str(promoted)])
    assert verified.exit_code == 0, verified.output
    assert "rewritten at promotion" in verified.output
    assert (out / "curves.png").stat().st_size > 10_000
    history = json.loads((out / "log_history.json").read_text())
    assert any("rewards/margins" in h for h in history)
    assert (out / "final" / "trainer_state.json").is_file()


class InjectNaN(TrainerCallback):
    """Turns one LoRA weight NaN at the start of a given step (1-based), like a NaN-producing kernel."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> None:
        import torch

        if state.global_step + 1 == self.step:
            with torch.no_grad():
                p = next(p for n, p in model.named_parameters() if "lora_A" in n)
                p.view(-1)[0] = float("nan")


def test_seed_failure_reproduced_is_stopped_logged_as_nan_and_nothing_promoted(
    tmp_path: Path,
) -> None:
    config = _tiny_config(tmp_path, max_steps=12, save_steps=4, logging_steps=2)
    summary = train_and_gate(
        get_plugin("dpo"),
        config,
        progress=False,
        log=lambda _m: None,
        callbacks=(InjectNaN(6),),
    )
    assert summary.outcome == "stopped"
    assert summary.promoted is None and summary.candidates == []
    training = summary.training
    assert training is not None and training.stopped
    first = training.events[0]
    assert first.kind == "nonfinite_gradient" and first.step == 6 and first.stopped
    assert (
        first.message.startswith("Step 6: the gradient is NaN/inf")
        and first.message.count(". ") == 0
    )
    assert "nothing is promoted" in summary.reason and "NaN" in summary.reason
    # The failing step is in the log as NaN — not hidden as 0.0.
    history = json.loads((config.output_dir / "log_history.json").read_text(), parse_constant=float)
    logged = {h["step"]: h["loss"] for h in history if "loss" in h}
    assert math.isnan(logged[6]), logged
    assert all(v != 0.0 for v in logged.values())
    # Checkpoint 4 is from before the failure; nothing at or after step 6, and no final model.
    saved = sorted(p.name for p in config.output_dir.glob("checkpoint-*"))
    assert saved == ["checkpoint-4"]
    assert not (config.output_dir / "final").exists()
    events = [
        json.loads(line)
        for line in (config.output_dir / "guard_events.jsonl").read_text().splitlines()
    ]
    assert events[0]["kind"] == "nonfinite_gradient"


def test_not_learning_is_stopped(tmp_path: Path) -> None:
    # lr so small the policy cannot move: rewards stay 0 and the loss stays at ln 2.
    config = _tiny_config(tmp_path, learning_rate=1e-12, max_steps=8, logging_steps=2, save_steps=8)
    config.guards.not_learning_after_steps = 4
    result = get_plugin("dpo").train(config, progress=False, log=lambda _m: None)
    assert result.stopped
    assert result.events[0].kind == "not_learning" and "ln 2" in result.events[0].message


def test_over_optimised_run_is_stopped_early_by_the_live_gate_and_refused(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "configs" / "demo-overoptimise.yaml").read_text())
    assert cfg["gate"]["live"] is True and cfg["training"]["max_steps"] == 150
    cfg["output_dir"] = str(tmp_path / "over")
    cfg["evaluation"] = {"suites": ["repetition", "fluency"]}
    cfg["gate"]["primary_metric"] = "fluency::japanese_share"
    path = tmp_path / "over.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(cli, ["train-and-gate", "--config", str(path), "--quiet"])
    assert result.exit_code == 1, result.output
    summary = json.loads((tmp_path / "over" / "run_summary.json").read_text())
    assert summary["outcome"] == "refused" and summary["promoted"] is None
    reasons = " ".join(r for c in summary["candidates"] for r in c["reasons"])
    assert "repetition::" in reasons or "fluency::" in reasons
    training = summary["training"]
    # The gate ended training long before step 150, with one sentence, and nothing was
    # gated twice: every candidate was gated live, the final model (same weights) not at all.
    assert training["stopped_by_gate"] and not training["stopped"]
    assert training["steps_completed"] < 150
    assert all(c["gated_live"] for c in summary["candidates"])
    assert not (tmp_path / "over" / "gate" / "final").exists()
    events = [
        json.loads(line)
        for line in (tmp_path / "over" / "guard_events.jsonl").read_text().splitlines()
    ]
    (stop,) = [e for e in events if e["stopped"]]
    assert stop["kind"] == "live_gate" and stop["step"] == training["steps_completed"]
    assert stop["message"].startswith(f"Step {stop['step']}: the live gate ")
    assert stop["message"] in summary["reason"] and "STOPPED EARLY" in result.output


class TrainModeSpy(TrainerCallback):
    """Records whether the model is in train mode at the start of every step."""

    def __init__(self) -> None:
        self.modes: list[bool] = []

    def on_step_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> None:
        self.modes.append(bool(model.training))


def test_live_gate_evaluates_the_saved_weights_and_its_metrics_reach_tensorboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dpo_harness.evaluation.loading import resolve_model
    from dpo_harness.gate.pipeline import execute, prepare
    from dpo_harness.schema import EvalConfig, EvalReport
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # 16 multiple-choice items (log-likelihoods only, no generation) keep three evaluations
    # short; the run creates their baseline.
    items = (REPO / "suites" / "data" / "adtech" / "items.jsonl").read_text(encoding="utf-8")
    mc = [line for line in items.splitlines() if '"multiple_choice"' in line][:16]
    (tmp_path / "items.jsonl").write_text("\n".join(mc) + "\n", encoding="utf-8")
    bdir = tmp_path / "baselines"
    monkeypatch.setenv("DPO_HARNESS_BASELINES", str(bdir))
    config = _tiny_config(tmp_path, max_steps=10, save_steps=5, logging_steps=5)
    config.training.report_to = ["tensorboard"]
    config.evaluation.suites = ["adtech"]
    config.evaluation.suite_data = {"adtech": tmp_path / "items.jsonl"}
    config.gate.live = True
    spy = TrainModeSpy()
    summary = train_and_gate(
        get_plugin("dpo"), config, progress=False, log=lambda _m: None, callbacks=(spy,)
    )
    out = config.output_dir
    assert [(c.name, c.gated_live) for c in summary.candidates] == [
        ("checkpoint-5", True),
        ("checkpoint-10", True),
    ]
    assert not (out / "gate" / "final").exists()  # the final weights are checkpoint-10's
    assert spy.modes == [True] * 10  # gating put the model in eval mode and back
    # The live evaluation is the evaluation of the saved files, under their fingerprint.
    live = EvalReport.model_validate_json(
        (out / "gate" / "checkpoint-5" / "report.json").read_text()
    )
    ckpt = out / "checkpoint-5"
    assert live.provenance.model.fingerprint == resolve_model(str(ckpt)).fingerprint
    assert live.provenance.model.kind.value == "trainer-checkpoint"
    plan = prepare(
        EvalConfig.from_settings(config.evaluation, str(ckpt), base="demo"),
        baseline_file=bdir / "demo.json",
        out_dir=tmp_path / "from-files",
    )
    from_files = execute(plan).report
    for metric in from_files.suite("adtech").metrics:
        got = live.suite("adtech").metric(metric.name)
        assert got.per_sample.keys() == metric.per_sample.keys()
        for item, value in metric.per_sample.items():
            assert got.per_sample[item] == pytest.approx(value, abs=1e-6), (metric.name, item)
    # Every gate metric went through the Trainer's own logging to TensorBoard, at its step.
    (logdir,) = {p.parent for p in out.glob("runs/*/events.out.tfevents.*")}
    events = EventAccumulator(str(logdir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/gate/adtech/mc_accuracy", "train/gate/promote"} <= tags
    for name in ("checkpoint-5", "checkpoint-10"):
        report = EvalReport.model_validate_json((out / "gate" / name / "report.json").read_text())
        step = int(name.rsplit("-", 1)[1])
        logged = {e.step: e.value for e in events.Scalars("train/gate/adtech/mc_accuracy")}
        assert logged[step] == pytest.approx(report.suite("adtech").metric("mc_accuracy").value)


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8"
    )
    return path


def _cfg_file(tmp_path: Path, data: Path) -> Path:
    cfg = {
        "model": "demo",
        "output_dir": str(tmp_path / "run"),
        "dataset": {"path": str(data)},
        "training": {"precision": "fp32", "max_steps": 2},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


GOOD = {
    "prompt": "CTRとは何ですか。",
    "chosen": "クリック数を表示回数で割った割合です。",
    "rejected": "費用を表示回数で割った値です。",
}


def test_malformed_row_is_an_error_naming_row_and_field(tmp_path: Path) -> None:
    data = _write_rows(tmp_path / "prefs.jsonl", [GOOD, GOOD | {"chosen": ""}, GOOD])
    result = CliRunner().invoke(cli, ["train-and-gate", "--config", str(_cfg_file(tmp_path, data))])
    assert result.exit_code == 2, result.output
    assert (
        "row 1" in result.output
        and "'chosen'" in result.output
        and "--skip-bad-rows" in result.output
    )
    assert "Traceback" not in result.output


def test_preflight_catches_a_prompt_repeated_inside_chosen(tmp_path: Path) -> None:
    rows = [
        GOOD,
        GOOD | {"chosen": "CTRとは何ですか。クリック数を表示回数で割った割合です。", "id": "r1"},
    ]
    data = _write_rows(tmp_path / "prefs.jsonl", rows)
    result = CliRunner().invoke(cli, ["preflight", "--config", str(_cfg_file(tmp_path, data))])
    assert result.exit_code == 0, result.output
    assert "repeat" in result.output and "r1" in result.output


def test_config_errors_name_the_field_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": "demo",
                "output_dir": "x",
                "dataset": {"path": "demo"},
                "training": {"max_steps": 5},
            }
        )
    )
    result = CliRunner().invoke(cli, ["train-and-gate", "--config", str(path)])
    assert result.exit_code == 2
    assert str(path) in result.output and "training.precision" in result.output


def test_resume_continues_from_the_last_good_checkpoint(tmp_path: Path) -> None:
    class Interrupt(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 6:
                raise KeyboardInterrupt("simulated crash")

    config = _tiny_config(tmp_path, max_steps=8, save_steps=4, logging_steps=1)
    plugin = get_plugin("dpo")
    with pytest.raises(KeyboardInterrupt):
        plugin.train(config, progress=False, log=lambda _m: None, callbacks=(Interrupt(),))
    assert sorted(p.name for p in config.output_dir.glob("checkpoint-*")) == ["checkpoint-4"]
    messages: list[str] = []
    result = plugin.train(config, resume=True, progress=False, log=messages.append)
    assert any("resuming from" in m and "checkpoint-4" in m for m in messages)
    assert not result.stopped and result.steps_completed == 8
    history = json.loads((config.output_dir / "log_history.json").read_text())
    assert [h["step"] for h in history if "loss" in h][-4:] == [5, 6, 7, 8]


@pytest.mark.slow
def test_training_runs_unchanged_under_torchrun_with_two_cpu_processes(tmp_path: Path) -> None:
    cfg = {
        "model": "demo",
        "output_dir": str(tmp_path / "ddp"),
        "dataset": {"path": "demo", "split": "train", "split_field": "split"},
        "training": {
            "precision": "fp32",
            "per_device_train_batch_size": 2,
            "max_steps": 3,
            "logging_steps": 1,
            "save_steps": 3,
        },
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = torchrun(2, "train", "--config", str(path), "--quiet")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 steps" in proc.stdout
    assert (tmp_path / "ddp" / "final" / "adapter_model.safetensors").is_file()
    state = json.loads((tmp_path / "ddp" / "final" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    shutil.rmtree(tmp_path / "ddp", ignore_errors=True)


@pytest.mark.slow
def test_train_and_gate_under_torchrun_gates_on_every_process(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path, per_device_train_batch_size=2, max_steps=2, save_steps=2)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(json.loads(config.model_dump_json())))
    proc = torchrun(2, "train-and-gate", "--config", str(path), "--quiet")
    out = tmp_path / "run"
    summary = json.loads((out / "run_summary.json").read_text())
    assert proc.returncode == (0 if summary["outcome"] == "promoted" else 1), proc.stderr[-3000:]
    assert summary["outcome"] in ("promoted", "refused")  # trained, gated, decided
    # One summary (the main process prints), no raw log dicts, and the gate's evaluation was
    # split over 2 processes.
    assert proc.stdout.count("summary: ") == 1
    assert proc.stderr.count("train-and-gate: demo") == 1
    assert "{'loss'" not in proc.stdout
    (gated,) = summary["candidates"]
    report = json.loads((Path(gated["gate_dir"]) / "report.json").read_text())
    stats = report["provenance"]["runner_stats"]
    assert stats["world_size"] == 2
    assert stats["generations"] == stats["generated_prompts"]
    shutil.rmtree(out, ignore_errors=True)


def test_train_and_gate_creates_a_missing_baseline_with_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bdir = tmp_path / "baselines"
    monkeypatch.setenv("DPO_HARNESS_BASELINES", str(bdir))
    config = _tiny_config(tmp_path, max_steps=2, save_steps=2, logging_steps=1)
    config.evaluation.suites = ["numerical", "adtech"]
    summary = train_and_gate(get_plugin("dpo"), config, progress=False, log=lambda _m: None)
    assert summary.baseline_created and summary.baseline_path == bdir / "demo.json"
    assert load_baseline(bdir / "demo.json").base_model == "demo"
    assert (
        (bdir / "reports" / "demo-created.md")
        .read_text(encoding="utf-8")
        .startswith("# Baseline created for demo")
    )
    assert [c.name for c in summary.candidates] == ["final"]
    assert summary.outcome in ("promoted", "refused")

"""Data-parallel evaluation under torchrun (2 CPU processes, gloo): same results, work split once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dpo_harness.files import load_model_file
from dpo_harness.gate.baseline import load_baseline
from dpo_harness.schema import EvalReport

from tests.helpers import torchrun

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gate_under_torchrun_matches_the_single_process_baseline(tmp_path: Path) -> None:
    out = tmp_path / "gate"
    baseline = REPO / "baselines" / "demo.json"
    proc = torchrun(2, "gate", "demo", "--baseline", str(baseline), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Only the main process prints and writes.
    assert proc.stdout.count("PROMOTE: demo") == 1
    assert json.loads((out / "decision.json").read_text())["decision"] == "promote"

    report = load_model_file(out / "report.json", EvalReport)
    stats = report.provenance.runner_stats
    assert stats["world_size"] == 2
    # Every unique prompt generated exactly once over both processes.
    assert stats["generations"] == stats["generated_prompts"] == stats["kind.generate"]

    # The stored baseline was evaluated in one process: per item, the same answers and scores.
    base = load_baseline(baseline).report
    for suite in base.suites:
        mine = report.suite(suite.name)
        assert [s.response for s in mine.samples] == [s.response for s in suite.samples]
        for m in suite.metrics:
            got = mine.metric(m.name)
            assert set(got.per_sample) == set(m.per_sample), m.name
            for item, v in m.per_sample.items():
                assert got.per_sample[item] == pytest.approx(v, abs=1e-4), (m.name, item)


@pytest.mark.slow
def test_a_failing_model_fails_on_every_rank(nan_model_dir: Path, tmp_path: Path) -> None:
    proc = torchrun(
        2,
        "evaluate",
        str(nan_model_dir),
        "--suites",
        "numerical",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        proc.stdout.count(
            "Parameter model.layers.1.mlp.down_proj.weight (stored in model.safetensors)"
        )
        == 1
    )
    report = load_model_file(tmp_path / "report.json", EvalReport)
    assert report.suite("numerical").metric("nonfinite_parameters").value == 1.0


@pytest.mark.slow
def test_bad_input_under_torchrun_is_one_message_and_exit_2(tmp_path: Path) -> None:
    proc = torchrun(2, "evaluate", str(tmp_path / "missing"), "--quiet")
    # torchrun itself exits 1 whenever a worker fails; the workers' own code is in its summary.
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(exitcode: 2)" in proc.stderr
    assert [line for line in proc.stderr.splitlines() if "error:" in line] == [
        f"error: checkpoint not found: {tmp_path / 'missing'}"
    ]

"""kill -9 at random moments (bounded versions of benchmarks/kill_faults.py; see tests/faults.py).

After every kill the state on disk must be the old one or the new one, complete; the next run
must succeed from whatever the kill left; ``--resume`` must finish the run's steps. Each group
is bounded in kills and seconds; the long loop and its results are in docs/bad-inputs.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.faults import GROUPS, GroupResult, _train, concurrent_updates, run_group


def _report(result: GroupResult) -> str:
    lines = [f"{result.name}: {len(result.kills)} kills, {result.seconds} s"]
    lines += [f"  {k.delay} s {k.phase}: {k.problems}" for k in result.kills]
    lines += [f"  last run: {p}" for p in result.final_problems]
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("name", "kills", "budget"),
    [
        ("baseline_writer", 4, 60),
        ("promotion_writer", 4, 60),
        ("baseline_update", 2, 90),
        ("gate_promote", 3, 90),
    ],
)
@pytest.mark.slow
def test_a_kill_leaves_the_old_or_the_new_state_and_the_next_run_succeeds(
    name: str, kills: int, budget: float, tmp_path: Path
) -> None:
    result = run_group(GROUPS[name](), tmp_path / name, kills=kills, budget_s=budget, seed=1)
    assert result.kills, f"no run was killed: {_report(result)}"
    assert result.ok, _report(result)


@pytest.mark.slow
@pytest.mark.train
def test_training_killed_twice_resumes_to_its_last_step(tmp_path: Path) -> None:
    result = run_group(_train(max_steps=4), tmp_path / "train", kills=2, budget_s=90, seed=1)
    assert result.kills and result.ok, _report(result)


@pytest.mark.slow
@pytest.mark.train
def test_a_killed_demo_build_leaves_the_earlier_build_and_no_leftovers(tmp_path: Path) -> None:
    result = run_group(GROUPS["demo_build"](), tmp_path / "demo", kills=1, budget_s=90, seed=1)
    assert result.ok, _report(result)


@pytest.mark.slow
def test_two_concurrent_baseline_updates_serialise(tmp_path: Path) -> None:
    assert concurrent_updates(tmp_path) == []


@pytest.mark.train
def test_resuming_a_finished_run_trains_no_step_past_max_steps(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from dpo_harness.cli import cli

    config = tmp_path / "run.yaml"
    config.write_text(
        "model: demo\n"
        f"output_dir: {tmp_path / 'run'}\n"
        "dataset: {path: demo, split: train, split_field: split}\n"
        "training:\n  precision: fp32\n  max_steps: 2\n  save_steps: 1\n"
        "  per_device_train_batch_size: 2\n",
        encoding="utf-8",
    )
    first = CliRunner().invoke(cli, ["train", "--config", str(config), "--quiet"])
    assert first.exit_code == 0, first.output
    weights = (tmp_path / "run" / "final" / "adapter_model.safetensors").read_bytes()
    again = CliRunner().invoke(cli, ["train", "--config", str(config), "--quiet", "--resume"])
    assert again.exit_code == 0, again.output
    state = json.loads((tmp_path / "run" / "final" / "trainer_state.json").read_text())
    assert state["global_step"] == 2  # transformers alone would have trained step 3
    assert not (tmp_path / "run" / "checkpoint-3").exists()
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").read_bytes() == weights

"""Bad input is refused early, in one line, with exit 2; a bug is exit 3 with a crash log.

Each test here is one input a careful user tried (issue 11) that used to end in a traceback, a
wrong exit code, or a refusal only after minutes of work. No model is loaded.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from click.testing import CliRunner
from dpo_harness.cli import cli
from dpo_harness.errors import BadInputError
from dpo_harness.plugins.dpo import DPOPlugin
from dpo_harness.plugins.dpo.run_config import DPO_LOSS_TYPES
from dpo_harness.training.train_and_gate import check_run_config

RUN = """\
model: demo
output_dir: {out}
dataset: {{path: demo, split: train, split_field: split}}
training:
  precision: fp32
  max_steps: 2
{extra}
"""


def _config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(RUN.format(out=tmp_path / "out", extra=extra), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ("  loss_type: [sigmod]", "training.loss_type", "unknown DPO loss type"),
        (
            "  lr_scheduler_type: cosine_annealing",
            "training.lr_scheduler_type",
            "unknown scheduler",
        ),
        ("  optim: adam_but_faster", "training.optim", "unknown optimizer"),
    ],
)
def test_training_settings_trl_would_reject_at_train_time_are_refused_when_read(
    tmp_path: Path, extra: str, field: str, words: str
) -> None:
    path = _config(tmp_path, extra)
    with pytest.raises(BadInputError) as err:
        DPOPlugin().load_config(path)
    assert f"field '{field}'" in err.value.cause and words in err.value.cause
    assert str(path) in err.value.cause


def test_the_loss_types_we_accept_are_the_ones_trl_implements() -> None:
    from trl.trainer import dpo_trainer

    tree = ast.parse(inspect.getsource(dpo_trainer))
    implemented = {
        node.comparators[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        and isinstance(node.left, ast.Name)
        and node.left.id == "loss_type"
        and isinstance(node.ops[0], ast.Eq)
        and isinstance(node.comparators[0], ast.Constant)
    }
    assert set(DPO_LOSS_TYPES) == implemented


@pytest.mark.parametrize(
    ("gate", "evaluation", "words"),
    [
        ("  primary_metric: adtech::mc_acuracy", "", "is not a metric of the evaluated suites"),
        (
            "  primary_metric: adtech::mc_accuracy",
            "  suites: [numerical, adtech, mystery]",
            "unknown suite 'mystery'",
        ),
        ("  policy: {margins: {'adtech::nope': 0.1}}", "", "margins names metric(s)"),
    ],
)
def test_gate_settings_of_a_run_are_refused_before_training(
    tmp_path: Path, gate: str, evaluation: str, words: str
) -> None:
    extra = "gate:\n" + gate + ("\nevaluation:\n" + evaluation if evaluation else "")
    config = DPOPlugin().load_config(_config(tmp_path, extra))
    with pytest.raises(BadInputError) as err:
        check_run_config(config)
    assert words in err.value.cause


def test_data_with_no_trainable_row_is_refused_before_training_with_the_counts(
    tmp_path: Path,
) -> None:
    from dpo_harness.evaluation.loading import demo_model_dir
    from dpo_harness.plugins.dpo.trainer import load_data
    from transformers import AutoTokenizer

    config = DPOPlugin().load_config(_config(tmp_path, "  max_length: 8"))
    tok = AutoTokenizer.from_pretrained(str(demo_model_dir()))
    with pytest.raises(BadInputError) as err:
        load_data(config, tok, skip_bad_rows=False)  # type: ignore[arg-type]
    cause = err.value.cause
    assert "no trainable rows" in cause and "training.max_length = 8" in cause
    assert "rows," in cause and "well-formed" in cause


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["--margin", "bogus::metric=0.1"],
            "--margin names metric(s) the gated suites do not report",
        ),
        (["--margin", "adtech::mc_accuracy=nan"], "finite number >= 0"),
        (["--margin", "adtech::mc_accuracy=-1"], "finite number >= 0"),
        (["--margin", "adtech::mc_accuracy"], "is not SUITE::METRIC=VALUE"),
    ],
)
def test_bad_margins_are_refused_before_any_model_loads(
    tmp_path: Path, args: list[str], words: str
) -> None:
    result = CliRunner().invoke(
        cli, ["gate", "demo", "--base", "demo", "--out", str(tmp_path), "--quiet", *args]
    )
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "report.json").exists()


def test_an_unexpected_exception_is_exit_3_with_a_crash_log_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DPO_HARNESS_CACHE", str(tmp_path / "cache"))

    def boom(*_a: object, **_k: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("dpo_harness.evaluation.suite.available_suites", boom)
    result = CliRunner().invoke(cli, ["suites"])
    assert result.exit_code == 3
    assert "internal error: ZeroDivisionError: a bug" in result.output
    assert "Traceback" not in result.output
    logs = list((tmp_path / "cache" / "crashes").glob("*.log"))
    assert len(logs) == 1 and "ZeroDivisionError" in logs[0].read_text(encoding="utf-8")
    # Recorded before --debug sets it, so that the original (False) is what comes back.
    monkeypatch.setattr("dpo_harness.cli.common.DEBUG", False)
    debug = CliRunner().invoke(cli, ["--debug", "suites"])
    assert isinstance(debug.exception, ZeroDivisionError)  # --debug lets the traceback through


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        (
            "  extra_args: {weight_decay: 0.01, warmup_ratio_typo: 0.1}",
            "training.extra_args",
            "not an argument of TRL's DPOConfig: warmup_ratio_typo",
        ),
        (
            "  extra_args: {rpo_alpha: 0.5}",  # removed from TRL 1.16
            "training.extra_args",
            "rpo_alpha",
        ),
        (
            "  extra_args: {logging_nan_inf_filter: true}",
            "training.extra_args",
            "hid the seed run's NaN losses",
        ),
        ("  extra_args: {learning_rate: 1.0e-4}", "training.extra_args", "training.learning_rate"),
        ("  report_to: tensorbored", "training.report_to", "unknown tracker"),
        ("gate: {stop_after_refusals: 2}", "gate", "needs live: true"),
    ],
)
def test_pass_through_and_tracker_settings_are_checked_when_read(
    tmp_path: Path, extra: str, field: str, words: str
) -> None:
    path = _config(tmp_path, extra)
    with pytest.raises(BadInputError) as err:
        DPOPlugin().load_config(path)
    assert f"field '{field}'" in err.value.cause and words in err.value.cause, err.value.cause
    assert str(path) in err.value.cause


def test_report_to_and_extra_args_reach_the_dpo_config(tmp_path: Path) -> None:
    from dpo_harness.plugins.dpo.trainer import build_dpo_config

    extra = "  report_to: tensorboard\n  extra_args: {weight_decay: 0.01, adam_beta2: 0.95}"
    config = DPOPlugin().load_config(_config(tmp_path, extra))
    args = build_dpo_config(config, has_eval=False, progress=False)  # type: ignore[arg-type]
    assert args.report_to == ["tensorboard"]
    assert args.weight_decay == 0.01 and args.adam_beta2 == 0.95
    assert args.logging_nan_inf_filter is False


def test_extra_args_cannot_override_anything_the_run_config_sets() -> None:
    import dataclasses

    from dpo_harness.plugins.dpo.run_config import SET_BY_HARNESS, TrainingSettings
    from dpo_harness.plugins.dpo.trainer import dpo_config_kwargs

    config = DPOPlugin().demo_config(Path("out"))
    set_here = set(dpo_config_kwargs(config, has_eval=True, progress=True))
    unguarded = set_here - set(SET_BY_HARNESS) - set(TrainingSettings.model_fields)
    assert unguarded == set(), f"add these to SET_BY_HARNESS: {sorted(unguarded)}"
    from trl import DPOConfig

    names = {f.name for f in dataclasses.fields(DPOConfig)}
    assert set(SET_BY_HARNESS) <= names  # each entry is a real DPOConfig argument


def test_a_tracker_that_is_not_installed_is_refused_before_training(tmp_path: Path) -> None:
    from dpo_harness.plugins.dpo.trainer import build_dpo_config
    from transformers.integrations.integration_utils import (
        get_available_reporting_integrations,
    )

    missing = next(
        t
        for t in ("wandb", "mlflow", "comet_ml", "clearml")
        if t not in get_available_reporting_integrations()
    )
    config = DPOPlugin().load_config(_config(tmp_path, f"  report_to: [{missing}]"))
    with pytest.raises(BadInputError, match=f"training.report_to names {missing}"):
        build_dpo_config(config, has_eval=False, progress=False)  # type: ignore[arg-type]

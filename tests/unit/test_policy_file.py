"""Gate policy files: validated with the field and the file named, stored in the baseline's key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from dpo_harness.errors import EXIT_FAILED, BadInputError, IncompatibleBaselineError
from dpo_harness.gate import GatePolicy, Verdict, gate
from dpo_harness.gate.baseline import key_of, load_baseline, new_baseline, save_baseline
from dpo_harness.gate.policy_file import (
    BaseFailsHardLimitsError,
    PolicyFile,
    apply_rules,
    check_base,
    check_rules,
    load_policy_file,
)
from dpo_harness.schema import Direction, MetricSpec
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import ACC, LOSS, NLL, RUN, make_baseline, make_report

REPO = Path(__file__).resolve().parents[2]
FAST = GatePolicy(n_resamples=500)
SPECS = {f"toy::{s.name}": s for s in (ACC, LOSS, RUN, NLL)}


def _report(run: float = 1.0, n: int = 20, fingerprint: str = "sha256:base"):
    return make_report(
        {
            "acc": {f"i{k}": 1.0 for k in range(n)},
            "loss": {f"i{k}": 0.5 for k in range(n)},
            "run": {f"i{k}": run for k in range(n)},
        },
        fingerprint=fingerprint,
    )


def _write(tmp_path: Path, body: object) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path


def test_a_bad_value_is_refused_naming_the_field_and_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"metrics": {"toy::loss": {"margin": -1}}})
    with pytest.raises(BadInputError) as err:
        load_policy_file(path)
    assert str(path) in err.value.cause and "metrics.toy::loss.margin" in err.value.cause
    path = _write(tmp_path, {"metrics": {"toy::loss": {"margn": 0.1}}})
    with pytest.raises(BadInputError, match="margn"):
        load_policy_file(path)


def test_a_rule_for_a_metric_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, {"metrics": {"toy::los": {"margin": 0.2}}})
    with pytest.raises(BadInputError) as err:
        check_rules(load_policy_file(path), SPECS, str(path), known_suites={"toy"})
    assert "metrics.toy::los" in err.value.cause and str(path) in err.value.cause
    typo = PolicyFile.model_validate({"metrics": {"toyy::loss": {"margin": 0.2}}})
    with pytest.raises(BadInputError, match="toyy::loss"):
        check_rules(typo, SPECS, "p.yaml", known_suites={"toy"})
    # A rule for a suite this run does not evaluate waits for the runs that do.
    later = PolicyFile.model_validate({"metrics": {"other::x": {"margin": 0.2}}})
    check_rules(later, SPECS, "p.yaml", known_suites={"toy", "other"})


def test_gating_a_metric_without_a_direction_is_refused() -> None:
    specs = {"toy::info": MetricSpec(name="info", description="", direction=Direction.INFO)}
    rules = PolicyFile.model_validate({"metrics": {"toy::info": {"gated": True, "margin": 1}}})
    with pytest.raises(BadInputError, match="no better direction"):
        check_rules(rules, specs, "p.yaml", known_suites={"toy"})


def test_a_base_failing_its_own_hard_limit_stops_with_its_value_and_the_way_on() -> None:
    report = _report(run=50.0)  # the suite's limit: run <= 20
    with pytest.raises(BaseFailsHardLimitsError) as err:
        check_base(report, None, max_new_tokens=128)
    assert err.value.exit_code == EXIT_FAILED
    assert "toy::run = 50 (limit <= 20)" in err.value.cause
    assert "--policy" in (err.value.fix or "")
    # The suggested policy file is valid and accepts the base as it is.
    suggested = PolicyFile.model_validate(yaml.safe_load(err.value.suggestion))
    check_base(report, suggested, max_new_tokens=128)
    assert apply_rules(report, suggested).suite("toy").metric("run").hard_limit_ok is None


@settings(max_examples=30, deadline=None)
@given(
    margin=st.one_of(st.none(), st.floats(0.0, 5.0)),
    low=st.one_of(st.none(), st.floats(-100, 100)),
    gated=st.sampled_from([None, True, False]),
)
def test_rules_are_idempotent_and_only_touch_their_metric(
    margin: float | None, low: float | None, gated: bool | None
) -> None:
    rules = PolicyFile.model_validate(
        {
            "metrics": {
                "toy::run": {"margin": margin, "gated": gated, "hard_limits": {"hard_min": low}}
            }
        }
    )
    report = _report(run=3.0)
    once = apply_rules(report, rules)
    assert apply_rules(once, rules) == once
    run = once.suite("toy").metric("run")
    assert run.hard_min == low and run.hard_max is None
    assert run.hard_limit_ok == (None if low is None else low <= 3.0)
    expected = None if gated is False else (margin if margin is not None else RUN.margin)
    assert run.margin == expected
    assert once.suite("toy").metric("loss") == report.suite("toy").metric("loss")


def test_the_gate_judges_both_reports_under_the_baselines_policy() -> None:
    rules = PolicyFile.model_validate(
        {"metrics": {"toy::run": {"hard_limits": {}}, "toy::loss": {"gated": False}}}
    )
    base = new_baseline(_report(run=50.0), reason="test", policy=rules).sealed()
    cand = _report(run=50.0, fingerprint="sha256:c")
    d = gate(cand, base, FAST)
    assert d.decision == "promote", d.reasons
    assert d.rules == rules
    assert d.verdict("toy::loss").verdict is Verdict.NOT_GATED
    # Without the policy, the same base and candidate fail the suite's own limit.
    assert gate(cand, make_baseline(_report(run=50.0)), FAST).decision == "refuse"


def test_a_different_policy_than_the_baselines_is_refused_with_the_fix() -> None:
    rules = PolicyFile.model_validate({"metrics": {"toy::run": {"hard_limits": {}}}})
    other = PolicyFile.model_validate({"metrics": {"toy::run": {"margin": 3.0}}})
    base = new_baseline(_report(), reason="test", policy=rules).sealed()
    with pytest.raises(IncompatibleBaselineError) as err:
        base.check_key(key_of(_report(), other))
    assert "gate policy" in err.value.cause and "margin 3" in err.value.cause
    assert "--policy" in (err.value.fix or "")
    with pytest.raises(IncompatibleBaselineError, match="the suites' own limits"):
        base.check_key(key_of(_report(), None))
    # Descriptions and reasons do not change what is gated.
    same = rules.model_copy(update={"description": "reworded"})
    base.check_key(key_of(_report(), same))


def test_a_baseline_written_before_policy_files_still_loads(tmp_path: Path) -> None:
    path, _ = save_baseline(make_baseline(_report()), tmp_path)
    raw = json.loads(path.read_text())
    del raw["key"]["policy"]  # the file as 0.1 wrote it
    from dpo_harness.gate.baseline import _json_hash

    raw["checksum"] = _json_hash({k: v for k, v in raw.items() if k != "checksum"})
    path.write_text(json.dumps(raw))
    assert load_baseline(path).key.policy is None


def test_the_demo_policy_file_is_valid() -> None:
    from dpo_harness.evaluation.suite import available_suites, create_suite

    path = REPO / "configs" / "demo-policy.yaml"
    rules = load_policy_file(path)
    specs = {
        f"{name}::{spec.name}": spec
        for name in ("numerical", "repetition", "fluency", "adtech")
        for spec in create_suite(name).metric_specs()
    }
    check_rules(rules, specs, str(path), known_suites=set(available_suites()))
    assert rules.metrics and all(r.reason for r in rules.metrics.values())

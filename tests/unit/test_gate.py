"""The gate's decisions and their statistical properties (synthetic per-item scores, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dpo_harness.errors import BadInputError, IncompatibleBaselineError
from dpo_harness.gate import GatePolicy, Verdict, gate, render_gate_markdown
from dpo_harness.gate.baseline import (
    CompatibilityKey,
    find_baseline,
    load_baseline,
    save_baseline,
    slug_for,
)
from dpo_harness.schema import GenerationSettings, SuiteIdentity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import make_baseline, make_report

FAST = GatePolicy(n_resamples=1000)


def _items(values: list[float]) -> dict[str, float]:
    return {f"i{k:03d}": float(v) for k, v in enumerate(values)}


def _toy(
    acc: list[float],
    loss: list[float],
    run: list[float] | None = None,
    nll: list[float] | None = None,
    **kw,
):
    n = len(acc)
    return make_report(
        {
            "acc": _items(acc),
            "loss": _items(loss),
            "run": _items(run if run is not None else [1.0] * n),
            "nll": _items(nll if nll is not None else [2.0] * n),
        },
        **kw,
    )


# ----------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    acc=st.lists(st.sampled_from([0.0, 1.0]), min_size=40, max_size=120),
    seed=st.integers(0, 2**16),
)
def test_a_candidate_identical_to_its_baseline_always_promotes(acc: list[float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    loss = rng.gamma(2.0, 0.5, size=len(acc)).tolist()
    report = _toy(
        acc,
        loss,
        run=rng.integers(1, 6, size=len(acc)).tolist(),
        nll=rng.normal(3, 1, len(acc)).tolist(),
    )
    decision = gate(report, make_baseline(report), FAST)
    assert decision.decision == "promote", decision.reasons
    assert all(v.verdict in (Verdict.PASS, Verdict.NOT_GATED) for v in decision.verdicts)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(60, 200), drop=st.floats(0.15, 0.5), seed=st.integers(0, 2**16))
def test_a_candidate_worse_than_the_margin_on_enough_items_is_always_refused(
    n: int, drop: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    base_acc = (rng.random(n) < 0.7).astype(float)
    cand_acc = base_acc.copy()
    right = np.flatnonzero(base_acc == 1)
    flip = rng.choice(right, size=min(len(right), round(drop * n)), replace=False)
    cand_acc[flip] = 0.0  # the candidate loses `drop` (>= 3x the 0.05 margin) of accuracy
    loss = rng.gamma(2.0, 0.5, size=n)
    base = _toy(base_acc.tolist(), loss.tolist())
    cand = _toy(cand_acc.tolist(), loss.tolist(), fingerprint="sha256:cand")
    decision = gate(cand, make_baseline(base), FAST)
    assert decision.decision == "refuse"
    assert decision.verdict("toy::acc").verdict is Verdict.REGRESSED
    assert "toy::acc regressed" in " ".join(decision.reasons)


_RANK = {Verdict.REGRESSED: 0, Verdict.INCONCLUSIVE: 1, Verdict.PASS: 2, Verdict.IMPROVED: 3}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(50, 150))
def test_refusal_is_monotone_in_the_size_of_a_regression(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    base_loss = rng.gamma(2.0, 0.5, size=n)
    noise = rng.normal(0.0, 0.15, size=n)
    acc = [1.0] * n
    base = make_baseline(_toy(acc, base_loss.tolist()))
    ranks, refused = [], []
    for shift in np.linspace(0.0, 0.6, 13):
        cand = _toy(acc, (base_loss + noise + shift).tolist(), fingerprint="sha256:c")
        d = gate(cand, base, FAST)
        ranks.append(_RANK[d.verdict("toy::loss").verdict])
        refused.append(d.decision == "refuse")
    assert ranks == sorted(ranks, reverse=True), ranks
    assert refused == sorted(refused), refused  # once refused, a larger regression stays refused


def test_band_metric_refuses_movement_either_way() -> None:
    n = 80
    rng = np.random.default_rng(1)
    nll = rng.normal(2.0, 0.3, n)
    base = make_baseline(_toy([1.0] * n, [0.5] * n, nll=nll.tolist()))
    for shift, expected in (
        (-1.5, Verdict.REGRESSED),
        (1.5, Verdict.REGRESSED),
        (0.05, Verdict.PASS),
    ):
        cand = _toy(
            [1.0] * n,
            [0.5] * n,
            nll=(nll + shift + rng.normal(0, 0.05, n)).tolist(),
            fingerprint="sha256:c",
        )
        assert gate(cand, base, FAST).verdict("toy::nll").verdict is expected, shift


# ----------------------------------------------------------------------------- verdict details


def test_hard_limit_fails_whatever_the_baseline_says() -> None:
    n = 30
    base = make_baseline(_toy([1.0] * n, [0.5] * n, run=[50.0] * n))  # a bad baseline
    cand = _toy([1.0] * n, [0.5] * n, run=[50.0] * n, fingerprint="sha256:c")
    d = gate(cand, base, FAST)
    assert d.decision == "refuse"
    v = d.verdict("toy::run")
    assert v.verdict is Verdict.HARD_FAIL and "hard limit" in v.reason


def test_inconclusive_says_how_many_items_would_decide_and_policy_decides() -> None:
    rng = np.random.default_rng(3)
    n = 40
    base_loss = rng.gamma(2.0, 0.5, n)
    cand_loss = base_loss + 0.1 + rng.normal(0, 0.3, n)  # right at the 0.1 margin, noisy
    base = make_baseline(_toy([1.0] * n, base_loss.tolist()))
    cand = _toy([1.0] * n, cand_loss.tolist(), fingerprint="sha256:c")
    d = gate(cand, base, FAST)
    v = d.verdict("toy::loss")
    assert v.verdict is Verdict.INCONCLUSIVE
    assert "straddles the margin" in v.reason and "more items would decide it" in v.reason
    assert d.decision == "refuse"
    lenient = gate(cand, base, GatePolicy(n_resamples=1000, inconclusive="promote"))
    assert lenient.decision == "promote"


def _many_metrics(shift: float, noise: float, seed: int = 0, k: int = 12):
    """A baseline and a candidate over ``k`` continuous metrics; m0 is moved by ``shift``."""
    from dpo_harness.schema import Direction, MetricSpec

    rng = np.random.default_rng(seed)
    n = 60
    specs = {
        f"m{j}": MetricSpec(name=f"m{j}", description="", direction=Direction.HIGHER, margin=0.1)
        for j in range(k)
    }
    base_vals = {name: _items(rng.normal(1.0, 0.3, n).tolist()) for name in specs}
    cand_vals = {name: dict(v) for name, v in base_vals.items()}
    cand_vals["m0"] = {key: v + shift + rng.normal(0, noise) for key, v in base_vals["m0"].items()}
    base = make_baseline(make_report(base_vals, specs))
    return make_report(cand_vals, specs, fingerprint="sha256:c"), base


def test_holm_demotes_a_marginal_regression_and_shows_the_interval_it_used() -> None:
    # m0 is worse than its margin at p ≈ 0.03 on its own, but not among 12 metrics after Holm.
    cand, base = _many_metrics(-0.2, 0.35)
    d = gate(cand, base, GatePolicy(n_resamples=2000))
    v = d.verdict("toy::m0")
    assert v.p_regressed is not None and v.p_regressed_holm is not None
    assert v.p_regressed < 0.05 <= v.p_regressed_holm
    assert v.verdict is Verdict.INCONCLUSIVE
    # The interval shown is the Holm-adjusted one (Bonferroni level for a hypothesis Holm does
    # not reject): it straddles the margin, as "inconclusive" says.
    assert v.ci_level == pytest.approx(1 - 2 * 0.05 / 12)
    assert v.ci_low is not None and v.ci_high is not None and v.ci_low < -0.1 < v.ci_high
    assert "Holm-adjusted (12 metrics)" in v.reason and "99.2%" in v.reason
    assert d.decision == "refuse"  # inconclusive still refuses under the default policy


def test_inconclusive_promote_never_promotes_a_point_estimate_past_its_margin() -> None:
    # A heavily noised candidate: m0 lost twice its margin; after Holm it is only inconclusive.
    # Before issue 12, --inconclusive promote promoted it.
    cand, base = _many_metrics(-0.2, 0.35)
    lenient = gate(cand, base, GatePolicy(n_resamples=2000, inconclusive="promote"))
    v = lenient.verdict("toy::m0")
    assert v.verdict is Verdict.INCONCLUSIVE and v.point_past_margin
    assert lenient.decision == "refuse"
    assert any("point estimate is already past the margin" in r for r in lenient.reasons)
    # Within the margin, the same policy forgives missing evidence and says so.
    near, base2 = _many_metrics(-0.05, 0.6, seed=4)
    d = gate(near, base2, GatePolicy(n_resamples=2000, inconclusive="promote"))
    assert d.verdict("toy::m0").verdict is Verdict.INCONCLUSIVE, d.verdict("toy::m0").reason
    assert d.decision == "promote" and "promoted by --inconclusive promote" in d.reasons[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shifts=st.lists(st.floats(-0.6, 0.3), min_size=2, max_size=6),
    noise=st.floats(0.05, 0.6),
    flips=st.integers(0, 30),
    seed=st.integers(0, 2**16),
)
def test_every_verdict_matches_the_interval_it_reports(
    shifts: list[float], noise: float, flips: int, seed: int
) -> None:
    """regressed ⟺ the reported interval lies wholly past the margin; pass ⟺ wholly inside it."""
    from dpo_harness.schema import Direction, MetricSpec

    rng = np.random.default_rng(seed)
    n = 50
    specs = {
        f"m{j}": MetricSpec(name=f"m{j}", description="", direction=d, margin=0.1)
        for j, d in enumerate([Direction.HIGHER, Direction.LOWER, Direction.BAND] * 2)
    }
    specs = dict(list(specs.items())[: len(shifts)])
    specs["acc"] = MetricSpec(
        name="acc", description="", direction=Direction.HIGHER, margin=0.05, binary=True
    )
    base_vals = {name: _items(rng.normal(1.0, 0.3, n).tolist()) for name in specs if name != "acc"}
    cand_vals = {
        name: {k: v + shift + rng.normal(0, noise) for k, v in base_vals[name].items()}
        for name, shift in zip(specs, shifts, strict=False)
    }
    base_acc = (rng.random(n) < 0.6).astype(float)
    cand_acc = base_acc.copy()
    cand_acc[rng.choice(n, size=flips, replace=False)] = 0.0
    base_vals["acc"] = _items(base_acc.tolist())
    cand_vals["acc"] = _items(cand_acc.tolist())
    d = gate(
        make_report(cand_vals, specs, fingerprint="sha256:c"),
        make_baseline(make_report(base_vals, specs)),
        GatePolicy(n_resamples=300),
    )
    for v in d.verdicts:
        assert v.ci_low is not None and v.ci_high is not None and v.margin is not None
        lo, hi, m = v.ci_low, v.ci_high, v.margin
        if v.direction is Direction.BAND:
            inside, past = -m < lo and hi < m, hi < -m or lo > m
        elif v.direction is Direction.LOWER:
            inside, past = hi < m, lo > m
        else:
            inside, past = lo > -m, hi < -m
        assert (v.verdict is Verdict.REGRESSED) == past, v.reason
        assert (v.verdict in (Verdict.PASS, Verdict.IMPROVED)) == inside, v.reason
        if v.verdict is Verdict.INCONCLUSIVE:
            assert not inside and not past


def _without_values(report, metric: str, n_missing: int):
    """``report`` with the first ``n_missing`` items of ``metric`` unscored (empty answers)."""
    from dpo_harness.schema import MetricResult

    suite = report.suites[0]
    k = next(j for j, m in enumerate(suite.metrics) if m.name == metric)
    old = suite.metrics[k]
    per = {i: (None if j < n_missing else v) for j, (i, v) in enumerate(old.per_sample.items())}
    vals = [v for v in per.values() if v is not None]
    suite.metrics[k] = MetricResult.from_spec(
        old.spec, sum(vals) / len(vals) if vals else None, per
    )
    return report


def test_a_metric_the_candidate_gave_nothing_to_score_fails_it_never_passes_by_absence() -> None:
    # Before issue 12 this was "skipped: no value to compare", and skipped counted as passing.
    n = 30
    base = make_baseline(_toy([1.0] * n, [0.5] * n))
    cand = _without_values(_toy([1.0] * n, [0.5] * n, fingerprint="sha256:c"), "loss", n)
    d = gate(cand, base, FAST)
    v = d.verdict("toy::loss")
    assert v.verdict is Verdict.UNSCORABLE and d.decision == "refuse"
    assert "nothing scorable on 30 of the 30 items the baseline scored" in v.reason
    assert any("toy::loss has no value to compare" in r for r in d.reasons)
    assert [e.candidate for e in v.examples] == [None, None, None]
    # Under any policy: an unscorable metric is a failure, not missing evidence.
    assert gate(cand, base, GatePolicy(n_resamples=1000, inconclusive="promote")).decision == (
        "refuse"
    )
    assert "UNSCORABLE" in render_gate_markdown(d)


def test_too_few_scorable_items_fail_and_a_few_missing_are_reported() -> None:
    n = 30
    base = make_baseline(_toy([1.0] * n, [0.5] * n))
    few = _without_values(_toy([1.0] * n, [0.5] * n, fingerprint="sha256:c"), "loss", 25)
    v = gate(few, base, FAST).verdict("toy::loss")
    assert v.verdict is Verdict.UNSCORABLE and "(5 paired, too few to compare)" in v.reason
    some = _without_values(_toy([1.0] * n, [0.5] * n, fingerprint="sha256:c"), "loss", 4)
    v = gate(some, base, FAST).verdict("toy::loss")
    assert v.verdict is Verdict.PASS and v.n_items == 26 and v.n_unscored == 4


def test_a_metric_neither_run_could_score_is_skipped_and_says_so() -> None:
    n = 30
    base = make_baseline(_without_values(_toy([1.0] * n, [0.5] * n), "loss", n))
    cand = _without_values(_toy([1.0] * n, [0.5] * n, fingerprint="sha256:c"), "loss", n)
    v = gate(cand, base, FAST).verdict("toy::loss")
    assert v.verdict is Verdict.SKIPPED and "the baseline has none either" in v.reason


def test_a_blocking_verdict_says_what_the_suite_found() -> None:
    from dpo_harness.schema import Finding

    n = 30
    base = make_baseline(_toy([1.0] * n, [0.5] * n))
    cand = _toy([1.0] * n, [0.5] * n, run=[50.0] * n, fingerprint="sha256:c")
    found = "Parameter model.layers.1.mlp.down_proj.weight holds 1 NaN."
    cand.suites[0].findings.append(Finding(severity="error", metric="run", message=found))
    d = gate(cand, base, FAST)
    v = d.verdict("toy::run")
    assert v.verdict is Verdict.HARD_FAIL and v.findings == [found] and found in v.reason
    assert found in render_gate_markdown(d)


def test_reference_dependent_metric_is_skipped_when_self_scored() -> None:
    from dpo_harness.schema import Direction, MetricSpec

    spec = {
        "nll": MetricSpec(
            name="nll", description="", direction=Direction.BAND, margin=0.5, needs_reference=True
        )
    }
    base = make_baseline(make_report({"nll": _items([2.0] * 20)}, spec))
    cand = make_report(
        {"nll": _items([9.0] * 20)}, spec, fingerprint="sha256:c", reference_source="none"
    )
    v = gate(cand, base, FAST).verdict("toy::nll")
    assert v.verdict is Verdict.SKIPPED and "--base" in v.reason


def test_markdown_report_has_table_reasons_and_worst_items() -> None:
    n = 50
    base = make_baseline(_toy([1.0] * n, [0.5] * n))
    cand = _toy([1.0] * 25 + [0.0] * 25, [0.5] * n, fingerprint="sha256:c")
    md = render_gate_markdown(gate(cand, base, FAST))
    assert md.startswith("# Gate: REFUSE")
    assert "| toy" in md and "REGRESSED" in md and "## Worst items" in md


# ----------------------------------------------------------------------------- baselines on disk


def test_compatibility_key_differences_name_what_differs() -> None:
    a = CompatibilityKey(
        suites={"x": SuiteIdentity(version="1", data_hash="sha256:a")},
        generation=GenerationSettings(),
        chat_template_hash="t",
        tokenizer_hash="v",
    )
    b = CompatibilityKey(
        suites={"x": SuiteIdentity(version="2", data_hash="sha256:a")},
        generation=GenerationSettings(max_new_tokens=64),
        chat_template_hash="t2",
        tokenizer_hash="v",
    )
    diffs = a.differences(b)
    assert any("version 1 (baseline) vs 2" in d for d in diffs)
    assert any("generation settings" in d for d in diffs)
    assert any("chat template" in d for d in diffs)


def test_incompatible_baseline_is_refused_with_the_fix() -> None:
    report = _toy([1.0] * 10, [0.5] * 10)
    baseline = make_baseline(report)
    other = report.model_copy(deep=True)
    other.provenance.suites["toy"] = SuiteIdentity(version="2", data_hash="sha256:d")
    with pytest.raises(IncompatibleBaselineError) as err:
        baseline.check_compatible(other)
    assert "version 1 (baseline) vs 2" in err.value.cause
    assert "dpo-harness baseline update" in (err.value.fix or "")


def test_save_keeps_history_and_detects_hand_edits(tmp_path: Path) -> None:
    report = _toy([1.0] * 10, [0.5] * 10)
    path, previous = save_baseline(make_baseline(report), tmp_path)
    assert previous is None and path.name == "demo.json"
    path2, previous2 = save_baseline(make_baseline(report), tmp_path)
    assert path2 == path and previous2 is not None and previous2.exists()
    assert previous2.parent == tmp_path / "history" / "demo"
    assert load_baseline(path).checksum.startswith("sha256:")
    raw = json.loads(path.read_text())
    raw["report"]["suites"][0]["metrics"][0]["value"] = 0.99  # a "small fix" by hand
    path.write_text(json.dumps(raw))
    with pytest.raises(BadInputError, match="checksum mismatch"):
        load_baseline(path)
    path.write_text("{")
    with pytest.raises(BadInputError, match="not valid JSON"):
        load_baseline(path)


def test_find_baseline_by_fingerprint_then_name(tmp_path: Path) -> None:
    save_baseline(make_baseline(_toy([1.0] * 10, [0.5] * 10)), tmp_path)
    assert (
        find_baseline(tmp_path, base_ref="/moved/elsewhere", base_fingerprint="sha256:base").name
        == "demo.json"
    )
    assert find_baseline(tmp_path, base_ref="demo", base_fingerprint=None).name == "demo.json"
    with pytest.raises(BadInputError, match="no stored baseline"):
        find_baseline(tmp_path, base_ref="other/model", base_fingerprint="sha256:zzz")


@pytest.mark.parametrize(
    ("ref", "slug"),
    [
        ("SakanaAI/TinySwallow-1.5B-Instruct", "sakanaai--tinyswallow-1.5b-instruct"),
        ("demo", "demo"),
    ],
)
def test_slugs_are_readable(ref: str, slug: str) -> None:
    assert slug_for(ref) == slug

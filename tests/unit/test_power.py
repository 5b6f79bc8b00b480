"""What the gate can see: the power report's numbers against the gate's own decision function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dpo_harness.gate.baseline import load_baseline
from dpo_harness.gate.power import binary_refusal_rate, metric_power
from dpo_harness.gate.stats import NonInferiorityVerdict, non_inferiority
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import make_baseline, make_report

REPO = Path(__file__).resolve().parents[2]
PROPERTY = settings(max_examples=30, deadline=None)


def _monte_carlo(n: int, q: float, margin: float, drop: float, reps: int, seed: int) -> float:
    """Refusal rate of the gate's real decision under the flip model (base accuracy 0.5)."""
    rng = np.random.default_rng(seed)
    refused = 0
    for _ in range(reps):
        base = rng.random(n) < 0.5
        u = rng.random(n)
        loss, gain = (q + drop) / 2, (q - drop) / 2
        cand = base.copy()
        cand[base & (u < 2 * loss)] = False
        cand[~base & (u < 2 * gain)] = True
        diff = cand.astype(float) - base.astype(float)
        if not diff.any():
            continue
        v = non_inferiority(diff, margin, binary=True, n_resamples=100).verdict
        refused += v not in (NonInferiorityVerdict.PASS, NonInferiorityVerdict.IMPROVED)
    return refused / reps


@pytest.mark.parametrize(("n", "q", "drop"), [(120, 0.1, 0.0), (120, 0.1, 0.05)])
def test_exact_binary_refusal_rate_matches_a_monte_carlo_of_the_gate(
    n: int, q: float, drop: float
) -> None:
    exact = binary_refusal_rate(n, q, 0.05, drop=drop)
    simulated = _monte_carlo(n, q, 0.05, drop, reps=1000, seed=1)
    # 1,000 replicates: binomial SE ≤ 1.6 points.
    assert abs(exact - simulated) < 0.04, (exact, simulated)


@PROPERTY
@given(
    n=st.integers(10, 300),
    q=st.floats(0.0, 0.4),
    margins=st.lists(st.floats(0.0, 0.3), min_size=2, max_size=2),
)
def test_false_refusals_never_grow_with_a_wider_margin(
    n: int, q: float, margins: list[float]
) -> None:
    narrow, wide = sorted(margins)
    a = binary_refusal_rate(n, q, narrow)
    b = binary_refusal_rate(n, q, wide)
    assert 0.0 <= b <= a + 1e-12 <= 1.0 + 1e-12


@PROPERTY
@given(
    n=st.integers(5, 2000),
    margin=st.floats(0.001, 10.0),
    sd=st.floats(0.01, 10.0),
    q=st.floats(0.01, 0.5),
    m=st.integers(1, 30),
)
def test_continuous_power_numbers_are_coherent(
    n: int, margin: float, sd: float, q: float, m: int
) -> None:
    fr, at_margin, resolvable, detectable, needed = metric_power(
        n=n, margin=margin, binary=False, item_sd=sd, discordance=q, n_metrics=m
    )
    assert fr is not None and at_margin is not None and resolvable is not None
    assert detectable is not None and needed is not None
    assert 0.0 <= fr <= 1.0 and at_margin == pytest.approx(0.95)
    assert detectable > margin  # naming a regression needs evidence beyond the margin
    # The resolvable margin is where an unchanged candidate passes 80% of the time.
    assert (margin >= resolvable) == (fr <= 0.2 + 1e-9) or abs(margin - resolvable) < 1e-9
    more = metric_power(n=4 * n, margin=margin, binary=False, item_sd=sd, discordance=q)
    assert more[2] is not None and more[2] < resolvable  # more items resolve a finer margin
    assert more[0] is not None and more[0] <= fr


def test_binary_numbers_at_the_demo_sizes() -> None:
    fr, at_margin, resolvable, detectable, _ = metric_power(
        n=158, margin=0.05, binary=True, item_sd=None, discordance=0.05, n_metrics=20
    )
    assert fr == pytest.approx(0.197, abs=0.01)  # the 158 multiple-choice items before issue 12
    assert at_margin is not None and at_margin > 0.9
    assert resolvable is not None and 0.04 < resolvable < 0.06
    assert detectable is not None and detectable > 0.05
    fr_more, *_ = metric_power(n=270, margin=0.05, binary=True, item_sd=None, discordance=0.05)
    assert fr_more is not None and fr_more < 0.05


def test_the_demo_baseline_flags_what_its_items_cannot_resolve() -> None:
    from dpo_harness.gate.power import baseline_power

    rows = {p.name: p for p in baseline_power(load_baseline(REPO / "baselines" / "demo.json"))}
    assert "adtech::mc_accuracy" in rows and "numerical::kl_from_reference" not in rows
    for p in rows.values():
        assert (p.flag is not None) == (
            p.resolvable_margin is None or p.margin < p.resolvable_margin
        )
        if p.flag:
            assert "items" in p.flag and "margin" in p.flag and "gated: false" in p.flag


def test_a_margin_finer_than_the_items_is_flagged_with_the_fix() -> None:
    rng = np.random.default_rng(0)
    values = {f"i{k}": float(v) for k, v in enumerate(rng.normal(0, 1.0, 20))}
    from dpo_harness.gate.power import baseline_power

    rows = baseline_power(make_baseline(make_report({"loss": values})))
    (loss,) = rows
    assert loss.margin == 0.1 and loss.resolvable_margin is not None
    assert loss.resolvable_margin > 0.1 and loss.flag is not None
    assert f"≥ {loss.items_for_margin} items" in loss.flag
    wide = baseline_power(make_baseline(make_report({"loss": values})), margins={"toy::loss": 2.0})
    assert wide[0].flag is None


@PROPERTY
@given(
    n=st.integers(1, 400),
    data=st.data(),
    margin=st.floats(0.0, 0.9),
)
def test_vectorised_score_statistic_is_the_gates(
    n: int, data: st.DataObject, margin: float
) -> None:
    from dpo_harness.gate.power import tango_z
    from dpo_harness.gate.stats import _tango_z

    b = data.draw(st.integers(0, n))
    c = data.draw(st.integers(0, n - b))
    got = float(tango_z(np.array([float(b)]), np.array([float(c)]), n, -margin)[0])
    want = _tango_z(b, c, n, -margin)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12) or (got == want)


def test_an_unchanged_candidate_cannot_flip_more_items_than_the_base_has_on_its_smaller_side() -> (
    None
):
    """A base at 0 on every item (no empty, degenerate or right arithmetic answer on the demo)
    leaves nothing to flip back: the power table assumes no flips there, and no false refusal,
    instead of the 18.7% the symmetric model gave. A base at 1.26% may flip at most 2.5%."""
    from dpo_harness.gate.power import baseline_power

    repo = Path(__file__).resolve().parents[2]
    by_name = {p.name: p for p in baseline_power(load_baseline(repo / "baselines" / "demo.json"))}
    for name in (
        "adtech::numeric_accuracy",
        "repetition::degenerate_share",
        "fluency::chinese_drift",
    ):
        p = by_name[name]
        assert p.base_value == 0 and p.discordance == 0 and p.false_refusal == 0 and p.flag is None
        assert p.power_at_margin is not None and p.power_at_margin > 0.9  # still sees a regression
    short = by_name["adtech::short_answer_accuracy"]
    assert short.base_value is not None
    assert short.discordance == pytest.approx(2 * short.base_value, rel=1e-9)
    assert by_name["adtech::mc_accuracy"].discordance == 0.05  # a base near 0.3: the full 5%

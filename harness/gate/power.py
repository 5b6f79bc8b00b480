"""What the gate can and cannot see: per gated metric, before any candidate is gated.

For each gated metric of a baseline this computes, from its item count, margin and the base's
per-item values, what an *unchanged* candidate and a *regressed* one would meet:

- **false refusal** — the probability that a candidate of unchanged quality is refused on this
  metric (not shown non-inferior) when a share ``q`` of its items change (the discordance);
- **power at the margin** — the probability that a candidate truly worse by exactly the margin
  is refused (default policy: inconclusive refuses);
- **resolvable margin** — the smallest margin at which an unchanged candidate passes with 80%
  probability; a margin below it is more than the items can resolve;
- **detectable regression** — the smallest true regression the gate *names* regressed with 80%
  power (at the first Holm step, level α/m, so it refuses under any policy);
- **items for the margin** — how many items an unchanged candidate needs to pass with 80%
  probability at this margin.

The model of "unchanged at discordance q": for a binary metric a share q of items flip, half
each way (no change on average), at most twice the base's smaller side (a base at 0 on every
item leaves nothing to flip back: an unchanged candidate matches it); for a continuous metric a share q of items take a new value
drawn independently from the base's own per-item distribution, so a paired difference has SD
``sd·√(2q)``. A regression of size Δ adds Δ of right-to-wrong flips (binary) or shifts the
mean by Δ (continuous).

Binary metrics are computed exactly under that model (every discordant count (b, c) with its
multinomial probability, decided by the gate's own Tango score test); continuous ones by the
normal approximation of the bootstrap-t interval. ``benchmarks/gate_simulation.py`` checks both
by Monte Carlo with the gate's real decision function.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from dpo_harness.gate.baseline import Baseline
from dpo_harness.gate.policy_file import apply_rules
from dpo_harness.gate.stats import _null_sd, items_needed
from dpo_harness.schema import Direction, MetricResult
from pydantic import BaseModel, ConfigDict
from scipy import special, stats

__all__ = [
    "POWER",
    "TYPICAL_DISCORDANCE",
    "MetricPower",
    "baseline_power",
    "binary_refusal_rate",
    "metric_power",
    "tango_z",
]

# The share of items a candidate of unchanged quality is assumed to change (docs/gate-statistics.md
# says where 5% comes from: perturbed demo models change 0.2-1.5% of their items, a healthy demo
# DPO run up to a few per cent; 10% and 20% are shown there as stress levels).
TYPICAL_DISCORDANCE = 0.05
POWER = 0.8
# Probability mass of the (b, c) grid left out of the exact sums.
_TAIL = 1e-10


class MetricPower(BaseModel):
    """What the gate can see on one gated metric (see the module docstring for each number)."""

    model_config = ConfigDict(extra="forbid")

    suite: str
    metric: str
    direction: Direction
    binary: bool
    n_items: int
    margin: float
    base_value: float | None
    item_sd: float | None  # SD of the base's per-item values
    discordance: float
    false_refusal: float | None
    power_at_margin: float | None
    resolvable_margin: float | None
    detectable_regression: float | None
    items_for_margin: int | None
    flag: str | None = None  # set when the margin is below what the items can resolve

    @property
    def name(self) -> str:
        return f"{self.suite}::{self.metric}"


# --------------------------------------------------------------------------- binary, exact


def _grid(n: int, p_loss: float, p_gain: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(b, c, probability) over the multinomial (losses, gains, ties) as arrays; tails below
    _TAIL left out (the caller renormalises)."""
    b_hi = 0 if p_loss == 0 else min(n, int(stats.binom.isf(_TAIL, n, p_loss)) + 1)
    b_lo = 0 if p_loss == 0 else int(stats.binom.ppf(_TAIL, n, p_loss))
    p_c = 0.0 if p_loss >= 1 else min(1.0, p_gain / (1.0 - p_loss))
    c_hi = 0 if p_c == 0 else min(n, int(stats.binom.isf(_TAIL, n, p_c)) + 1)
    b = np.arange(b_lo, b_hi + 1)[:, None]
    c = np.arange(0, c_hi + 1)[None, :]
    prob = stats.binom.pmf(b, n, p_loss) * stats.binom.pmf(c, n - b, p_c)
    b, c = np.broadcast_arrays(b, c)
    keep = (b + c <= n) & (prob > 0)
    return b[keep].astype(float), c[keep].astype(float), prob[keep]


def tango_z(b: np.ndarray, c: np.ndarray, n: int, delta0: float) -> np.ndarray:
    """The gate's Tango score statistic (``stats._tango_z``) for arrays of counts at once."""
    quad_a = 2.0 * n
    quad_b = -(b + c) + (2 * n - c + b) * delta0
    quad_c = -b * delta0 * (1.0 - delta0)
    root_disc = np.sqrt(np.maximum(quad_b * quad_b - 4.0 * quad_a * quad_c, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_b = np.where(
            quad_c == 0.0,
            np.maximum(0.0, -quad_b / quad_a),
            np.where(
                quad_b <= 0.0,
                (root_disc - quad_b) / (2.0 * quad_a),
                2.0 * quad_c / (-quad_b - root_disc),
            ),
        )
        sd = np.sqrt(np.maximum(2.0 * p_b + delta0 * (1.0 - delta0), 0.0)) * math.sqrt(n)
        numerator = c - b - n * delta0
        z = np.where(sd > 0, numerator / sd, np.copysign(np.inf, numerator))
    return np.where(numerator == 0.0, 0.0, z)


def _flip_probabilities(discordance: float, drop: float) -> tuple[float, float]:
    """P(right -> wrong), P(wrong -> right) per item: discordance q around a net change -drop."""
    loss, gain = (discordance + drop) / 2.0, (discordance - drop) / 2.0
    if gain < 0.0:  # fewer flips than the drop itself: every flip is a loss
        loss, gain = drop, 0.0
    return min(loss, 1.0), max(gain, 0.0)


def binary_refusal_rate(
    n: int,
    discordance: float,
    margin: float,
    *,
    drop: float = 0.0,
    alpha: float = 0.05,
    regressed_only: bool = False,
) -> float:
    """Exact probability that the gate does not pass a binary metric (or, with
    ``regressed_only``, names it regressed at one-sided level ``alpha``).

    Items flip at rate ``discordance`` around a true accuracy change of ``-drop``; the verdict is
    the gate's: identical outcomes pass; otherwise the Tango score test against ``-margin``.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    if not (0.0 <= discordance <= 1.0 and 0.0 <= drop <= 1.0 and 0.0 <= margin < 1.0):
        raise ValueError("discordance and drop must lie in [0, 1], margin in [0, 1)")
    p_loss, p_gain = _flip_probabilities(discordance, drop)
    z_crit = -float(special.ndtri(alpha))
    b, c, prob = _grid(n, p_loss, p_gain)
    total = float(prob.sum())
    if total <= 0:
        return 0.0
    z = tango_z(b, c, n, -margin)
    identical = (b == 0) & (c == 0)  # identical on every item: the gate passes it exactly
    refused = (z < -z_crit) if regressed_only else ~(z > z_crit)
    return float(prob[refused & ~identical].sum()) / total


def _crossing(f: Callable[[float], float], lo: float, hi: float, target: float) -> float | None:
    """The smallest x in [lo, hi] (to 1e-4) where the increasing ``f`` reaches ``target``."""
    if f(hi) < target:
        return None
    if f(lo) >= target:
        return lo
    while hi - lo > 1e-4:
        mid = (lo + hi) / 2.0
        if f(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


# --------------------------------------------------------------------------- one metric


def metric_power(
    *,
    n: int,
    margin: float,
    binary: bool,
    item_sd: float | None,
    discordance: float = TYPICAL_DISCORDANCE,
    alpha: float = 0.05,
    n_metrics: int = 1,
    band: bool = False,
) -> tuple[float | None, float | None, float | None, float | None, int | None]:
    """(false refusal, power at the margin, resolvable margin, detectable regression, items
    for the margin) of one metric. None where the numbers are undefined (no spread, no items)."""
    if n < 1:
        return None, None, None, None, None
    z_a = -float(special.ndtri(alpha))
    z_m = -float(special.ndtri(alpha / max(n_metrics, 1)))
    z_p = float(special.ndtri(POWER))
    tails = 2.0 if band else 1.0
    if binary:
        sd = math.sqrt(discordance)
        if margin >= 1.0:
            return None, None, None, None, None
        false_refusal = min(1.0, tails * binary_refusal_rate(n, discordance, margin, alpha=alpha))
        at_margin = binary_refusal_rate(n, discordance, margin, drop=margin, alpha=alpha)
        resolvable = _crossing(
            lambda d: 1.0 - binary_refusal_rate(n, discordance, d, alpha=alpha), 0.0, 0.99, POWER
        )
        detectable = _crossing(
            lambda d: binary_refusal_rate(
                n, discordance, margin, drop=d, alpha=alpha / max(n_metrics, 1), regressed_only=True
            ),
            margin,
            1.0,
            POWER,
        )
        half = discordance * n / 2.0
        null_sd = _null_sd(half, half, n, -margin)  # type: ignore[arg-type]
        needed = items_needed(sd, margin, alpha=alpha, power=POWER, null_sd=null_sd)
        return false_refusal, at_margin, resolvable, detectable, needed
    if item_sd is None or not math.isfinite(item_sd):
        return None, None, None, None, None
    sd = item_sd * math.sqrt(2.0 * discordance)
    if sd == 0.0:
        return 0.0, 1.0, 0.0, margin, 1
    se = sd / math.sqrt(n)
    false_refusal = min(1.0, tails * float(special.ndtr(z_a - margin / se)))
    at_margin = float(special.ndtr(z_a))
    resolvable = (z_a + z_p) * se
    detectable = margin + (z_m + z_p) * se
    needed = items_needed(sd, margin, alpha=alpha, power=POWER)
    return false_refusal, at_margin, resolvable, detectable, needed


def _item_sd(m: MetricResult) -> float | None:
    values = [v for v in m.per_sample.values() if v is not None]
    if len(values) < 2:
        return None
    return float(np.std(np.asarray(values, dtype=float), ddof=1))


def baseline_power(
    baseline: Baseline,
    *,
    margins: dict[str, float] | None = None,
    discordance: float = TYPICAL_DISCORDANCE,
    alpha: float = 0.05,
) -> list[MetricPower]:
    """:class:`MetricPower` for every gated metric of ``baseline`` with per-item values.

    Under the baseline's own policy file; ``margins`` overrides a metric's margin
    ({"suite::metric": δ}), as ``--margin`` does.
    """
    margins = margins or {}
    report = apply_rules(baseline.report, baseline.key.policy)
    gated = [
        (s.name, m)
        for s in report.suites
        for m in s.metrics
        if m.direction is not Direction.INFO
        and margins.get(f"{s.name}::{m.name}", m.margin) is not None
        and any(v is not None for v in m.per_sample.values())
    ]
    out = []
    for suite, m in gated:
        margin = float(margins.get(f"{suite}::{m.name}", m.margin))  # type: ignore[arg-type]
        n = sum(1 for v in m.per_sample.values() if v is not None)
        values = [v for v in m.per_sample.values() if v is not None]
        binary = m.binary and all(v in (0.0, 1.0) for v in values)
        sd = _item_sd(m)
        q = discordance
        if binary:
            # An unchanged candidate flips as many items one way as the other, so it can flip
            # at most twice the smaller side of the base: a base at 0 on every item (no
            # degenerate answer) leaves nothing to flip back, and the candidate either matches
            # it exactly (passes) or is worse.
            share = sum(values) / len(values)
            q = min(discordance, 2.0 * min(share, 1.0 - share))
        fr, at_margin, resolvable, detectable, needed = metric_power(
            n=n,
            margin=margin,
            binary=binary,
            item_sd=sd,
            discordance=q,
            alpha=alpha,
            n_metrics=len(gated),
            band=m.direction is Direction.BAND,
        )
        flag = None
        if resolvable is None or margin < resolvable:
            more = f"≥ {needed} items" if needed is not None else "more items"
            wider = f"a margin ≥ {resolvable:.3g}" if resolvable is not None else "a wider margin"
            flag = (
                f"margin {margin:g} is below what {n} items resolve at {q:.0%} "
                f"discordance: use {more}, {wider}, or do not gate it (policy file: gated: false)"
            )
        out.append(
            MetricPower(
                suite=suite,
                metric=m.name,
                direction=m.direction,
                binary=binary,
                n_items=n,
                margin=margin,
                base_value=m.value,
                item_sd=sd,
                discordance=q,
                false_refusal=fr,
                power_at_margin=at_margin,
                resolvable_margin=resolvable,
                detectable_regression=detectable,
                items_for_margin=needed,
                flag=flag,
            )
        )
    return out

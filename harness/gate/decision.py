"""The regression gate: compare a candidate's report with the stored baseline, item by item.

Per metric, in order:

1. **Hard limits** — a candidate outside a metric's hard limit (or with a NaN value) fails,
   whatever the baseline says.
2. **Something to compare** — a gated metric the baseline scored but the candidate could not
   (every answer empty, say) is *unscorable* and fails: absence is never a pass.
3. **Paired comparison** on the items both runs scored, oriented so that positive = better:
   binary metrics (right/wrong, degenerate or not) use the Tango score test on the discordant
   pairs (McNemar's setting); continuous ones a seeded bootstrap-t interval. Each metric has a
   non-inferiority margin δ. Verdicts: *pass* (the lower end of the 1 − 2α interval is above
   −δ), *improved* (above 0), *regressed* (the upper end of the Holm-adjusted interval is below
   −δ), or *inconclusive* (the Holm-adjusted interval straddles −δ; the verdict says roughly how
   many items would decide it). ``band`` metrics must stay within ±δ of the baseline.
4. **Policy** — refuse on any hard failure, unscorable metric or regression; inconclusive
   refuses by default, and even under ``inconclusive="promote"`` a metric whose point estimate
   is past its margin refuses.

The interval a verdict reports is the one it was decided on: for *pass* / *improved* the
1 − 2α interval (promotion needs every metric shown non-inferior — an intersection-union test,
level α without correction), for every other verdict the Holm-adjusted one: at the level of the
metric's Holm step, α/(m − k + 1), when it is rejected, and at α/m (Bonferroni) when it is not.
So *regressed* means exactly "that interval lies wholly past the margin", and Holm still guards
the other error, refusing a good model because one of many metrics looked worse by chance.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import numpy as np
from dpo_harness.evaluation.report import format_value, truncate, worst_samples
from dpo_harness.gate.baseline import Baseline
from dpo_harness.gate.policy_file import PolicyFile, apply_rules
from dpo_harness.gate.stats import (
    NonInferiorityVerdict,
    holm_adjusted,
    holm_levels,
    non_inferiority,
    non_inferiority_interval,
)
from dpo_harness.schema import Direction, EvalReport, MetricResult, ModelInfo, SuiteResult
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "Example",
    "FileRewrite",
    "GateDecision",
    "GatePolicy",
    "MetricVerdict",
    "Verdict",
    "blocks",
    "fmt_ci",
    "gate",
]


class Verdict(str, Enum):
    PASS = "pass"
    IMPROVED = "improved"
    REGRESSED = "regressed"
    INCONCLUSIVE = "inconclusive"
    HARD_FAIL = "hard-fail"
    UNSCORABLE = "unscorable"  # the baseline scored it, the candidate produced nothing to score
    NOT_GATED = "not-gated"
    SKIPPED = "skipped"


_BLOCKING = {Verdict.REGRESSED, Verdict.HARD_FAIL, Verdict.UNSCORABLE}


class GatePolicy(BaseModel):
    """How the gate decides. ``margins`` overrides a metric's margin: {"suite::metric": δ}."""

    model_config = ConfigDict(extra="forbid")

    inconclusive: Literal["refuse", "promote"] = "refuse"
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    n_resamples: int = Field(default=10_000, ge=100)
    seed: int = 0
    min_items: int = Field(default=10, ge=1)
    margins: dict[str, float] = Field(default_factory=dict)

    @field_validator("margins")
    @classmethod
    def _finite_non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        for name, margin in v.items():
            if "::" not in name:
                raise ValueError(f"margin {name!r} must be named SUITE::METRIC")
            if not (math.isfinite(margin) and margin >= 0):
                raise ValueError(f"margin for {name} must be a finite number >= 0, got {margin}")
        return v


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: str
    candidate: float | None
    baseline: float | None
    response: str | None = None


class MetricVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suite: str
    metric: str
    direction: Direction
    unit: str = ""
    verdict: Verdict
    candidate: float | None = None
    baseline: float | None = None
    diff: float | None = None  # candidate - baseline, in the metric's own orientation
    # The interval of diff the verdict was decided on: 1 - 2·alpha for pass/improved, the
    # Holm-adjusted one otherwise (two-sided coverage in ci_level).
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float | None = None
    margin: float | None = None
    p_regressed: float | None = None
    p_regressed_holm: float | None = None
    n_items: int = 0
    n_unscored: int = 0  # items the baseline scored and the candidate gave nothing to score
    additional_items: int | None = None
    method: str | None = None
    reason: str
    # What the suite found about this metric (e.g. the name of a non-finite tensor), said with
    # a blocking verdict so it reaches the printed summary and gate.md, not only report.json.
    findings: list[str] = Field(default_factory=list)
    examples: list[Example] = Field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.suite}::{self.metric}"

    @property
    def point_past_margin(self) -> bool:
        """The observed difference itself is worse than the margin (whatever its interval says)."""
        if self.diff is None or self.margin is None or not math.isfinite(self.diff):
            return False
        if self.direction is Direction.BAND:
            return abs(self.diff) > self.margin
        worse = -self.diff if self.direction is Direction.LOWER else self.diff
        return worse < -self.margin


class FileRewrite(BaseModel):
    """One value a promotion changed in a copied file, after the copy passed the content check.

    Only a JSON string value is rewritten, in place, so undoing it (putting ``gated_json`` back
    for ``promoted_json``) gives back byte for byte the file the gate evaluated, whose sha256
    is ``gated_sha256``; ``dpo-harness verify`` does exactly that (docs/safety.md).
    """

    model_config = ConfigDict(extra="forbid")

    file: str
    field: str
    gated_json: str  # the value's JSON text as the gate saw it, e.g. "\"/home/me/base\""
    promoted_json: str
    gated_sha256: str
    reason: str


class GateDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["1"] = "1"
    decision: Literal["promote", "refuse"]
    created_at: str
    candidate: ModelInfo
    baseline_model: str
    baseline_fingerprint: str
    baseline_checksum: str
    baseline_path: str | None = None
    policy: GatePolicy
    # The baseline's gate policy file (per-metric margins, hard limits, gating), applied to both
    # reports; None: the suites' own.
    rules: PolicyFile | None = None
    verdicts: list[MetricVerdict]
    reasons: list[str]
    promoted_to: str | None = None
    # Overrides the user asked for (e.g. another model's baseline), said where people read.
    notes: list[str] = Field(default_factory=list)
    # sha256 of every model file copied into the promotion (``dpo-harness verify`` re-checks them)
    files: dict[str, str] | None = None
    # Values the promotion changed after the content check (e.g. a local base path)
    rewrites: list[FileRewrite] = Field(default_factory=list)

    def verdict(self, name: str) -> MetricVerdict:
        for v in self.verdicts:
            if v.name == name:
                return v
        raise KeyError(name)


# --------------------------------------------------------------------------- per metric


def _paired(cand: MetricResult, base: MetricResult) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids = [i for i in base.per_sample if i in cand.per_sample]
    ids = [i for i in ids if cand.per_sample[i] is not None and base.per_sample[i] is not None]
    c = np.array([cand.per_sample[i] for i in ids], dtype=float)
    b = np.array([base.per_sample[i] for i in ids], dtype=float)
    return ids, c, b


def _examples(
    ids: list[str], c: np.ndarray, b: np.ndarray, oriented: np.ndarray, suite: SuiteResult
) -> list[Example]:
    by_id = {s.item_id: s for s in suite.samples}
    worst = np.argsort(oriented, kind="stable")[:3]
    out = []
    for k in worst:
        if oriented[k] >= 0:
            break
        rec = by_id.get(ids[k])
        out.append(
            Example(
                item_id=ids[k],
                candidate=float(c[k]),
                baseline=float(b[k]),
                response=truncate(rec.response, 120) if rec and rec.response else None,
            )
        )
    return out


def fmt_ci(lo: float, hi: float) -> str:
    """An interval as ``[+a, +b]``; + 0.0 turns -0.0 into 0.0, so an exact one reads [+0, +0]."""
    return f"[{lo + 0.0:+.3g}, {hi + 0.0:+.3g}]"


@dataclass
class _Paired:
    """What a paired verdict needs to be re-decided at its Holm level after all metrics are seen."""

    verdict: MetricVerdict
    diff: np.ndarray  # candidate - baseline on the paired items, in the metric's own orientation
    sign: float  # +1 higher-is-better, -1 lower-is-better (0 for band)
    binary: bool
    provisional: NonInferiorityVerdict  # at level alpha, before Holm


def _unscorable(
    common: dict[str, Any],
    cand: MetricResult,
    base: MetricResult,
    suite: SuiteResult,
    name: str,
    scored: int,
) -> MetricVerdict:
    base_scored = [i for i, v in base.per_sample.items() if v is not None]
    missing = [i for i in base_scored if cand.per_sample.get(i) is None]
    by_id = {s.item_id: s for s in suite.samples}
    examples = []
    for item_id in missing[:3]:
        rec = by_id.get(item_id)
        examples.append(
            Example(
                item_id=item_id,
                candidate=None,
                baseline=base.per_sample[item_id],
                response=truncate(rec.response, 120) if rec and rec.response is not None else None,
            )
        )
    if base_scored:
        what = (
            f"the candidate produced nothing scorable on {len(missing)} of the "
            f"{len(base_scored)} items the baseline scored"
        )
        if scored:
            what += f" ({scored} paired, too few to compare)"
    else:
        what = "the candidate produced nothing scorable"
    return MetricVerdict(
        **common,
        verdict=Verdict.UNSCORABLE,
        n_items=scored,
        n_unscored=len(missing),
        reason=f"{name} has no value to compare: {what} — an empty or unscorable answer is never a pass.",
        examples=examples,
    )


def _compare(
    cand: MetricResult,
    base: MetricResult,
    suite: SuiteResult,
    margin: float,
    policy: GatePolicy,
    name: str,
) -> tuple[MetricVerdict, _Paired | None]:
    """The metric's verdict at level alpha; with its paired data when Holm may still change it."""
    common: dict[str, Any] = dict(
        suite=suite.name,
        metric=cand.name,
        direction=cand.direction,
        unit=cand.unit,
        candidate=cand.value,
        baseline=base.value,
        margin=margin,
    )
    if cand.value is not None and base.value is not None:
        common["diff"] = cand.value - base.value
    ids, c, b = _paired(cand, base)
    sign = -1.0 if cand.direction is Direction.LOWER else 1.0
    base_scored = sum(1 for v in base.per_sample.values() if v is not None)

    if base.value is not None and cand.value is None:
        return _unscorable(common, cand, base, suite, name, len(ids)), None
    if len(ids) < policy.min_items and base_scored >= policy.min_items:
        return _unscorable(common, cand, base, suite, name, len(ids)), None
    if len(ids) == 0:
        # Aggregate-only metric: compare the point values against the margin.
        if cand.value is None or base.value is None:
            return MetricVerdict(
                **common,
                verdict=Verdict.SKIPPED,
                reason=f"{name}: no value to compare (the baseline has none either)",
            ), None
        worse = (
            sign * (cand.value - base.value) < -margin
            if cand.direction is not Direction.BAND
            else abs(cand.value - base.value) > margin
        )
        return MetricVerdict(
            **common,
            verdict=Verdict.REGRESSED if worse else Verdict.PASS,
            method="point",
            p_regressed=0.0 if worse else 1.0,
            reason=f"{name}: {format_value(cand.value)} vs baseline {format_value(base.value)} (no per-item values; point comparison with margin {margin:g})",
        ), None
    unscored = sum(
        1 for i, v in base.per_sample.items() if v is not None and cand.per_sample.get(i) is None
    )
    common["n_unscored"] = unscored
    if len(ids) < policy.min_items:
        return MetricVerdict(
            **common,
            verdict=Verdict.INCONCLUSIVE,
            n_items=len(ids),
            additional_items=policy.min_items - len(ids),
            reason=f"{name}: only {len(ids)} paired items (the policy needs {policy.min_items})",
        ), None

    if np.array_equal(c, b):
        # Identical on every item: nothing to infer. (The continuous bootstrap already treats a
        # zero-variance difference as exact; the binary score test would instead ask for
        # n > z²/δ items before trusting "no discordant pair", which refuses an unchanged model.)
        same = MetricVerdict(
            **{**common, "diff": 0.0},
            verdict=Verdict.PASS,
            ci_low=0.0,
            ci_high=0.0,
            ci_level=1.0,
            p_regressed=1.0,
            n_items=len(ids),
            method="identical",
            reason="",
        )
        same.reason = _reason(same, name)
        return same, None
    binary = cand.binary and bool(np.all(np.isin(c, (0.0, 1.0))) and np.all(np.isin(b, (0.0, 1.0))))
    kw = dict(alpha=policy.alpha, n_resamples=policy.n_resamples, seed=policy.seed, binary=binary)
    if cand.direction is Direction.BAND:
        lo = non_inferiority(c - b, margin, **kw)  # type: ignore[arg-type]
        hi = non_inferiority(b - c, margin, **kw)  # type: ignore[arg-type]
        if NonInferiorityVerdict.REGRESSED in (lo.verdict, hi.verdict):
            provisional = NonInferiorityVerdict.REGRESSED
        elif lo.verdict.passed and hi.verdict.passed:
            provisional = NonInferiorityVerdict.PASS
        else:
            provisional = NonInferiorityVerdict.INCONCLUSIVE
        res = lo if lo.p_regressed <= hi.p_regressed else hi
        p_reg = min(1.0, 2.0 * min(lo.p_regressed, hi.p_regressed))  # two sides, Bonferroni
        ci_low, ci_high = lo.ci_low, -hi.ci_low
        oriented = -np.abs(c - b)
        sign = 0.0
    else:
        res = non_inferiority(sign * (c - b), margin, **kw)  # type: ignore[arg-type]
        provisional = res.verdict
        p_reg = res.p_regressed
        ci_low, ci_high = (res.ci_low, res.ci_high) if sign > 0 else (-res.ci_high, -res.ci_low)
        oriented = sign * (c - b)
    kind = Verdict(provisional.value)
    mean_diff = float(np.mean(c - b))
    result = MetricVerdict(
        **{**common, "diff": mean_diff},
        verdict=kind,
        ci_low=ci_low,
        ci_high=ci_high,
        ci_level=1.0 - 2.0 * policy.alpha,
        p_regressed=p_reg,
        n_items=len(ids),
        method=res.method,
        # One formula for "how many more items would decide it": the power calculation in
        # stats.items_needed, from the observed spread and the distance to the margin.
        additional_items=res.additional_items if kind is not Verdict.PASS else None,
        reason="",
        examples=_examples(ids, c, b, oriented, suite)
        if kind not in (Verdict.PASS, Verdict.IMPROVED)
        else [],
    )
    if kind in (Verdict.PASS, Verdict.IMPROVED):
        result.additional_items = None
        result.reason = _reason(result, name)
        return result, None
    return result, _Paired(result, c - b, sign, binary, provisional)


def _holm_decide(pending: _Paired, level: float, policy: GatePolicy, name: str) -> None:
    """Decide a metric that did not pass on its interval at the one-sided Holm ``level``.

    Regressed exactly when that interval lies wholly past the margin; otherwise inconclusive,
    and the interval shown is this one (it straddles the margin).
    """
    v = pending.verdict
    margin = float(v.margin or 0.0)
    kw: dict[str, Any] = dict(
        binary=pending.binary, n_resamples=policy.n_resamples, seed=policy.seed
    )
    if pending.sign == 0.0:  # band: two one-sided bounds, each at level / 2
        low, high = non_inferiority_interval(pending.diff, level / 2.0, **kw)
        regressed = high < -margin or low > margin
        coverage = 1.0 - level
    else:
        low, high = non_inferiority_interval(pending.sign * pending.diff, level, **kw)
        regressed = high < -margin
        if pending.sign < 0:
            low, high = -high, -low
        coverage = 1.0 - 2.0 * level
    v.ci_low, v.ci_high, v.ci_level = low, high, coverage
    v.verdict = Verdict.REGRESSED if regressed else Verdict.INCONCLUSIVE
    if regressed:
        v.additional_items = None


def _reason(v: MetricVerdict, name: str, n_tested: int = 1) -> str:
    vals = f"{format_value(v.candidate)} vs baseline {format_value(v.baseline)}"
    if v.diff is not None and v.ci_low is not None and v.ci_high is not None:
        holm = v.verdict in (Verdict.REGRESSED, Verdict.INCONCLUSIVE) and n_tested > 1
        level = f"{v.ci_level * 100:.3g}% " if v.ci_level is not None and v.ci_level < 1 else ""
        kind = f"Holm-adjusted ({n_tested} metrics) " if holm else ""
        vals += f" (Δ {v.diff:+.3g}, {level}{kind}CI {fmt_ci(v.ci_low, v.ci_high)}, n={v.n_items})"
    if v.n_unscored:
        vals += f"; {v.n_unscored} item(s) the baseline scored had nothing to score"
    margin = f"{v.margin:g}" if v.margin is not None else "?"
    if v.verdict is Verdict.REGRESSED:
        side = "±" if v.direction is Direction.BAND else ""
        return f"{name} regressed: {vals} — worse than the margin {side}{margin}."
    if v.verdict is Verdict.INCONCLUSIVE:
        more = (
            f"; about {v.additional_items} more items would decide it" if v.additional_items else ""
        )
        past = (
            "; its point estimate is already past the margin, so it refuses under any policy"
            if v.point_past_margin
            else ""
        )
        return f"{name} is inconclusive: {vals} straddles the margin {margin}{more}{past}."
    if v.verdict is Verdict.IMPROVED:
        return f"{name} improved: {vals}."
    if v.method == "identical":
        return f"{name} passes: identical to the baseline on all {v.n_items} items."
    return f"{name} passes: {vals} is within the margin {margin}."


def _hard_failure(
    m: MetricResult, base_m: MetricResult | None, suite: SuiteResult, policy: GatePolicy, name: str
) -> MetricVerdict:
    """A hard-limit failure, with the paired evidence and worst items when a baseline exists."""
    limit = m.hard_limit_text() or "finite"
    shown = "NaN/inf" if m.nonfinite else format_value(m.value, m.unit)
    reason = f"{name} fails its hard limit: {shown} (limit {limit})."
    detail = None
    if base_m is not None and m.per_sample:
        detail, _ = _compare(m, base_m, suite, float(m.margin or 0.0), policy, name)
    examples = detail.examples if detail is not None and detail.examples else []
    if not examples:
        base_values = base_m.per_sample if base_m is not None else {}
        examples = [
            Example(item_id=i, candidate=v, baseline=base_values.get(i), response=resp or None)
            for i, v, resp in worst_samples(suite, m, k=3)
        ]
    return MetricVerdict(
        suite=suite.name,
        metric=m.name,
        direction=m.direction,
        unit=m.unit,
        verdict=Verdict.HARD_FAIL,
        candidate=m.value,
        baseline=base_m.value if base_m is not None else None,
        diff=detail.diff if detail is not None else None,
        ci_low=detail.ci_low if detail is not None else None,
        ci_high=detail.ci_high if detail is not None else None,
        ci_level=detail.ci_level if detail is not None else None,
        margin=m.margin,
        n_items=detail.n_items if detail is not None else 0,
        method=detail.method if detail is not None else None,
        reason=reason,
        examples=examples,
    )


# --------------------------------------------------------------------------- the gate


def blocks(verdict: MetricVerdict, policy: GatePolicy) -> bool:
    """The decision rule, per metric: does this verdict refuse the candidate under ``policy``?

    The gate refuses when any metric blocks; the pytest plugin fails exactly those items.
    """
    if verdict.verdict in _BLOCKING:
        return True
    if verdict.verdict is not Verdict.INCONCLUSIVE:
        return False
    # "promote" forgives missing evidence, never an observed difference past the margin.
    return policy.inconclusive == "refuse" or verdict.point_past_margin


def gate(
    candidate: EvalReport,
    baseline: Baseline,
    policy: GatePolicy | None = None,
    *,
    baseline_path: str | None = None,
) -> GateDecision:
    """Decide promote or refuse. Pure: no model, no files (callers check compatibility first).

    Both reports are judged under the baseline's policy file (its compatibility key), if any.
    """
    policy = policy or GatePolicy()
    rules = baseline.key.policy
    candidate = apply_rules(candidate, rules)
    base_report = apply_rules(baseline.report, rules)
    verdicts: list[MetricVerdict] = []
    not_computed: list[str] = []  # metrics of the baseline the candidate did not compute
    pending: dict[int, _Paired] = {}
    self_scored = candidate.provenance.reference_source == "none" and (
        candidate.provenance.model.fingerprint != baseline.base_fingerprint
    )
    for suite in candidate.suites:
        try:
            base_suite = base_report.suite(suite.name)
        except KeyError:
            continue
        base_metrics = {m.name: m for m in base_suite.metrics}
        for m in suite.metrics:
            name = f"{suite.name}::{m.name}"
            common: dict[str, Any] = dict(
                suite=suite.name,
                metric=m.name,
                direction=m.direction,
                unit=m.unit,
                candidate=m.value,
            )
            base_m = base_metrics.get(m.name)
            if m.nonfinite or m.hard_limit_ok is False:
                verdicts.append(_hard_failure(m, base_m, suite, policy, name))
                continue
            if base_m is None:
                verdicts.append(
                    MetricVerdict(
                        **common, verdict=Verdict.SKIPPED, reason=f"{name}: not in the baseline"
                    )
                )
                continue
            margin = policy.margins.get(name, m.margin)
            if m.direction is Direction.INFO or margin is None:
                verdicts.append(
                    MetricVerdict(
                        **common,
                        baseline=base_m.value,
                        verdict=Verdict.NOT_GATED,
                        reason=f"{name}: reported only",
                    )
                )
                continue
            if m.needs_reference and self_scored:
                verdicts.append(
                    MetricVerdict(
                        **common,
                        baseline=base_m.value,
                        verdict=Verdict.SKIPPED,
                        reason=f"{name}: the candidate was not scored under the base model (pass --base)",
                    )
                )
                continue
            verdict, paired = _compare(m, base_m, suite, float(margin), policy, name)
            verdicts.append(verdict)
            if paired is not None:
                pending[id(verdict)] = paired
        # A metric of the baseline the candidate did not compute (a served model has no weights
        # to scan, a server may return no log-probabilities) is a skipped verdict with the
        # candidate's reason: said in the decision, never silently dropped.
        computed = {m.name for m in suite.metrics}
        for base_m in base_suite.metrics:
            if base_m.name in computed:
                continue
            name = f"{suite.name}::{base_m.name}"
            why = suite.skipped.get(base_m.name)
            if why is not None:
                not_computed.append(name)
            # Missing without a stated reason (the backend could compute it) is no pass by
            # absence: it blocks like a metric the candidate gave nothing to score.
            verdicts.append(
                MetricVerdict(
                    suite=suite.name,
                    metric=base_m.name,
                    direction=base_m.direction,
                    unit=base_m.unit,
                    baseline=base_m.value,
                    verdict=Verdict.SKIPPED if why is not None else Verdict.UNSCORABLE,
                    reason=f"{name}: skipped for the candidate: {why}"
                    if why is not None
                    else f"{name}: the baseline has it, the candidate's report does not",
                )
            )

    # Holm across every metric with a paired regression p-value: a metric that did not pass is
    # decided on its interval at its Holm step's level, and that interval is the one reported.
    tested = [v for v in verdicts if v.p_regressed is not None and v.method != "point"]
    p_values = [float(v.p_regressed) for v in tested]  # type: ignore[arg-type]
    adjusted = holm_adjusted(p_values) if tested else []
    levels = holm_levels(p_values, policy.alpha) if tested else []
    for v, p_adj, (level, _) in zip(tested, adjusted, levels, strict=True):
        v.p_regressed_holm = p_adj
        paired = pending.get(id(v))
        if paired is not None:
            _holm_decide(paired, level, policy, v.name)
            v.reason = _reason(v, v.name, len(tested))

    found = {
        (s.name, f.metric): [
            g.message for g in s.findings if g.metric == f.metric and g.severity != "info"
        ]
        for s in candidate.suites
        for f in s.findings
        if f.metric is not None
    }
    for v in verdicts:
        messages = found.get((v.suite, v.metric), [])
        if messages and blocks(v, policy):
            v.findings = messages
            v.reason = v.reason + " " + " ".join(messages)

    refuse = any(blocks(v, policy) for v in verdicts)
    reasons = [v.reason for v in verdicts if blocks(v, policy)]
    if not refuse:
        gated = sum(1 for v in verdicts if v.verdict in (Verdict.PASS, Verdict.IMPROVED))
        forgiven = [v for v in verdicts if v.verdict is Verdict.INCONCLUSIVE]
        reasons = [
            f"all {gated} gated metrics are non-inferior to the baseline and every hard limit holds."
            if not forgiven
            else f"{gated} gated metrics are non-inferior and every hard limit holds; "
            f"{len(forgiven)} inconclusive ({', '.join(v.name for v in forgiven)}) promoted by "
            "--inconclusive promote, each with its point estimate within its margin."
        ]
        if not_computed:
            reasons.append(
                f"{len(not_computed)} metrics of the baseline were not computed for the candidate "
                f"and decide nothing: {', '.join(not_computed)}."
            )
    return GateDecision(
        decision="refuse" if refuse else "promote",
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        candidate=candidate.provenance.model,
        baseline_model=baseline.base_model,
        baseline_fingerprint=baseline.base_fingerprint,
        baseline_checksum=baseline.checksum,
        baseline_path=baseline_path,
        policy=policy,
        rules=rules,
        verdicts=verdicts,
        reasons=reasons,
    )

"""What moved between two evaluations of (usually) the same base model: the baseline update report.

For every suite and metric: the old value, the new value, the paired difference with its 95%
interval (bootstrap-t for continuous per-item values, the Tango score interval for 0/1 ones),
how many items changed, and a flag — ``moved`` when any paired item changed, ``BEYOND MARGIN``
when the mean moved by more than the metric's gate margin. Evaluation is greedy and
deterministic, so a metric whose items did not change is reported as unchanged, exactly.
"""

from __future__ import annotations

import math

import numpy as np
from dpo_harness.evaluation.report import format_value
from dpo_harness.gate.baseline import Baseline, key_of
from dpo_harness.gate.policy_file import PolicyFile
from dpo_harness.gate.stats import mcnemar_score_ci, paired_bootstrap_ci
from dpo_harness.schema import EvalReport, MetricResult
from pydantic import BaseModel, ConfigDict
from tabulate import tabulate

__all__ = ["ChangeRow", "compare_reports", "render_update_report", "update_reasons"]

# Per-item values come from float32 model outputs: the same model on another CPU (other vector
# kernels) differs in the last bits, ~1e-7 relative, and a per-byte
# difference of two ~100-nat sums keeps ~1e-6 of it. A difference within this relative
# tolerance is rounding, not a change of what was measured (docs/gate-statistics.md).
_REL_TOL = 1e-5


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= _REL_TOL * max(1.0, abs(a), abs(b))


class ChangeRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suite: str
    metric: str
    old: float | None
    new: float | None
    diff: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    margin: float | None
    n_paired: int = 0
    n_changed: int = 0
    items_added: int = 0
    items_removed: int = 0
    flag: str  # "", "moved", "BEYOND MARGIN", "new", "removed"


def _interval(old: MetricResult, new: MetricResult, ids: list[str]) -> tuple[float, float] | None:
    a = np.array([old.per_sample[i] for i in ids], dtype=float)
    b = np.array([new.per_sample[i] for i in ids], dtype=float)
    if len(ids) < 2:
        return None
    if new.binary and np.all(np.isin(a, (0.0, 1.0))) and np.all(np.isin(b, (0.0, 1.0))):
        n_b = int(np.sum((a == 1) & (b == 0)))
        n_c = int(np.sum((a == 0) & (b == 1)))
        return mcnemar_score_ci(n_b, n_c, len(ids), confidence=0.95)
    _, lo, hi = paired_bootstrap_ci(b, a, confidence=0.95, n_resamples=4000, seed=0)
    return lo, hi


def _f(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _row(suite: str, old: MetricResult | None, new: MetricResult | None) -> ChangeRow:
    if old is None or new is None:
        m = new or old
        assert m is not None
        return ChangeRow(
            suite=suite,
            metric=m.name,
            old=old.value if old else None,
            new=new.value if new else None,
            diff=None,
            margin=m.margin,
            flag="new" if old is None else "removed",
        )
    ids = [i for i in old.per_sample if i in new.per_sample]
    ids = [i for i in ids if old.per_sample[i] is not None and new.per_sample[i] is not None]
    changed = sum(1 for i in ids if not _same(_f(new.per_sample[i]), _f(old.per_sample[i])))
    added = len(set(new.per_sample) - set(old.per_sample))
    removed = len(set(old.per_sample) - set(new.per_sample))
    diff = None if old.value is None or new.value is None else new.value - old.value
    values_moved = (
        diff is not None
        and old.value is not None
        and new.value is not None
        and not _same(new.value, old.value)
    )
    moved = (
        changed > 0 or added > 0 or removed > 0 or values_moved or (old.nonfinite != new.nonfinite)
    )
    ci = _interval(old, new, ids) if changed else None
    flag = ""
    if moved:
        flag = "moved"
        if diff is not None and new.margin is not None and abs(diff) > new.margin:
            flag = "BEYOND MARGIN"
    return ChangeRow(
        suite=suite,
        metric=new.name,
        old=old.value,
        new=new.value,
        diff=diff,
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        margin=new.margin,
        n_paired=len(ids),
        n_changed=changed,
        items_added=added,
        items_removed=removed,
        flag=flag,
    )


def compare_reports(old: EvalReport, new: EvalReport) -> list[ChangeRow]:
    """One row per metric; margins as the reports carry them (apply a policy file first)."""
    rows = []
    old_suites = {s.name: s for s in old.suites}
    for suite in new.suites:
        before = old_suites.get(suite.name)
        old_metrics = {m.name: m for m in before.metrics} if before else {}
        for m in suite.metrics:
            rows.append(_row(suite.name, old_metrics.pop(m.name, None), m))
        rows.extend(_row(suite.name, m, None) for m in old_metrics.values())
    return rows


def update_reasons(
    old: Baseline,
    new_report: EvalReport,
    given: str | None = None,
    policy: PolicyFile | None = None,
) -> list[str]:
    """Why the baseline changes: new weights, suite version bumps, data changes, settings, the
    gate policy file (``policy``: the new baseline's)."""
    reasons = []
    if given:
        reasons.append(given)
    if old.base_fingerprint != new_report.provenance.model.fingerprint:
        reasons.append("new base model weights (fingerprint changed)")
    new_key = key_of(new_report)
    for name, ident in new_key.suites.items():
        was = old.key.suites.get(name)
        if was is None:
            reasons.append(f"suite {name} added (v{ident.version})")
        elif was.version != ident.version:
            reasons.append(f"suite {name} version bump {was.version} → {ident.version}")
        elif was.data_hash != ident.data_hash:
            reasons.append(f"suite {name} data changed")
        elif was.declaration_hash != ident.declaration_hash:
            reasons.append(f"suite {name} declaration changed")
    for name in set(old.key.suites) - set(new_key.suites):
        reasons.append(f"suite {name} removed")
    if old.key.generation != new_key.generation:
        reasons.append("generation settings changed")
    if old.key.chat_template_hash != new_key.chat_template_hash:
        reasons.append("chat template changed")
    if old.key.tokenizer_hash != new_key.tokenizer_hash:
        reasons.append("tokenizer changed")
    before = old.key.policy.decides() if old.key.policy is not None else {}
    after = policy.decides() if policy is not None else {}
    if before != after:
        said = policy.summary() if policy is not None and policy.metrics else "none"
        reasons.append(f"gate policy file changed: now {said}")
    if len(reasons) == (1 if given else 0):
        reasons.append("re-run with unchanged inputs (a reproducibility check)")
    return reasons


def _fmt(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:+.4g}"


def render_update_report(
    title: str, rows: list[ChangeRow], reasons: list[str], *, old_label: str, new_label: str
) -> str:
    table = [
        [
            r.suite,
            r.metric,
            format_value(r.old),
            format_value(r.new),
            _fmt(r.diff),
            f"[{r.ci_low:+.3g}, {r.ci_high:+.3g}]"
            if r.ci_low is not None and r.ci_high is not None
            else "",
            "" if r.margin is None else f"{r.margin:g}",
            f"{r.n_changed}/{r.n_paired}"
            + (
                f" (+{r.items_added}/−{r.items_removed})"
                if r.items_added or r.items_removed
                else ""
            ),
            r.flag,
        ]
        for r in rows
    ]
    moved = [r for r in rows if r.flag]
    lines = [
        f"# {title}",
        "",
        f"- old: {old_label}",
        f"- new: {new_label}",
        "",
        "## Why",
        "",
        *[f"- {r}" for r in reasons],
        "",
        "## Metrics",
        "",
        tabulate(
            table,
            headers=[
                "suite",
                "metric",
                "old",
                "new",
                "Δ",
                "95% CI of Δ",
                "margin",
                "items changed",
                "flag",
            ],
            tablefmt="github",
        ),
        "",
        f"{len(moved)} of {len(rows)} metrics moved"
        + (": " + ", ".join(f"{r.suite}::{r.metric}" for r in moved) if moved else "."),
    ]
    beyond = [r for r in rows if r.flag == "BEYOND MARGIN"]
    if beyond:
        lines.append(
            "Beyond their gate margin: "
            + ", ".join(f"{r.suite}::{r.metric} ({_fmt(r.diff)})" for r in beyond)
            + "."
        )
    return "\n".join(lines) + "\n"

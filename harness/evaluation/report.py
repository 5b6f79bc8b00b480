"""Human-readable views of an :class:`EvalReport`: the terminal table, Markdown, worst samples."""

from __future__ import annotations

import math
import unicodedata

from dpo_harness.schema import Breakdown, Direction, EvalReport, MetricResult, SuiteResult
from tabulate import tabulate

__all__ = [
    "format_value",
    "metric_status",
    "params_text",
    "render_markdown",
    "render_table",
    "truncate",
    "worst_samples",
]

PASS_MARK = "pass"
FAIL_MARK = "FAIL"


def format_value(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if math.isnan(value):
        return "nan"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        text = f"{value:.3g}"
    elif float(value).is_integer() and abs(value) < 1e4:
        text = f"{int(value)}"
    else:
        text = f"{value:.4f}".rstrip("0").rstrip(".")
    return f"{text} {unit}".strip() if unit and unit not in ("ratio", "share") else text


def metric_status(m: MetricResult) -> str:
    if m.hard_limit_ok is True:
        return PASS_MARK
    if m.hard_limit_ok is False:
        return FAIL_MARK
    return ""


def truncate(text: str | None, n: int = 80) -> str:
    """One printable line: newlines shown as ⏎, other control characters escaped."""
    if text is None:
        return ""
    flat = "".join(
        "⏎" if ch == "\n" else (f"\\x{ord(ch):02x}" if unicodedata.category(ch) == "Cc" else ch)
        for ch in text
    )
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def worst_samples(
    suite: SuiteResult, metric: MetricResult, k: int = 3
) -> list[tuple[str, float, str]]:
    """(item id, value, truncated response) for the k items that score worst on ``metric``."""
    vals = [(i, v) for i, v in metric.per_sample.items() if v is not None]
    if not vals:
        return []
    reverse = metric.direction in (Direction.LOWER,)
    vals.sort(key=lambda x: x[1], reverse=reverse)
    by_id = {s.item_id: s for s in suite.samples}
    out = []
    for item_id, v in vals[:k]:
        rec = by_id.get(item_id)
        out.append((item_id, v, truncate(rec.response if rec else None)))
    return out


def _rows(report: EvalReport) -> list[list[str]]:
    rows = []
    for s in report.suites:
        for m in s.metrics:
            value = "NaN/inf" if m.nonfinite else format_value(m.value, m.unit)
            rows.append([s.name, m.name, value, m.hard_limit_text(), metric_status(m)])
        for metric in s.skipped:
            rows.append([s.name, metric, "skipped", "", ""])
    return rows


_TYPE_LABELS = {
    "multiple_choice": "multiple choice",
    "short_answer": "short answer",
    "numeric": "arithmetic",
}


def _breakdown_table(b: Breakdown, tablefmt: str) -> str:
    """One breakdown (e.g. adtech accuracy by category) as a table: group, items, value, per type."""
    types = sorted({t for g in b.groups for t in g.by_type}, key=list(_TYPE_LABELS).index)
    rows = [
        [g.group, g.n_items, format_value(g.value)]
        + [format_value(g.by_type[t]) if g.by_type.get(t) is not None else "" for t in types]
        for g in b.groups
    ]
    headers = [b.by, "items", b.metric.replace("_", " ")] + [_TYPE_LABELS.get(t, t) for t in types]
    return tabulate(rows, headers=headers, tablefmt=tablefmt)


def _breakdowns(report: EvalReport, tablefmt: str, heading: str = "") -> list[str]:
    lines: list[str] = []
    for s in report.suites:
        for b in s.breakdowns:
            lines += ["", f"{heading}{s.name}::{b.metric} by {b.by}", ""]
            lines.append(_breakdown_table(b, tablefmt))
    return lines


def _skipped_notes(report: EvalReport) -> list[str]:
    """One line per distinct reason a metric was skipped."""
    reasons: dict[str, list[str]] = {}
    for s in report.suites:
        for metric, why in s.skipped.items():
            reasons.setdefault(why, []).append(f"{s.name}::{metric}")
    return [f"skipped {', '.join(names)}: {why}" for why, names in reasons.items()]


def _failure_lines(report: EvalReport, quote: str = "") -> list[str]:
    """The verdict line, then the worst samples of every failed hard limit, quoted."""
    failed = report.failed_hard_limits()
    if not failed:
        return ["all hard limits passed"]
    lines = [
        f"FAILED {len(failed)} hard limit(s): " + ", ".join(f"{s}::{m.name}" for s, m in failed)
    ]
    for sname, m in failed:
        for item_id, v, resp in worst_samples(report.suite(sname), m, k=3):
            shown = f": {quote}{resp}{quote}" if resp else ""
            lines.append(f"  {sname}::{m.name} worst {item_id} = {format_value(v)}{shown}")
    return lines


def params_text(n: int | None) -> str:
    """A parameter count for people; a served model's is not known."""
    return "unknown" if n is None else f"{n:,}"


def render_table(report: EvalReport, tablefmt: str = "simple") -> str:
    """The table printed at the end of `evaluate`: suite, metric, value, hard limit, pass/FAIL."""
    p = report.provenance
    head = (
        f"model: {p.model.ref}  ({p.model.kind.value}, {params_text(p.model.n_parameters)} params, "
        f"{p.dtype} on {p.device})\nfingerprint: {p.model.fingerprint[:23]}…"
    )
    if p.reference is not None:
        head += f"\nreference: {p.reference.ref} ({p.reference_source})"
    table = tabulate(
        _rows(report),
        headers=["suite", "metric", "value", "hard limit", "status"],
        tablefmt=tablefmt,
    )
    lines = [head, "", table, *_skipped_notes(report), *_breakdowns(report, tablefmt)]
    findings = [(s.name, f) for s in report.suites for f in s.findings if f.severity != "info"]
    if findings:
        lines.append("")
        lines.extend(f"[{f.severity}] {name}: {f.message}" for name, f in findings)
    lines.append("")
    lines.extend(_failure_lines(report))
    return "\n".join(lines)


def render_markdown(report: EvalReport) -> str:
    p = report.provenance
    parts = [
        f"# Evaluation of `{p.model.ref}`",
        "",
        f"- fingerprint: `{p.model.fingerprint}`",
        f"- kind: {p.model.kind.value}; {params_text(p.model.n_parameters)} parameters; {p.dtype} on {p.device}",
        f"- harness {p.harness_version}; created {p.created_at}",
        "",
        tabulate(
            _rows(report),
            headers=["suite", "metric", "value", "hard limit", "status"],
            tablefmt="github",
        ),
    ]
    parts += ["", *_skipped_notes(report)]
    parts += _breakdowns(report, "github", heading="## ")
    findings = [(s.name, f) for s in report.suites for f in s.findings]
    if findings:
        parts += ["", "## Findings", ""]
        parts += [f"- **{f.severity}** ({name}): {f.message}" for name, f in findings]
    parts += ["", "## Verdict", "", *(f"    {line}" for line in _failure_lines(report))]
    return "\n".join(parts) + "\n"

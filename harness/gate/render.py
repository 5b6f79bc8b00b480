"""How a gate decision is shown: the terminal table and ``gate.md``."""

from __future__ import annotations

import math

from dpo_harness.evaluation.report import format_value
from dpo_harness.gate.decision import GateDecision, Verdict, fmt_ci

__all__ = [
    "GATE_HEADERS",
    "LEGEND",
    "gate_headers",
    "gate_rows",
    "render_gate_markdown",
    "summary_lines",
]

_MARK = {
    Verdict.PASS: "pass",
    Verdict.IMPROVED: "improved",
    Verdict.REGRESSED: "REGRESSED",
    Verdict.INCONCLUSIVE: "inconclusive",
    Verdict.HARD_FAIL: "HARD FAIL",
    Verdict.UNSCORABLE: "UNSCORABLE",
    Verdict.NOT_GATED: "—",
    Verdict.SKIPPED: "skipped",
}


def gate_rows(decision: GateDecision) -> list[list[str]]:
    rows = []
    for v in decision.verdicts:
        ci = fmt_ci(v.ci_low, v.ci_high) if v.ci_low is not None and v.ci_high is not None else ""
        if ci and v.ci_level is not None and v.ci_level < 1:
            ci += f" {v.ci_level * 100:.3g}%"
        delta = f"{v.diff:+.3g}" if v.diff is not None and math.isfinite(v.diff) else ""
        margin = "" if v.margin is None or v.verdict is Verdict.NOT_GATED else f"{v.margin:g}"
        rows.append(
            [
                v.suite,
                v.metric,
                format_value(v.baseline),
                format_value(v.candidate),
                delta,
                ci,
                margin,
                _MARK[v.verdict],
            ]
        )
    return rows


# The interval is the one each verdict was decided on, with its two-sided level: 1 - 2α for
# pass/improved, Holm-adjusted for regressed/inconclusive (docs/gate-statistics.md).
GATE_HEADERS = [
    "suite",
    "metric",
    "baseline",
    "candidate",
    "Δ",
    "CI of Δ (level)",
    "margin",
    "verdict",
]

# What the marks in the verdict column mean (printed under every gate table).
LEGEND = (
    "verdict: pass / improved = non-inferior (improved: better with confidence); REGRESSED = worse "
    "than the margin; inconclusive = the interval straddles the margin; HARD FAIL = outside a hard "
    "limit; skipped = not comparable here (the reason is in decision.json); — = reported only, "
    "never gated."
)


def gate_headers(decision: GateDecision) -> list[str]:
    """The table's headers, the interval labelled with its level (1 − 2α: 90% at α = 0.05)."""
    level = round(100 * (1 - 2 * decision.policy.alpha))
    return [*GATE_HEADERS[:5], f"{level}% CI of Δ", *GATE_HEADERS[6:]]


def render_gate_markdown(decision: GateDecision) -> str:
    from tabulate import tabulate

    head = "PROMOTE" if decision.decision == "promote" else "REFUSE"
    lines = [
        f"# Gate: {head} `{decision.candidate.ref}`",
        "",
        f"- candidate fingerprint: `{decision.candidate.fingerprint}`",
        f"- baseline: `{decision.baseline_model}` (`{decision.baseline_checksum[:23]}…`)",
        f"- policy: inconclusive → {decision.policy.inconclusive}; α = {decision.policy.alpha}; "
        f"{decision.policy.n_resamples} bootstrap resamples, seed {decision.policy.seed}; Holm across metrics",
        f"- gate policy file (from the baseline): {decision.rules.summary()}"
        if decision.rules is not None
        else "- gate policy file: none (the suites' own margins and hard limits)",
        "",
        tabulate(gate_rows(decision), headers=gate_headers(decision), tablefmt="github"),
        "",
        LEGEND,
        "",
        "## Reasons",
        "",
        *[f"- {r}" for r in decision.reasons],
    ]
    found = [(v.name, f) for v in decision.verdicts for f in v.findings]
    if found:
        lines += ["", "## What was found", ""]
        lines += [f"- {name}: {f}" for name, f in found]
    worst = [v for v in decision.verdicts if v.examples]
    if worst:
        lines += ["", "## Worst items", ""]
        for v in worst:
            for e in v.examples:
                resp = f" — `{e.response}`" if e.response else ""
                lines.append(
                    f"- {v.name} `{e.item_id}`: {format_value(e.candidate)} (baseline {format_value(e.baseline)}){resp}"
                )
    if decision.promoted_to:
        lines += ["", f"Promoted to `{decision.promoted_to}`."]
    return "\n".join(lines) + "\n"


def summary_lines(decision: GateDecision, *, report_html: str | None = None) -> list[str]:
    """What a person reads first under the table: the verdict, a count, what to look at, where.

    A refusal leads with how many metrics block and the one or two to look at first (hard
    limits before regressions before inconclusive), quotes their worst answers, and points to
    report.html — instead of every reason in a row.
    """
    from dpo_harness.gate.decision import blocks

    blocking = [v for v in decision.verdicts if blocks(v, decision.policy)]
    gated = [v for v in decision.verdicts if v.verdict not in (Verdict.NOT_GATED, Verdict.SKIPPED)]
    lines: list[str] = []
    if not blocking:
        lines.append(f"PROMOTE: {decision.reasons[0]}" if decision.reasons else "PROMOTE")
        lines.extend(f"  {reason}" for reason in decision.reasons[1:])
    else:
        order = {Verdict.HARD_FAIL: 0, Verdict.REGRESSED: 1, Verdict.INCONCLUSIVE: 2}
        first = sorted(blocking, key=lambda v: order.get(v.verdict, 3))
        lines.append(
            f"REFUSE: {len(blocking)} of {len(gated)} gated metrics block promotion. Look first at:"
        )
        for v in first[:2]:
            lines.append(f"  - {v.reason}")
            for e in v.examples[:2]:
                if e.response:
                    lines.append(
                        f"      {e.item_id}: {format_value(e.candidate)} "
                        f"(baseline {format_value(e.baseline)}): {e.response}"
                    )
        if len(blocking) > 2:
            lines.append(f"  … and {len(blocking) - 2} more (every reason is in gate.md)")
    for note in decision.notes:
        lines.append(f"! {note}")
    if report_html:
        lines.append(f"full report: {report_html}")
    return lines

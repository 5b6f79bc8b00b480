"""How a gate decision is shown: the terminal table and ``gate.md``."""

from __future__ import annotations

import math

from dpo_harness.evaluation.report import format_value
from dpo_harness.gate.decision import GateDecision, Verdict, fmt_ci

__all__ = ["GATE_HEADERS", "gate_rows", "render_gate_markdown"]

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
        tabulate(gate_rows(decision), headers=GATE_HEADERS, tablefmt="github"),
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

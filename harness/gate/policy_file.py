"""Gate policy files: per-metric margins, hard limits and which metrics are gated, for one base.

A suite's metrics come with hard limits and margins that fit most models. A real base model can
fail its own hard limits (greedy decoding loops; long answers cut at ``max_new_tokens``), and then
every candidate gated against it fails too. A policy file (YAML or JSON, validated; errors name
the field and the file) states, for such a base, what the gate should hold it to::

    description: why these rules
    metrics:
      repetition::eos_rate:
        hard_limits: {hard_min: 0.0}   # replaces the suite's limits for this metric; {} = none
        reason: answers are long; 128 new tokens cut most of them
      numerical::heldout_bits_per_byte:
        margin: 0.1
      fluency::answer_nll_reference:
        gated: false                   # reported only

It is passed with ``--policy`` to ``baseline create|update`` and ``gate`` (``gate.policy_file``
in a run config, ``--dpo-policy`` under pytest) and stored in the baseline's compatibility key, so
every candidate is gated under the rules its baseline was accepted under; a ``--policy`` that
differs from the baseline's is refused.
"""

from __future__ import annotations

import math
from pathlib import Path

from dpo_harness.errors import EXIT_FAILED, BadInputError, HarnessError
from dpo_harness.files import load_config_file
from dpo_harness.schema import Direction, EvalReport, MetricResult, MetricSpec
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "BaseFailsHardLimitsError",
    "HardLimits",
    "MetricRule",
    "PolicyFile",
    "apply_rules",
    "check_base",
    "check_rules",
    "load_policy_file",
    "suggest_policy",
]


class HardLimits(BaseModel):
    """A metric's hard limits; an empty mapping means none."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hard_min: float | None = None
    hard_max: float | None = None

    @field_validator("hard_min", "hard_max")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("a hard limit must be a finite number")
        return v


class MetricRule(BaseModel):
    """How the gate treats one metric; a field left out keeps the suite's own setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gated: bool | None = None  # false: reported only (never compared with the baseline)
    margin: float | None = None  # non-inferiority margin, in the metric's units
    hard_limits: HardLimits | None = None  # replaces the suite's hard limits
    reason: str = ""

    @field_validator("margin")
    @classmethod
    def _non_negative(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ValueError("margin must be a finite number >= 0")
        return v


class PolicyFile(BaseModel):
    """A gate policy file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    metrics: dict[str, MetricRule] = Field(default_factory=dict)

    @field_validator("metrics")
    @classmethod
    def _names(cls, v: dict[str, MetricRule]) -> dict[str, MetricRule]:
        for name in v:
            if "::" not in name:
                raise ValueError(f"metric {name!r} must be named SUITE::METRIC")
        return v

    def decides(self) -> dict[str, tuple[bool | None, float | None, HardLimits | None]]:
        """What the rules decide (descriptions and reasons left out): two files that agree here
        gate identically."""
        return {n: (r.gated, r.margin, r.hard_limits) for n, r in self.metrics.items()}

    def summary(self) -> str:
        """One line: what the file changes."""
        if not self.metrics:
            return "no per-metric rules"
        return "; ".join(
            f"{name}: {_describe(rule)}" for name, rule in sorted(self.metrics.items())
        )


def _describe(rule: MetricRule) -> str:
    parts = []
    if rule.gated is False:
        parts.append("not gated")
    elif rule.gated:
        parts.append("gated")
    if rule.margin is not None:
        parts.append(f"margin {rule.margin:g}")
    if rule.hard_limits is not None:
        lim = [
            f">= {rule.hard_limits.hard_min:g}" if rule.hard_limits.hard_min is not None else "",
            f"<= {rule.hard_limits.hard_max:g}" if rule.hard_limits.hard_max is not None else "",
        ]
        parts.append("hard limit " + (" and ".join(p for p in lim if p) or "none"))
    return ", ".join(parts) or "unchanged"


class BaseFailsHardLimitsError(HarnessError):
    """The base model fails its own hard limits: every candidate would fail them (exit 1).

    ``suggestion`` is a policy file (YAML) that would accept the base as it is, to review.
    """

    exit_code = EXIT_FAILED

    def __init__(self, cause: str, fix: str | None = None, *, suggestion: str = "") -> None:
        super().__init__(cause, fix)
        self.suggestion = suggestion


def check_base(report: EvalReport, rules: PolicyFile | None, *, max_new_tokens: int) -> None:
    """Refuse a baseline whose model fails its own hard limits (under ``rules``), saying how to
    go on: a policy file that relaxes or un-gates them, or a larger ``max_new_tokens``."""
    failed = apply_rules(report, rules).failed_hard_limits()
    if not failed:
        return
    shown = ", ".join(
        f"{s}::{m.name} = {'NaN' if m.nonfinite else _short(m.value)} (limit {m.hard_limit_text()})"
        for s, m in failed
    )
    fix = (
        "if the base is right as it is, write a gate policy file that relaxes or un-gates these "
        "limits and pass it with --policy FILE (a starting point is printed above; the demo's is "
        "configs/demo-policy.yaml)"
    )
    if any(m.name == "eos_rate" for _, m in failed):
        fix += (
            f"; if its answers are cut at max_new_tokens, raise --max-new-tokens "
            f"(now {max_new_tokens})"
        )
    raise BaseFailsHardLimitsError(
        f"the base model {report.provenance.model.ref} fails {len(failed)} of its own hard "
        f"limits: {shown} — every candidate gated against it would fail them too; no baseline "
        "written",
        fix,
        suggestion=suggest_policy(report, rules),
    )


def _short(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def load_policy_file(path: Path) -> PolicyFile:
    """Read and validate a policy file; errors name the field and the file."""
    return load_config_file(Path(path), PolicyFile)


def check_rules(
    rules: PolicyFile, specs: dict[str, MetricSpec], source: str, *, known_suites: set[str]
) -> None:
    """Refuse rules naming metrics that do not exist, or that cannot be gated.

    ``specs``: every metric of the evaluated suites; ``known_suites``: every suite there is (a
    rule for a suite this run does not evaluate is kept for the runs that do).
    """
    evaluated = {name.partition("::")[0] for name in specs}
    unknown = sorted(
        n
        for n in rules.metrics
        if n not in specs
        and (n.partition("::")[0] in evaluated or n.partition("::")[0] not in known_suites)
    )
    if unknown:
        raise BadInputError(
            f"{source}: field 'metrics.{unknown[0]}': no such metric in the evaluated suites",
            "use SUITE::METRIC as listed by `dpo-harness suites`",
        )
    for name, rule in rules.metrics.items():
        spec = specs.get(name)
        if spec is None:
            continue  # a suite this run does not evaluate: the rule waits for it
        if rule.gated and spec.direction is Direction.INFO:
            raise BadInputError(
                f"{source}: field 'metrics.{name}.gated': {name} has no better direction (info)",
                f"remove 'gated: true' for {name} in {source}",
            )
        if rule.gated and rule.margin is None and spec.margin is None:
            raise BadInputError(
                f"{source}: field 'metrics.{name}.margin': gating {name} needs a margin "
                "(the suite gives it none)",
                f"add 'margin: VALUE' under {name} in {source}",
            )


def _ruled(m: MetricResult, rule: MetricRule) -> MetricResult:
    margin = m.margin if rule.margin is None else rule.margin
    if rule.gated is False:
        margin = None
    limits = rule.hard_limits
    hard_min = m.hard_min if limits is None else limits.hard_min
    hard_max = m.hard_max if limits is None else limits.hard_max
    spec = m.spec.model_copy(update={"margin": margin, "hard_min": hard_min, "hard_max": hard_max})
    ok: bool | None = None
    if hard_min is not None or hard_max is not None:
        if m.nonfinite:
            ok = False
        elif m.value is not None:
            ok = (hard_min is None or m.value >= hard_min) and (
                hard_max is None or m.value <= hard_max
            )
    return MetricResult(
        **spec.model_dump(),
        value=m.value,
        per_sample=m.per_sample,
        nonfinite=m.nonfinite,
        hard_limit_ok=ok,
        note=m.note,
    )


def apply_rules(report: EvalReport, rules: PolicyFile | None) -> EvalReport:
    """``report`` with the rules' margins and hard limits on its metrics (a copy; idempotent)."""
    if rules is None or not rules.metrics:
        return report
    out = report.model_copy(deep=True)
    for suite in out.suites:
        suite.metrics = [
            _ruled(m, rules.metrics[f"{suite.name}::{m.name}"])
            if f"{suite.name}::{m.name}" in rules.metrics
            else m
            for m in suite.metrics
        ]
    return out


def suggest_policy(report: EvalReport, rules: PolicyFile | None = None) -> str:
    """A policy file (YAML) that accepts ``report``'s base as it is: its failed limits relaxed."""
    lines = [
        "description: accept the base model as it is (review each rule before you use it)",
        "metrics:",
    ]
    for suite_name, m in apply_rules(report, rules).failed_hard_limits():
        name = f"{suite_name}::{m.name}"
        value = "NaN" if m.nonfinite else f"{m.value:g}" if m.value is not None else "n/a"
        lines += [
            f"  {name}:",
            "    hard_limits: {}        # the base reads "
            + value
            + f" (limit {m.hard_limit_text()}); or set a looser one",
            "    reason: the base model fails this limit itself",
        ]
    return "\n".join(lines) + "\n"

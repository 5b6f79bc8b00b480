"""The gate: is a candidate non-inferior to the stored baseline of its base model?

- :mod:`~dpo_harness.gate.stats` — paired statistics (bootstrap-t, Tango score test, Holm);
- :mod:`~dpo_harness.gate.decision` — the decision rule: hard limits, per-metric verdicts, policy;
- :mod:`~dpo_harness.gate.render` — the gate table and ``gate.md``;
- :mod:`~dpo_harness.gate.baseline` — stored baselines and their compatibility key;
- :mod:`~dpo_harness.gate.policy_file` — gate policy files (per-metric margins, hard limits,
  gating) kept in a baseline's key, and the check that a base passes its own hard limits;
- :mod:`~dpo_harness.gate.power` — what the gate can see with a baseline's items (false
  refusals, detectable regressions, margins the items cannot resolve);
- :mod:`~dpo_harness.gate.baseline_diff` — what moved between two baselines (update reports);
- :mod:`~dpo_harness.gate.promotion` — promotion that loses nothing, and ``verify``;
- :mod:`~dpo_harness.gate.pipeline` — the one gate pipeline: prepare → execute → publish.

The decision API is re-exported here (``from dpo_harness.gate import gate, GatePolicy``).
"""

from dpo_harness.gate.decision import (
    Example,
    GateDecision,
    GatePolicy,
    MetricVerdict,
    Verdict,
    gate,
)
from dpo_harness.gate.render import GATE_HEADERS, gate_rows, render_gate_markdown

__all__ = [
    "GATE_HEADERS",
    "Example",
    "GateDecision",
    "GatePolicy",
    "MetricVerdict",
    "Verdict",
    "gate",
    "gate_rows",
    "render_gate_markdown",
]

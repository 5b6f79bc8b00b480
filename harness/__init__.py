"""dpo_harness: evaluation and regression gate for fine-tuned language models.

The public API (imported lazily, so ``import dpo_harness`` stays cheap):

- evaluation: ``evaluate_loaded``, ``load_checkpoint``, ``EvalConfig``, ``EvalReport``
  (and ``dpo_harness.evaluate.evaluate``);
- baselines and the gate: ``Baseline``, ``load_baseline``, ``GatePolicy``, ``GateDecision``,
  ``run_gate`` (and ``dpo_harness.gate.gate``, the pure decision);
- suites: ``Suite``, ``register_suite``, ``create_suite``;
- training: ``TrainingPlugin``, ``get_plugin`` (and ``dpo_harness.train_and_gate.train_and_gate``).

Functions named like their module (``evaluate``, ``gate``, ``train_and_gate``) are imported from
the module: as package attributes they would be shadowed by the submodule once it is imported.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "evaluate_loaded": "evaluate",
    "load_checkpoint": "loading",
    "EvalConfig": "schema",
    "EvalReport": "schema",
    "Baseline": "baseline",
    "load_baseline": "baseline",
    "GatePolicy": "gate",
    "GateDecision": "gate",
    "run_gate": "gating",
    "Suite": "suite",
    "register_suite": "suite",
    "create_suite": "suite",
    "TrainingPlugin": "plugin",
    "get_plugin": "plugin",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dpo_harness' has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)

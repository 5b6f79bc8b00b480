"""dpo_harness: evaluation and regression gate for fine-tuned language models.

The package, by capability (each subpackage's docstring lists its modules):

- ``dpo_harness.evaluation`` — load a checkpoint, run the suites' requests through one model
  runner, build the :class:`EvalReport`;
- ``dpo_harness.gate`` — paired statistics, the decision rule, baselines, promotion, and the one
  gate pipeline (prepare → execute → publish);
- ``dpo_harness.training`` — the training-plugin contract and ``train-and-gate``;
- ``dpo_harness.cli`` and ``dpo_harness.pytest_plugin`` — the two front ends;
- ``dpo_harness.suites`` (pure scoring), ``dpo_harness.plugins`` (trainers), ``dpo_harness.demo``,
  ``dpo_harness.tools`` (calibration, suite versions, the adtech arithmetic generator, overlap
  checks);
- at the bottom: ``schema`` (every typed object), ``errors``, ``files``, ``launcher``, ``settings``.

The public API (imported lazily, so ``import dpo_harness`` stays cheap):

- evaluation: ``evaluate_loaded``, ``load_checkpoint``, ``EvalConfig``, ``EvalReport`` (and
  ``dpo_harness.evaluation.evaluate.evaluate``);
- baselines and the gate: ``Baseline``, ``load_baseline``, ``GatePolicy``, ``GateDecision``,
  ``run_gate`` (and ``dpo_harness.gate.gate``, the pure decision);
- suites: ``Suite``, ``register_suite``, ``create_suite``;
- training: ``TrainingPlugin``, ``get_plugin`` (and
  ``dpo_harness.training.train_and_gate.train_and_gate``).

Old flat module paths (``dpo_harness.loading``, ``dpo_harness.gating``, …) still import, with a
``DeprecationWarning`` (:mod:`dpo_harness._compat`).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from dpo_harness import _compat

__version__ = "0.1.0"

_EXPORTS = {
    "evaluate_loaded": "dpo_harness.evaluation.evaluate",
    "load_checkpoint": "dpo_harness.evaluation.loading",
    "EvalConfig": "dpo_harness.schema",
    "EvalReport": "dpo_harness.schema",
    "Baseline": "dpo_harness.gate.baseline",
    "load_baseline": "dpo_harness.gate.baseline",
    "GatePolicy": "dpo_harness.gate.decision",
    "GateDecision": "dpo_harness.gate.decision",
    "run_gate": "dpo_harness.gate.pipeline",
    "Suite": "dpo_harness.evaluation.suite",
    "register_suite": "dpo_harness.evaluation.suite",
    "create_suite": "dpo_harness.evaluation.suite",
    "TrainingPlugin": "dpo_harness.training.plugin",
    "get_plugin": "dpo_harness.training.plugin",
}

__all__ = ["__version__", *_EXPORTS]

_compat.install()


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dpo_harness' has no attribute {name!r}")
    return getattr(import_module(module), name)

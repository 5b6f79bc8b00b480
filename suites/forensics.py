"""Training-log forensics: read a Trainer's ``log_history`` the way a careful engineer would.

The seed run logged ``loss = 0.0`` and ``eval_loss = nan`` and was called a success. In truth every
step was NaN: transformers' ``logging_nan_inf_filter`` (on by default) replaces a non-finite
step loss with the running mean, which is reset to 0 at each log, so a window of all-NaN steps
logs exactly 0.0 — while ``grad_norm``, ``rewards/*`` and ``logps/*`` stay NaN. Each rule below
turns one such signature into one sentence a person understands.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dpo_harness.schema import Finding

__all__ = ["LN2", "diagnose_log_history", "is_nonfinite", "step_ranges"]

LN2 = math.log(2.0)
_NAN_WITNESS_PREFIXES = ("rewards/", "logps/", "logits/")
_NOT_LEARNING_MIN_RECORDS = 3


def is_nonfinite(value: Any) -> bool:
    """True for NaN/inf numbers and for the strings 'nan'/'inf' some loggers write."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return not math.isfinite(value)
    if isinstance(value, str):
        return value.strip().lower() in {"nan", "inf", "-inf", "infinity", "-infinity"}
    return False


def step_ranges(steps: Sequence[int]) -> str:
    """'100-400, 700' from [100, 200, 300, 400, 700] given equal spacing."""
    if not steps:
        return ""
    steps = sorted(steps)
    if len(steps) <= 2:
        return ", ".join(str(s) for s in steps)
    return f"{steps[0]}–{steps[-1]} ({len(steps)} logged steps)"


def _num(record: Mapping[str, Any], key: str) -> float | None:
    v = record.get(key)
    if isinstance(v, bool) or v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _train_records(history: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in history if "loss" in r and "train_runtime" not in r]


def diagnose_log_history(history: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """Findings (most severe first) for a ``trainer_state.json`` ``log_history``."""
    findings: list[Finding] = []
    train = _train_records(history)

    hidden = []
    for r in train:
        loss = _num(r, "loss")
        witnesses = [
            k for k, v in r.items() if k.startswith(_NAN_WITNESS_PREFIXES) or k == "grad_norm"
        ]
        if loss == 0.0 and any(is_nonfinite(r[k]) for k in witnesses):
            hidden.append(int(r.get("step", 0)))
    if hidden:
        findings.append(
            Finding(
                severity="error",
                metric="training_log_errors",
                message=(
                    f"Hidden NaN run: at steps {step_ranges(hidden)} the logged loss is exactly 0.0 while "
                    "grad_norm/rewards/logps are NaN — the Trainer's logging_nan_inf_filter replaced NaN "
                    "losses with 0, so those steps did not train; they failed."
                ),
            )
        )

    nan_loss = [int(r.get("step", 0)) for r in train if is_nonfinite(r.get("loss"))]
    if nan_loss:
        findings.append(
            Finding(
                severity="error",
                metric="training_log_errors",
                message=f"The training loss is NaN or infinite at steps {step_ranges(nan_loss)}.",
            )
        )

    eval_bad = sorted(
        {
            k
            for r in history
            for k, v in r.items()
            if k.startswith("eval_") and k.endswith("loss") and is_nonfinite(v)
        }
    )
    if eval_bad:
        steps = [
            int(r.get("step", 0)) for r in history if any(is_nonfinite(r.get(k)) for k in eval_bad)
        ]
        findings.append(
            Finding(
                severity="error",
                metric="training_log_errors",
                message=f"{', '.join(eval_bad)} is NaN at steps {step_ranges(steps)}: the model's outputs on held-out data are not finite.",
            )
        )

    grad_nan = [
        int(r.get("step", 0)) for r in train if "grad_norm" in r and is_nonfinite(r["grad_norm"])
    ]
    if grad_nan and not hidden:
        findings.append(
            Finding(
                severity="error",
                metric="training_log_errors",
                message=f"grad_norm is NaN or infinite at steps {step_ranges(grad_nan)}: those updates were garbage.",
            )
        )
    grad_zero = [int(r.get("step", 0)) for r in train if _num(r, "grad_norm") == 0.0]
    if grad_zero and len(grad_zero) >= max(1, len(train) // 2):
        findings.append(
            Finding(
                severity="error",
                metric="training_log_errors",
                message=(
                    f"grad_norm is exactly 0 at steps {step_ranges(grad_zero)}: no gradient reaches the "
                    "trainable parameters, so the model cannot learn."
                ),
            )
        )

    findings.extend(_not_learning(train))
    findings.extend(_likelihood_collapse(train))
    return findings


def _not_learning(train: Sequence[Mapping[str, Any]]) -> list[Finding]:
    later = train[1:]
    if len(later) < _NOT_LEARNING_MIN_RECORDS:
        return []
    stuck = all(
        (loss := _num(r, "loss")) is not None
        and abs(loss - LN2) < 1e-4
        and _num(r, "rewards/chosen") in (0.0, None)
        and _num(r, "rewards/rejected") in (0.0, None)
        for r in later
    )
    if not stuck:
        return []
    return [
        Finding(
            severity="error",
            metric="training_log_errors",
            message=(
                f"Not learning: after step {int(later[0].get('step', 0))} the DPO loss stays at ln 2 = 0.6931 "
                "with rewards exactly 0, so the policy never moved away from the reference."
            ),
        )
    ]


def _likelihood_collapse(train: Sequence[Mapping[str, Any]]) -> list[Finding]:
    vals = [
        (int(r.get("step", 0)), v)
        for r in train
        if (v := _num(r, "logps/chosen")) is not None and math.isfinite(v)
    ]
    if len(vals) < 2:
        return []
    start, end = vals[0][1], vals[-1][1]
    # logps are sums over completion tokens (negative). A fall of more than half its size and
    # more than 20 nats means the chosen answers became much less likely: likelihood displacement.
    drop = start - end
    if drop > 20.0 and drop > 0.5 * abs(start):
        return [
            Finding(
                severity="warning",
                metric="training_log_errors",
                message=(
                    f"logps/chosen fell from {start:.1f} to {end:.1f} (step {vals[-1][0]}): the chosen answers "
                    "became far less likely — likelihood displacement, an over-optimisation sign."
                ),
            )
        ]
    return []

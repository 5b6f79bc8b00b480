"""Live gating: each checkpoint is evaluated and gated when it is saved, between training steps.

The training plugin calls :meth:`LiveGate.gate_checkpoint` (the :class:`CheckpointGate` of the
plugin contract) right after a checkpoint directory is written, with the model that is in
memory. The gate resolves and fingerprints the checkpoint's *files* (its identity, which
promotion re-checks on the copied files), checks that the in-memory tensors are exactly the
saved ones (:func:`~dpo_harness.evaluation.loading.wrap_checkpoint_in_memory`; otherwise the
checkpoint is loaded from its files), runs the one gate pipeline (prepare → execute → publish),
and answers with the metrics for the run's trackers and, when training should end, one sentence:
a checkpoint failed a hard limit, or ``gate.stop_after_refusals`` checkpoints in a row were
refused. The random-number state is put back afterwards, so gating does not change training.
``train-and-gate`` then promotes from what was gated here; nothing is evaluated twice.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dpo_harness.evaluation.loading import (
    LoadedModel,
    ResolvedModel,
    resolve_device,
    resolve_dtype,
    wrap_checkpoint_in_memory,
)
from dpo_harness.evaluation.report import format_value
from dpo_harness.gate.decision import Verdict
from dpo_harness.gate.pipeline import GatePlan, GateRun, execute, prepare, publish
from dpo_harness.launcher import from_env, world_size
from dpo_harness.schema import EvalConfig
from dpo_harness.training.plugin import CheckpointGate, GuardEvent, LiveVerdict, RunConfigBase
from pydantic import BaseModel, ConfigDict

__all__ = ["LIVE_GATE_EVENT", "CandidateOutcome", "GatedCheckpoint", "LiveGate", "outcome_of"]

LIVE_GATE_EVENT = "live_gate"


class CandidateOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    path: Path
    step: int
    final: bool
    decision: Literal["promote", "refuse"]
    primary_metric: str
    primary_value: float | None
    reasons: list[str]
    gate_dir: Path
    gated_live: bool = False  # gated during training, when it was saved
    seconds: float | None = None  # the gate's time for this checkpoint


def outcome_of(
    run: GateRun,
    config: RunConfigBase,
    *,
    name: str,
    path: Path,
    step: int,
    final: bool,
    gated_live: bool,
    seconds: float,
) -> CandidateOutcome:
    suite, _, metric = config.gate.primary_metric.partition("::")
    return CandidateOutcome(
        name=name,
        path=path,
        step=step,
        final=final,
        decision=run.decision.decision,
        primary_metric=config.gate.primary_metric,
        primary_value=run.report.suite(suite).metric(metric).value,
        reasons=run.decision.reasons,
        gate_dir=run.out_dir,
        gated_live=gated_live,
        seconds=round(seconds, 2),
    )


@dataclass
class GatedCheckpoint:
    """A checkpoint gated (and published) during training."""

    fingerprint: str
    run: GateRun
    outcome: CandidateOutcome


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class LiveGate(CheckpointGate):
    """The core's checkpoint gate for one run (see the module docstring)."""

    def __init__(
        self,
        config: RunConfigBase,
        base: ResolvedModel,
        baseline_path: Path | None,
        *,
        log: Callable[[str], None],
        main: bool,
    ) -> None:
        self.config = config
        self.base = base
        self.baseline_path = baseline_path  # known on the main process; shared at the first gate
        self.log = log if main else (lambda _msg: None)
        self.main = main
        self.gated: list[GatedCheckpoint] = []
        self.refused_in_a_row = 0
        self.stop_event: GuardEvent | None = None
        self.notes: list[str] = []

    @property
    def seconds(self) -> float:
        return round(sum(g.outcome.seconds or 0.0 for g in self.gated), 2)

    def find(self, fingerprint: str) -> GatedCheckpoint | None:
        return next((g for g in self.gated if g.fingerprint == fingerprint), None)

    def gate_checkpoint(self, model: Any, checkpoint_dir: Path, step: int) -> LiveVerdict:
        t0 = time.perf_counter()
        checkpoint_dir = Path(checkpoint_dir)
        dist = from_env() if world_size() > 1 else None
        if dist is not None:
            # Every rank waits here until the main one (which wrote the checkpoint) arrives,
            # and learns the baseline that only the main process prepared.
            self.baseline_path = dist.all_gather(self.baseline_path)[0]
        assert self.baseline_path is not None
        name = checkpoint_dir.name
        rng = _rng_state()
        try:
            plan = prepare(
                EvalConfig.from_settings(
                    self.config.evaluation, str(checkpoint_dir), base=self.base.ref
                ),
                baseline_file=self.baseline_path,
                policy=self.config.gate.policy,
                out_dir=Path(self.config.output_dir) / "gate" / name,
                policy_file=self.config.gate.policy_file,
            )
            run = execute(plan, loaded=self._in_memory(model, plan), distributed=dist)
        finally:
            _set_rng_state(rng)
        if self.main:
            run.decision = publish(run, log=self.log)
        seconds = time.perf_counter() - t0
        outcome = outcome_of(
            run,
            self.config,
            name=name,
            path=checkpoint_dir,
            step=step,
            final=False,
            gated_live=True,
            seconds=seconds,
        )
        assert plan.candidate is not None
        self.gated.append(GatedCheckpoint(plan.candidate.fingerprint, run, outcome))
        stop = self._stop_rule(run, outcome)
        self.log(
            f"live gate: {name} (step {step}): {outcome.decision} "
            f"({outcome.primary_metric} = {format_value(outcome.primary_value)}) in {seconds:.1f} s"
        )
        return LiveVerdict(
            name=name,
            step=step,
            decision=outcome.decision,
            seconds=round(seconds, 2),
            metrics=_tracker_metrics(run, seconds),
            stop=stop,
        )

    def _in_memory(self, model: Any, plan: GatePlan) -> LoadedModel | None:
        """The in-memory model under the files' identity, or None to load the files instead."""
        assert plan.candidate is not None
        settings = self.config.evaluation
        loaded = wrap_checkpoint_in_memory(
            model, plan.candidate, trust_remote_code=settings.trust_remote_code
        )
        why = None
        if loaded is None:
            why = "its tensors in memory are not the saved ones (sharded weights?)"
        else:
            device = resolve_device(settings.device)
            dtype = resolve_dtype(settings.dtype, device)
            if loaded.device.type != device.type or loaded.dtype != dtype:
                why = (
                    f"training holds it as {loaded.dtype} on {loaded.device}, evaluation "
                    f"asks for {dtype} on {device}"
                )
                loaded = None
        if why is not None:
            note = f"{plan.candidate.ref} was evaluated from its files: {why}"
            if note not in self.notes:
                self.notes.append(note)
                self.log(f"live gate: {note}")
        return loaded

    def _stop_rule(self, run: GateRun, outcome: CandidateOutcome) -> GuardEvent | None:
        if self.stop_event is not None:
            return None
        self.refused_in_a_row = self.refused_in_a_row + 1 if outcome.decision == "refuse" else 0
        hard = [v.name for v in run.decision.verdicts if v.verdict is Verdict.HARD_FAIL]
        limit = self.config.gate.stop_after_refusals
        step, name = outcome.step, outcome.name
        if hard:
            shown = ", ".join(hard[:3]) + (f" (+{len(hard) - 3} more)" if len(hard) > 3 else "")
            message = (
                f"Step {step}: the live gate found {name} failing a hard limit ({shown}); "
                "training stopped early, and the best checkpoint that passed before it, if "
                "any, is promoted."
            )
        elif limit is not None and self.refused_in_a_row >= limit:
            refused = [g.outcome.name for g in self.gated[-self.refused_in_a_row :]]
            message = (
                f"Step {step}: the live gate refused {self.refused_in_a_row} checkpoints in a "
                f"row ({', '.join(refused)}; gate.stop_after_refusals = {limit}); training "
                "stopped early, and the best checkpoint that passed before them, if any, is "
                "promoted."
            )
        else:
            return None
        self.stop_event = GuardEvent(
            step=step, kind=LIVE_GATE_EVENT, severity="error", message=message, stopped=True
        )
        return self.stop_event


def _tracker_metrics(run: GateRun, seconds: float) -> dict[str, float]:
    """Every finite metric of the checkpoint and the verdict, as "gate/..." numbers."""
    out: dict[str, float] = {}
    for suite in run.report.suites:
        for m in suite.metrics:
            if m.value is not None and math.isfinite(m.value):
                out[f"gate/{suite.name}/{m.name}"] = float(m.value)
    blocking = {Verdict.HARD_FAIL, Verdict.REGRESSED, Verdict.INCONCLUSIVE}
    out["gate/promote"] = 1.0 if run.decision.decision == "promote" else 0.0
    out["gate/failed_metrics"] = float(sum(v.verdict in blocking for v in run.decision.verdicts))
    out["gate/seconds"] = round(seconds, 3)
    return out

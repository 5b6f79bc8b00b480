"""Live gating inside the Trainer: the core's checkpoint gate, called from ``on_save``.

The core builds the gate (:class:`~dpo_harness.training.plugin.CheckpointGate`) and hands it to
the plugin; this callback only decides *when* (right after the Trainer wrote
``checkpoint-N``, so the files the gate fingerprints are complete) and *how* (the in-memory
model in eval mode, without gradients, train mode restored afterwards). The gate's metrics go
through ``transformers.Trainer.log`` — the Trainer's own logging, so TensorBoard, W&B, MLflow
and every other ``report_to`` integration receive them at the checkpoint's step — and a stop
event is recorded with the guard events and ends training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpo_harness.plugins.dpo.guards import DPOGuard
from dpo_harness.training.plugin import CheckpointGate, LiveVerdict
from transformers import TrainerCallback

__all__ = ["LiveGateCallback", "trainer_logger"]


def trainer_logger(trainer: Any) -> Callable[[dict[str, float]], None]:
    """Log through ``transformers.Trainer.log`` itself, not TRL's override: DPOTrainer.log
    merges (and clears) the training metrics it has collected since the last log, which
    would move them onto the gate's record."""
    from transformers import Trainer

    def log(metrics: dict[str, float]) -> None:
        Trainer.log(trainer, dict(metrics))

    return log


class LiveGateCallback(TrainerCallback):
    """Gate each checkpoint when the Trainer has saved it; stop training on the gate's word."""

    def __init__(self, gate: CheckpointGate, guard: DPOGuard) -> None:
        self.gate = gate
        self.guard = guard
        self.verdicts: list[LiveVerdict] = []
        self.log_metrics: Callable[[dict[str, float]], None] | None = None

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        import torch
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        step = int(state.global_step)
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        if model is None or not checkpoint.is_dir():
            return control
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                verdict = self.gate.gate_checkpoint(model, checkpoint, step)
        finally:
            model.train(was_training)
        self.verdicts.append(verdict)
        if self.log_metrics is not None and verdict.metrics:
            self.log_metrics(verdict.metrics)
        if verdict.stop is not None:
            self.guard.record(verdict.stop, control)
        return control

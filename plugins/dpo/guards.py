"""Training-time guards: the seed run's failure cannot happen silently under this callback.

Every optimizer step, before the update, the trainable gradients are checked: a NaN/inf
gradient means the update is dropped (every ``.grad`` set to None, so the optimizer skips it),
the step is logged (with ``logging_nan_inf_filter=False`` its loss shows as NaN, not 0.0),
training stops, and that step's checkpoint is blocked. After the update the trainable weights
are checked too. Logged values are watched for non-finite numbers, for "not learning" (rewards
exactly 0 and loss at ln 2 after N steps, no trainable parameters, zero gradients), and for
over-optimisation (margins/β exploding early, ``logps/chosen`` collapsing, entropy leaving its
band). Each event is one sentence, appended to ``guard_events.jsonl`` as it happens.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dpo_harness.plugins.dpo.run_config import GuardSettings
from dpo_harness.suites.forensics import LN2, is_nonfinite
from dpo_harness.training.plugin import GuardEvent
from transformers import TrainerCallback

__all__ = ["DPOGuard"]

_WATCHED_PREFIXES = ("loss", "grad_norm", "rewards/", "logps/", "logits/", "eval_")
_REWARD_EPS = 1e-5
_WINDOW = 5  # training logs averaged for the likelihood-displacement check (logps are batch sums)


class DPOGuard(TrainerCallback):
    """Stops (or warns about) a DPO run that is numerically broken, idle or over-optimised."""

    def __init__(
        self, settings: GuardSettings, beta: float, events_path: Path | None = None
    ) -> None:
        self.settings = settings
        self.beta = beta
        self.events: list[GuardEvent] = []
        self._stop: GuardEvent | None = None
        self._recorded: list[GuardEvent] = []
        self.blocked_steps: set[int] = set()
        self.events_path = events_path
        self._first: dict[str, float] = {}
        self._logps: list[float] = []
        self._displaced_before = False
        self._max_steps = 0
        self.start_step = 0  # > 0 when resumed

    # ------------------------------------------------------------------ bookkeeping

    @property
    def stopped(self) -> bool:
        """A guard stopped the run (the live gate's stop is not a guard's: see ``record``)."""
        return self._stop is not None

    @property
    def stop_reason(self) -> str | None:
        return self._stop.message if self._stop is not None else None

    @property
    def stopped_by_gate(self) -> bool:
        return any(e.stopped for e in self._recorded)

    def record(self, event: GuardEvent, control: Any) -> None:
        """Add an event from outside the guard (the live gate's stop) to the run's events."""
        if event.stopped and (self.stopped or self.stopped_by_gate):
            return
        self._recorded.append(event)
        self._append(event)
        if event.stopped:
            control.should_training_stop = True

    def _append(self, event: GuardEvent) -> None:
        self.events.append(event)
        if self.events_path is not None:
            self.events_path.parent.mkdir(parents=True, exist_ok=True)
            with self.events_path.open("a", encoding="utf-8") as fh:
                fh.write(event.model_dump_json() + "\n")

    def _event(self, control: Any, step: int, kind: str, message: str, *, stop: bool) -> None:
        if stop and self.stopped:
            return  # the first cause is the cause; later symptoms would only add noise
        event = GuardEvent(
            step=step,
            kind=kind,
            severity="error" if stop else "warning",
            message=message,
            stopped=stop,
        )
        if not stop and any(e.kind == kind for e in self.events):
            return  # one warning per kind
        self._append(event)
        if stop:
            self._stop = event
            control.should_training_stop = True

    # ------------------------------------------------------------------ callbacks

    def on_train_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> Any:
        self._max_steps = int(state.max_steps or 0)
        self.start_step = int(state.global_step)
        if model is not None and sum(p.numel() for p in model.parameters() if p.requires_grad) == 0:
            self._event(
                control,
                0,
                "no_trainable_params",
                "The model has no trainable parameters: nothing can learn.",
                stop=True,
            )
        return control

    def on_pre_optimizer_step(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> Any:
        import torch

        if model is None:
            return control
        bad = []
        params = [
            (n, p) for n, p in model.named_parameters() if p.requires_grad and p.grad is not None
        ]
        for name, p in params:
            if not bool(torch.isfinite(p.grad).all()):
                bad.append(name)
        if bad:
            for _, p in params:
                p.grad = (
                    None  # the optimizer skips parameters without a gradient: the update is dropped
                )
            step = state.global_step + 1
            self.blocked_steps.add(step)
            shown = ", ".join(bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
            self._event(
                control,
                step,
                "nonfinite_gradient",
                f"Step {step}: the gradient is NaN/inf in {len(bad)} trainable tensor(s) ({shown}); the update was "
                "dropped, training stopped, and this step's checkpoint is blocked.",
                stop=True,
            )
            control.should_log = True  # log this step now: its loss must show as NaN, not as 0.0
        return control

    def on_optimizer_step(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> Any:
        import torch

        if model is None or self.stopped:
            return control
        for name, p in model.named_parameters():
            if p.requires_grad and not bool(torch.isfinite(p.detach()).all()):
                step = state.global_step + 1
                self.blocked_steps.add(step)
                self._event(
                    control,
                    step,
                    "nonfinite_weights",
                    f"Step {step}: trainable weight {name} became NaN/inf after the update; training stopped and "
                    "this step's checkpoint is blocked.",
                    stop=True,
                )
                control.should_log = True
                break
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        # DefaultFlowCallback (which runs before us) sets should_save; a bad step never saves.
        if state.global_step in self.blocked_steps or self.stopped:
            control.should_save = False
        return control

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        if not logs:
            return control
        step = int(state.global_step)
        bad = sorted(
            k for k, v in logs.items() if k.startswith(_WATCHED_PREFIXES) and is_nonfinite(v)
        )
        if bad:
            self._event(
                control,
                step,
                "nonfinite_log",
                f"Step {step}: {', '.join(bad[:4])} logged as NaN/inf — the run is numerically broken; training stopped.",
                stop=True,
            )
            return control
        if "loss" in logs:
            self._check_learning(control, step, logs)
            if self.settings.over_optimisation != "off":
                self._check_over_optimisation(control, step, logs)
        elif "eval_logps/chosen" in logs and self.settings.over_optimisation != "off":
            self._check_displacement(control, step, logs, self.settings.over_optimisation == "stop")
        return control

    # ------------------------------------------------------------------ checks on logged values

    def _check_learning(self, control: Any, step: int, logs: dict[str, Any]) -> None:
        if logs.get("grad_norm") == 0.0:
            self._event(
                control,
                step,
                "zero_gradient",
                f"Step {step}: grad_norm is exactly 0 — no gradient reaches the trainable parameters.",
                stop=True,
            )
            return
        if step < self.settings.not_learning_after_steps:
            return
        loss = logs.get("loss")
        # "Exactly 0" up to float noise: a policy that moved at all has rewards far above 1e-5.
        rewards_zero = all(
            abs(float(logs.get(k, 0.0))) < _REWARD_EPS
            for k in ("rewards/chosen", "rewards/rejected")
        )
        if isinstance(loss, (int, float)) and abs(loss - LN2) < 1e-4 and rewards_zero:
            self._event(
                control,
                step,
                "not_learning",
                f"Step {step}: the DPO loss is still ln 2 = 0.6931 with rewards exactly 0 — the policy has not moved "
                "from the reference (check the learning rate, the trainable parameters and the data).",
                stop=True,
            )

    def _check_over_optimisation(self, control: Any, step: int, logs: dict[str, Any]) -> None:
        stop = self.settings.over_optimisation == "stop"
        if (
            "entropy" in logs
            and "entropy" not in self._first
            and isinstance(logs["entropy"], (int, float))
        ):
            self._first["entropy"] = float(logs["entropy"])
        margins = logs.get("rewards/margins")
        early = self._max_steps == 0 or step <= self.settings.early_fraction * self._max_steps
        if (
            isinstance(margins, (int, float))
            and early
            and margins / self.beta > self.settings.max_margin_over_beta
        ):
            self._event(
                control,
                step,
                "over_optimisation",
                f"Step {step}: rewards/margins/β = {margins / self.beta:.0f} this early — the policy is running away "
                "from the reference (lower the learning rate or raise β).",
                stop=stop,
            )
        self._check_displacement(control, step, logs, stop)
        ent = logs.get("entropy")
        first_ent = self._first.get("entropy")
        band = self.settings.entropy_band
        if (
            isinstance(ent, (int, float))
            and first_ent
            and math.isfinite(ent)
            and not (first_ent / band <= ent <= first_ent * band)
        ):
            self._event(
                control,
                step,
                "entropy_band",
                f"Step {step}: token entropy {ent:.2f} left its band around the start ({first_ent:.2f} ×/÷ {band:g}) — "
                "the output distribution is collapsing or flattening.",
                stop=stop,
            )

    def _check_displacement(
        self, control: Any, step: int, logs: dict[str, Any], stop: bool
    ) -> None:
        """logps/chosen falling far below where it started: the chosen answers become unlikely.

        On a fixed eval set (``eval_logps/chosen``) one value is comparable with the next. On the
        training log each value is a sum over a different batch (it jumps with batch length), so
        means of ``_WINDOW`` logs are compared and the drop must hold on two consecutive logs.
        """
        if isinstance(logs.get("eval_logps/chosen"), (int, float)):
            now = float(logs["eval_logps/chosen"])
            first = self._first.setdefault("eval_logps/chosen", now)
            confirmed = first - now > self.settings.logps_drop_nats
        elif isinstance(logs.get("logps/chosen"), (int, float)):
            self._logps.append(float(logs["logps/chosen"]))
            if len(self._logps) < 2 * _WINDOW:
                return
            first = sum(self._logps[:_WINDOW]) / _WINDOW
            now = sum(self._logps[-_WINDOW:]) / _WINDOW
            drop = first - now
            dropped = drop > self.settings.logps_drop_nats and drop > 0.25 * abs(first)
            confirmed = dropped and self._displaced_before
            self._displaced_before = dropped
        else:
            return
        if confirmed:
            self._event(
                control,
                step,
                "likelihood_displacement",
                f"Step {step}: logps/chosen fell from {first:.1f} to {now:.1f} — the chosen answers themselves are "
                "becoming unlikely (likelihood displacement).",
                stop=stop,
            )

"""Guarded DPO training with TRL's ``DPOTrainer`` and PEFT LoRA.

The run: load and preflight the preference data, load the model with the harness loader (any
checkpoint form), build a ``DPOConfig`` with precision and ``logging_nan_inf_filter=False`` set
explicitly, train with :class:`~dpo_harness.plugins.dpo.guards.DPOGuard`, then save the final
adapter with its ``trainer_state.json`` (so the numerical suite's log forensics can read it), the
full log history, the guard events and the training curves. A run stopped by a guard saves no
final model. ``resume=True`` continues from the last checkpoint on disk (blocked steps are never
saved, so that is the last good one). Works unchanged under ``torchrun``/``accelerate launch``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dpo_harness.errors import BadInputError, HarnessError
from dpo_harness.files import atomic_write_text, exchange_paths, writing
from dpo_harness.launcher import is_main_process, world_size
from dpo_harness.plugins.dpo.curves import plot_curves
from dpo_harness.plugins.dpo.guards import DPOGuard
from dpo_harness.plugins.dpo.live import LiveGateCallback, trainer_logger
from dpo_harness.plugins.dpo.preflight import PreflightReport, load_preference_rows, preflight
from dpo_harness.plugins.dpo.run_config import DEMO_PREFERENCES, DPORunConfig
from dpo_harness.schema import Finding
from dpo_harness.training.plugin import (
    CheckpointGate,
    CheckpointRecord,
    PreflightSummary,
    TrainingResult,
)

__all__ = ["build_dpo_config", "dpo_config_kwargs", "is_main_process", "load_data", "run_dpo"]


def _source(path: str) -> str:
    return str(DEMO_PREFERENCES) if path == "demo" else path


def _train_rows(config: DPORunConfig) -> list[dict[str, Any]]:
    ds = config.dataset
    return load_preference_rows(
        _source(ds.path), split=ds.split, data_files_split_field=ds.split_field
    )


def _eval_rows(config: DPORunConfig) -> list[dict[str, Any]] | None:
    ds = config.dataset
    if ds.eval_path is None and ds.eval_split is None:
        return None
    path = _source(ds.eval_path or ds.path)
    field = ds.split_field if ds.eval_path is None else None
    return load_preference_rows(path, split=ds.eval_split, data_files_split_field=field)


def load_data(
    config: DPORunConfig, tokenizer: Any, *, skip_bad_rows: bool
) -> tuple[
    list[dict[str, Any]], list[dict[str, Any]] | None, PreflightReport, PreflightReport | None
]:
    """Load the train (and eval) rows and run the preflight on each."""
    skip = skip_bad_rows or config.skip_bad_rows
    max_len = config.training.max_length
    train_raw = _train_rows(config)
    train, train_report = preflight(
        train_raw,
        tokenizer,
        max_length=max_len,
        skip_bad_rows=skip,
        source=f"{config.dataset.path} [{config.dataset.split}]",
    )
    _require_trainable(train_report, config)
    eval_raw = _eval_rows(config)
    if eval_raw is None:
        return train, None, train_report, None
    ev, ev_report = preflight(
        eval_raw,
        tokenizer,
        max_length=max_len,
        skip_bad_rows=skip,
        source=f"{config.dataset.eval_path or config.dataset.path} [{config.dataset.eval_split}]",
    )
    return train, ev, train_report, ev_report


def _require_trainable(report: PreflightReport, config: DPORunConfig) -> None:
    """Refuse, before any training, data that would leave TRL no row to train on."""
    trainable = report.n_usable - report.dropped_rows
    if trainable > 0:
        return
    raise BadInputError(
        f"no trainable rows in {config.dataset.path}: {report.n_rows} rows, {report.n_usable} "
        f"well-formed, {report.dropped_rows} of them with a prompt of at least "
        f"training.max_length = {config.training.max_length} tokens (TRL drops those)",
        "raise training.max_length, shorten the prompts, or fix the rows named by "
        "`dpo-harness preflight`",
    )


def summarise_preflight(train: PreflightReport, ev: PreflightReport | None) -> PreflightSummary:
    findings = [f"train: {f}" for f in train.findings]
    if ev is not None:
        findings += [f"eval: {f}" for f in ev.findings]
    return PreflightSummary(
        n_rows=train.n_rows + (ev.n_rows if ev else 0),
        n_usable=train.n_usable + (ev.n_usable if ev else 0),
        n_skipped=len(train.skipped_rows) + (len(ev.skipped_rows) if ev else 0),
        findings=findings,
        details={
            "train": train.model_dump(mode="json"),
            "eval": ev.model_dump(mode="json") if ev else None,
        },
    )


def _load_model(config: DPORunConfig) -> tuple[Any, Any, Any]:
    """(model, tokenizer, dtype) for training; an existing adapter is loaded trainable."""
    import torch
    from dpo_harness.evaluation.loading import load_checkpoint, resolve_checkpoint

    dtype = "bfloat16" if config.training.precision == "bf16" else "float32"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    spec = resolve_checkpoint(config.model, base_override=config.base)
    if spec.is_adapter:
        from peft import PeftModel

        base = load_checkpoint(spec.base_ref, device=device, dtype=dtype)
        model = PeftModel.from_pretrained(base.model, str(spec.path), is_trainable=True)
        return model, base.tokenizer, base.dtype
    loaded = load_checkpoint(config.model, device=device, dtype=dtype)
    loaded.tokenizer.padding_side = "right"  # training pads on the right (TRL's default)
    return loaded.model, loaded.tokenizer, loaded.dtype


def build_dpo_config(config: DPORunConfig, *, has_eval: bool, progress: bool) -> Any:
    """DPOConfig with every default that bit the seed run set explicitly."""
    from trl import DPOConfig

    kwargs = dpo_config_kwargs(config, has_eval=has_eval, progress=progress)
    kwargs.update(config.training.extra_args)  # names checked when read; none of ours
    _check_trackers(config.training.report_to)
    try:
        return DPOConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise BadInputError(
            f"TRL's DPOConfig refused the run's settings: {(str(exc).splitlines() or [''])[0]}",
            "check training.extra_args and training.report_to in the run config",
        ) from None


def dpo_config_kwargs(config: DPORunConfig, *, has_eval: bool, progress: bool) -> dict[str, Any]:
    """The DPOConfig arguments the run config sets (``training.extra_args`` adds the rest)."""
    import torch

    t = config.training
    cuda = torch.cuda.is_available()
    if t.precision == "bf16" and not (cuda and torch.cuda.is_bf16_supported()):
        raise BadInputError(
            "training.precision is bf16 but this machine has no bf16-capable GPU",
            "set training.precision: fp32 (CPU) or run on a GPU with bf16 support",
        )
    if t.precision == "fp16" and not cuda:
        raise BadInputError(
            "training.precision is fp16 but there is no CUDA device", "set training.precision: fp32"
        )
    distributed = world_size() > 1
    kwargs: dict[str, Any] = dict(
        output_dir=str(config.output_dir),
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        optim=t.optim,
        warmup_steps=t.warmup_steps,
        beta=t.beta,
        loss_type=list(t.loss_type),
        loss_weights=t.loss_weights,
        max_length=t.max_length,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=t.eval_steps or t.save_steps,
        max_grad_norm=t.max_grad_norm,
        # Explicit, always: TRL defaults to bf16=True (raises on CPU) and the Trainer's NaN filter
        # turns every NaN step into a logged 0.0 — the seed run's "loss = 0.0".
        bf16=t.precision == "bf16",
        fp16=t.precision == "fp16",
        use_cpu=not cuda,
        logging_nan_inf_filter=False,
        activation_checkpointing=t.activation_checkpointing,
        gradient_checkpointing=t.activation_checkpointing,
        seed=t.seed,
        data_seed=t.seed,
        report_to=list(t.report_to),
        disable_tqdm=not progress,
        save_only_model=False,
        dataloader_num_workers=0,
    )
    if t.max_steps is not None:
        kwargs["max_steps"] = t.max_steps
    else:
        kwargs["num_train_epochs"] = t.num_train_epochs
    if distributed and not cuda:
        kwargs["ddp_backend"] = "gloo"
    return kwargs


def _check_trackers(report_to: list[str]) -> None:
    """A tracker that is named but not installed is a config error, before any training."""
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    available = set(get_available_reporting_integrations())
    missing = [r for r in report_to if r not in ("all", "none") and r not in available]
    if missing:
        raise BadInputError(
            f"training.report_to names {', '.join(missing)}, which is not installed",
            f"pip install {' '.join(missing)} (or remove it from training.report_to)",
        )


def _peft_config(config: DPORunConfig, model: Any) -> Any:
    if config.lora is None or hasattr(model, "peft_config"):
        return None  # full fine-tune, or continuing an existing adapter
    from peft import LoraConfig

    lo = config.lora
    return LoraConfig(
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=lo.target_modules,
        use_rslora=lo.use_rslora,
        task_type="CAUSAL_LM",
    )


def _quiet_progress(trainer: Any) -> None:
    """Keep the Trainer's progress bar, show loss and reward margin on it, but stop it printing
    every log record as a raw dict (the full log is kept in log_history.json)."""
    from transformers.trainer_callback import ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if self.training_bar is not None and logs and "loss" in logs:
                shown = {k: logs[k] for k in ("loss", "rewards/margins") if k in logs}
                self.training_bar.set_postfix(
                    {k: f"{v:.4g}" for k, v in shown.items()}, refresh=False
                )

    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(BarOnly())


def _is_complete(checkpoint: Path) -> bool:
    """A checkpoint the Trainer finished writing.

    ``Trainer._save_checkpoint`` writes the weights, then optimizer, scheduler and RNG state,
    and ``trainer_state.json`` last; a process killed on the way leaves a directory without a
    readable ``trainer_state.json`` for this step (docs/safety.md).
    """
    try:
        step = int(checkpoint.name.rsplit("-", 1)[-1])
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    has_weights = any(checkpoint.glob("*.safetensors")) or any(checkpoint.glob("*.bin"))
    return isinstance(state, dict) and state.get("global_step") == step and has_weights


def _checkpoint_dirs(output_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for p in output_dir.glob("checkpoint-*"):
        suffix = p.name.removeprefix("checkpoint-")
        if p.is_dir() and suffix.isdigit():
            out.append((int(suffix), p))
    return sorted(out)


def _checkpoints(output_dir: Path) -> list[CheckpointRecord]:
    """The complete checkpoints of a run, oldest first (a half-written one is never gated)."""
    return [
        CheckpointRecord(path=p, step=step)
        for step, p in _checkpoint_dirs(output_dir)
        if _is_complete(p)
    ]


def set_aside_incomplete(
    output_dir: Path, log: Callable[[str], None], *, said_by: str = "resume"
) -> Path | None:
    """Move half-written checkpoints out of the way (kept, renamed) and return the newest complete one."""
    newest = None
    for step, p in _checkpoint_dirs(output_dir):
        if _is_complete(p):
            newest = p
            continue
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"{time.time_ns() // 1000 % 1_000_000:06d}"
        aside = p.with_name(f"incomplete-{p.name}-{stamp}")
        os.replace(p, aside)
        log(
            f"{said_by}: {p.name} was not completely written (the run was interrupted while saving "
            f"step {step}); kept as {aside.name}, not used"
        )
    return newest


def _guarded_saves(trainer_cls: type) -> type:
    """``trainer_cls`` whose checkpoint saves fail as a one-line error, not a torch traceback."""

    class GuardedSaves(trainer_cls):  # type: ignore[misc]
        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            with writing(folder, "the training checkpoint"):
                super()._save_checkpoint(model, trial)

    GuardedSaves.__name__ = GuardedSaves.__qualname__ = trainer_cls.__name__
    return GuardedSaves


def _already_done(checkpoint: Path) -> bool:
    """True when ``checkpoint`` is the run's last step. The Trainer resumed from it anyway would
    train one step past max_steps (transformers 5 checks the stop condition only after a step)."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        return int(state["global_step"]) >= int(state["max_steps"]) > 0
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _restore_finished(trainer: Any, checkpoint: Path) -> None:
    """Load a finished run's last checkpoint (weights and state) without training a step."""
    from transformers import TrainerState

    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    trainer._load_from_checkpoint(str(checkpoint))


def _save_final(trainer: Any, out_dir: Path) -> Path:
    """Save the final model into a temporary directory, then swap it in as ``final``.

    A kill while saving leaves the temporary directory (removed by the next run), never a
    half-written ``final/`` that a later command would gate; a kill between the two renames of
    the fallback swap leaves the earlier ``final/`` aside, and the next run puts it back.
    """
    import tempfile

    final = out_dir / "final"
    replaced = sorted(out_dir.glob(".final.replaced-*"))
    if not final.exists() and replaced:
        os.replace(replaced.pop(), final)
    for leftover in [*out_dir.glob(".final.saving-*"), *replaced]:
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".final.saving-", dir=out_dir))
    try:
        with writing(final, "the final model"):
            os.chmod(tmp, 0o755)
            trainer.save_model(str(tmp))
            trainer.state.save_to_json(str(tmp / "trainer_state.json"))
            if not final.exists():
                os.replace(tmp, final)
                return final
            if exchange_paths(tmp, final):
                old = tmp  # the earlier final/ now lives at the temporary name
            else:
                old = out_dir / f".final.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
                os.replace(final, old)
                os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def run_dpo(
    config: DPORunConfig,
    *,
    resume: bool = False,
    skip_bad_rows: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    callbacks: Sequence[Any] = (),
    live_gate: CheckpointGate | None = None,
) -> TrainingResult:
    """Train; a numerical failure is reported as ``stopped`` with a reason, never hidden.

    With ``live_gate`` every checkpoint is gated when it is saved (:mod:`.live`); the gate may
    end training early (``stopped_by_gate``), which is not a failure of training.
    """
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import datasets
    from datasets import Dataset

    if not progress:
        datasets.disable_progress_bars()  # "--quiet" means quiet: no map/filter bars either
    from trl import DPOTrainer

    started = time.perf_counter()
    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer, dtype = _load_model(config)
    train_rows, eval_rows, train_report, eval_report = load_data(
        config, tokenizer, skip_bad_rows=skip_bad_rows
    )
    if is_main_process():
        for f in summarise_preflight(train_report, eval_report).findings:
            log(f"preflight: {f}")
    args = build_dpo_config(config, has_eval=bool(eval_rows), progress=progress)
    events_path = out_dir / "guard_events.jsonl"
    if is_main_process() and (not resume or not events_path.exists()):
        # Written even when no guard fires: an empty file says "checked, nothing seen".
        atomic_write_text(events_path, "")
    guard = DPOGuard(
        config.guards,
        beta=config.training.beta,
        events_path=events_path if is_main_process() else None,
    )
    live = LiveGateCallback(live_gate, guard) if live_gate is not None else None
    trainer = _guarded_saves(DPOTrainer)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=_peft_config(config, model),
        callbacks=[guard, *([live] if live is not None else []), *callbacks],
    )
    if live is not None:
        live.log_metrics = trainer_logger(trainer)
    if progress:
        _quiet_progress(trainer)
    else:
        # disable_tqdm makes the Trainer print every log record as a raw dict instead; --quiet
        # means quiet (the full log is kept in log_history.json).
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    resume_from = None
    if resume:
        # Every process finds the same newest complete checkpoint; only the main one renames
        # the incomplete ones (which does not change which checkpoints are complete).
        if is_main_process():
            newest = set_aside_incomplete(out_dir, log)
        else:
            complete = _checkpoints(out_dir)
            newest = complete[-1].path if complete else None
        if newest is None:
            log(f"resume: no complete checkpoint in {out_dir}; training starts from step 0")
        else:
            resume_from = str(newest)
            log(f"resuming from {newest}")
    t_train = time.perf_counter()
    try:
        if resume_from is not None and _already_done(Path(resume_from)):
            _restore_finished(trainer, Path(resume_from))
            log(f"resume: {Path(resume_from).name} already reached max_steps; nothing to train")
        else:
            trainer.train(resume_from_checkpoint=resume_from)
    except HarnessError as exc:  # a checkpoint that could not be written (see _guarded_saves)
        if is_main_process():
            set_aside_incomplete(out_dir, log, said_by="train")  # kept, never picked by --resume
        raise BadInputError(
            exc.cause,
            "free some disk space (or fix the permissions), then continue with --resume: it "
            "starts from the last complete checkpoint; the half-written one was set aside",
        ) from exc
    train_seconds = time.perf_counter() - t_train
    steps = int(trainer.state.global_step)
    checkpoints = _checkpoints(out_dir)
    findings = [Finding(severity=e.severity, message=e.message) for e in guard.events]
    curves: list[Path] = []
    history_path = out_dir / "log_history.json"
    if is_main_process():
        atomic_write_text(history_path, json.dumps(trainer.state.log_history, indent=1) + "\n")
        curves = plot_curves(
            trainer.state.log_history, out_dir / "curves.png", title=f"DPO: {config.model}"
        )
        if not guard.stopped:
            final = _save_final(trainer, out_dir)
            checkpoints.append(CheckpointRecord(path=final, step=steps, final=True))
    done = max(steps - guard.start_step, 1)
    # Steps only: the live gates paused training for their own time (said separately).
    train_seconds -= sum(v.seconds for v in live.verdicts) if live is not None else 0.0
    return TrainingResult(
        output_dir=out_dir,
        checkpoints=checkpoints,
        stopped=guard.stopped,
        stop_reason=guard.stop_reason,
        stopped_by_gate=guard.stopped_by_gate,
        events=list(guard.events),
        findings=findings,
        steps_completed=steps,
        seconds=round(time.perf_counter() - started, 2),
        seconds_per_step=round(train_seconds / done, 4),
        effective_dtype=str(dtype).removeprefix("torch."),
        log_history_path=history_path if is_main_process() else None,
        curves=curves,
    )

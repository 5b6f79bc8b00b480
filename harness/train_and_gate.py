"""train-and-gate: preflight → baseline → guarded training → evaluate and gate every checkpoint → promote.

The best checkpoint that passes the gate (by the run's declared primary metric) is promoted; if
none passes, or a guard stopped training, nothing is promoted and the summary says why. Under
``torchrun``/``accelerate launch`` every process trains; only the main process prepares the
baseline and evaluates, gates and promotes.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from tabulate import tabulate

from .baseline import (
    baselines_dir,
    find_baseline,
    load_baseline,
    replace_baseline,
    slug_for,
)
from .distributed import from_env, is_main_process
from .errors import BadInputError
from .gate import GateDecision
from .gating import finish, run_gate
from .io import atomic_write_text, write_model_file
from .plugin import PreflightSummary, RunConfigBase, TrainingPlugin, TrainingResult
from .report import format_value
from .schema import Direction, EvalConfig

__all__ = ["CandidateOutcome", "RunSummary", "render_summary", "train_and_gate"]


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


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["1"] = "1"
    created_at: str
    outcome: Literal["promoted", "refused", "stopped"]
    reason: str
    config: dict[str, Any]
    preflight: PreflightSummary | None = None
    baseline_path: Path | None = None
    baseline_created: bool = False
    training: TrainingResult | None = None
    candidates: list[CandidateOutcome] = Field(default_factory=list)
    promoted: str | None = None
    promoted_to: Path | None = None
    timings: dict[str, float] = Field(default_factory=dict)


def _eval_config(config: RunConfigBase, checkpoint: str | None) -> EvalConfig:
    e = config.evaluation
    return EvalConfig(
        checkpoint=checkpoint,
        suites=list(e.suites),
        batch_size=e.batch_size,
        device=e.device,
        dtype=e.dtype,
        generation=e.generation,
    )


def _base_ref(config: RunConfigBase) -> str:
    from .loading import resolve_checkpoint

    spec = resolve_checkpoint(config.model, base_override=getattr(config, "base", None))
    return spec.base_ref if spec.is_adapter and spec.base_ref else config.model


def ensure_baseline(config: RunConfigBase, *, log: Callable[[str], None]) -> tuple[Path, bool]:
    """The stored baseline of the run's base model; created (with its report) when missing."""
    from .cli_baseline import evaluate_base
    from .loading import checkpoint_fingerprint, resolve_checkpoint

    directory = baselines_dir(config.gate.baselines_dir)
    base = _base_ref(config)
    fingerprint = checkpoint_fingerprint(resolve_checkpoint(base))
    try:
        path = find_baseline(directory, base_ref=base, base_fingerprint=fingerprint)
        return path, False
    except BadInputError as exc:
        if "no stored baseline" not in exc.cause:
            raise
    log(f"no baseline for {base} in {directory}: creating it")
    report = evaluate_base(
        _eval_config(config, base), quiet=True, command="train-and-gate (baseline)"
    )
    path = replace_baseline(report, directory, reason="created by train-and-gate").path
    md_lines = [f"# Baseline created for {base}", "", f"- file: {path}", ""]
    for s in report.suites:
        for m in s.metrics:
            md_lines.append(f"- {s.name}::{m.name} = {format_value(m.value, m.unit)}")
    atomic_write_text(
        directory / "reports" / f"{slug_for(base)}-created.md", "\n".join(md_lines) + "\n"
    )
    return path, True


def _primary(decision_report: Any, metric: str) -> tuple[float | None, Direction]:
    suite_name, _, metric_name = metric.partition("::")
    try:
        m = decision_report.suite(suite_name).metric(metric_name)
    except KeyError:
        raise BadInputError(
            f"gate.primary_metric {metric!r} is not reported by the evaluated suites",
            "use SUITE::METRIC, e.g. adtech::mc_accuracy (see `dpo-harness suites`)",
        ) from None
    return m.value, m.direction


def _candidates(result: TrainingResult) -> list[tuple[str, Path, int, bool]]:
    final = next((c for c in result.checkpoints if c.final), None)
    out = []
    for c in result.checkpoints:
        if c.final:
            continue
        if final is not None and c.step == final.step:
            continue  # same weights as the final model: evaluate once
        out.append((c.path.name, c.path, c.step, False))
    if final is not None:
        out.append(("final", final.path, final.step, True))
    return out


def train_and_gate(
    plugin: TrainingPlugin,
    config: RunConfigBase,
    *,
    resume: bool = False,
    skip_bad_rows: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    extra_callbacks: tuple[Any, ...] = (),
) -> RunSummary:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    out_dir = Path(config.output_dir)
    main = is_main_process()
    suite_name = config.gate.primary_metric.partition("::")[0]
    if suite_name not in config.evaluation.suites:
        raise BadInputError(
            f"gate.primary_metric {config.gate.primary_metric!r} belongs to suite {suite_name!r}, "
            f"which evaluation.suites ({', '.join(config.evaluation.suites)}) does not run",
            "add the suite to evaluation.suites or choose another primary metric",
        )
    preflight = baseline_path = None
    created = False
    if main:
        from .promote import check_promotable

        check_promotable(config.gate.promote_to or out_dir / "promoted")
        log("preflight: checking the preference data")
        preflight = plugin.preflight(config, skip_bad_rows=skip_bad_rows)
        timings["preflight"] = round(time.perf_counter() - t0, 2)
        t = time.perf_counter()
        baseline_path, created = ensure_baseline(config, log=log)
        stored = load_baseline(baseline_path)
        stored.check_key(
            stored.key.model_copy(update={"suites": _suite_identities(config)}),
            list(config.evaluation.suites),
        )
        timings["baseline"] = round(time.perf_counter() - t, 2)
        log(f"baseline: {baseline_path}{' (created)' if created else ''}")
    t = time.perf_counter()
    kwargs: dict[str, Any] = dict(
        resume=resume, skip_bad_rows=skip_bad_rows, progress=progress, log=log
    )
    if extra_callbacks:
        kwargs["extra_callbacks"] = extra_callbacks
    training = plugin.train(config, **kwargs)
    timings["train"] = round(time.perf_counter() - t, 2)
    summary = RunSummary(
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        outcome="stopped",
        reason="",
        config=json.loads(config.model_dump_json()),
        preflight=preflight,
        baseline_path=baseline_path,
        baseline_created=created,
        training=training,
        timings=timings,
    )
    # Under torchrun/accelerate every process gates: each answers a share of the requests.
    dist = from_env()
    stopped, stop_reason, candidates = training.stopped, training.stop_reason, _candidates(training)
    if dist is not None:
        # The main process alone knows the baseline and saved the checkpoints; a guard may in
        # principle stop one rank only. Agree on all of it before anyone loads a model.
        views = dist.all_gather((baseline_path, stopped, stop_reason, candidates))
        baseline_path, _, _, candidates = views[0]
        stopped = any(v[1] for v in views)
        stop_reason = next((v[2] for v in views if v[1]), stop_reason)
    if stopped:
        summary.reason = f"training was stopped, nothing is promoted: {stop_reason}"
        return _write(summary, out_dir, t0) if main else summary

    t = time.perf_counter()
    assert baseline_path is not None
    outcomes: list[CandidateOutcome] = []
    runs = {}
    primary_direction = Direction.HIGHER
    say = log if main else (lambda _msg: None)
    for name, path, step, final in candidates:
        say(f"gating {name} (step {step})")
        run = run_gate(
            _eval_config(config, str(path)),
            baseline_file=baseline_path,
            policy=config.gate.policy,
            out_dir=out_dir / "gate" / name,
            quiet=True,
            distributed=dist,
        )
        value, primary_direction = _primary(run.report, config.gate.primary_metric)
        d: GateDecision = finish(run, None, None, log=log) if main else run.decision
        runs[name] = run
        outcomes.append(
            CandidateOutcome(
                name=name,
                path=path,
                step=step,
                final=final,
                decision=d.decision,
                primary_metric=config.gate.primary_metric,
                primary_value=value,
                reasons=d.reasons,
                gate_dir=run.out_dir,
            )
        )
    timings["gate"] = round(time.perf_counter() - t, 2)
    summary.candidates = outcomes
    if not main:
        summary.reason = "not the main process: it trained and evaluated its share"
        return summary
    passing = [o for o in outcomes if o.decision == "promote"]
    if not passing:
        summary.outcome = "refused"
        summary.reason = f"none of the {len(outcomes)} checkpoint(s) passed the gate"
        return _write(summary, out_dir, t0)
    sign = -1.0 if primary_direction is Direction.LOWER else 1.0
    best = max(
        passing,
        key=lambda o: (sign * (o.primary_value if o.primary_value is not None else -1e300), o.step),
    )
    target = config.gate.promote_to or out_dir / "promoted"
    finish(runs[best.name], target, best.path, log=log)
    summary.outcome = "promoted"
    summary.promoted = best.name
    summary.promoted_to = target
    summary.reason = (
        f"{best.name} (step {best.step}) passed the gate with the best {best.primary_metric} "
        f"= {format_value(best.primary_value)}; promoted to {target}"
    )
    return _write(summary, out_dir, t0)


def _suite_identities(config: RunConfigBase) -> dict[str, Any]:
    from .schema import SuiteIdentity
    from .suite import create_suite

    return {
        name: SuiteIdentity(version=s.version, data_hash=s.data_hash())
        for name in config.evaluation.suites
        for s in [create_suite(name)]
    }


def render_summary(summary: RunSummary) -> str:
    rows = [
        [
            o.name,
            o.step,
            o.decision.upper() if o.decision == "refuse" else o.decision,
            format_value(o.primary_value),
            "; ".join(o.reasons)[:160] if o.decision == "refuse" else "",
        ]
        for o in summary.candidates
    ]
    lines = []
    tr = summary.training
    if tr is not None:
        lines.append(
            f"training: {tr.steps_completed} steps in {tr.seconds:.0f} s "
            f"({tr.seconds_per_step or 0:.3f} s/step, {tr.effective_dtype}); "
            + ("STOPPED: " + (tr.stop_reason or "") if tr.stopped else "completed")
        )
        for e in tr.events:
            if not e.stopped:
                lines.append(f"  guard warning at step {e.step}: {e.message}")
    if rows:
        metric = summary.candidates[0].primary_metric
        lines += ["", tabulate(rows, headers=["checkpoint", "step", "gate", metric, "why refused"])]
    lines += ["", f"{summary.outcome.upper()}: {summary.reason}"]
    if summary.timings:
        lines.append("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in summary.timings.items()))
    return "\n".join(lines)


def _write(summary: RunSummary, out_dir: Path, t0: float) -> RunSummary:
    summary.timings["total"] = round(time.perf_counter() - t0, 2)
    write_model_file(out_dir / "run_summary.json", summary)
    atomic_write_text(
        out_dir / "run_summary.md",
        "# train-and-gate\n\n```\n" + render_summary(summary) + "\n```\n",
    )
    return summary

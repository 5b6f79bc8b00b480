"""train-and-gate: preflight → baseline → guarded training → evaluate and gate every checkpoint → promote.

The best checkpoint that passes the gate (by the run's declared primary metric) is promoted; if
none passes, or a guard stopped training, nothing is promoted and the summary says why. With
``gate.live`` each checkpoint is gated while training runs (:mod:`dpo_harness.training.live`),
training may stop early on the gate's word, and afterwards only what was not gated yet is
(a final model whose weights were gated as a checkpoint is not gated again). Under
``torchrun``/``accelerate launch`` every process trains and gates its share of each checkpoint;
only the main process prepares the baseline, publishes the gate results and promotes. Every
checkpoint goes through the one gate pipeline (:mod:`dpo_harness.gate.pipeline`) and is
published once; names, margins and the promote target are checked before training starts.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from dpo_harness.errors import BadInputError, BaselineNotFoundError
from dpo_harness.evaluation.evaluate import make_suites
from dpo_harness.evaluation.loading import (
    ResolvedModel,
    hub_id_of,
    resolve_model,
    tokenizer_identity,
)
from dpo_harness.evaluation.measure import MEASUREMENT_VERSION
from dpo_harness.evaluation.report import format_value
from dpo_harness.files import atomic_write_text, write_model_file
from dpo_harness.gate.baseline import (
    Baseline,
    CompatibilityKey,
    baselines_dir,
    check_writable,
    find_baseline,
    load_baseline,
    replace_baseline,
    slug_for,
)
from dpo_harness.gate.decision import GateDecision
from dpo_harness.gate.pipeline import (
    GateRun,
    execute,
    prepare,
    publish,
    publish_promotion,
    read_policy_file,
)
from dpo_harness.gate.policy_file import BaseFailsHardLimitsError, check_base
from dpo_harness.gate.promotion import check_promotable
from dpo_harness.launcher import Distributed, apply_threads, is_main_process, process_group
from dpo_harness.schema import Direction, EvalConfig, EvalSettings
from dpo_harness.training.live import CandidateOutcome, GatedCheckpoint, LiveGate, outcome_of
from dpo_harness.training.plugin import (
    PreflightSummary,
    RunConfigBase,
    TrainingPlugin,
    TrainingResult,
)
from pydantic import BaseModel, ConfigDict, Field
from tabulate import tabulate

__all__ = [
    "CandidateOutcome",
    "RunSummary",
    "check_run_config",
    "ensure_baseline",
    "render_summary",
    "train_and_gate",
]


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


def _run_base(config: RunConfigBase) -> ResolvedModel:
    """The run's base model: an adapter's base (or ``base:``), else the model it trains."""
    model = resolve_model(
        config.model, base_override=config.base, allow_pickle=config.evaluation.allow_pickle
    )
    return model.base if model.base is not None else model


def ensure_baseline(
    config: RunConfigBase, base: ResolvedModel, *, log: Callable[[str], None], progress: bool
) -> tuple[Path, bool]:
    """The stored baseline of the run's base model; created (with its report) when missing."""
    from dpo_harness.evaluation.evaluate import evaluate_base

    directory = baselines_dir(config.gate.baselines_dir)
    try:
        path = find_baseline(directory, base_ref=base.ref, base_fingerprint=base.fingerprint)
        return path, False
    except BaselineNotFoundError:
        pass
    check_writable(directory)
    rules = read_policy_file(config.gate.policy_file, make_suites(config.evaluation))
    log(f"no baseline for {base.ref} in {directory}: creating it")
    report = evaluate_base(
        config.evaluation,
        base,
        progress=progress,
        log=log if progress else None,
        command="train-and-gate (baseline)",
    )
    try:
        check_base(report, rules, max_new_tokens=config.evaluation.generation.max_new_tokens)
    except BaseFailsHardLimitsError as exc:
        log("a policy file that accepts this base as it is (review it first):\n" + exc.suggestion)
        raise
    path = replace_baseline(
        report, directory, reason="created by train-and-gate", policy=rules
    ).path
    md_lines = [f"# Baseline created for {base.ref}", "", f"- file: {path}", ""]
    for s in report.suites:
        for m in s.metrics:
            md_lines.append(f"- {s.name}::{m.name} = {format_value(m.value, m.unit)}")
    atomic_write_text(
        directory / "reports" / f"{slug_for(base.ref)}-created.md", "\n".join(md_lines) + "\n"
    )
    return path, True


def base_model_id(config: RunConfigBase, base: ResolvedModel) -> str | None:
    """The base's hub id, for the promoted model's card and adapter_config.json."""
    return config.gate.base_model_id or hub_id_of(base.ref)


def model_name(config: RunConfigBase, target: Path) -> str:
    """The promoted model's name on its card: configured, else the promote directory's (when
    it is not the default ``promoted``), else the run's directory's."""
    if config.gate.model_name:
        return config.gate.model_name
    return target.name if target.name != "promoted" else Path(config.output_dir).name


def check_run_config(config: RunConfigBase, plugin: TrainingPlugin | None = None) -> None:
    """Everything about the gate part of a run config that can be refused before training."""
    if config.gate.live and plugin is not None and not plugin.supports_live_gate:
        raise BadInputError(
            f"gate.live: the {plugin.name!r} training plugin cannot gate checkpoints while it "
            "trains",
            "set gate.live: false (every checkpoint is then gated after training)",
        )
    suites = make_suites(config.evaluation)  # unknown suite names, bad data files
    names = {f"{s.name}::{spec.name}": spec for s in suites for spec in s.metric_specs()}
    primary = config.gate.primary_metric
    suite_name = primary.partition("::")[0]
    if suite_name not in [s.name for s in suites]:
        raise BadInputError(
            f"gate.primary_metric {primary!r} belongs to suite {suite_name!r}, "
            f"which evaluation.suites ({', '.join(s.name for s in suites)}) does not run",
            "add the suite to evaluation.suites or choose another primary metric",
        )
    if primary not in names:
        raise BadInputError(
            f"gate.primary_metric {primary!r} is not a metric of the evaluated suites",
            "use SUITE::METRIC, e.g. adtech::mc_accuracy (see `dpo-harness suites`)",
        )
    if names[primary].direction not in (Direction.HIGHER, Direction.LOWER):
        raise BadInputError(
            f"gate.primary_metric {primary!r} has no better direction ({names[primary].direction.value})",
            "choose a metric where higher or lower is better",
        )
    read_policy_file(config.gate.policy_file, suites)  # a bad policy file fails before training
    unknown = sorted(set(config.gate.policy.margins) - set(names))
    if unknown:
        raise BadInputError(
            f"gate.policy.margins names metric(s) the suites do not report: {', '.join(unknown)}",
            "use SUITE::METRIC as listed by `dpo-harness suites`",
        )


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
    callbacks: Sequence[Any] = (),
) -> RunSummary:
    """Preflight → baseline → guarded training → gate every checkpoint → promote the best."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    out_dir = Path(config.output_dir)
    main = is_main_process()
    target = config.gate.promote_to or out_dir / "promoted"
    # Refuse what can be refused before minutes of training: names, margins, the promote target.
    check_run_config(config, plugin)
    check_promotable(target)
    apply_threads(config.threads)
    base = _run_base(config)
    if base_model_id(config, base) is None:
        raise BadInputError(
            f"gate.base_model_id: the base model {base.ref} is a local directory, and the "
            "promoted model's card and adapter_config.json must name it by its hub id",
            "set gate.base_model_id: ORG/NAME in the run config",
        )
    preflight = baseline_path = None
    created = False
    if main:
        log("preflight: checking the preference data")
        preflight = plugin.preflight(config, skip_bad_rows=skip_bad_rows)
        timings["preflight"] = round(time.perf_counter() - t0, 2)
        t = time.perf_counter()
        baseline_path, created = ensure_baseline(config, base, log=log, progress=progress)
        check_comparable(
            load_baseline(baseline_path), config.evaluation, base, config.gate.policy_file
        )
        timings["baseline"] = round(time.perf_counter() - t, 2)
        log(f"baseline: {baseline_path}{' (created)' if created else ''}")
    t = time.perf_counter()
    live = LiveGate(config, base, baseline_path, log=log, main=main) if config.gate.live else None
    if live is not None:
        training = plugin.train(
            config,
            resume=resume,
            skip_bad_rows=skip_bad_rows,
            progress=progress,
            log=log,
            callbacks=callbacks,
            live_gate=live,
        )
    else:  # a plugin without live gating need not even know the keyword
        training = plugin.train(
            config,
            resume=resume,
            skip_bad_rows=skip_bad_rows,
            progress=progress,
            log=log,
            callbacks=callbacks,
        )
    timings["train"] = round(time.perf_counter() - t, 2)
    if live is not None:
        # Training time above includes the live gates; said separately too.
        timings["live_gate"] = live.seconds
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
    with process_group() as dist:
        return _gate_checkpoints(
            config, summary, base, dist, live, target=target, t0=t0, progress=progress, log=log
        )


def _gate_checkpoints(
    config: RunConfigBase,
    summary: RunSummary,
    base: ResolvedModel,
    dist: Distributed | None,
    live: LiveGate | None,
    *,
    target: Path,
    t0: float,
    progress: bool,
    log: Callable[[str], None],
) -> RunSummary:
    """Gate every checkpoint not gated live (each process its share under a launcher), then
    publish and promote the best."""
    out_dir = Path(config.output_dir)
    main = dist is None or dist.is_main
    training = summary.training
    assert training is not None
    baseline_path = summary.baseline_path
    stopped, stop_reason, candidates = training.stopped, training.stop_reason, _candidates(training)
    if dist is not None:
        # The main process alone knows the baseline and saved the checkpoints; a guard may in
        # principle stop one rank only. Agree on all of it before anyone loads a model.
        views = dist.all_gather((baseline_path, stopped, stop_reason, candidates))
        baseline_path, _, _, candidates = views[0]
        stopped = any(v[1] for v in views)
        stop_reason = next((v[2] for v in views if v[1]), stop_reason)
    gated_live = list(live.gated) if live is not None else []
    if stopped:
        summary.candidates = [g.outcome for g in gated_live]  # published, for the record
        summary.reason = f"training was stopped, nothing is promoted: {stop_reason}"
        return _write(summary, out_dir, t0, _decisions(gated_live)) if main else summary
    assert baseline_path is not None
    t = time.perf_counter()
    say = log if main else (lambda _msg: None)
    runs: dict[str, GateRun] = {}
    outcomes: list[CandidateOutcome] = []
    live_runs: dict[str, GateRun] = {}
    for name, path, step, final in candidates:
        if live is not None:
            resolved = resolve_model(
                str(path), base_override=base.ref, allow_pickle=config.evaluation.allow_pickle
            )
            already = live.find(resolved.fingerprint)
            if already is not None:  # these weights were gated when they were saved
                if already.outcome.name not in live_runs:
                    live_runs[already.outcome.name] = already.run
                    outcomes.append(already.outcome)
                continue
        say(f"gating {name} (step {step})")
        t_one = time.perf_counter()
        plan = prepare(
            EvalConfig.from_settings(config.evaluation, str(path), base=base.ref),
            baseline_file=baseline_path,
            policy=config.gate.policy,
            out_dir=out_dir / "gate" / name,
            policy_file=config.gate.policy_file,
        )
        run = execute(plan, progress=progress and main, distributed=dist)
        runs[name] = run
        outcome = outcome_of(
            run,
            config,
            name=name,
            path=path,
            step=step,
            final=final,
            gated_live=False,
            seconds=time.perf_counter() - t_one,
        )
        outcomes.append(outcome)
        say(
            f"  {name}: {run.decision.decision} ({config.gate.primary_metric} = "
            f"{format_value(outcome.primary_value)})"
        )
    # Live gates whose checkpoint is gone from the list (e.g. rotated away) still count.
    for g in gated_live:
        if g.outcome.name not in live_runs and g.outcome.path.is_dir():
            live_runs[g.outcome.name] = g.run
            outcomes.append(g.outcome)
    outcomes.sort(key=lambda o: (o.step, o.final))
    if runs:
        summary.timings["gate"] = round(time.perf_counter() - t, 2)
    summary.candidates = outcomes
    if not main:
        summary.reason = "not the main process: it trained and evaluated its share"
        return summary
    best = _best(outcomes, config)
    card = {"base_model_id": base_model_id(config, base), "model_name": model_name(config, target)}
    decisions: dict[int, GateDecision] = _decisions(gated_live)
    for o in outcomes:  # publish each gate once; only the best is promoted
        promote_here = best is not None and o.name == best.name
        if o.name in live_runs:  # published when it was gated
            if promote_here:
                decisions[o.step] = publish_promotion(
                    live_runs[o.name], promote_to=target, candidate_dir=o.path, log=log, **card
                )
            continue
        decisions[o.step] = publish(
            runs[o.name],
            promote_to=target if promote_here else None,
            candidate_dir=o.path if promote_here else None,
            log=log,
            **card,
        )
    early = ""
    if training.stopped_by_gate:
        event = next((e for e in training.events if e.stopped), None)
        early = f"training stopped early at step {training.steps_completed} by the live gate"
        early += f" ({event.message}); " if event is not None else "; "
    if best is None:
        summary.outcome = "refused"
        summary.reason = early + f"none of the {len(outcomes)} checkpoint(s) passed the gate"
        return _write(summary, out_dir, t0, decisions)
    summary.outcome = "promoted"
    summary.promoted = best.name
    summary.promoted_to = target
    summary.reason = early + (
        f"{best.name} (step {best.step}) passed the gate with the best {best.primary_metric} "
        f"= {format_value(best.primary_value)}; promoted to {target}"
    )
    return _write(summary, out_dir, t0, decisions)


def _decisions(gated: list[GatedCheckpoint]) -> dict[int, GateDecision]:
    return {g.outcome.step: g.run.decision for g in gated}


def _best(outcomes: list[CandidateOutcome], config: RunConfigBase) -> CandidateOutcome | None:
    """The passing checkpoint with the best primary metric (the later one on a tie)."""
    passing = [o for o in outcomes if o.decision == "promote"]
    if not passing:
        return None
    suite_name, _, metric_name = config.gate.primary_metric.partition("::")
    suites = {s.name: s for s in make_suites(config.evaluation)}
    spec = suites[suite_name].spec(metric_name)
    sign = -1.0 if spec.direction is Direction.LOWER else 1.0
    return max(
        passing,
        key=lambda o: (sign * (o.primary_value if o.primary_value is not None else -1e300), o.step),
    )


def check_comparable(
    stored: Baseline, settings: EvalSettings, base: ResolvedModel, policy_file: Path | None = None
) -> None:
    """The stored baseline must be comparable with this run's evaluation, before training."""
    suites = make_suites(settings)
    template_hash, vocab_hash = tokenizer_identity(base, settings.trust_remote_code)
    rules = read_policy_file(policy_file, suites) if policy_file else stored.key.policy
    key = CompatibilityKey(
        suites={s.name: s.identity() for s in suites},
        generation=settings.generation,
        chat_template_hash=template_hash,
        tokenizer_hash=vocab_hash,
        measurement=MEASUREMENT_VERSION,
        policy=rules,
    )
    stored.check_key(key, [s.name for s in suites], with_data=settings.suite_data)


def render_summary(summary: RunSummary) -> str:
    rows = [
        [
            o.name,
            o.step,
            o.decision.upper() if o.decision == "refuse" else o.decision,
            format_value(o.primary_value),
            "live" if o.gated_live else "after",
            _why(o) if o.decision == "refuse" else "",
        ]
        for o in summary.candidates
    ]
    lines = []
    tr = summary.training
    if tr is not None:
        lines.append(
            f"training: {tr.steps_completed} steps in {tr.seconds:.0f} s "
            f"({tr.seconds_per_step or 0:.3f} s/step, {tr.effective_dtype}); "
            + (
                "STOPPED: " + (tr.stop_reason or "")
                if tr.stopped
                else "STOPPED EARLY by the live gate"
                if tr.stopped_by_gate
                else "completed"
            )
        )
        for e in tr.events:
            if not e.stopped:
                lines.append(f"  guard warning at step {e.step}: {e.message}")
            elif tr.stopped_by_gate and not tr.stopped:
                lines.append(f"  {e.message}")
    if rows:
        metric = summary.candidates[0].primary_metric
        headers = ["checkpoint", "step", "gate", metric, "gated", "why refused"]
        lines += ["", tabulate(rows, headers=headers)]
    lines += ["", f"{summary.outcome.upper()}: {summary.reason}"]
    if summary.candidates:
        where = Path(summary.training.output_dir) if summary.training else None
        lines.append(
            "per checkpoint: gate/<checkpoint>/gate.md and report.html"
            + (f"; the whole run: {where / 'report.html'}" if where else "")
        )
    if summary.timings:
        lines.append("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in summary.timings.items()))
    return "\n".join(lines)


def _why(outcome: CandidateOutcome) -> str:
    """A refused checkpoint in one cell: how many reasons, and the first one, shortened."""
    if not outcome.reasons:
        return ""
    first = outcome.reasons[0]
    first = first if len(first) <= 90 else first[:89] + "…"
    more = f" (+{len(outcome.reasons) - 1} more)" if len(outcome.reasons) > 1 else ""
    return first + more


def _write(
    summary: RunSummary,
    out_dir: Path,
    t0: float,
    decisions: dict[int, GateDecision] | None = None,
) -> RunSummary:
    """The run's summary (JSON, Markdown) and its report.html (curves, guard events, gates)."""
    from dpo_harness.reports.html import render_training_html

    summary.timings["total"] = round(time.perf_counter() - t0, 2)
    write_model_file(out_dir / "run_summary.json", summary)
    atomic_write_text(
        out_dir / "run_summary.md",
        "# train-and-gate\n\n```\n" + render_summary(summary) + "\n```\n",
    )
    history: list[dict[str, Any]] = []
    training = summary.training
    if training is not None and training.log_history_path is not None:
        try:
            raw = json.loads(training.log_history_path.read_text(encoding="utf-8"))
            history = [h for h in raw if isinstance(h, dict)] if isinstance(raw, list) else []
        except (OSError, ValueError):
            history = []
    events = list(training.events) if training is not None else []
    atomic_write_text(
        out_dir / "report.html",
        render_training_html(summary, history, events, decisions or {}),
    )
    return summary

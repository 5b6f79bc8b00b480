"""Gate orchestration shared by `dpo-harness gate` and `train-and-gate`.

Find the candidate's baseline (by its base model's fingerprint, then by name), evaluate the
candidate on the baseline's suites with the baseline's base model as reference (an adapter's own
base, switched on and off, otherwise the base loaded beside it), refuse an incompatible
baseline before loading anything, decide, and then promote or record the refusal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .baseline import Baseline, CompatibilityKey, baselines_dir, find_baseline, load_baseline
from .distributed import Distributed
from .errors import BadInputError
from .gate import GateDecision, GatePolicy, gate, render_gate_markdown
from .io import atomic_write_text, load_model_file, write_model_file
from .loading import LoadedModel
from .schema import EvalConfig, EvalReport, SuiteIdentity

__all__ = ["GateRun", "finish", "locate_baseline", "run_gate"]


@dataclass
class GateRun:
    report: EvalReport
    baseline: Baseline
    baseline_path: Path
    decision: GateDecision
    out_dir: Path


def locate_baseline(config: EvalConfig, explicit: Path | None, directory: Path) -> Path:
    if explicit is not None:
        return explicit
    from .loading import checkpoint_fingerprint, resolve_checkpoint

    spec = resolve_checkpoint(
        config.checkpoint, base_override=config.base, allow_pickle=config.allow_pickle
    )
    base_ref = spec.base_ref or config.base
    base_fp = None
    if base_ref is not None:
        base_spec = resolve_checkpoint(base_ref, allow_pickle=config.allow_pickle)
        base_fp = checkpoint_fingerprint(base_spec)
    if base_ref is None:
        raise BadInputError(
            f"cannot tell the base model of {config.checkpoint} (a full model, not an adapter)",
            "pass --base BASE_MODEL or --baseline FILE",
        )
    return find_baseline(directory, base_ref=base_ref, base_fingerprint=base_fp)


def run_gate(
    config: EvalConfig,
    *,
    baseline_file: Path | None = None,
    baselines_directory: Path | None = None,
    policy: GatePolicy | None = None,
    report_file: Path | None = None,
    out_dir: Path,
    quiet: bool = True,
    log: Callable[[str], None] | None = None,
    command: str | None = None,
    loaded: LoadedModel | None = None,
    distributed: Distributed | None = None,
) -> GateRun:
    """Everything but promotion: find the baseline, evaluate (or read) the candidate, decide."""
    from .evaluate import evaluate_loaded, load_from_config, load_reference

    path = locate_baseline(config, baseline_file, baselines_dir(baselines_directory))
    stored = load_baseline(path)
    # Evaluate on the baseline's suites unless told otherwise, and check compatibility early.
    if "suites" not in config.model_fields_set:
        config = config.model_copy(update={"suites": list(stored.key.suites)})
    if report_file is not None:
        report = load_model_file(report_file, EvalReport, what="evaluation report")
    else:
        from .suite import create_suite

        suites = [create_suite(n, config.suite_data.get(n)) for n in config.suites]
        # Fail before loading any model when suites, data or generation settings differ.
        early = CompatibilityKey(
            suites={
                s.name: SuiteIdentity(version=s.version, data_hash=s.data_hash()) for s in suites
            },
            generation=config.generation,
            chat_template_hash=stored.key.chat_template_hash,
            tokenizer_hash=stored.key.tokenizer_hash,
        )
        stored.check_key(early, list(early.suites))
        if loaded is None:
            loaded = load_from_config(config, base=config.base)
        reference = None
        if not loaded.is_adapter:
            ref_config = config.model_copy(update={"base": config.base or stored.base_model})
            reference = load_reference(ref_config, loaded)
        report = evaluate_loaded(
            loaded,
            config,
            reference=reference,
            suites=suites,
            progress=not quiet,
            log=None if quiet else log,
            command=command,
            distributed=distributed,
        )
    stored.check_compatible(report, [s.name for s in report.suites])
    decision = gate(report, stored, policy, baseline_path=str(path))
    out = out_dir
    if distributed is None or distributed.is_main:
        write_model_file(out / "report.json", report)
    return GateRun(
        report=report, baseline=stored, baseline_path=path, decision=decision, out_dir=out
    )


def finish(
    run: GateRun,
    promote_to: Path | None,
    candidate_dir: Path | None,
    log: Callable[[str], None] = print,
) -> GateDecision:
    """Promote or record the refusal, then write decision.json and gate.md."""
    from .promote import promote, record_refusal

    decision = run.decision
    if promote_to is not None:
        if decision.decision == "promote":
            if candidate_dir is None:
                raise BadInputError(
                    "cannot promote a candidate that is not a local directory", "download it first"
                )
            decision = promote(candidate_dir, promote_to, decision)
        else:
            record = record_refusal(promote_to, decision)
            log(f"refused: {promote_to} left untouched; refusal recorded at {record}")
    write_model_file(run.out_dir / "decision.json", decision)
    atomic_write_text(run.out_dir / "gate.md", render_gate_markdown(decision))
    return decision

"""The one gate pipeline, shared by ``gate``, ``train-and-gate`` and the pytest plugin.

Three steps, each with one job:

1. :func:`prepare` — everything that can be decided without loading a model, done once: resolve
   and fingerprint the candidate and its base (:func:`~dpo_harness.evaluation.loading.resolve_model`;
   a served candidate is reached and identified instead,
   :func:`~dpo_harness.evaluation.backends.endpoint.connect`),
   find the baseline (by the base's fingerprint, then by name), check that it is the baseline of
   *this* base and that a given ``--report`` is about *this* candidate, build the compatibility
   key from the suites, data, settings and tokenizer and check it, validate the policy's margins
   against the suites' metrics, and check that the promote target can be filled without loss.
   A problem here is exit 2 before any model is loaded.
2. :func:`execute` — evaluate the candidate (or read its report) and decide. Writes nothing.
   Under a launcher every process takes its share of the requests and reaches the same decision.
3. :func:`publish` — the only writer: ``report.json``, ``decision.json``, ``gate.md``,
   ``report.html`` (:mod:`dpo_harness.reports.html`), and the promotion or the refusal record. Called on the main process only.
   A gate published during training (live gating) is promoted later by
   :func:`publish_promotion`, which writes the promotion and nothing of the gate again.

``run_gate`` and ``finish`` (the 0.1 API) remain, built from these steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dpo_harness.errors import BadInputError, HarnessError
from dpo_harness.evaluation.evaluate import load_from_config, make_suites, reference_loaders
from dpo_harness.evaluation.loading import (
    LoadedModel,
    ResolvedModel,
    resolve_model,
    tokenizer_identity,
)
from dpo_harness.evaluation.measure import MEASUREMENT_VERSION
from dpo_harness.evaluation.suite import Suite
from dpo_harness.files import check_output_dir, load_model_file, write_outputs
from dpo_harness.gate.baseline import (
    Baseline,
    CompatibilityKey,
    baselines_dir,
    find_baseline,
    load_baseline,
)
from dpo_harness.gate.decision import GateDecision, GatePolicy, gate
from dpo_harness.gate.policy_file import PolicyFile, check_rules, load_policy_file
from dpo_harness.gate.render import render_gate_markdown
from dpo_harness.launcher import Distributed
from dpo_harness.schema import EvalConfig, EvalReport

if TYPE_CHECKING:
    from dpo_harness.evaluation.backends.endpoint import ServedModel

__all__ = [
    "GatePlan",
    "GateRun",
    "execute",
    "finish",
    "locate_baseline",
    "prepare",
    "publish",
    "publish_promotion",
    "run_gate",
]


@dataclass
class GatePlan:
    """What :func:`prepare` found: enough to evaluate, decide and publish without asking again."""

    config: EvalConfig  # with the baseline's suites when none were chosen
    candidate: ResolvedModel | None  # None: gating a report whose model is not at hand
    base: ResolvedModel | None
    baseline: Baseline
    baseline_path: Path
    suites: list[Suite]
    policy: GatePolicy
    out_dir: Path
    report_file: Path | None = None
    promote_to: Path | None = None
    notes: list[str] = field(default_factory=list)  # logged overrides, said in the decision
    served: ServedModel | None = None  # a served candidate (--endpoint), reached and identified


@dataclass
class GateRun:
    """The evaluated candidate and the decision (nothing written yet)."""

    report: EvalReport
    baseline: Baseline
    baseline_path: Path
    decision: GateDecision
    out_dir: Path
    plan: GatePlan | None = None


# --------------------------------------------------------------------------- prepare


def _base_of(
    config: EvalConfig, candidate: ResolvedModel | None, baseline_file: Path | None
) -> ResolvedModel | None:
    """The candidate's base: an adapter's own, else ``--base``; None if neither says."""
    if candidate is not None and candidate.base is not None:
        return candidate.base
    if config.base is not None:
        return resolve_model(config.base, allow_pickle=config.allow_pickle)
    return None


def _find(
    base: ResolvedModel | None, config: EvalConfig, baseline_file: Path | None, directory: Path
) -> Path:
    if baseline_file is not None:
        return baseline_file
    if base is None:
        what = "a served model" if config.endpoint is not None else "a full model, not an adapter"
        raise BadInputError(
            f"cannot tell the base model of {config.candidate_name} ({what})",
            "pass --base BASE_MODEL or --baseline FILE",
        )
    return find_baseline(directory, base_ref=base.ref, base_fingerprint=base.fingerprint)


def _check_baseline_is_for(
    stored: Baseline, base: ResolvedModel | None, path: Path, *, allow_mismatch: bool
) -> list[str]:
    """The baseline must describe the candidate's base model, or the user says otherwise."""
    if base is None or stored.base_fingerprint == base.fingerprint:
        return []
    said = (
        f"{path} is the baseline of {stored.base_model} ({stored.base_fingerprint[:19]}…), "
        f"not of the candidate's base {base.ref} ({base.fingerprint[:19]}…)"
    )
    if not allow_mismatch:
        raise BadInputError(
            said,
            "pass the baseline of this base model, or --allow-baseline-mismatch to compare anyway "
            "(the decision then records it)",
        )
    return [f"compared against another model's baseline (--allow-baseline-mismatch): {said}"]


def _check_report_is_for(
    report: EvalReport, candidate: ResolvedModel | ServedModel | None, path: Path
) -> None:
    if candidate is None:
        return
    ref, fingerprint = (
        (candidate.ref, candidate.fingerprint)
        if isinstance(candidate, ResolvedModel)
        else (candidate.info.ref, candidate.info.fingerprint)
    )
    got = report.provenance.model.fingerprint
    if got != fingerprint:
        raise BadInputError(
            f"{path} is the evaluation of {report.provenance.model.ref} ({got[:19]}…), not of "
            f"{ref} ({fingerprint[:19]}…); a gate decides on evidence about "
            "the candidate's own weights",
            "evaluate the candidate (drop --report), or pass the report made for it",
        )


def _check_margins(policy: GatePolicy, suites: list[Suite]) -> None:
    known = {f"{s.name}::{spec.name}" for s in suites for spec in s.metric_specs()}
    unknown = sorted(set(policy.margins) - known)
    if unknown:
        raise BadInputError(
            f"--margin names metric(s) the gated suites do not report: {', '.join(unknown)}",
            "use SUITE::METRIC as listed by `dpo-harness suites`",
        )


def read_policy_file(path: Path | None, suites: list[Suite]) -> PolicyFile | None:
    """The ``--policy`` file, validated against the suites (None when not given)."""
    if path is None:
        return None
    from dpo_harness.evaluation.suite import available_suites

    rules = load_policy_file(path)
    specs = {f"{s.name}::{spec.name}": spec for s in suites for spec in s.metric_specs()}
    check_rules(rules, specs, str(path), known_suites=set(available_suites()))
    return rules


def prepare(
    config: EvalConfig,
    *,
    baseline_file: Path | None = None,
    baselines_directory: Path | None = None,
    policy: GatePolicy | None = None,
    report_file: Path | None = None,
    promote_to: Path | None = None,
    out_dir: Path,
    allow_baseline_mismatch: bool = False,
    candidate: ResolvedModel | None = None,
    policy_file: Path | None = None,
) -> GatePlan:
    """Resolve, fingerprint, find and check everything before any model is loaded.

    ``policy_file``: a gate policy file; it must be the one the baseline was made under (the
    baseline's own is used when none is given).
    """
    from dpo_harness.gate.promotion import check_promotable

    policy = policy or GatePolicy()
    check_output_dir(out_dir)
    served: ServedModel | None = None
    if config.endpoint is not None:
        if promote_to is not None:
            raise BadInputError(
                "a served model cannot be promoted: there are no files here to copy",
                "gate the checkpoint directory the server loads, or drop --promote-to",
            )
    elif promote_to is not None:
        check_promotable(promote_to)
    if config.endpoint is None and candidate is None:
        candidate = resolve_model(
            config.checkpoint, base_override=config.base, allow_pickle=config.allow_pickle
        )
    base = _base_of(config, candidate, baseline_file)
    path = _find(base, config, baseline_file, baselines_dir(baselines_directory))
    stored = load_baseline(path)
    if base is None:  # an explicit --baseline for a full model: its base is the baseline's model
        try:
            base = resolve_model(stored.base_model, allow_pickle=config.allow_pickle)
        except BadInputError:
            raise BadInputError(
                f"{path} names its base model {stored.base_model!r}, which cannot be found here",
                "pass the base model with --base",
            ) from None
    notes = _check_baseline_is_for(stored, base, path, allow_mismatch=allow_baseline_mismatch)
    if "suites" not in config.model_fields_set:
        config = config.model_copy(update={"suites": list(stored.key.suites)})
    if config.base is None:
        config = config.model_copy(update={"base": base.ref})
    suites = make_suites(
        config,
        declared_elsewhere={
            name: ident.declared_in
            for name, ident in stored.key.suites.items()
            if ident.declaration_hash is not None and ident.declared_in
        },
    )
    _check_margins(policy, suites)
    rules = read_policy_file(policy_file, suites) if policy_file is not None else stored.key.policy
    if config.endpoint is not None:
        from dpo_harness.evaluation.backends.endpoint import connect

        served = connect(config)  # reached and identified: its fingerprint and template check
    if report_file is not None:
        report = load_model_file(report_file, EvalReport, what="evaluation report")
        _check_report_is_for(report, served if served is not None else candidate, report_file)
        from dpo_harness.gate.baseline import key_of

        key = key_of(report)
    else:
        if served is not None:
            _check_served_template(served, stored, path)
            template_hash = served.info.chat_template_hash
            vocab_hash = served.info.tokenizer_hash
        else:
            assert candidate is not None
            template_hash, vocab_hash = tokenizer_identity(candidate, config.trust_remote_code)
        key = CompatibilityKey(
            suites={s.name: s.identity() for s in suites},
            generation=config.generation,
            chat_template_hash=template_hash,
            tokenizer_hash=vocab_hash,
            measurement=MEASUREMENT_VERSION,
        )
    key = key.model_copy(update={"policy": rules})
    stored.check_key(key, [s.name for s in suites], with_data=config.suite_data)
    return GatePlan(
        config=config,
        candidate=candidate,
        base=base,
        baseline=stored,
        baseline_path=path,
        suites=suites,
        policy=policy,
        out_dir=out_dir,
        report_file=report_file,
        promote_to=promote_to,
        notes=notes,
        served=served,
    )


def _check_served_template(served: ServedModel, stored: Baseline, path: Path) -> None:
    """A served model's answers are comparable only if it renders prompts as the baseline did."""
    if served.template_verified:
        return
    raise BadInputError(
        f"cannot compare {served.info.ref} with {path}: its chat template is unverified — "
        f"{served.template_check}",
        "pass --endpoint-tokenizer with the served model's tokenizer (the template the server "
        f"applies must be the one {stored.base_model}'s baseline was measured with)",
    )


# --------------------------------------------------------------------------- execute


def execute(
    plan: GatePlan,
    *,
    loaded: LoadedModel | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    command: str | None = None,
    distributed: Distributed | None = None,
) -> GateRun:
    """Evaluate the candidate (or read its report) and decide. Writes nothing."""
    from dpo_harness.evaluation.evaluate import evaluate_loaded

    t0 = time.perf_counter()
    if plan.report_file is not None:
        report = load_model_file(plan.report_file, EvalReport, what="evaluation report")
    elif plan.served is not None:
        from dpo_harness.evaluation.evaluate import evaluate_served

        report = evaluate_served(
            plan.served,
            plan.config,
            suites=plan.suites,
            progress=progress,
            log=log,
            command=command,
            distributed=distributed,
        )
        report.provenance.timings["total"] = round(time.perf_counter() - t0, 3)
        # The server may have rendered an evaluated prompt otherwise than the probes showed.
        plan.baseline.check_compatible(report, [s.name for s in plan.suites])
    else:
        assert plan.candidate is not None and plan.base is not None
        owned = loaded is None
        if loaded is None:
            loaded = load_from_config(plan.config, plan.candidate)
        load_s = time.perf_counter() - t0
        # One model resident at a time for a full model with a separate base; an adapter's
        # reference is itself with the adapter off. A model the caller loaded stays loaded.
        ref_loader, cand_loader = reference_loaders(plan.config, loaded, plan.candidate, plan.base)
        report = evaluate_loaded(
            loaded,
            plan.config,
            reference_loader=ref_loader,
            candidate_loader=cand_loader if owned else None,
            suites=plan.suites,
            progress=progress,
            log=log,
            command=command,
            distributed=distributed,
        )
        report.provenance.timings["load"] = round(load_s, 3)
        report.provenance.timings["total"] = round(time.perf_counter() - t0, 3)
    decision = gate(report, plan.baseline, plan.policy, baseline_path=str(plan.baseline_path))
    if plan.notes:
        decision = decision.model_copy(update={"notes": [*decision.notes, *plan.notes]})
    return GateRun(
        report=report,
        baseline=plan.baseline,
        baseline_path=plan.baseline_path,
        decision=decision,
        out_dir=plan.out_dir,
        plan=plan,
    )


# --------------------------------------------------------------------------- publish


def _promote_or_record(
    decision: GateDecision,
    promote_to: Path,
    candidate_dir: Path | None,
    log: Callable[[str], None],
    base_model_id: str | None,
    model_name: str | None,
) -> GateDecision:
    from dpo_harness.gate.promotion import promote, record_refusal

    if decision.decision != "promote":
        record = record_refusal(promote_to, decision)
        log(f"refused: {promote_to} left untouched; refusal recorded at {record}")
        return decision
    if candidate_dir is None:
        raise BadInputError(
            "cannot promote a candidate that is not a local directory", "download it first"
        )
    return promote(
        candidate_dir, promote_to, decision, base_model_id=base_model_id, model_name=model_name
    )


def publish(
    run: GateRun,
    *,
    promote_to: Path | None = None,
    candidate_dir: Path | None = None,
    log: Callable[[str], None] = print,
    base_model_id: str | None = None,
    model_name: str | None = None,
) -> GateDecision:
    """Write the evaluation and the decision, and promote or record the refusal (main process only).

    The evaluation (``report.json``) is written first, so a promotion that fails (a full disk,
    a read-only target) never costs it; the decision files follow as one all-or-none group.
    ``candidate_dir`` defaults to the resolved candidate's directory (the demo model's and a hub
    snapshot's too). A write that fails is exit 2 and says what was kept, and where.
    ``base_model_id`` and ``model_name`` are for the promoted model's card (see
    :func:`dpo_harness.gate.promotion.promote`).
    """
    from dpo_harness.reports.html import render_gate_html

    decision = run.decision
    report_file = run.out_dir / "report.json"
    write_outputs(
        run.out_dir,
        {"report.json": run.report.model_dump_json(indent=2) + "\n"},
        what="the evaluation report",
    )
    if promote_to is not None:
        try:
            decision = _promote_or_record(
                decision,
                promote_to,
                candidate_dir or (_candidate_dir(run) if decision.decision == "promote" else None),
                log,
                base_model_id,
                model_name,
            )
        except HarnessError as exc:
            raise BadInputError(
                f"{exc.cause}; the evaluation is kept in {report_file}", exc.fix
            ) from exc
    try:
        write_outputs(
            run.out_dir,
            {
                "decision.json": decision.model_dump_json(indent=2) + "\n",
                "gate.md": render_gate_markdown(decision),
                "report.html": render_gate_html(decision, run.report, run.baseline),
            },
            what="the gate decision",
        )
    except HarnessError as exc:
        done = (
            f"; {decision.candidate.ref} was promoted to {promote_to}"
            if decision.promoted_to
            else ""
        )
        raise BadInputError(exc.cause + done, exc.fix) from exc
    run.decision = decision
    return decision


def _candidate_dir(run: GateRun) -> Path:
    """The candidate's own directory, as resolved by prepare (local for a hub id too)."""
    candidate = run.plan.candidate if run.plan is not None else None
    if candidate is None:
        raise BadInputError(
            "cannot promote a candidate whose files are not at hand", "gate its directory"
        )
    return candidate.spec.path


def publish_promotion(
    run: GateRun,
    *,
    promote_to: Path,
    candidate_dir: Path,
    log: Callable[[str], None] = print,
    base_model_id: str | None = None,
    model_name: str | None = None,
) -> GateDecision:
    """Promote a candidate whose gate :func:`publish` already wrote (main process only).

    The gate's files (report, decision, gate.md, report.html) stay as they were published:
    each gate is published once; the promotion carries its own ``decision.json``.
    """
    decision = _promote_or_record(
        run.decision, promote_to, candidate_dir, log, base_model_id, model_name
    )
    run.decision = decision
    return decision


# --------------------------------------------------------------------------- the 0.1 API


def locate_baseline(config: EvalConfig, explicit: Path | None, directory: Path) -> Path:
    """The baseline file a gate of ``config.checkpoint`` would use."""
    candidate = resolve_model(
        config.checkpoint, base_override=config.base, allow_pickle=config.allow_pickle
    )
    return _find(_base_of(config, candidate, explicit), config, explicit, directory)


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
    """Prepare and execute, then write ``report.json`` (the main process); no promotion."""
    plan = prepare(
        config,
        baseline_file=baseline_file,
        baselines_directory=baselines_directory,
        policy=policy,
        report_file=report_file,
        out_dir=out_dir,
    )
    run = execute(
        plan,
        loaded=loaded,
        progress=not quiet,
        log=None if quiet else log,
        command=command,
        distributed=distributed,
    )
    if distributed is None or distributed.is_main:
        write_outputs(
            out_dir,
            {"report.json": run.report.model_dump_json(indent=2) + "\n"},
            what="the evaluation report",
        )
    return run


def finish(
    run: GateRun,
    promote_to: Path | None,
    candidate_dir: Path | None,
    log: Callable[[str], None] = print,
) -> GateDecision:
    """Promote or record the refusal, then write decision.json and gate.md (see :func:`publish`)."""
    return publish(run, promote_to=promote_to, candidate_dir=candidate_dir, log=log)

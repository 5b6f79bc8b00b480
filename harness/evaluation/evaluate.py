"""Evaluate one model: load it (or reach it), run every selected suite through one runner, build the report.

The flow is one direction: suites plan requests → the runner answers them (deduplicated across
suites) → suites plan follow-up requests that need the first answers → the runner answers those →
suites score → :class:`~dpo_harness.schema.EvalReport`. The candidate is a checkpoint loaded in
this process (:func:`evaluate_loaded`) or a served model (:func:`evaluate_served`); the same
suites and runner serve both.
"""

from __future__ import annotations

import datetime as _dt
import platform
import sys
import time
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from dpo_harness import __version__
from dpo_harness.errors import BadInputError
from dpo_harness.evaluation import measure
from dpo_harness.evaluation.loading import LoadedModel, ResolvedModel, load_model, resolve_model
from dpo_harness.evaluation.runner import ModelRunner
from dpo_harness.evaluation.suite import (
    USER_SUITES_DOC,
    Suite,
    SuiteContext,
    available_suites,
    create_suite,
)
from dpo_harness.launcher import Distributed, apply_threads
from dpo_harness.schema import (
    EvalConfig,
    EvalReport,
    EvalSettings,
    ModelInfo,
    Provenance,
    ReferenceSource,
    SuiteResult,
)

if TYPE_CHECKING:
    from dpo_harness.evaluation.backends.endpoint import ServedModel

__all__ = [
    "evaluate",
    "evaluate_base",
    "evaluate_loaded",
    "evaluate_served",
    "library_versions",
    "load_from_config",
    "load_reference",
    "make_suites",
    "reference_loaders",
]

_LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "tokenizers",
    "safetensors",
    "pydantic",
    "numpy",
    "fugashi",
    "trl",
)


def library_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in _LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def make_suites(
    config: EvalSettings, *, declared_elsewhere: Mapping[str, str] | None = None
) -> list[Suite]:
    """The configured suites (with their data), before any model is loaded.

    Suites declared in ``config.suite_files`` join the default selection when no suite list is
    given; a name that is neither registered nor declared, and ``--suite-data`` for a suite
    that is not selected, not a suite at all, or a user suite, are refused with the fix.
    ``declared_elsewhere``: user suites a baseline knows, by the file they were declared in
    (named in the fix when that file is not given).
    """
    from dpo_harness.suites.user.loader import load_suite_files

    declared = load_suite_files(config.suite_files)
    names = list(config.suites)
    if "suites" not in config.model_fields_set:
        names += [n for n in declared if n not in names]
    registered = available_suites()
    for name in sorted(set(config.suite_data) - set(names)):
        if name in registered or name in declared:
            raise BadInputError(
                f"--suite-data names suite {name!r}, which is not selected "
                f"(--suites {','.join(names)})",
                f"add {name} to --suites, or drop --suite-data {name}=…",
            )
        raise BadInputError(
            f"--suite-data names {name!r}, which is not a suite: --suite-data gives a built-in "
            f"suite ({', '.join(sorted(registered))}) another data file of that suite's format",
            f"to evaluate a data set of your own, declare a suite named {name!r} in a suites "
            f"YAML file and pass --suite-file FILE ({USER_SUITES_DOC})",
        )
    suites: list[Suite] = []
    for name in names:
        user = declared.get(name)
        if user is None:
            origin = (declared_elsewhere or {}).get(name)
            if name not in registered and origin is not None:
                raise BadInputError(
                    f"suite {name!r} is a user suite (the baseline's was declared in {origin}), "
                    "and no suite file given declares it",
                    f"pass its suites file: --suite-file {origin}",
                )
            if name not in registered and config.suite_files:
                raise BadInputError(
                    f"unknown suite {name!r}: not built in, installed or declared in "
                    f"{', '.join(map(str, config.suite_files))}",
                    f"choose from: {', '.join([*sorted(registered), *declared])}",
                )
            suites.append(create_suite(name, config.suite_data.get(name)))
        elif name in config.suite_data:
            raise BadInputError(
                f"--suite-data names user suite {name!r}, whose data is declared in "
                f"{user.declared_in}",
                f"change the suite's data in {user.declared_in} (and its version)",
            )
        else:
            suites.append(user)
    return suites


def load_from_config(
    config: EvalSettings,
    ref: str | ResolvedModel | None = None,
    *,
    base: str | None = None,
) -> LoadedModel:
    """Load ``ref`` (default: the config's checkpoint) with the config's device, dtype and trust flags."""
    apply_threads(config.threads)
    if not isinstance(ref, ResolvedModel):
        if ref is None and isinstance(config, EvalConfig):
            ref = config.checkpoint
        ref = resolve_model(ref, base_override=base, allow_pickle=config.allow_pickle)
    return load_model(
        ref,
        device=config.device,
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
        allow_pickle=config.allow_pickle,
    )


def load_reference(config: EvalConfig, loaded: LoadedModel) -> LoadedModel | None:
    """The model to compare against: --base if given; an adapter's own base needs no extra copy."""
    if config.base and not loaded.is_adapter:
        return load_from_config(config, config.base)
    return None


def reference_loaders(
    config: EvalSettings,
    loaded: LoadedModel,
    candidate: ResolvedModel | None,
    base: str | ResolvedModel | None,
) -> tuple[Callable[[], LoadedModel] | None, Callable[[], LoadedModel] | None]:
    """(reference loader, candidate loader) for one model resident at a time, or (None, None).

    A full-model candidate with a separate base: the runner loads the base only after the
    candidate's last request and releases the candidate first, so peak memory is one model.
    An adapter's reference is the adapter switched off (nothing to load); without a base there
    is no reference. The candidate loader lets the runner bring the candidate back if a later
    request needs it (none of the built-in suites does).
    """
    if loaded.is_adapter or base is None:
        return None, None
    cand = candidate if candidate is not None else resolve_model(loaded.spec.ref)
    return (lambda: load_from_config(config, base)), (lambda: load_from_config(config, cand))


def evaluate(
    config: EvalConfig,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    command: str | None = None,
    distributed: Distributed | None = None,
) -> EvalReport:
    """Load ``config.checkpoint`` (default: the demo model) and evaluate it.

    With ``distributed`` (from :func:`dpo_harness.launcher.from_env` under a launcher) every
    process loads the model, answers its share of the requests, and returns the same report.
    """
    t0 = time.perf_counter()
    suites = make_suites(config)  # bad suite names fail before any model is loaded
    if config.endpoint is not None:
        from dpo_harness.evaluation.backends.endpoint import connect

        quiet_rank = distributed is not None and not distributed.is_main
        served = connect(config, log=None if quiet_rank else log)
        connect_s = time.perf_counter() - t0
        report = evaluate_served(
            served,
            config,
            suites=suites,
            progress=progress,
            log=log,
            command=command,
            distributed=distributed,
        )
        report.provenance.timings["connect"] = round(connect_s, 3)
        report.provenance.timings["total"] = round(time.perf_counter() - t0, 3)
        return report
    candidate = resolve_model(
        config.checkpoint, base_override=config.base, allow_pickle=config.allow_pickle
    )
    loaded = load_from_config(config, candidate)
    load_s = time.perf_counter() - t0
    loaders = reference_loaders(config, loaded, candidate, config.base)
    report = evaluate_loaded(
        loaded,
        config,
        reference_loader=loaders[0],
        candidate_loader=loaders[1],
        suites=suites,
        progress=progress,
        log=log,
        command=command,
        distributed=distributed,
    )
    report.provenance.timings["load"] = round(load_s, 3)
    report.provenance.timings["total"] = round(time.perf_counter() - t0, 3)
    return report


def _reference_source(
    loaded: LoadedModel, reference: LoadedModel | None, *, lazy: bool = False
) -> ReferenceSource:
    """Where the reference came from. ``lazy``: a base was given to be loaded on demand; it is
    still the reference when no request needed it (e.g. every answer empty, so there was no
    answer to score under it), and the gate must not read that as "scored by itself"."""
    if reference is loaded:
        return "self"
    if reference is not None or lazy:
        return "base-option"
    return "adapter-disabled" if loaded.is_adapter else "none"


def evaluate_loaded(
    loaded: LoadedModel,
    config: EvalSettings,
    *,
    reference: LoadedModel | None = None,
    suites: list[Suite] | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    command: str | None = None,
    distributed: Distributed | None = None,
    reference_loader: Callable[[], LoadedModel] | None = None,
    candidate_loader: Callable[[], LoadedModel] | None = None,
) -> EvalReport:
    """Evaluate an already loaded model (used by training loops and tests).

    ``reference`` is a model loaded beside the candidate; ``reference_loader`` (with
    ``candidate_loader``) loads it only when needed, one model resident at a time
    (:func:`reference_loaders`).
    """
    suites = suites if suites is not None else make_suites(config)
    runner = ModelRunner(
        loaded,
        reference=reference,
        reference_loader=reference_loader,
        candidate_loader=candidate_loader,
        batch_size=config.batch_size,
        generation=config.generation,
        progress=progress,
        distributed=distributed,
    )
    results, timings = _run_suites(
        runner,
        config,
        suites,
        is_adapter=loaded.is_adapter,
        has_trainer_state=loaded.spec.trainer_state is not None,
        log=log,
        distributed=distributed,
    )
    reference = reference if reference is not None else runner.reference
    return EvalReport(
        provenance=_provenance(
            config,
            suites,
            runner,
            model=loaded.info,
            reference=reference.info if reference is not None else loaded.base_info,
            reference_source=_reference_source(
                loaded, reference, lazy=reference_loader is not None
            ),
            device=str(loaded.device),
            dtype=str(loaded.dtype).removeprefix("torch."),
            timings=timings,
            command=command,
        ),
        suites=results,
    )


def evaluate_served(
    served: ServedModel,
    config: EvalConfig,
    *,
    suites: list[Suite] | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    command: str | None = None,
    distributed: Distributed | None = None,
) -> EvalReport:
    """Evaluate a served model (:func:`~dpo_harness.evaluation.backends.endpoint.connect`).

    The reference, when ``config.base`` names one, is loaded in this process when a suite first
    needs it (answers scored under the base). If the server rendered any generated prompt into
    another number of tokens than the local chat template, the report's chat-template and
    tokenizer hashes are cleared: the answers were not produced from the baseline's rendering,
    and the gate refuses to compare them.
    """
    reference_loader = None
    if config.base is not None:
        base = config.base
        reference_loader = lambda: load_from_config(config, base)  # noqa: E731
    else:
        apply_threads(config.threads)
    backend = served.backend(config.generation)
    suites = suites if suites is not None else make_suites(config)
    runner = ModelRunner(
        backend=backend,
        reference_loader=reference_loader,
        batch_size=config.batch_size,
        generation=config.generation,
        progress=progress,
        distributed=distributed,
    )
    results, timings = _run_suites(
        runner,
        config,
        suites,
        is_adapter=False,
        has_trainer_state=False,
        log=log,
        distributed=distributed,
    )
    info = served.info
    if backend.prompt_mismatches:
        info = info.model_copy(update={"chat_template_hash": None, "tokenizer_hash": None})
        if log is not None and (distributed is None or distributed.is_main):
            log(
                f"warning: the server rendered {len(backend.prompt_mismatches)} prompt(s) into "
                f"other token counts than the local chat template (first: "
                f"{backend.prompt_mismatches[0]}); the report's template hashes are cleared"
            )
    reference = runner.reference
    return EvalReport(
        provenance=_provenance(
            config,
            suites,
            runner,
            model=info,
            reference=reference.info if reference is not None else None,
            reference_source="base-option" if reference is not None else "none",
            device=served.client.url,
            dtype="served",
            timings=timings,
            command=command,
        ),
        suites=results,
    )


def _run_suites(
    runner: ModelRunner,
    config: EvalSettings,
    suites: list[Suite],
    *,
    is_adapter: bool,
    has_trainer_state: bool,
    log: Callable[[str], None] | None,
    distributed: Distributed | None,
) -> tuple[list[SuiteResult], dict[str, float]]:
    """Plan, run (two stages) and score every suite; (results, timings)."""
    import torch

    quiet_rank = distributed is not None and not distributed.is_main
    say = (lambda _msg: None) if log is None or quiet_rank else log
    torch.manual_seed(config.seed)
    ctx = SuiteContext(
        generation=config.generation,
        has_reference=runner.has_reference,
        is_adapter=is_adapter,
        has_trainer_state=has_trainer_state,
        seed=config.seed,
        unavailable=runner.unavailable(),
    )
    timings: dict[str, float] = {}

    t = time.perf_counter()
    first = [req for s in suites for req in s.plan(ctx)]
    say(f"stage 1: {len(first)} requests from {len(suites)} suites")
    responses = runner.run(first)
    timings["stage1"] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    second = [req for s in suites for req in s.plan_followup(ctx, responses)]
    if second:
        say(f"stage 2: {len(second)} follow-up requests")
        responses.update(runner.run(second))
    timings["stage2"] = round(time.perf_counter() - t, 3)

    results: list[SuiteResult] = []
    for s in suites:
        t = time.perf_counter()
        res = s.score(ctx, responses)
        res.seconds = round(time.perf_counter() - t, 3)
        timings[f"score.{s.name}"] = res.seconds
        results.append(res)
    return results, timings


def _provenance(
    config: EvalSettings,
    suites: list[Suite],
    runner: ModelRunner,
    *,
    model: ModelInfo,
    reference: ModelInfo | None,
    reference_source: ReferenceSource,
    device: str,
    dtype: str,
    timings: dict[str, float],
    command: str | None,
) -> Provenance:
    import torch

    return Provenance(
        harness_version=__version__,
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        command=command,
        model=model,
        reference=reference,
        reference_source=reference_source,
        suites={s.name: s.identity() for s in suites},
        generation=config.generation,
        measurement_version=measure.MEASUREMENT_VERSION,
        libraries=library_versions(),
        device=device,
        dtype=dtype,
        seed=config.seed,
        batch_size=config.batch_size,
        threads=torch.get_num_threads(),
        hostname=platform.node() or None,
        timings=timings,
        runner_stats=runner.stats.as_dict(),
    )


def evaluate_base(
    config: EvalSettings,
    base: str | ResolvedModel | None,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    command: str | None = None,
    distributed: Distributed | None = None,
) -> EvalReport:
    """Evaluate a base model as its own reference (KL 0, answers scored under itself): a baseline."""
    loaded = load_from_config(config, base)
    if loaded.is_adapter:
        raise BadInputError(
            f"{loaded.spec.ref} is a PEFT adapter; a baseline is the evaluation of a base model",
            f"pass its base model instead: {loaded.spec.base_ref}",
        )
    return evaluate_loaded(
        loaded,
        config,
        reference=loaded,
        progress=progress,
        log=log,
        command=command,
        distributed=distributed,
    )

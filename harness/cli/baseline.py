"""`dpo-harness baseline create | update | show | diff`."""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from dpo_harness.cli.common import (
    baselines_dir_option,
    build_eval_config,
    echo_err,
    eval_options,
    run_guarded,
)
from dpo_harness.errors import EXIT_OK, BadInputError, HarnessError
from dpo_harness.evaluation.report import format_value
from dpo_harness.files import atomic_write_text, write_outputs
from dpo_harness.gate.baseline import (
    Baseline,
    SavedBaseline,
    baselines_dir,
    check_writable,
    key_of,
    load_baseline,
    replace_baseline,
    slug_for,
)
from dpo_harness.gate.baseline_diff import compare_reports, render_update_report, update_reasons
from dpo_harness.gate.policy_file import (
    BaseFailsHardLimitsError,
    PolicyFile,
    apply_rules,
    check_base,
)
from dpo_harness.launcher import process_group
from dpo_harness.schema import EvalConfig, EvalReport
from tabulate import tabulate

__all__ = ["baseline"]


@click.group()
def baseline() -> None:
    """Stored base-model baselines (the gate compares candidates with them)."""


def _target(
    model: str | None, kw: dict[str, Any], dir_opt: Path | None
) -> tuple[EvalConfig, Path, Path]:
    """The evaluation config, the baselines directory and the baseline file MODEL maps to."""
    if kw.get("endpoint") or kw.get("endpoint_model"):
        raise BadInputError(
            "a baseline is the in-process evaluation of a base model; --endpoint/--model name a "
            "served candidate",
            "pass the base model itself: dpo-harness baseline create BASE_MODEL",
        )
    config = build_eval_config(model or "demo", **kw)
    directory = baselines_dir(dir_opt)
    return config, directory, directory / f"{slug_for(config.checkpoint or 'demo')}.json"


def _policy(config: EvalConfig, policy_file: Path | None) -> PolicyFile | None:
    """The --policy file, checked against the suites before any model loads."""
    from dpo_harness.evaluation.evaluate import make_suites
    from dpo_harness.gate.pipeline import read_policy_file

    suites = make_suites(config)  # unknown suites and bad data files fail before the model loads
    return read_policy_file(policy_file, suites)


def _check_base(report: EvalReport, rules: PolicyFile | None, config: EvalConfig) -> None:
    """A base that fails its own hard limits would fail every candidate: stop, say how to go on."""
    try:
        check_base(report, rules, max_new_tokens=config.generation.max_new_tokens)
    except BaseFailsHardLimitsError as exc:
        click.echo(
            "a policy file that accepts this base as it is (review it first):\n\n" + exc.suggestion,
            err=True,
        )
        raise


def _evaluate_on_launcher(config: EvalConfig, quiet: bool) -> EvalReport | None:
    """The base model's evaluation, data-parallel under torchrun; None on processes that must not write."""
    from dpo_harness.evaluation.evaluate import evaluate_base

    with process_group() as dist:
        report = evaluate_base(
            config,
            config.checkpoint,
            progress=not quiet,
            log=None if quiet else echo_err,
            command="dpo-harness " + " ".join(sys.argv[1:]),
            distributed=dist,
        )
    return report if dist is None or dist.is_main else None


def _write(
    report: EvalReport,
    directory: Path,
    reason: str | Callable[[Baseline | None], str],
    rules: PolicyFile | None,
) -> tuple[SavedBaseline, Baseline]:
    saved = replace_baseline(report, directory, reason=reason, policy=rules)
    return saved, load_baseline(saved.path)


def _policy_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--policy",
        "policy_file",
        type=click.Path(path_type=Path),
        help="Gate policy file (YAML): per-metric margins, hard limits, which metrics are gated "
        "(stored in the baseline's compatibility key).",
    )(fn)


@baseline.command("create")
@click.argument("model", required=False)
@eval_options
@baselines_dir_option
@_policy_option
@click.option("--force", is_flag=True, help="Replace an existing baseline (it moves to history).")
@click.option("--quiet", is_flag=True)
def create(
    model: str | None,
    baselines_dir_opt: Path | None = None,
    policy_file: Path | None = None,
    force: bool = False,
    quiet: bool = False,
    **kw: Any,
) -> None:
    """Evaluate MODEL (default: the demo model) and store it as its baseline."""

    def body() -> int:
        config, directory, target = _target(model, kw, baselines_dir_opt)
        if target.exists() and not force:
            raise BadInputError(
                f"a baseline already exists: {target}",
                f"use `dpo-harness baseline update {config.checkpoint}` to replace it with a report",
            )
        check_writable(directory, slug=target.stem)
        rules = _policy(config, policy_file)
        report = _evaluate_on_launcher(config, quiet)
        if report is None:
            return EXIT_OK  # the main process writes the baseline
        _check_base(report, rules, config)
        saved, stored = _write(report, directory, "created", rules)
        click.echo(f"baseline for {stored.base_model} written to {saved.path}")
        if saved.previous_path:
            click.echo(f"previous baseline kept at {saved.previous_path}")
        click.echo(_summary(stored))
        return EXIT_OK

    sys.exit(run_guarded(body))


@baseline.command("update")
@click.argument("model", required=False)
@eval_options
@baselines_dir_option
@_policy_option
@click.option("--reason", help="Why you update (kept in the report and the baseline).")
@click.option("--quiet", is_flag=True)
def update(
    model: str | None,
    baselines_dir_opt: Path | None = None,
    policy_file: Path | None = None,
    reason: str | None = None,
    quiet: bool = False,
    **kw: Any,
) -> None:
    """Re-evaluate MODEL, replace its baseline (the old one goes to history), write an update report."""

    def body() -> int:
        config, directory, target = _target(model, kw, baselines_dir_opt)
        if not target.exists():
            raise BadInputError(
                f"no baseline to update at {target}",
                f"create it with: dpo-harness baseline create {config.checkpoint}",
            )
        current = load_baseline(target)  # a corrupt baseline is reported before the evaluation
        check_writable(directory, slug=target.stem)
        rules = _policy(config, policy_file)
        report = _evaluate_on_launcher(config, quiet)
        if report is None:
            return EXIT_OK  # the main process writes the baseline and its report
        _check_base(report, rules, config)
        if reason is None and _unchanged(current, report, rules):
            # A tracked baseline is not rewritten (new timestamp, new checksum) for nothing.
            n = sum(len(s.metrics) for s in report.suites)
            click.echo(
                f"nothing changed: 0 of {n} metrics moved, every per-item score and the "
                f"compatibility key are identical; {target} left as it is "
                "(pass --reason to record this reproducibility check anyway)"
            )
            return EXIT_OK
        # The baseline actually replaced is read under the write lock: with two concurrent
        # updates, the second one's report compares against the first one's result.
        saved, stored = _write(
            report,
            directory,
            lambda prev: "; ".join(
                update_reasons(prev, report, reason, rules) if prev else [reason or "created"]
            ),
            rules,
        )
        old = saved.previous
        if old is None:  # deleted while this update evaluated: it is a creation after all
            click.echo(f"baseline for {stored.base_model} written to {saved.path}")
            return EXIT_OK
        reasons = update_reasons(old, report, reason, rules)
        rows = compare_reports(apply_rules(old.report, old.key.policy), apply_rules(report, rules))
        path, previous = saved.path, saved.previous_path
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        md = render_update_report(
            f"Baseline update: {stored.base_model}",
            rows,
            reasons,
            old_label=f"{previous} ({old.created_at}, {old.checksum[:19]}…)",
            new_label=f"{path} ({stored.created_at}, {stored.checksum[:19]}…)",
        )
        report_path = directory / "reports" / f"{slug_for(stored.base_model)}-{stamp}.md"
        from dpo_harness.reports.html import render_baseline_update_html

        try:
            write_outputs(
                report_path.parent,
                {
                    report_path.name: md,
                    report_path.with_suffix(".html").name: render_baseline_update_html(
                        old, stored, rows
                    ),
                },
                what="the baseline update report",
            )
        except HarnessError as exc:
            raise BadInputError(
                f"{exc.cause} (the baseline itself was written to {path})", exc.fix
            ) from exc
        click.echo(md)
        click.echo(_power_table(stored))
        click.echo(
            f"\nbaseline written to {path}; previous kept at {previous}; report at {report_path} "
            f"and {report_path.with_suffix('.html')}"
        )
        return EXIT_OK

    sys.exit(run_guarded(body))


def _unchanged(old: Baseline, report: EvalReport, rules: PolicyFile | None) -> bool:
    """The same base, the same compatibility key (policy file included) and no metric or item moved."""
    return (
        old.base_fingerprint == report.provenance.model.fingerprint
        and old.key == key_of(report, rules)
        and not any(
            row.flag
            for row in compare_reports(
                apply_rules(old.report, old.key.policy), apply_rules(report, rules)
            )
        )
    )


def _power_table(b: Baseline, discordance: float | None = None) -> str:
    """Per gated metric: what the gate can and cannot see with this baseline's items."""
    # Imported here: the power module needs scipy, which every other command can do without
    # (`import dpo_harness.cli` 0.95 -> 0.23 s, benchmarks/results/evaluate_profile_after.md).
    from dpo_harness.gate.power import TYPICAL_DISCORDANCE, baseline_power

    q = TYPICAL_DISCORDANCE if discordance is None else discordance
    rows, flags = [], []
    for p in baseline_power(b, discordance=q):
        mark = "⚑" if p.flag else ""
        rows.append(
            [
                p.name,
                p.n_items,
                f"{p.margin:g}",
                format_value(p.base_value),
                "0/1" if p.binary else format_value(p.item_sd),
                f"{p.discordance:.1%}",
                _num(p.resolvable_margin),
                _num(p.detectable_regression),
                _pct(p.false_refusal),
                _pct(p.power_at_margin),
                mark,
            ]
        )
        if p.flag:
            flags.append(f"⚑ {p.name}: {p.flag}")
    head = (
        f"What the gate can see (a candidate of unchanged quality changes "
        f"{q:.0%} of its items, q; a binary one at most twice the base's smaller side; "
        "power 80%; docs/gate-statistics.md):"
    )
    table = tabulate(
        rows,
        headers=[
            "gated metric",
            "items",
            "margin",
            "base",
            "item SD",
            "q",
            "resolves margin ≥",
            "names regression ≥",
            "false refusal",
            "refused at margin",
            "",
        ],
    )
    return "\n".join([head, "", table, *(["", *flags] if flags else [])])


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _summary(b: Baseline, discordance: float | None = None) -> str:
    rules = b.key.policy
    report = apply_rules(b.report, rules)
    rows = []
    for s in report.suites:
        for m in s.metrics:
            rows.append(
                [
                    f"{s.name} v{s.version}",
                    m.name,
                    "NaN" if m.nonfinite else format_value(m.value, m.unit),
                    sum(1 for v in m.per_sample.values() if v is not None),
                    m.hard_limit_text(),
                    "—" if m.margin is None or m.direction.value == "info" else f"{m.margin:g}",
                ]
            )
    head = "\n".join(
        [
            f"base model:  {b.base_model}",
            f"fingerprint: {b.base_fingerprint}",
            f"created:     {b.created_at} ({b.reason})",
            f"checksum:    {b.checksum}",
            "generation:  "
            + ", ".join(f"{k}={v}" for k, v in b.key.generation.model_dump().items()),
            "policy file: "
            + (
                rules.summary()
                if rules is not None
                else "none (the suites' own limits and margins)"
            ),
            "",
        ]
    )
    table = tabulate(rows, headers=["suite", "metric", "value", "items", "hard limit", "margin"])
    return head + table + "\n\n" + _power_table(b, discordance)


@baseline.command("show")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@baselines_dir_option
@click.option(
    "--discordance",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=None,
    metavar="Q",
    help="Share of items an unchanged candidate is assumed to change in the power table "
    "(default 0.05; docs/gate-statistics.md shows 0.05, 0.1 and 0.2).",
)
def show(
    file: Path | None, baselines_dir_opt: Path | None = None, discordance: float | None = None
) -> None:
    """Show one baseline (a file, or a model name as `baseline update` takes), or list all.

    For one baseline: its metrics, and per gated metric what the gate can see with its items
    (the regression it can detect, the false refusals it risks) and where a margin is finer
    than its items can resolve.

    \b
    Example: dpo-harness baseline show demo
    Example: dpo-harness baseline show demo --discordance 0.1
    """

    def body() -> int:
        directory = baselines_dir(baselines_dir_opt)
        if file is not None:
            # A model name (as `baseline update demo` takes) means its file in the directory.
            named = directory / f"{slug_for(str(file))}.json"
            click.echo(
                _summary(
                    load_baseline(named if not file.exists() and named.is_file() else file),
                    discordance,
                )
            )
            return EXIT_OK
        files = sorted(directory.glob("*.json")) if directory.is_dir() else []
        if not files:
            raise BadInputError(
                f"no baselines in {directory}", "create one with: dpo-harness baseline create MODEL"
            )
        rows = []
        for f in files:
            b = load_baseline(f)
            history = directory / "history" / f.stem
            n_hist = len(list(history.glob("*.json"))) if history.is_dir() else 0
            rows.append(
                [
                    f.name,
                    b.base_model,
                    b.created_at,
                    ", ".join(f"{k} v{v.version}" for k, v in b.key.suites.items()),
                    "yes" if b.key.policy is not None else "no",
                    n_hist,
                ]
            )
        click.echo(
            tabulate(
                rows, headers=["file", "base model", "created", "suites", "policy file", "history"]
            )
        )
        click.echo("\nshow one: dpo-harness baseline show MODEL (or FILE)")
        return EXIT_OK

    sys.exit(run_guarded(body))


@baseline.command("diff")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Also write the Markdown report here.")
def diff(old: Path, new: Path, out: Path | None) -> None:
    """Compare two baselines metric by metric (paired where items match)."""

    def body() -> int:
        a, b = load_baseline(old), load_baseline(new)
        reasons = update_reasons(a, b.report, policy=b.key.policy)
        md = render_update_report(
            f"Baseline diff: {a.base_model} → {b.base_model}",
            compare_reports(
                apply_rules(a.report, a.key.policy), apply_rules(b.report, b.key.policy)
            ),
            reasons,
            old_label=f"{old} ({a.created_at})",
            new_label=f"{new} ({b.created_at})",
        )
        if out:
            atomic_write_text(out, md)
        click.echo(md)
        return EXIT_OK

    sys.exit(run_guarded(body))

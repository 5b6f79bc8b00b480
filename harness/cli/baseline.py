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


def _evaluate_on_launcher(config: EvalConfig, quiet: bool) -> EvalReport | None:
    """The base model's evaluation, data-parallel under torchrun; None on processes that must not write."""
    from dpo_harness.evaluation.evaluate import evaluate_base, make_suites

    make_suites(config)  # unknown suites and bad data files fail before the model loads
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
    report: EvalReport, directory: Path, reason: str | Callable[[Baseline | None], str]
) -> tuple[SavedBaseline, Baseline]:
    saved = replace_baseline(report, directory, reason=reason)
    return saved, load_baseline(saved.path)


@baseline.command("create")
@click.argument("model", required=False)
@eval_options
@baselines_dir_option
@click.option("--force", is_flag=True, help="Replace an existing baseline (it moves to history).")
@click.option("--quiet", is_flag=True)
def create(
    model: str | None,
    baselines_dir_opt: Path | None = None,
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
        report = _evaluate_on_launcher(config, quiet)
        if report is None:
            return EXIT_OK  # the main process writes the baseline
        saved, stored = _write(report, directory, "created")
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
@click.option("--reason", help="Why you update (kept in the report and the baseline).")
@click.option("--quiet", is_flag=True)
def update(
    model: str | None,
    baselines_dir_opt: Path | None = None,
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
        report = _evaluate_on_launcher(config, quiet)
        if report is None:
            return EXIT_OK  # the main process writes the baseline and its report
        if reason is None and _unchanged(current, report):
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
                update_reasons(prev, report, reason) if prev else [reason or "created"]
            ),
        )
        old = saved.previous
        if old is None:  # deleted while this update evaluated: it is a creation after all
            click.echo(f"baseline for {stored.base_model} written to {saved.path}")
            return EXIT_OK
        reasons = update_reasons(old, report, reason)
        rows = compare_reports(old.report, report)
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
        click.echo(
            f"baseline written to {path}; previous kept at {previous}; report at {report_path} "
            f"and {report_path.with_suffix('.html')}"
        )
        return EXIT_OK

    sys.exit(run_guarded(body))


def _unchanged(old: Baseline, report: EvalReport) -> bool:
    """The same base, the same compatibility key and no metric or item moved."""
    return (
        old.base_fingerprint == report.provenance.model.fingerprint
        and old.key == key_of(report)
        and not any(row.flag for row in compare_reports(old.report, report))
    )


def _summary(b: Baseline) -> str:
    rows = []
    for s in b.report.suites:
        for m in s.metrics:
            rows.append(
                [f"{s.name} v{s.version}", m.name, format_value(m.value, m.unit), len(m.per_sample)]
            )
    head = (
        f"base model: {b.base_model}\nfingerprint: {b.base_fingerprint}\ncreated: {b.created_at}  ({b.reason})\n"
        f"checksum: {b.checksum}\ngeneration: "
        + ", ".join(f"{k}={v}" for k, v in b.key.generation.model_dump().items())
        + "\n"
    )
    return head + tabulate(rows, headers=["suite", "metric", "value", "items"])


@baseline.command("show")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@baselines_dir_option
def show(file: Path | None, baselines_dir_opt: Path | None = None) -> None:
    """Show one baseline (a file, or a model name as `baseline update` takes), or list all.

    \b
    Example: dpo-harness baseline show demo
    """

    def body() -> int:
        directory = baselines_dir(baselines_dir_opt)
        if file is not None:
            # A model name (as `baseline update demo` takes) means its file in the directory.
            named = directory / f"{slug_for(str(file))}.json"
            click.echo(
                _summary(load_baseline(named if not file.exists() and named.is_file() else file))
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
            rows.append([f.name, b.base_model, b.created_at, ", ".join(b.key.suites), n_hist])
        click.echo(tabulate(rows, headers=["file", "base model", "created", "suites", "history"]))
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
        reasons = update_reasons(a, b.report)
        md = render_update_report(
            f"Baseline diff: {a.base_model} → {b.base_model}",
            compare_reports(a.report, b.report),
            reasons,
            old_label=f"{old} ({a.created_at})",
            new_label=f"{new} ({b.created_at})",
        )
        if out:
            atomic_write_text(out, md)
        click.echo(md)
        return EXIT_OK

    sys.exit(run_guarded(body))

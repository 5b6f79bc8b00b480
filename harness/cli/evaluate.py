"""`dpo-harness evaluate`, `suites` and `verify`: look at one model, the metrics, a promotion."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from dpo_harness.cli.common import (
    build_eval_config,
    default_out,
    echo_err,
    eval_options,
    run_guarded,
)
from dpo_harness.errors import EXIT_FAILED, EXIT_OK

__all__ = ["evaluate", "list_suites", "verify"]


@click.command("evaluate")
@click.argument("checkpoint", required=False)
@eval_options
@click.option(
    "--out", type=click.Path(path_type=Path), help="Output directory (default runs/eval-<time>)."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate(checkpoint: str | None, out: Path | None, quiet: bool, **kw: Any) -> None:
    """Evaluate CHECKPOINT (default: the embedded demo model) on every suite.

    CHECKPOINT is a model directory, a PEFT adapter directory, a Trainer checkpoint-N directory,
    or a hub id. Writes report.json (with per-sample results), report.md and report.html to
    --out. Exit 0 every hard limit holds, 1 one fails, 2 bad input.

    \b
    Example: dpo-harness evaluate runs/my-run/checkpoint-800 --suites numerical,repetition
    """

    def body() -> int:
        from dpo_harness.evaluation.evaluate import evaluate as run_eval
        from dpo_harness.files import check_output_dir
        from dpo_harness.launcher import process_group

        config = build_eval_config(checkpoint, **kw)
        out_dir = out or default_out("eval")
        check_output_dir(out_dir)  # an --out that cannot be written fails now, not after the work
        with process_group() as dist:
            report = run_eval(
                config,
                progress=not quiet,
                log=None if quiet else echo_err,
                command="dpo-harness " + " ".join(sys.argv[1:]),
                distributed=dist,
            )
            code = EXIT_OK if report.passed_hard_limits else EXIT_FAILED
            if dist is not None and not dist.is_main:
                return code  # same report, same verdict; the main process writes and prints
            return _write_evaluation(report, out_dir, code)

    sys.exit(run_guarded(body))


def _write_evaluation(report: Any, out_dir: Path, code: int) -> int:
    from dpo_harness.evaluation.report import render_markdown, render_table
    from dpo_harness.files import write_outputs
    from dpo_harness.reports.html import render_eval_html

    click.echo(render_table(report))  # the result is shown even if it cannot be written
    write_outputs(
        out_dir,
        {
            "report.json": report.model_dump_json(indent=2) + "\n",
            "report.md": render_markdown(report),
            "report.html": render_eval_html(report),
        },
        what="the evaluation report",
    )
    total = report.provenance.timings.get("total", 0)
    click.echo(f"\nreport: {out_dir / 'report.json'}, {out_dir / 'report.html'}  ({total:.1f} s)")
    return code


@click.command("suites")
@click.option(
    "--suite-file",
    "suite_files",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Also list the suites declared in this YAML file (repeatable).",
)
def list_suites(suite_files: tuple[Path, ...]) -> None:
    """List the available suites and their metrics (with --suite-file, your own suites too).

    \b
    Example: dpo-harness suites --suite-file my_suites.yaml
    """

    def body() -> int:
        from dpo_harness.evaluation.suite import Suite, available_suites
        from dpo_harness.suites.user.loader import load_suite_files
        from tabulate import tabulate

        suites: list[tuple[Suite, str]] = [
            (cls(None), "") for _, cls in sorted(available_suites().items())
        ]
        for user in load_suite_files(list(dict.fromkeys(suite_files))).values():
            suites.append((user, str(user.declared_in)))
        rows = []
        for suite, declared_in in suites:
            for spec in suite.metric_specs():
                rows.append(
                    [
                        f"{suite.name} v{suite.version}",
                        spec.name,
                        spec.direction.value,
                        spec.unit,
                        spec.hard_limit_text(),
                        "" if spec.margin is None else f"{spec.margin:g}",
                        declared_in,
                    ]
                )
        headers = ["suite", "metric", "direction", "unit", "hard limit", "margin"]
        if suite_files:
            headers.append("declared in")
        else:
            rows = [row[:-1] for row in rows]
        click.echo(tabulate(rows, headers=headers))
        return EXIT_OK

    sys.exit(run_guarded(body))


@click.command("verify")
@click.argument("directory", type=click.Path(path_type=Path))
def verify(directory: Path) -> None:
    """Check that a promoted model is still exactly what its gate passed.

    Re-hashes every file recorded in DIRECTORY/decision.json at promotion time. Exit 0 when all
    match, 1 when a file changed, went missing or appeared, 2 when DIRECTORY is not a promotion.

    \b
    Example: dpo-harness verify runs/demo-dpo-20261201-120000/promoted
    """

    def body() -> int:
        from dpo_harness.gate.promotion import verify_promotion

        result = verify_promotion(directory)
        for note in result.notes:
            echo_err(note)
        n = len(result.decision.files or {})
        if result.ok:
            click.echo(
                f"OK: {directory}: all {n} promoted files match the hashes recorded when "
                f"{result.decision.candidate.ref} was gated ({result.decision.created_at})"
            )
            return EXIT_OK
        for label, names in (
            ("changed", result.changed),
            ("missing", result.missing),
            ("not part of the promotion", result.extra),
        ):
            for name in names:
                click.echo(f"{label}: {name}")
        click.echo(
            f"CHANGED: {directory} is no longer the model its gate passed; gate the model again"
        )
        return EXIT_FAILED

    sys.exit(run_guarded(body))

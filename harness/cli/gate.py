"""`dpo-harness gate CANDIDATE`: evaluate, compare with the stored baseline, promote or refuse."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from dpo_harness.cli.common import (
    baselines_dir_option,
    build_eval_config,
    build_policy,
    default_out,
    echo_err,
    eval_options,
    policy_options,
    run_guarded,
    split_options,
)
from dpo_harness.errors import EXIT_FAILED, EXIT_OK, BadInputError

__all__ = ["gate_command"]


@click.command("gate")
@click.argument("candidate", required=False)
@eval_options
@policy_options
@click.option(
    "--baseline",
    "baseline_file",
    type=click.Path(path_type=Path),
    help="Baseline file (default: found from the base model).",
)
@baselines_dir_option
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=Path),
    help="Gate policy file (YAML): per-metric margins, hard limits, which metrics are gated. "
    "Must be the baseline's (default: the one stored with it).",
)
@click.option(
    "--promote-to",
    type=click.Path(path_type=Path),
    help="Copy the candidate here if it passes (new, empty or an earlier promotion).",
)
@click.option(
    "--report",
    "report_file",
    type=click.Path(path_type=Path),
    help="Gate this evaluation report of CANDIDATE instead of evaluating.",
)
@click.option(
    "--allow-baseline-mismatch",
    is_flag=True,
    help="Compare against a baseline of another base model (recorded in the decision).",
)
@click.option(
    "--out", type=click.Path(path_type=Path), help="Output directory (default runs/gate-<time>)."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def gate_command(
    candidate: str | None,
    baseline_file: Path | None,
    baselines_dir_opt: Path | None,
    policy_file: Path | None,
    promote_to: Path | None,
    report_file: Path | None,
    allow_baseline_mismatch: bool,
    out: Path | None,
    quiet: bool,
    **kw: Any,
) -> None:
    """Gate CANDIDATE against the stored baseline of its base model.

    CANDIDATE is a checkpoint, or a served model given by --endpoint URL --model NAME (with
    --base, or --baseline: the base a served model comes from cannot be read off it; metrics it
    cannot compute are skipped verdicts, with the reason).

    Exit 0 promote, 1 refuse, 2 bad input. Everything that can be checked before evaluating is
    checked first (the baseline is this base's, the promote target loses nothing, margins name
    real metrics).

    \b
    Example: dpo-harness gate runs/my-run/final --promote-to models/candidate
    Example: dpo-harness gate --endpoint http://localhost:8000 --model my-model --base BASE
    """

    def body() -> int:
        from dpo_harness.gate.pipeline import execute, prepare, publish
        from dpo_harness.launcher import process_group

        eval_values, policy_values = split_options(kw)
        config = build_eval_config(candidate, **eval_values)
        if candidate is None and config.endpoint is None:
            raise BadInputError(
                "no candidate: give a CANDIDATE checkpoint, or --endpoint URL --model NAME",
                "e.g. dpo-harness gate runs/my-run/final",
            )
        plan = prepare(
            config,
            baseline_file=baseline_file,
            baselines_directory=baselines_dir_opt,
            policy=build_policy(policy_values),
            report_file=report_file,
            promote_to=promote_to,
            out_dir=out or default_out("gate"),
            allow_baseline_mismatch=allow_baseline_mismatch,
            policy_file=policy_file,
        )
        with process_group() as dist:
            run = execute(
                plan,
                progress=not quiet,
                log=None if quiet else echo_err,
                command="dpo-harness " + " ".join(sys.argv[1:]),
                distributed=dist,
            )
            if dist is not None and not dist.is_main:
                # Same responses, same seeded statistics: the main process's decision, which it
                # alone publishes and prints.
                return EXIT_OK if run.decision.decision == "promote" else EXIT_FAILED
            decision = publish(run, promote_to=promote_to, log=echo_err)
        _print(decision, config.candidate_name, plan.out_dir)
        return EXIT_OK if decision.decision == "promote" else EXIT_FAILED

    sys.exit(run_guarded(body))


def _print(decision: Any, candidate: str, out_dir: Path) -> None:
    from dpo_harness.gate.render import LEGEND, gate_headers, gate_rows, summary_lines
    from tabulate import tabulate

    click.echo(tabulate(gate_rows(decision), headers=gate_headers(decision)))
    click.echo(LEGEND)
    click.echo("")
    for line in summary_lines(decision, report_html=str(out_dir / "report.html")):
        click.echo(line)
    verdict = "PROMOTE" if decision.decision == "promote" else "REFUSE"
    click.echo(f"\n{verdict}: {candidate}  (decision: {out_dir / 'decision.json'})")
    if decision.promoted_to:
        click.echo(f"promoted to {decision.promoted_to}")

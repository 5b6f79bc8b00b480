"""`dpo-harness gate CANDIDATE`: evaluate, compare with the stored baseline, promote or refuse."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

from .cli_common import (
    baselines_dir_option,
    build_eval_config,
    default_out,
    echo_err,
    eval_options,
    launcher_group,
    run_guarded,
)
from .errors import EXIT_FAILED, EXIT_OK, BadInputError
from .gate import GATE_HEADERS, GatePolicy, gate_rows
from .gating import GateRun, finish, run_gate

__all__ = ["gate_command"]


def _policy(inconclusive: str | None, margins: tuple[str, ...], seed: int | None) -> GatePolicy:
    data: dict[str, Any] = {}
    if inconclusive:
        data["inconclusive"] = inconclusive
    if seed is not None:
        data["seed"] = seed
    parsed = {}
    for m in margins:
        name, sep, value = m.partition("=")
        try:
            parsed[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or "::" not in name:
            raise BadInputError(
                f"--margin {m!r} is not SUITE::METRIC=VALUE",
                "e.g. --margin adtech::mc_accuracy=0.03",
            )
    data["margins"] = parsed
    return GatePolicy(**data)


@click.command("gate")
@click.argument("candidate")
@eval_options
@click.option(
    "--baseline",
    "baseline_file",
    type=click.Path(path_type=Path),
    help="Baseline file (default: found from the base model).",
)
@baselines_dir_option
@click.option(
    "--promote-to", type=click.Path(path_type=Path), help="Copy the candidate here if it passes."
)
@click.option(
    "--report",
    "report_file",
    type=click.Path(path_type=Path),
    help="Use this evaluation report instead of evaluating.",
)
@click.option(
    "--inconclusive",
    type=click.Choice(["refuse", "promote"]),
    help="Policy for inconclusive metrics (default refuse).",
)
@click.option(
    "--margin",
    "margins",
    multiple=True,
    metavar="SUITE::METRIC=VALUE",
    help="Override a metric's margin.",
)
@click.option("--seed", type=int, help="Bootstrap seed (default 0).")
@click.option(
    "--out", type=click.Path(path_type=Path), help="Output directory (default runs/gate-<time>)."
)
@click.option("--quiet", is_flag=True)
def gate_command(
    candidate: str,
    baseline_file: Path | None,
    baselines_dir_opt: Path | None,
    promote_to: Path | None,
    report_file: Path | None,
    inconclusive: str | None,
    margins: tuple[str, ...],
    seed: int | None,
    out: Path | None,
    quiet: bool,
    **kw: Any,
) -> None:
    """Gate CANDIDATE against the stored baseline of its base model; exit 0 promote, 1 refuse, 2 bad input."""

    def body() -> int:
        config = build_eval_config(candidate, **kw)
        policy = _policy(inconclusive, margins, seed)
        if promote_to is not None:
            from .promote import check_promotable

            check_promotable(promote_to)  # before the evaluation, not after it
        with launcher_group() as dist:
            run = run_gate(
                config,
                baseline_file=baseline_file,
                baselines_directory=baselines_dir_opt,
                policy=policy,
                report_file=report_file,
                out_dir=out or default_out("gate"),
                quiet=quiet,
                log=echo_err,
                command="dpo-harness " + " ".join(sys.argv[1:]),
                distributed=dist,
            )
            if dist is not None and not dist.is_main:
                # Same responses, same seeded statistics: the same decision as the main process,
                # which alone promotes, writes and prints.
                return EXIT_OK if run.decision.decision == "promote" else EXIT_FAILED
            return _finish(run, candidate, promote_to)

    sys.exit(run_guarded(body))


def _finish(run: GateRun, candidate: str, promote_to: Path | None) -> int:
    """Promote or record the refusal, print the table and reasons, return the exit code."""
    local = Path(candidate)
    decision = finish(run, promote_to, local if local.is_dir() else None, log=echo_err)
    click.echo(tabulate(gate_rows(decision), headers=GATE_HEADERS))
    click.echo("")
    for r in decision.reasons:
        click.echo(f"- {r}")
    verdict = "PROMOTE" if decision.decision == "promote" else "REFUSE"
    click.echo(f"\n{verdict}: {candidate}  (decision: {run.out_dir / 'decision.json'})")
    if decision.promoted_to:
        click.echo(f"promoted to {decision.promoted_to}")
    return EXIT_OK if decision.decision == "promote" else EXIT_FAILED

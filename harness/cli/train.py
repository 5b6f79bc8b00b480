"""`dpo-harness train-and-gate`, `train` and `preflight` (through a training plugin)."""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path
from typing import Any

import click
from dpo_harness.cli.common import echo_err, run_guarded
from dpo_harness.errors import EXIT_FAILED, EXIT_OK, BadInputError
from dpo_harness.launcher import apply_threads, is_main_process
from dpo_harness.training.plugin import RunConfigBase, TrainingPlugin, get_plugin
from tabulate import tabulate

__all__ = ["preflight_command", "train_and_gate_command", "train_command"]


def _load(
    config_file: Path | None, out: Path | None, resume: bool, threads: int | None = None
) -> tuple[TrainingPlugin, RunConfigBase]:
    plugin, config = _load_config(config_file, out, resume)
    if threads is not None:
        config = config.model_copy(update={"threads": threads})
    return plugin, config


def _load_config(
    config_file: Path | None, out: Path | None, resume: bool
) -> tuple[TrainingPlugin, RunConfigBase]:
    if config_file is None:
        plugin = get_plugin("dpo")
        if resume and out is None:
            raise BadInputError(
                "--resume needs the run's directory", "pass --out DIR of the run to resume"
            )
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return plugin, plugin.demo_config(out or Path("runs") / f"demo-dpo-{stamp}")
    import yaml

    try:
        raw = (
            yaml.safe_load(Path(config_file).read_text(encoding="utf-8"))
            if Path(config_file).is_file()
            else None
        )
    except (yaml.YAMLError, ValueError, OSError, RecursionError):
        # Only the plugin name is wanted here; load_config_file reports what is wrong with the
        # file (its syntax with the line, a byte that is not UTF-8, nesting too deep).
        raw = None
    name = raw.get("plugin", "dpo") if isinstance(raw, dict) else "dpo"
    plugin = get_plugin(str(name))
    overrides = {"output_dir": str(out)} if out is not None else None
    config = plugin.load_config(config_file, overrides)
    return plugin, config


def _check_output_dir(config: RunConfigBase, resume: bool) -> None:
    from dpo_harness.files import check_output_dir

    out = Path(config.output_dir)
    check_output_dir(out, option="output_dir (--out)")
    if not resume and out.is_dir() and any(out.glob("checkpoint-*")):
        raise BadInputError(
            f"output_dir {out} already holds checkpoints from an earlier run",
            "pass --resume to continue that run, or choose a new output_dir (--out)",
        )


def _options(fn: Any) -> Any:
    opts = [
        click.option(
            "--config",
            "config_file",
            type=click.Path(path_type=Path),
            help="Run config (YAML). Default: the embedded demo.",
        ),
        click.option(
            "--out",
            type=click.Path(path_type=Path),
            help="Output directory (overrides the config's output_dir).",
        ),
        click.option(
            "--resume",
            is_flag=True,
            help="Continue from the last good checkpoint in the output directory.",
        ),
        click.option(
            "--skip-bad-rows",
            is_flag=True,
            help="Skip malformed preference rows (counted in the report) instead of failing.",
        ),
        click.option(
            "--threads",
            type=click.IntRange(1, 1024),
            help="CPU threads for PyTorch (default: the cores not already busy).",
        ),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


@click.command("train-and-gate")
@_options
def train_and_gate_command(
    config_file: Path | None,
    out: Path | None,
    resume: bool,
    skip_bad_rows: bool,
    quiet: bool,
    threads: int | None,
) -> None:
    """Preflight, train with guards, gate every checkpoint, promote the best passing one.

    With no --config this runs the embedded demo (a few minutes on 2 CPU cores). Exit 0 promoted,
    1 refused or stopped, 2 bad input.

    \b
    Example: dpo-harness train-and-gate --config configs/tinyswallow-dpo.yaml
    """

    def body() -> int:
        from dpo_harness.training.train_and_gate import render_summary, train_and_gate

        plugin, config = _load(config_file, out, resume, threads)
        _check_output_dir(config, resume)
        if is_main_process():
            echo_err(f"train-and-gate: {config.model} → {config.output_dir}")
        summary = train_and_gate(
            plugin,
            config,
            resume=resume,
            skip_bad_rows=skip_bad_rows,
            progress=not quiet,
            log=echo_err,
        )
        if not is_main_process():
            return EXIT_OK  # the main process reports the outcome
        click.echo(render_summary(summary))
        click.echo(f"summary: {Path(config.output_dir) / 'run_summary.json'}")
        return EXIT_OK if summary.outcome == "promoted" else EXIT_FAILED

    sys.exit(run_guarded(body))


@click.command("train")
@_options
def train_command(
    config_file: Path | None,
    out: Path | None,
    resume: bool,
    skip_bad_rows: bool,
    quiet: bool,
    threads: int | None,
) -> None:
    """Train only (guards on, no gate): e.g. under torchrun / accelerate launch.

    \b
    Example: torchrun --nproc_per_node 2 -m dpo_harness.cli train --config run.yaml
    """

    def body() -> int:
        plugin, config = _load(config_file, out, resume, threads)
        _check_output_dir(config, resume)
        apply_threads(config.threads)
        result = plugin.train(
            config, resume=resume, skip_bad_rows=skip_bad_rows, progress=not quiet, log=echo_err
        )
        if is_main_process():
            state = f"STOPPED: {result.stop_reason}" if result.stopped else "completed"
            click.echo(f"{result.steps_completed} steps, {result.seconds:.0f} s — {state}")
            for c in result.checkpoints:
                click.echo(f"  {c.path}{' (final)' if c.final else ''}")
        return EXIT_FAILED if result.stopped else EXIT_OK

    sys.exit(run_guarded(body))


@click.command("preflight")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="Run config (YAML). Default: the embedded demo.",
)
@click.option("--skip-bad-rows", is_flag=True)
def preflight_command(config_file: Path | None, skip_bad_rows: bool) -> None:
    """Check the preference data of a run without training.

    \b
    Example: dpo-harness preflight --config configs/tinyswallow-dpo.yaml
    """

    def body() -> int:
        plugin, config = _load(config_file, Path("."), False)
        summary = plugin.preflight(config, skip_bad_rows=skip_bad_rows)
        click.echo(
            tabulate(
                [
                    ["rows", summary.n_rows],
                    ["usable", summary.n_usable],
                    ["skipped", summary.n_skipped],
                ]
            )
        )
        for f in summary.findings:
            click.echo(f"- {f}")
        return EXIT_OK

    sys.exit(run_guarded(body))

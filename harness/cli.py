"""The `dpo-harness` command line.

Exit codes everywhere: 0 ran and passed, 1 a hard limit failed / the gate refused / training was
stopped, 2 bad input (a one-line cause and a fix, never a traceback).
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import EXIT_FAILED, EXIT_OK, BadInputError, HarnessError

__all__ = ["cli", "main"]


def _quiet_libraries() -> None:
    # Library chatter (hub telemetry, advisory warnings) would bury the table a person reads.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def _parse_suite_data(values: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise BadInputError(
                f"--suite-data {v!r} is not NAME=PATH", "e.g. --suite-data adtech=my_items.jsonl"
            )
        out[name.strip()] = Path(path)
    return out


def _default_out(prefix: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{prefix}-{stamp}"


def run_guarded(fn: Callable[[], int]) -> int:
    """Run a command body; user-facing errors become one line and an exit code."""
    try:
        return fn()
    except HarnessError as exc:
        _echo_err(exc.render())
        return exc.exit_code
    except KeyboardInterrupt:
        _echo_err("interrupted")
        return 130


@click.group()
@click.version_option(__version__, prog_name="dpo-harness")
def cli() -> None:
    """Evaluate fine-tuned language models, gate them against a baseline, train with guards."""
    _quiet_libraries()


# ------------------------------------------------------------------------------ evaluate


def _suite_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [s.strip() for s in value.split(",") if s.strip()]
    if not names:
        raise BadInputError("--suites is empty", "e.g. --suites numerical,repetition")
    return names


def build_eval_config(
    checkpoint: str | None,
    *,
    config_file: Path | None,
    suites: str | None,
    suite_data: tuple[str, ...],
    base: str | None,
    device: str | None,
    dtype: str | None,
    batch_size: int | None,
    max_new_tokens: int | None,
    allow_pickle: bool,
    trust_remote_code: bool,
) -> Any:
    from .config import load_config_file, validate_config
    from .schema import EvalConfig

    overrides: dict[str, Any] = {}
    if checkpoint is not None:
        overrides["checkpoint"] = checkpoint
    if base is not None:
        overrides["base"] = base
    names = _suite_list(suites)
    if names is not None:
        overrides["suites"] = names
    if suite_data:
        overrides["suite_data"] = _parse_suite_data(suite_data)
    if device is not None:
        overrides["device"] = device
    if dtype is not None:
        overrides["dtype"] = dtype
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    if max_new_tokens is not None:
        overrides["generation"] = {"max_new_tokens": max_new_tokens}
    if allow_pickle:
        overrides["allow_pickle"] = True
    if trust_remote_code:
        overrides["trust_remote_code"] = True
    if config_file is not None:
        return load_config_file(config_file, EvalConfig, overrides=overrides)
    return validate_config(overrides, EvalConfig, source="command-line options")


def eval_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that evaluates a model."""
    opts = [
        click.option("--suites", help="Comma-separated suites (default: all four)."),
        click.option(
            "--suite-data",
            multiple=True,
            metavar="NAME=PATH",
            help="Score a suite on your own data file, e.g. adtech=items.jsonl (repeatable).",
        ),
        click.option(
            "--base",
            help="Reference model for KL and answer perplexity (default: an adapter's base).",
        ),
        click.option("--device", help="auto (default), cpu, cuda, cuda:N, mps."),
        click.option(
            "--dtype",
            type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
            help="Default auto.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(1, 4096),
            help="Requests per forward pass (default 16).",
        ),
        click.option(
            "--max-new-tokens",
            type=click.IntRange(1, 8192),
            help="Generation length (default 128).",
        ),
        click.option(
            "--allow-pickle",
            is_flag=True,
            help="Allow pickle .bin weights (runs code from the file).",
        ),
        click.option(
            "--trust-remote-code", is_flag=True, help="Allow model code from the checkpoint."
        ),
        click.option(
            "--config", "config_file", type=click.Path(path_type=Path), help="YAML/JSON EvalConfig."
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


@cli.command()
@click.argument("checkpoint", required=False)
@eval_options
@click.option(
    "--out", type=click.Path(path_type=Path), help="Output directory (default runs/eval-<time>)."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate(checkpoint: str | None, out: Path | None, quiet: bool, **kw: Any) -> None:
    """Evaluate CHECKPOINT (default: the embedded demo model) on every suite.

    CHECKPOINT is a model directory, a PEFT adapter directory, a Trainer checkpoint-N directory,
    or a hub id. Writes report.json (with per-sample results) and report.md to --out.
    """

    def body() -> int:
        from .evaluate import evaluate as run_eval
        from .io import atomic_write_text, write_model_file
        from .report import render_markdown, render_table

        config = build_eval_config(checkpoint, **kw)
        out_dir = out or _default_out("eval")
        report = run_eval(
            config,
            progress=not quiet,
            log=None if quiet else _echo_err,
            command="dpo-harness " + " ".join(sys.argv[1:]),
        )
        write_model_file(out_dir / "report.json", report)
        atomic_write_text(out_dir / "report.md", render_markdown(report))
        click.echo(render_table(report))
        click.echo(
            f"\nreport: {out_dir / 'report.json'}  ({report.provenance.timings.get('total', 0):.1f} s)"
        )
        return EXIT_OK if report.passed_hard_limits else EXIT_FAILED

    sys.exit(run_guarded(body))


# ------------------------------------------------------------------------------ suites


@cli.command("suites")
def list_suites() -> None:
    """List the available suites and their metrics."""

    def body() -> int:
        from tabulate import tabulate

        from .suite import available_suites

        rows = []
        for name, cls in sorted(available_suites().items()):
            suite = cls(None)
            for spec in suite.metric_specs():
                rows.append(
                    [
                        f"{name} v{cls.version}",
                        spec.name,
                        spec.direction.value,
                        spec.unit,
                        spec.hard_limit_text(),
                        "" if spec.margin is None else f"{spec.margin:g}",
                    ]
                )
        click.echo(
            tabulate(rows, headers=["suite", "metric", "direction", "unit", "hard limit", "margin"])
        )
        return EXIT_OK

    sys.exit(run_guarded(body))


# ------------------------------------------------------------------------------ demo


@cli.group()
def demo() -> None:
    """The embedded demo (tiny Japanese AdTech model and data)."""


@demo.command("build")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Where to write the model (default: the packaged demo model directory).",
)
@click.option(
    "--steps",
    type=click.IntRange(1, 100000),
    help="Pretraining steps (default from the build config).",
)
@click.option("--quiet", is_flag=True)
def demo_build(out: Path | None, steps: int | None, quiet: bool) -> None:
    """Rebuild the demo tokenizer and model deterministically from the shipped corpus."""

    def body() -> int:
        from dataclasses import replace

        from .demo.build import DemoBuildConfig, build_demo
        from .loading import demo_model_dir

        cfg = DemoBuildConfig()
        if steps is not None:
            cfg = replace(cfg, steps=steps)
        target = out or demo_model_dir()
        build_demo(target, config=cfg, progress=not quiet, log=_echo_err)
        return EXIT_OK

    sys.exit(run_guarded(body))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="dpo-harness", standalone_mode=True)
    except click.exceptions.Exit as exc:  # pragma: no cover - click handles this itself
        sys.exit(exc.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()

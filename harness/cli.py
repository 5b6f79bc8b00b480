"""The `dpo-harness` command line.

Exit codes everywhere: 0 ran and passed, 1 a hard limit failed / the gate refused / training was
stopped, 2 bad input (a one-line cause and a fix, never a traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .cli_common import (
    build_eval_config,
    default_out,
    echo_err,
    eval_options,
    launcher_group,
    quiet_libraries,
    run_guarded,
)
from .errors import EXIT_FAILED, EXIT_OK, BadInputError

__all__ = ["cli", "main"]


@click.group()
@click.version_option(__version__, prog_name="dpo-harness")
def cli() -> None:
    """Evaluate fine-tuned language models, gate them against a baseline, train with guards."""
    quiet_libraries()


# ------------------------------------------------------------------------------ evaluate


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

        config = build_eval_config(checkpoint, **kw)
        out_dir = out or default_out("eval")
        with launcher_group() as dist:
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
    from .io import atomic_write_text, write_model_file
    from .report import render_markdown, render_table

    write_model_file(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", render_markdown(report))
    click.echo(render_table(report))
    total = report.provenance.timings.get("total", 0)
    click.echo(f"\nreport: {out_dir / 'report.json'}  ({total:.1f} s)")
    return code


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
        build_demo(target, config=cfg, progress=not quiet, log=echo_err)
        return EXIT_OK

    sys.exit(run_guarded(body))


@demo.command("variant")
@click.argument("kind", type=click.Choice(["nan", "bang", "english", "chinese"]))
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Directory to write the model to."
)
@click.option("--steps", type=click.IntRange(1, 1000), default=20, show_default=True)
def demo_variant(kind: str, out: Path, steps: int) -> None:
    """Write a broken variant of the demo model (to see the suites and the gate refuse it).

    nan: one NaN weight (the seed run); bang: answers "！！！！…"; english / chinese: answers in the
    wrong language.
    """

    def body() -> int:
        from .demo.variants import make_variant

        if out.exists() and any(out.iterdir()):
            raise BadInputError(f"{out} exists and is not empty", "choose a new --out directory")
        make_variant(kind, out, steps=steps)
        click.echo(f"wrote the {kind!r} variant of the demo model to {out}")
        return EXIT_OK

    sys.exit(run_guarded(body))


@cli.command()
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("docs/calibration.md"), show_default=True
)
@click.option(
    "--with-variants/--no-variants",
    default=True,
    show_default=True,
    help="Also score broken demo models.",
)
def calibrate(out: Path, with_variants: bool) -> None:
    """Measure the text suites on the demo base, human Japanese and degenerate outputs."""

    def body() -> int:
        import tempfile

        from .demo.variants import make_variant
        from .io import atomic_write_text
        from .suites.calibration import calibrate as run
        from .suites.calibration import calibrate_numerical, render_calibration, render_numerical

        kinds = ("nan", "bang", "english", "chinese") if with_variants else ()
        with tempfile.TemporaryDirectory() as tmp:
            built = {k: make_variant(k, Path(tmp) / k) for k in kinds}
            text_variants = {k: p for k, p in built.items() if k != "nan"}
            results = run(variants=text_variants, log=echo_err)
            echo_err("numerical suite on the base and the variants")
            numerical = calibrate_numerical(
                {"demo base": None, **{f"{k} model": p for k, p in built.items()}}
            )
        text = render_calibration(results) + "\n" + render_numerical(numerical)
        atomic_write_text(out, text)
        click.echo(text)
        click.echo(f"written to {out}")
        return EXIT_OK

    sys.exit(run_guarded(body))


@cli.command("verify")
@click.argument("directory", type=click.Path(path_type=Path))
def verify(directory: Path) -> None:
    """Check that a promoted model is still exactly what its gate passed.

    Re-hashes every file recorded in DIRECTORY/decision.json at promotion time. Exit 0 when all
    match, 1 when a file changed, went missing or appeared, 2 when DIRECTORY is not a promotion.

    Example: dpo-harness verify runs/demo-dpo-20261201-120000/promoted
    """

    def body() -> int:
        from .promote import verify_promotion

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


def _register() -> None:
    from .cli_baseline import baseline
    from .cli_gate import gate_command
    from .cli_train import preflight_command, train_and_gate_command, train_command

    cli.add_command(baseline)
    cli.add_command(gate_command)
    cli.add_command(train_and_gate_command)
    cli.add_command(train_command)
    cli.add_command(preflight_command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="dpo-harness", standalone_mode=True)
    except click.exceptions.Exit as exc:  # pragma: no cover - click handles this itself
        sys.exit(exc.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()

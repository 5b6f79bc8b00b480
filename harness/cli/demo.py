"""`dpo-harness demo build | variant` and `calibrate`: the embedded demo model and its variants."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from dpo_harness.cli.common import echo_err, run_guarded
from dpo_harness.errors import EXIT_OK, BadInputError

__all__ = ["calibrate", "demo"]


@click.group()
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
    """Rebuild the demo tokenizer and model deterministically from the shipped corpus.

    \b
    Example: dpo-harness demo build --out /tmp/demo-model
    """

    def body() -> int:
        from dataclasses import replace

        from dpo_harness.demo.build import DemoBuildConfig, build_demo
        from dpo_harness.evaluation.loading import demo_model_dir

        cfg = DemoBuildConfig()
        if steps is not None:
            cfg = replace(cfg, steps=steps)
        target = out or demo_model_dir()
        build_demo(target, config=cfg, progress=not quiet, log=echo_err)
        return EXIT_OK

    sys.exit(run_guarded(body))


@demo.command("variant")
@click.argument("kind", type=click.Choice(["nan", "bang", "english", "chinese", "empty"]))
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Directory to write the model to."
)
@click.option("--steps", type=click.IntRange(1, 1000), default=20, show_default=True)
def demo_variant(kind: str, out: Path, steps: int) -> None:
    """Write a broken variant of the demo model (to see the suites and the gate refuse it).

    nan: one NaN weight (the seed run); bang: answers "！！！！…"; english / chinese: answers in the
    wrong language; empty: answers nothing (the end token first).

    \b
    Example: dpo-harness demo variant bang --out /tmp/bang && dpo-harness gate /tmp/bang --base demo
    """

    def body() -> int:
        from dpo_harness.demo.variants import make_variant
        from dpo_harness.files import check_output_dir

        check_output_dir(out)
        if out.exists() and any(out.iterdir()):
            raise BadInputError(f"{out} exists and is not empty", "choose a new --out directory")
        make_variant(kind, out, steps=steps)
        click.echo(f"wrote the {kind!r} variant of the demo model to {out}")
        return EXIT_OK

    sys.exit(run_guarded(body))


@click.command()
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
    """Measure the text suites on the demo base, human Japanese and degenerate outputs.

    \b
    Example: dpo-harness calibrate --out docs/calibration.md
    """

    def body() -> int:
        import tempfile

        from dpo_harness.demo.variants import make_variant
        from dpo_harness.files import atomic_write_text
        from dpo_harness.tools.calibration import calibrate as run
        from dpo_harness.tools.calibration import (
            calibrate_numerical,
            render_calibration,
            render_numerical,
        )

        kinds = ("nan", "bang", "english", "chinese", "empty") if with_variants else ()
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

"""Helpers shared by the `dpo-harness` commands: error handling, evaluation options, config."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from .distributed import Distributed, from_env, is_main_process, shutdown
from .errors import BadInputError, HarnessError

__all__ = [
    "baselines_dir_option",
    "build_eval_config",
    "default_out",
    "echo_err",
    "eval_options",
    "launcher_group",
    "quiet_libraries",
    "run_guarded",
]


def quiet_libraries() -> None:
    # Library chatter (hub telemetry, advisory warnings) would bury the table a person reads.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Raised inside transformers/peft on every PEFT model construction; nothing a user can act on.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def echo_err(msg: str) -> None:
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


def default_out(prefix: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{prefix}-{stamp}"


def run_guarded(fn: Callable[[], int]) -> int:
    """Run a command body; user-facing errors become one line and an exit code."""
    try:
        return fn()
    except HarnessError as exc:
        # Under a launcher every process meets the same bad input; one copy of the message is enough.
        if is_main_process():
            echo_err(exc.render())
        return exc.exit_code
    except KeyboardInterrupt:
        echo_err("interrupted")
        return 130


def baselines_dir_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--baselines-dir``, shared by the gate and the baseline commands."""
    return click.option(
        "--baselines-dir",
        "baselines_dir_opt",
        type=click.Path(path_type=Path),
        help="Where baselines live (default $DPO_HARNESS_BASELINES or ./baselines).",
    )(fn)


@contextlib.contextmanager
def launcher_group() -> Iterator[Distributed | None]:
    """The torchrun/accelerate process group when launched that way, else None; left cleanly."""
    ctx = from_env()
    try:
        yield ctx
    finally:
        shutdown(ctx)


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

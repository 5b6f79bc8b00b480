"""Helpers shared by the `dpo-harness` commands: error handling, evaluation options, config."""

from __future__ import annotations

import datetime as _dt
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from dpo_harness.errors import EXIT_INTERNAL, BadInputError, HarnessError
from dpo_harness.files import load_config_file, validate_config
from dpo_harness.launcher import is_main_process
from dpo_harness.schema import EvalConfig
from dpo_harness.settings import (
    EVAL_OPTIONS,
    POLICY_OPTIONS,
    OptionSpec,
    eval_overrides,
    policy_overrides,
)

if TYPE_CHECKING:
    from dpo_harness.gate.decision import GatePolicy

__all__ = [
    "baselines_dir_option",
    "build_eval_config",
    "build_policy",
    "default_out",
    "echo_err",
    "eval_options",
    "policy_options",
    "quiet_libraries",
    "run_guarded",
    "split_options",
]


def quiet_libraries() -> None:
    # Library chatter (hub telemetry, advisory warnings) would bury the table a person reads.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Raised inside transformers/peft on every PEFT model construction; nothing a user can act on.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    # torch's weights-only unpickler on any --allow-pickle file written with protocol > 2.
    warnings.filterwarnings("ignore", message="Detected pickle protocol")
    # transformers and huggingface_hub read these when they are first imported; setting them
    # instead of importing transformers here spares the commands that never load a model
    # (`baseline show`, `verify`, `suites`) its 0.7 s import.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers.utils.logging" in sys.modules:  # already imported (in-process callers)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def default_out(prefix: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{prefix}-{stamp}"


# Set by `dpo-harness --debug` (or DPO_HARNESS_DEBUG=1): print tracebacks, not one-line errors.
DEBUG = os.environ.get("DPO_HARNESS_DEBUG") == "1"


def crash_log(exc: BaseException) -> Path | None:
    """Write the traceback of an unexpected exception where a bug report can pick it up."""
    import platform
    import sys
    import traceback

    from dpo_harness import __version__
    from dpo_harness.files import cache_dir

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")  # two crashes in one second: two logs
    path = cache_dir() / "crashes" / f"{stamp}-{os.getpid()}.log"
    text = (
        f"dpo-harness {__version__}, Python {platform.python_version()}, {platform.platform()}\n"
        f"command: {' '.join(sys.argv)}\n\n"
        + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError:
        return None
    return path


def run_guarded(fn: Callable[[], int]) -> int:
    """Run a command body; every error becomes one line and an exit code (0 / 1 / 2 / 3).

    A :class:`HarnessError` (something the user can correct) prints its cause and fix, exit 2
    (or its own code). Anything else is a bug in dpo-harness: one "internal error" line, the
    path of a crash log with the traceback, exit 3 — never 1, which means "the gate refused".
    With ``--debug`` the traceback is printed (for a HarnessError, of what caused it).
    """
    import traceback

    try:
        return fn()
    except HarnessError as exc:
        # Under a launcher every process meets the same bad input; one copy of the message is enough.
        if is_main_process():
            if DEBUG:
                traceback.print_exception(type(exc), exc, exc.__traceback__)
            echo_err(exc.render())
        return exc.exit_code
    except KeyboardInterrupt:
        echo_err("interrupted")
        return 130
    except Exception as exc:
        if DEBUG:
            raise
        where = crash_log(exc)
        if is_main_process():
            first = (str(exc).splitlines() or [""])[0][:200]
            echo_err(f"internal error: {type(exc).__name__}: {first}")
            echo_err(
                "  this is a bug in dpo-harness, not in your input; "
                + (f"the traceback is in {where}" if where else "rerun with --debug to see it")
                + " — please report it"
            )
        return EXIT_INTERNAL


def baselines_dir_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--baselines-dir``, shared by the gate and the baseline commands."""
    return click.option(
        "--baselines-dir",
        "baselines_dir_opt",
        type=click.Path(path_type=Path),
        help="Where baselines live (default $DPO_HARNESS_BASELINES or ./baselines).",
    )(fn)


def _click_option(spec: OptionSpec, prefix: str = "") -> Callable[..., Any]:
    flag = spec.flag
    kw: dict[str, Any] = {"help": spec.help}
    if spec.metavar:
        kw["metavar"] = spec.metavar
    if spec.kind == "int":
        kw["type"] = int
    elif spec.kind == "flag":
        kw["is_flag"] = True
    elif spec.kind == "choice":
        kw["type"] = click.Choice(spec.choices)
    elif spec.kind == "multiple":
        kw["multiple"] = True
    return click.option(flag, spec.dest, **kw)


def eval_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The evaluation settings (from :data:`dpo_harness.settings.EVAL_OPTIONS`) and ``--config``."""
    fn = click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path),
        help="YAML/JSON EvalConfig; options given here win over it.",
    )(fn)
    for spec in reversed(EVAL_OPTIONS):
        fn = _click_option(spec)(fn)
    return fn


def policy_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The gate policy settings (from :data:`dpo_harness.settings.POLICY_OPTIONS`)."""
    for spec in reversed(POLICY_OPTIONS):
        fn = _click_option(spec)(fn)
    return fn


def split_options(kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate evaluation option values from policy option values (by their dest names)."""
    policy_names = {spec.dest for spec in POLICY_OPTIONS}
    policy = {k: kw.pop(k) for k in list(kw) if k in policy_names}
    return kw, policy


def build_eval_config(
    checkpoint: str | None, *, config_file: Path | None = None, **values: Any
) -> EvalConfig:
    """The EvalConfig the user asked for: ``--config`` file, then the options given on top."""
    overrides = eval_overrides(values)
    if checkpoint is not None:
        if "endpoint" in overrides:
            raise BadInputError(
                f"give either a checkpoint ({checkpoint}) or --endpoint, not both",
                "drop the checkpoint to evaluate the served model, or drop --endpoint/--model",
            )
        overrides["checkpoint"] = checkpoint
    if config_file is not None:
        return load_config_file(config_file, EvalConfig, overrides=overrides)
    return validate_config(overrides, EvalConfig, source="command-line options")


def build_policy(values: dict[str, Any]) -> GatePolicy:
    from dpo_harness.gate.decision import GatePolicy

    return validate_config(policy_overrides(values), GatePolicy, source="command-line options")

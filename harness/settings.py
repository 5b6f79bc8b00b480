"""Every evaluation and gate setting, declared once, for the CLI, the pytest plugin and YAML.

A setting lives in one pydantic field (:class:`~dpo_harness.schema.EvalSettings` /
``EvalConfig``, or :class:`~dpo_harness.gate.decision.GatePolicy`). This table names, for each
field, its command-line flag (``--batch-size``) — the pytest option is the same with ``dpo-``
in front (``--dpo-batch-size``) — its help and how a string becomes the value. The CLI and the
pytest plugin both build their options from it, and both turn what the user typed into the same
overrides with :func:`eval_overrides` / :func:`policy_overrides`, so no setting can be
reachable from one front end and not the other. YAML files use the field names themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpo_harness.errors import BadInputError
from dpo_harness.schema import DEFAULT_SUITES

__all__ = [
    "EVAL_OPTIONS",
    "POLICY_OPTIONS",
    "OptionSpec",
    "eval_overrides",
    "parse_margins",
    "parse_suite_data",
    "parse_suite_files",
    "parse_suites",
    "policy_overrides",
]


def parse_suites(value: str) -> list[str]:
    names = [s.strip() for s in value.split(",") if s.strip()]
    if not names:
        raise BadInputError("--suites is empty", "e.g. --suites numerical,repetition")
    return names


def parse_suite_data(values: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name.strip() or not path:
            raise BadInputError(
                f"--suite-data {v!r} is not NAME=PATH", "e.g. --suite-data adtech=my_items.jsonl"
            )
        out[name.strip()] = Path(path)
    return out


def parse_suite_files(values: tuple[str, ...]) -> list[Path]:
    """Suite files in the order given (a file given twice is read once)."""
    return [Path(v) for v in dict.fromkeys(values)]


def parse_margins(values: tuple[str, ...]) -> dict[str, float]:
    """``SUITE::METRIC=VALUE`` pairs; the value is checked by GatePolicy (finite, ≥ 0)."""
    parsed: dict[str, float] = {}
    for m in values:
        name, sep, value = m.partition("=")
        try:
            number = float(value)
        except ValueError:
            sep = ""
        if not sep or "::" not in name:
            raise BadInputError(
                f"--margin {m!r} is not SUITE::METRIC=VALUE",
                "e.g. --margin adtech::mc_accuracy=0.03",
            )
        parsed[name.strip()] = number
    return parsed


@dataclass(frozen=True)
class OptionSpec:
    """One setting as a command-line option.

    ``field`` is the dotted path of the pydantic field it sets (``generation.max_new_tokens``);
    ``kind`` is ``str``, ``int``, ``flag``, ``choice`` or ``multiple`` (repeatable string).
    """

    flag: str
    field: str
    help: str
    kind: str = "str"
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    parse: Callable[[Any], Any] | None = None
    # The parsed value's name when the flag's own would clash (``--model`` beside the MODEL
    # argument of ``baseline create``): ``endpoint_model``.
    name: str | None = None

    @property
    def dest(self) -> str:
        """The Python name of the parsed value (``--batch-size`` → ``batch_size``)."""
        return self.name or self.flag.lstrip("-").replace("-", "_")


EVAL_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "--suites",
        "suites",
        f"Comma-separated suites (default: {','.join(DEFAULT_SUITES)}, or the baseline's).",
        metavar="A,B",
        parse=parse_suites,
    ),
    OptionSpec(
        "--suite-data",
        "suite_data",
        "Score a suite on your own data file, e.g. adtech=items.jsonl (repeatable).",
        kind="multiple",
        metavar="NAME=PATH",
        parse=parse_suite_data,
    ),
    OptionSpec(
        "--suite-file",
        "suite_files",
        "Evaluate the suites declared in this YAML file (a suites file or an lm-eval task; repeatable).",
        kind="multiple",
        metavar="FILE",
        parse=parse_suite_files,
    ),
    OptionSpec(
        "--base",
        "base",
        "Reference model for KL and answer perplexity (default: an adapter's base).",
        metavar="MODEL",
    ),
    OptionSpec(
        "--endpoint",
        "endpoint.url",
        "Evaluate a served model instead of a checkpoint: an OpenAI-compatible server's URL "
        "(with --model).",
        metavar="URL",
    ),
    OptionSpec(
        "--model",
        "endpoint.model",
        "The model name the --endpoint server serves.",
        metavar="NAME",
        name="endpoint_model",
    ),
    OptionSpec(
        "--endpoint-tokenizer",
        "endpoint.tokenizer",
        "The served model's tokenizer (default: --model if it loads here, else --base): the "
        "chat-template check, the baseline key, exact log-likelihood tokens.",
        metavar="MODEL",
    ),
    OptionSpec(
        "--endpoint-concurrency",
        "endpoint.concurrency",
        "Requests in flight at once to the endpoint (default 4).",
        kind="int",
    ),
    OptionSpec(
        "--endpoint-timeout",
        "endpoint.timeout",
        "Seconds to wait for one answer of the endpoint (default 120).",
        kind="int",
    ),
    OptionSpec(
        "--endpoint-retries",
        "endpoint.retries",
        "Retries of a failed endpoint request, with exponential backoff (default 3).",
        kind="int",
    ),
    OptionSpec(
        "--no-endpoint-cache",
        "endpoint.cache",
        "Ask the endpoint again instead of reusing its cached answers.",
        kind="flag",
        parse=lambda _given: False,
    ),
    OptionSpec("--device", "device", "auto (default), cpu, cuda, cuda:N, mps.", metavar="DEVICE"),
    OptionSpec(
        "--dtype",
        "dtype",
        "Weights dtype (default auto: bf16 on a bf16 GPU, else fp32).",
        kind="choice",
        choices=("auto", "float32", "bfloat16", "float16"),
    ),
    OptionSpec("--batch-size", "batch_size", "Requests per forward pass (default 32).", kind="int"),
    OptionSpec(
        "--max-new-tokens",
        "generation.max_new_tokens",
        "Generation length (default 128).",
        kind="int",
    ),
    OptionSpec(
        "--system-prompt",
        "generation.system_prompt",
        "A system message put before every prompt (part of the baseline's key).",
        metavar="TEXT",
    ),
    OptionSpec("--eval-seed", "seed", "Seed of the evaluation (default 0).", kind="int"),
    OptionSpec(
        "--threads",
        "threads",
        "CPU threads for PyTorch (default: the cores not already busy; OMP_NUM_THREADS wins).",
        kind="int",
    ),
    OptionSpec(
        "--allow-pickle",
        "allow_pickle",
        "Allow pickle .bin weights (runs code from the file).",
        kind="flag",
    ),
    OptionSpec(
        "--trust-remote-code",
        "trust_remote_code",
        "Allow model code from the checkpoint.",
        kind="flag",
    ),
)

POLICY_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "--inconclusive",
        "inconclusive",
        "Policy for inconclusive metrics (default refuse).",
        kind="choice",
        choices=("refuse", "promote"),
    ),
    OptionSpec(
        "--margin",
        "margins",
        "Override a metric's margin (repeatable).",
        kind="multiple",
        metavar="SUITE::METRIC=VALUE",
        parse=parse_margins,
    ),
    OptionSpec("--seed", "seed", "Bootstrap seed of the gate (default 0).", kind="int"),
)


def _overrides(specs: tuple[OptionSpec, ...], values: Mapping[str, Any]) -> dict[str, Any]:
    """Nested overrides for the pydantic model from the values the user gave (None/empty: not given)."""
    out: dict[str, Any] = {}
    for spec in specs:
        value = values.get(spec.dest)
        if value is None or value is False or value == ():
            continue
        if spec.parse is not None:
            value = spec.parse(value)
        *parents, leaf = spec.field.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def eval_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """EvalConfig overrides from parsed option values, keyed by :attr:`OptionSpec.dest`."""
    out = _overrides(EVAL_OPTIONS, values)
    endpoint = out.get("endpoint")
    if endpoint is not None and "url" not in endpoint:
        given = sorted(
            spec.flag
            for spec in EVAL_OPTIONS
            if spec.field.startswith("endpoint.") and spec.field.split(".")[1] in endpoint
        )
        raise BadInputError(
            f"{', '.join(given)} describe a served model, but no --endpoint was given",
            "add --endpoint URL (an OpenAI-compatible server), or drop those options",
        )
    if endpoint is not None and "model" not in endpoint:
        raise BadInputError(
            "--endpoint needs --model NAME: the model name the server serves",
            f"list them with: curl {endpoint['url'].rstrip('/').removesuffix('/v1')}/v1/models",
        )
    return out


def policy_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """GatePolicy overrides from parsed option values, keyed by :attr:`OptionSpec.dest`."""
    return _overrides(POLICY_OPTIONS, values)

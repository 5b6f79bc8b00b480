"""The typed core: every object that crosses a boundary of the harness.

Configs come in, requests go to the runner, responses come back, suites produce results, and
an :class:`EvalReport` goes out to disk. All of them are pydantic v2 models, so a malformed
file or option fails with the name of the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DEFAULT_SUITES",
    "SCHEMA_VERSION",
    "Breakdown",
    "ChatMessage",
    "CheckpointKind",
    "Direction",
    "EndpointSettings",
    "EvalConfig",
    "EvalReport",
    "EvalSettings",
    "Finding",
    "GenerateRequest",
    "GenerateResponse",
    "GenerationSettings",
    "GroupScore",
    "LoglikelihoodRequest",
    "LoglikelihoodResponse",
    "LoraModuleStats",
    "MetricResult",
    "MetricSpec",
    "ModelInfo",
    "ModelRole",
    "NonFiniteTensor",
    "ParityRequest",
    "ParityResponse",
    "ProbeRequest",
    "ProbeResponse",
    "Prompt",
    "Provenance",
    "ReferenceSource",
    "Request",
    "Response",
    "RollingLoglikelihoodRequest",
    "RollingLoglikelihoodResponse",
    "SampleRecord",
    "SuiteIdentity",
    "SuiteResult",
    "TrainingLogRequest",
    "TrainingLogResponse",
    "WeightsRequest",
    "WeightsResponse",
    "prompt_text",
]

SCHEMA_VERSION: Literal["1"] = "1"


class _Frozen(BaseModel):
    """Immutable and hashable: requests are deduplicated by value."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- settings


class ChatMessage(_Frozen):
    role: Literal["system", "user", "assistant"]
    content: str


# A prompt is a conversation (rendered with the tokenizer's chat template when it has one).
Prompt = tuple[ChatMessage, ...]


def prompt_text(prompt: Prompt) -> str:
    """The last user message of a prompt: what a person would call 'the question'."""
    for msg in reversed(prompt):
        if msg.role == "user":
            return msg.content
    return prompt[-1].content if prompt else ""


class GenerationSettings(_Frozen):
    """Generation is greedy: evaluation must be deterministic to be paired item by item."""

    max_new_tokens: int = Field(default=128, ge=1, le=8192)
    system_prompt: str | None = None


class CheckpointKind(str, Enum):
    FULL = "full"
    PEFT_ADAPTER = "peft-adapter"
    TRAINER_CHECKPOINT = "trainer-checkpoint"
    SERVED = "served"  # a model behind an OpenAI-compatible server (--endpoint)


# The built-in suites, in the order they are reported: the one default, wherever a suite list
# is not given (the CLI, a run config's evaluation section, the pytest plugin).
DEFAULT_SUITES = ("numerical", "repetition", "fluency", "adtech")


class EvalSettings(_Strict):
    """How an evaluation runs: the one set of settings behind every front end.

    ``EvalConfig`` (evaluate, gate, baseline) adds the model; a training run config's
    ``evaluation:`` section is exactly this; the CLI flags and pytest options are generated
    from :data:`dpo_harness.settings.EVAL_OPTIONS`, which names each of these fields.
    """

    suites: list[str] = Field(default_factory=lambda: list(DEFAULT_SUITES))
    suite_data: dict[str, Path] = Field(default_factory=dict)
    # YAML files declaring user suites (dpo_harness.suites.user); their suites join the default
    # selection when ``suites`` is not given.
    suite_files: list[Path] = Field(default_factory=list)
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Rows per forward pass (scoring is also capped by a token budget). 32, not 16: a decode step
    # of the 0.1B shape costs about the same at 32 rows as at 16 on a CPU (125 vs 105 ms), so
    # generation is 1.33x faster (benchmarks/results/generation_refill-0.1b-n64.md).
    batch_size: int = Field(default=32, ge=1, le=4096)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    seed: int = 0
    allow_pickle: bool = False
    trust_remote_code: bool = False
    # CPU threads for PyTorch; None: a load-aware default (dpo_harness.launcher.choose_threads).
    # A runtime knob: not part of what a baseline is comparable on.
    threads: int | None = Field(default=None, ge=1, le=1024)

    @field_validator("suites")
    @classmethod
    def _nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one suite is required")
        return v


class EndpointSettings(_Strict):
    """A served model as the candidate: an OpenAI-compatible server (``--endpoint URL --model NAME``).

    Answers are cached on disk, keyed on the endpoint, the model, the served model's identity and
    the whole request (which holds the generation settings), so a re-run does not ask twice.
    """

    url: str  # the server's root or its /v1 URL
    model: str  # the model name the server serves
    # The served model's tokenizer (a directory or hub id): prompt token counts (the chat-template
    # check), the compatibility key, the exact tokens of log-likelihood requests. None: ``model``
    # if it loads as a tokenizer here, else the reference (--base).
    tokenizer: str | None = None
    concurrency: int = Field(default=4, ge=1, le=256)
    timeout: float = Field(default=120.0, gt=0, le=3600)  # seconds for one answer
    retries: int = Field(default=3, ge=0, le=20)  # of a failed request, with exponential backoff
    cache: bool = True

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, e.g. http://localhost:8000")
        return v


class EvalConfig(EvalSettings):
    """What `dpo-harness evaluate` runs (also loadable from YAML/JSON): settings plus the model."""

    checkpoint: str | None = None  # None: the embedded demo model (unless ``endpoint``)
    base: str | None = None  # reference model; default: the adapter's base, if any
    endpoint: EndpointSettings | None = None  # a served candidate instead of a checkpoint

    @model_validator(mode="after")
    def _one_candidate(self) -> EvalConfig:
        if self.endpoint is not None and self.checkpoint is not None:
            raise ValueError(
                "give either a checkpoint or an endpoint (--endpoint URL --model NAME), not both"
            )
        return self

    @property
    def candidate_name(self) -> str:
        """The candidate as a person names it: the checkpoint, or the served model and its server."""
        if self.endpoint is not None:
            return f"{self.endpoint.model} @ {self.endpoint.url}"
        return self.checkpoint or "demo"

    @classmethod
    def from_settings(
        cls, settings: EvalSettings, checkpoint: str | None, base: str | None = None
    ) -> EvalConfig:
        return cls(**dict(settings), checkpoint=checkpoint, base=base)


# --------------------------------------------------------------------------- requests

ModelRole = Literal["candidate", "reference"]


class GenerateRequest(_Frozen):
    """Greedy generation for one prompt. Identical prompts from several suites run once.

    A conversation is rendered with the chat template (and the system prompt); a ``str`` is
    plain text the model continues as it stands, as lm-evaluation-harness prompts a model
    without ``--apply_chat_template``. ``max_new_tokens`` overrides the evaluation's generation
    length for this request (None: the evaluation's ``generation.max_new_tokens``).
    """

    kind: Literal["generate"] = "generate"
    prompt: Prompt | str
    max_new_tokens: int | None = Field(default=None, ge=1, le=8192)


class LoglikelihoodRequest(_Frozen):
    """log p(continuation | context). Context and continuation are tokenised together."""

    kind: Literal["loglikelihood"] = "loglikelihood"
    context: Prompt | str
    continuation: str
    model: ModelRole = "candidate"


class RollingLoglikelihoodRequest(_Frozen):
    """log p(text) for a plain text (no chat template), in windows if it is long."""

    kind: Literal["rolling"] = "rolling"
    text: str
    model: ModelRole = "candidate"


class ProbeRequest(_Frozen):
    """Teacher-forced next-token statistics on (context, continuation), optionally vs the reference."""

    kind: Literal["probe"] = "probe"
    context: Prompt
    continuation: str
    with_reference: bool = True


class WeightsRequest(_Frozen):
    """Scan every parameter: non-finite values, LoRA matrices."""

    kind: Literal["weights"] = "weights"


class TrainingLogRequest(_Frozen):
    kind: Literal["training_log"] = "training_log"


class ParityRequest(_Frozen):
    """Generate these prompts one by one and compare with the batched (left-padded) outputs."""

    kind: Literal["parity"] = "parity"
    prompts: tuple[Prompt, ...]


Request = Annotated[
    GenerateRequest
    | LoglikelihoodRequest
    | RollingLoglikelihoodRequest
    | ProbeRequest
    | WeightsRequest
    | TrainingLogRequest
    | ParityRequest,
    Field(discriminator="kind"),
]

# --------------------------------------------------------------------------- responses


class GenerateResponse(_Strict):
    text: str
    token_ids: list[int]
    hit_eos: bool  # stopped on an end token before max_new_tokens


class LoglikelihoodResponse(_Strict):
    logprob: float  # sum over continuation tokens (may be nan/-inf for a broken model)
    n_tokens: int
    n_bytes: int
    is_greedy: bool
    min_token_logprob: float
    n_surprising: int  # continuation tokens with p < 1e-4


class RollingLoglikelihoodResponse(_Strict):
    logprob: float
    n_tokens: int
    n_bytes: int


class ProbeResponse(_Strict):
    n_positions: int
    finite: bool
    max_abs_logit: float
    mean_entropy: float
    mean_top1_prob: float
    argmax_ids: list[int]
    mode_token_id: int  # the most frequent argmax id (token-0 spam: 0)
    mode_token_text: str
    kl_mean: float | None = None  # exact KL(candidate || reference) over the full vocabulary
    kl_max: float | None = None
    top1_agreement: float | None = None


class NonFiniteTensor(_Strict):
    name: str
    n_nan: int
    n_inf: int
    numel: int
    # The safetensors file it is stored in; None when only the loaded model shows it (e.g. an
    # overflow when casting to a narrower dtype, or a model that exists only in memory).
    file: str | None = None


class LoraModuleStats(_Strict):
    name: str
    rank: int
    scaling: float
    b_all_zero: bool
    delta_norm: float  # s * ||B A||_F, computed from r x r products


class WeightsResponse(_Strict):
    n_tensors: int
    n_parameters: int
    nonfinite: list[NonFiniteTensor]
    lora: list[LoraModuleStats]


class TrainingLogResponse(_Strict):
    path: str | None
    log_history: list[dict[str, Any]]
    global_step: int | None = None


class ParityResponse(_Strict):
    n_prompts: int
    mismatched: list[int]  # indices (into the request's prompts) whose outputs differ
    batched: list[str]
    single: list[str]


Response = (
    GenerateResponse
    | LoglikelihoodResponse
    | RollingLoglikelihoodResponse
    | ProbeResponse
    | WeightsResponse
    | TrainingLogResponse
    | ParityResponse
)

# --------------------------------------------------------------------------- results


class Direction(str, Enum):
    HIGHER = "higher"  # higher is better
    LOWER = "lower"  # lower is better
    BAND = "band"  # should stay near the baseline, either way
    INFO = "info"  # reported, never gated against the baseline


class MetricSpec(_Strict):
    """What a metric is and how it is judged: hard limits always, the margin against a baseline."""

    name: str
    description: str
    direction: Direction
    unit: str = ""
    hard_min: float | None = None  # fail whatever the baseline says
    hard_max: float | None = None
    margin: float | None = None  # non-inferiority margin (metric units); None = not gated
    binary: bool = False  # per-sample values are 0/1 (paired with McNemar)
    needs_reference: bool = False  # comparable only when scored under the same reference model

    def hard_limit_text(self) -> str:
        parts = []
        if self.hard_min is not None:
            parts.append(f">= {self.hard_min:g}")
        if self.hard_max is not None:
            parts.append(f"<= {self.hard_max:g}")
        return " and ".join(parts)


def _finite_or_none(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return float(x)


class MetricResult(MetricSpec):
    """A metric's value, with one value per item so the gate can pair them.

    Non-finite values are stored as None and recorded in ``nonfinite``: JSON has no NaN, and a
    NaN metric is itself a finding.
    """

    value: float | None
    per_sample: dict[str, float | None] = Field(default_factory=dict)
    nonfinite: bool = False
    hard_limit_ok: bool | None = None  # None when there is no hard limit or no value
    note: str | None = None

    @classmethod
    def from_spec(
        cls,
        spec: MetricSpec,
        value: float | None,
        per_sample: Mapping[str, float | None] | None = None,
        note: str | None = None,
    ) -> MetricResult:
        nonfinite = value is not None and not math.isfinite(value)
        v = _finite_or_none(value)
        samples = {k: _finite_or_none(x) for k, x in (per_sample or {}).items()}
        ok: bool | None = None
        if nonfinite:
            ok = False if (spec.hard_min is not None or spec.hard_max is not None) else None
        elif v is not None and (spec.hard_min is not None or spec.hard_max is not None):
            ok = (spec.hard_min is None or v >= spec.hard_min) and (
                spec.hard_max is None or v <= spec.hard_max
            )
        return cls(
            **spec.model_dump(),
            value=v,
            per_sample=samples,
            nonfinite=nonfinite,
            hard_limit_ok=ok,
            note=note,
        )

    @property
    def spec(self) -> MetricSpec:
        return MetricSpec(**{k: getattr(self, k) for k in MetricSpec.model_fields})


class SampleRecord(_Strict):
    """One evaluated item, kept so reports can quote it."""

    item_id: str
    prompt: str | None = None
    response: str | None = None
    target: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class Finding(_Strict):
    """One sentence a person understands, e.g. why training was a hidden NaN run."""

    severity: Literal["error", "warning", "info"]
    message: str
    metric: str | None = None


class GroupScore(_Strict):
    """One group of items in a :class:`Breakdown`: its size, value, and value per item type."""

    group: str
    n_items: int
    value: float | None
    by_type: dict[str, float | None] = Field(default_factory=dict)


class Breakdown(_Strict):
    """A metric split by a property of its items, e.g. adtech accuracy by category."""

    metric: str
    by: str
    groups: list[GroupScore]


class SuiteIdentity(_Strict):
    """What makes two runs of a suite comparable: its version and the hash of its data.

    A user suite (declared in a YAML file) also carries the hash of its declaration — how its
    rows become requests and scores — since its code is not versioned with the harness; and,
    for messages only, the file it was declared in.
    """

    version: str
    data_hash: str
    declaration_hash: str | None = None
    declared_in: str | None = None  # informational: never compared


class SuiteResult(_Strict):
    name: str
    version: str
    data_hash: str
    n_items: int
    metrics: list[MetricResult]
    samples: list[SampleRecord] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    breakdowns: list[Breakdown] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)  # metric -> why it did not run
    seconds: float = 0.0

    def metric(self, name: str) -> MetricResult:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"suite {self.name!r} has no metric {name!r}")

    @property
    def passed_hard_limits(self) -> bool:
        return all(m.hard_limit_ok is not False for m in self.metrics)


class ModelInfo(_Strict):
    ref: str
    kind: CheckpointKind
    is_adapter: bool
    fingerprint: str
    base_ref: str | None = None
    base_fingerprint: str | None = None
    trainer_state: str | None = None
    n_parameters: int | None  # None: not known (a served model)
    dtype: str
    device: str
    chat_template_hash: str | None = None
    tokenizer_hash: str | None = None


# Where the reference model came from: the model itself (a baseline), the adapter switched off,
# --base (or the baseline's base model), or none (reference-dependent metrics self-scored).
ReferenceSource = Literal["self", "adapter-disabled", "base-option", "none"]


class Provenance(_Strict):
    harness_version: str
    created_at: str
    command: str | None = None
    model: ModelInfo
    reference: ModelInfo | None = None
    reference_source: ReferenceSource = "none"
    suites: dict[str, SuiteIdentity]
    generation: GenerationSettings
    # dpo_harness.evaluation.measure.MEASUREMENT_VERSION; None: made before measurements were
    # versioned (such a baseline is refused: it may have been measured differently).
    measurement_version: str | None = None
    libraries: dict[str, str]
    device: str
    dtype: str
    seed: int
    batch_size: int
    threads: int | None = None  # PyTorch CPU threads the evaluation ran with
    hostname: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    runner_stats: dict[str, int] = Field(default_factory=dict)


class EvalReport(_Strict):
    schema_version: Literal["1"] = SCHEMA_VERSION
    provenance: Provenance
    suites: list[SuiteResult]

    def suite(self, name: str) -> SuiteResult:
        for s in self.suites:
            if s.name == name:
                return s
        raise KeyError(f"report has no suite {name!r}")

    @property
    def passed_hard_limits(self) -> bool:
        return all(s.passed_hard_limits for s in self.suites)

    def failed_hard_limits(self) -> list[tuple[str, MetricResult]]:
        return [(s.name, m) for s in self.suites for m in s.metrics if m.hard_limit_ok is False]

"""The backend protocol, and what the runner and its backends count."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dpo_harness.schema import (
    GenerateResponse,
    ModelRole,
    ProbeRequest,
    ProbeResponse,
    Prompt,
    TrainingLogResponse,
    WeightsResponse,
)

__all__ = [
    "REQUEST_KINDS",
    "ModelBackend",
    "Parked",
    "RunnerStats",
    "TokenScores",
    "progress_bar",
]

# Every kind of request a suite can make (schema.Request's discriminator values).
REQUEST_KINDS = (
    "generate",
    "loglikelihood",
    "rolling",
    "probe",
    "weights",
    "training_log",
    "parity",
)

# Per-token log-probabilities of a continuation, and whether each token was the greedy choice.
TokenScores = tuple[list[float], list[bool]]


@dataclass
class RunnerStats:
    """What the runner did: used by tests (no prompt generated twice) and the report."""

    requested: int = 0
    unique: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    generations: Counter[str] = field(default_factory=Counter)  # prompt key -> times generated
    forward_batches: int = 0
    model_loads: int = 0  # loads by the runner itself (one model resident at a time)
    world_size: int = 1  # processes that shared the work (counters above are totals over all)
    # A served candidate: HTTP requests sent, answers from the cache, retries, and generations
    # whose prompt token count (the server's) differs from the local rendering's.
    endpoint: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, int]:
        out = {
            "requested": self.requested,
            "unique": self.unique,
            "forward_batches": self.forward_batches,
            "model_loads": self.model_loads,
            "world_size": self.world_size,
        }
        out["generated_prompts"] = len(self.generations)
        out["generations"] = sum(self.generations.values())
        out.update({f"kind.{k}": v for k, v in sorted(self.by_kind.items())})
        out.update({f"endpoint.{k}": v for k, v in sorted(self.endpoint.items())})
        return out


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="req", disable=not enabled, leave=False)


class Parked(Protocol):
    """The candidate's probe logits, kept between its phase and the reference's."""

    def close(self) -> None: ...


class ModelBackend(Protocol):
    """The model computations behind the runner, for the roles a backend serves.

    ``stats`` and ``progress`` are the runner's (set when the runner takes the backend).
    Responses are built by the runner from what these return, through
    :mod:`~dpo_harness.evaluation.measure`, so a number means the same whatever computed it.
    """

    name: str  # for messages: "in-process model", "served model"
    stats: RunnerStats
    progress: bool

    def unsupported(self, kind: str) -> str | None:
        """Why this backend cannot answer the candidate's requests of ``kind``; None if it can."""
        ...

    def prompt_key(self, prompt: Prompt | str) -> str:
        """What identifies a prompt's generation: the text the model sees, or the conversation
        a server renders itself. Equal keys (at the same length) are generated once. A ``str``
        is plain text, continued as it stands (no chat template, no system prompt)."""
        ...

    def generate(
        self, prompts: Sequence[Prompt | str], *, batch_size: int, max_new_tokens: int, desc: str
    ) -> list[GenerateResponse]:
        """Greedy answers, in the order of ``prompts`` (the candidate)."""
        ...

    def loglikelihood(
        self, role: ModelRole, items: Sequence[tuple[Prompt | str, str]], desc: str
    ) -> list[TokenScores]:
        """Scores of each (context, continuation), the pair tokenised together."""
        ...

    def rolling(self, role: ModelRole, texts: Sequence[str], desc: str) -> list[tuple[float, int]]:
        """(log-probability, tokens) of each plain text, every token predicted once."""
        ...

    def candidate_probes(
        self, reqs: Sequence[ProbeRequest], answer: Callable[[int, ProbeResponse], None]
    ) -> Parked | None:
        """The candidate's probes: answered now (``answer(index, response)``) when no reference
        will be compared, else their logits parked until :meth:`finish_probes` (returned; the
        caller closes it whatever happens)."""
        ...

    def finish_probes(
        self,
        reqs: Sequence[ProbeRequest],
        parked: Parked | None,
        answer: Callable[[int, ProbeResponse], None],
    ) -> None:
        """The parked probes against the reference's logits, one at a time."""
        ...

    def weights(self) -> WeightsResponse: ...

    def training_log(self) -> TrainingLogResponse: ...

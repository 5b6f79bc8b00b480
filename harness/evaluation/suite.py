"""The suite protocol and the suite registry.

A suite declares requests (``plan``, and optionally ``plan_followup`` for requests that depend
on the first answers, such as scoring generated text under the reference model), then scores the
runner's responses (``score``) as a pure function. Suites never touch a model.

Built-in suites live in ``dpo_harness.suites``; third-party suites register through the
``dpo_harness.suites`` entry-point group; user suites are declared in YAML files
(:mod:`dpo_harness.suites.user`, ``--suite-file``) and are instances, never registered.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import ClassVar

from dpo_harness.errors import BadInputError
from dpo_harness.evaluation.responses import Responses
from dpo_harness.schema import (
    GenerationSettings,
    MetricResult,
    MetricSpec,
    Request,
    SuiteIdentity,
    SuiteResult,
)

__all__ = [
    "USER_SUITES_DOC",
    "Suite",
    "SuiteContext",
    "available_suites",
    "create_suite",
    "hash_files",
    "register_suite",
]


@dataclass(frozen=True)
class SuiteContext:
    """What a suite may know about the run when it plans and scores (never the model itself)."""

    generation: GenerationSettings
    has_reference: bool = False
    is_adapter: bool = False
    has_trainer_state: bool = False
    seed: int = 0
    # Request kinds the candidate's backend cannot answer, each with the reason a person reads
    # (a served model's weights and logits are out of reach; a server may return no prompt
    # log-probabilities). A suite plans none of them and marks what needs them skipped.
    unavailable: Mapping[str, str] = field(default_factory=dict)

    def cannot(self, kind: str) -> str | None:
        """Why the candidate's requests of ``kind`` cannot be answered; None when they can."""
        return self.unavailable.get(kind)


def hash_files(paths: Sequence[Path]) -> str:
    """Content hash of a suite's data files (names excluded: moving a file is not a data change)."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda x: x.name):
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return "sha256:" + h.hexdigest()[:16]


class Suite(ABC):
    """Base class of every suite. Subclasses set ``name``, ``version``, ``description``."""

    name: ClassVar[str]
    version: ClassVar[str]
    description: ClassVar[str] = ""
    # Modules (besides the suite's own) whose code decides its scores: a change there is a
    # scoring change, and the version must be bumped (see dpo_harness.tools.versions).
    scoring_modules: ClassVar[tuple[str, ...]] = ("dpo_harness.suites.common",)
    # What this suite must see in a model that answers nothing (every generation empty, e.g.
    # the end token first): metric name -> the gate verdict it must get ("hard-fail",
    # "unscorable", "regressed"). Tested on the demo's ``empty`` variant; absence is never a pass.
    on_empty_answers: ClassVar[Mapping[str, str]] = {}

    def __init__(self, data_path: Path | None = None) -> None:
        self.data_path = data_path

    @abstractmethod
    def metric_specs(self) -> list[MetricSpec]:
        """Every metric this suite can report, with direction, hard limits and margin."""

    @abstractmethod
    def data_hash(self) -> str:
        """Hash of the data the suite scores (part of the baseline compatibility key)."""

    def identity(self) -> SuiteIdentity:
        """What a baseline of this suite must match (part of the compatibility key)."""
        return SuiteIdentity(version=self.version, data_hash=self.data_hash())

    @abstractmethod
    def plan(self, ctx: SuiteContext) -> list[Request]:
        """Requests for the runner (first stage)."""

    def plan_followup(self, ctx: SuiteContext, responses: Responses) -> list[Request]:
        """Requests that depend on first-stage responses (second stage). Default: none."""
        return []

    @abstractmethod
    def score(self, ctx: SuiteContext, responses: Responses) -> SuiteResult:
        """Pure scoring over the runner's responses."""

    # helpers for subclasses ------------------------------------------------------------

    def spec(self, name: str) -> MetricSpec:
        for s in self.metric_specs():
            if s.name == name:
                return s
        raise KeyError(f"{self.name}: unknown metric {name!r}")

    def result(
        self,
        name: str,
        value: float | None,
        per_sample: Mapping[str, float | None] | None = None,
        note: str | None = None,
    ) -> MetricResult:
        return MetricResult.from_spec(self.spec(name), value, per_sample, note)


_REGISTRY: dict[str, type[Suite]] = {}


def register_suite(cls: type[Suite]) -> type[Suite]:
    """Class decorator: make a suite available by its name."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"suite name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin_and_plugins() -> None:
    import dpo_harness.suites  # noqa: F401  (registers the built-in suites)

    for ep in entry_points(group="dpo_harness.suites"):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party suite must not break the harness
            raise BadInputError(
                f"suite entry point {ep.name!r} failed to load: {exc}",
                "fix or uninstall that package",
            ) from None
        if isinstance(obj, type) and issubclass(obj, Suite):
            register_suite(obj)


def available_suites() -> dict[str, type[Suite]]:
    _load_builtin_and_plugins()
    return dict(_REGISTRY)


# Where a person learns to declare a suite of their own (named in the fixes below).
USER_SUITES_DOC = "docs/user-suites.md"


def create_suite(name: str, data_path: Path | None = None) -> Suite:
    suites = available_suites()
    if name not in suites:
        raise BadInputError(
            f"unknown suite {name!r}",
            f"choose from: {', '.join(sorted(suites))}; or declare {name!r} in a suites YAML "
            f"file and pass it with --suite-file FILE ({USER_SUITES_DOC})",
        )
    return suites[name](data_path)

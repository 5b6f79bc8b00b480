"""User suites scored by the built-in suites' own code.

- ``multiple_choice``, ``short_answer``, ``numeric``: the rows become the ``adtech`` suite's
  items (:class:`~dpo_harness.suites.adtech.MultipleChoiceItem` and its siblings, validated the
  same way) and the ``adtech`` suite's requests and scoring run over them: a question is the
  user message of a chat prompt; multiple choice by the log-likelihood of each choice as the
  assistant's answer (``mc_accuracy``, per UTF-8 byte ``mc_accuracy_bytes``,
  ``mc_gold_margin``), short answers and numbers by the greedy answer.
- ``open_prompts``: the rows become open prompts, answered once and scored by the
  ``repetition`` and ``fluency`` suites' metrics together.

The built-in suites' code is reused, never copied: a change in it moves that suite's version,
which is part of every user suite's declaration hash (``UserSuite.reuses``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpo_harness.errors import BadInputError
from dpo_harness.evaluation.responses import Responses
from dpo_harness.evaluation.suite import Suite, SuiteContext
from dpo_harness.files import describe_validation_error
from dpo_harness.schema import MetricSpec, Request, SuiteResult
from dpo_harness.suites.adtech import (
    AdtechSuite,
    MultipleChoiceItem,
    NumericItem,
    ShortAnswerItem,
)
from dpo_harness.suites.common import OpenPrompt
from dpo_harness.suites.fluency import FluencySuite
from dpo_harness.suites.repetition import RepetitionSuite
from dpo_harness.suites.user.base import UserSuite
from dpo_harness.suites.user.declaration import (
    MultipleChoiceEntry,
    NumericEntry,
    OpenPromptsEntry,
    ShortAnswerEntry,
)
from dpo_harness.suites.user.sources import Row, Rows
from pydantic import BaseModel, ValidationError

__all__ = ["DomainItemsSuite", "OpenPromptsSuite", "row_ids"]

DomainEntry = MultipleChoiceEntry | ShortAnswerEntry | NumericEntry

# The adtech metrics each kind reports.
_DOMAIN_METRICS = {
    "multiple_choice": ("mc_accuracy", "mc_accuracy_bytes", "mc_gold_margin"),
    "short_answer": ("short_answer_accuracy",),
    "numeric": ("numeric_accuracy",),
}


def row_ids(rows: Rows, id_field: str | None, *, where: str) -> list[str]:
    """One id per row: the ``id_field`` value when the rows have one, else the row number."""
    if id_field is None or not any(id_field in row for row in rows.rows):
        return [str(k) for k in range(len(rows.rows))]
    ids: list[str] = []
    first: dict[str, int] = {}
    for k, row in enumerate(rows.rows):
        value = row.get(id_field)
        if value is None or str(value) == "":
            raise BadInputError(
                f"{where}: row {k} of {rows.origin} has no {id_field!r} (the other rows have one)",
                f"give every row an {id_field!r}, or set the id field (data.id_field) to null to number the rows",
            )
        item_id = str(value)
        if item_id in first:
            raise BadInputError(
                f"{where}: rows {first[item_id]} and {k} of {rows.origin} have the same "
                f"{id_field!r} {item_id!r}",
                "give every row a unique id (per-item results are paired by it)",
            )
        first[item_id] = k
        ids.append(item_id)
    return ids


class _Rows:
    """Reads the mapped fields of one row, naming the row and the mapping in errors."""

    def __init__(self, entry: Any, rows: Rows, where: str) -> None:
        self.entry = entry
        self.rows = rows
        self.where = where

    def get(self, row: Row, k: int, field: str, *, required: bool = True) -> Any:
        column = getattr(self.entry.fields, field)
        if column not in row or row[column] is None:
            if not required:
                return None
            raise BadInputError(
                f"{self.where}: row {k} of {self.rows.origin} has no field {column!r}",
                f"add it, or map fields.{field} to the column that holds the {field}",
            )
        return row[column]

    def item(self, model: type[BaseModel], data: dict[str, Any], k: int) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            what = describe_validation_error(exc).replace("<root>: ", "")
            raise BadInputError(
                f"{self.where}: row {k} of {self.rows.origin} is not a valid {self.entry.kind} "
                f"item: {what.replace('Value error, ', '')}",
                f"fix the row, or the fields mapping of suite {self.entry.name!r}",
            ) from None


def _category(r: _Rows, row: Row, k: int) -> str:
    value = r.get(row, k, "category", required=False)
    return "general" if value is None else str(value)


def _multiple_choice(r: _Rows, row: Row, k: int, item_id: str) -> Any:
    question = r.get(row, k, "question")
    choices = r.get(row, k, "choices")
    answer = r.get(row, k, "answer")
    if isinstance(answer, str) and isinstance(choices, list) and answer in choices:
        answer = choices.index(answer)
    data = {
        "id": item_id,
        "type": "multiple_choice",
        "category": _category(r, row, k),
        "question": question,
        "choices": choices,
        "answer": answer,
    }
    return r.item(MultipleChoiceItem, data, k)


def _short_answer(r: _Rows, row: Row, k: int, item_id: str) -> Any:
    accepted = r.get(row, k, "accepted")
    data = {
        "id": item_id,
        "type": "short_answer",
        "category": _category(r, row, k),
        "question": r.get(row, k, "question"),
        "accepted": [accepted] if isinstance(accepted, str) else accepted,
    }
    return r.item(ShortAnswerItem, data, k)


def _numeric(r: _Rows, row: Row, k: int, item_id: str) -> Any:
    data: dict[str, Any] = {
        "id": item_id,
        "type": "numeric",
        "category": _category(r, row, k),
        "question": r.get(row, k, "question"),
        "answer": r.get(row, k, "answer"),
    }
    for field in ("unit", "rel_tol", "abs_tol"):
        value = r.get(row, k, field, required=False)
        if value is not None:
            data[field] = value
    return r.item(NumericItem, data, k)


_BUILDERS: dict[str, Callable[[_Rows, Row, int, str], Any]] = {
    "multiple_choice": _multiple_choice,
    "short_answer": _short_answer,
    "numeric": _numeric,
}


class _AdtechItems(AdtechSuite):
    """The adtech suite's requests and scoring, over items held in memory (never its data file)."""

    def __init__(self, items: list[Any]) -> None:
        Suite.__init__(self, None)
        self.path = Path()
        self.items = items
        self.mc = [i for i in items if isinstance(i, MultipleChoiceItem)]
        self.short = [i for i in items if isinstance(i, ShortAnswerItem)]
        self.numeric = [i for i in items if isinstance(i, NumericItem)]

    def data_hash(self) -> str:
        return ""  # the user suite reports its own


class DomainItemsSuite(UserSuite):
    """Multiple choice, short answer or numeric items, scored by the adtech suite."""

    description = "User items scored like the adtech suite."
    reuses = (AdtechSuite,)

    def __init__(
        self, entry: DomainEntry, rows: Rows, *, declared_in: Path, rows_hash: str
    ) -> None:
        where = f"{declared_in}: suite {entry.name!r}"
        reader = _Rows(entry, rows, where)
        build = _BUILDERS[entry.kind]
        ids = row_ids(rows, entry.data.id_field, where=where)
        items = [build(reader, row, k, ids[k]) for k, row in enumerate(rows.rows)]
        self.scorer = _AdtechItems(items)
        super().__init__(
            entry,
            declared_in=declared_in,
            rows_hash=rows_hash,
            declaration=entry.model_dump(
                mode="json",
                include={"fields", "data"},
                exclude={"data": {"path", "dataset", "config", "split", "format"}},
            ),
        )

    def default_specs(self) -> list[MetricSpec]:
        names = _DOMAIN_METRICS[self.entry.kind]
        return [s for s in self.scorer.metric_specs() if s.name in names]

    def plan(self, ctx: SuiteContext) -> list[Request]:
        return self.scorer.plan(ctx)

    def score(self, ctx: SuiteContext, responses: Responses) -> SuiteResult:
        return self.adopt(self.scorer.score(ctx, responses))


class _RepetitionPrompts(RepetitionSuite):
    """The repetition suite over prompts held in memory."""

    def __init__(self, prompts: list[OpenPrompt]) -> None:
        Suite.__init__(self, None)
        self.path = Path()
        self.prompts = prompts

    def data_hash(self) -> str:
        return ""


class _FluencyPrompts(FluencySuite):
    """The fluency suite over prompts held in memory."""

    def __init__(self, prompts: list[OpenPrompt]) -> None:
        Suite.__init__(self, None)
        self.path = Path()
        self.prompts = prompts

    def data_hash(self) -> str:
        return ""


class OpenPromptsSuite(UserSuite):
    """Open prompts, answered once and scored by the repetition and fluency metrics."""

    description = "User prompts scored by the repetition and fluency metrics."
    reuses = (RepetitionSuite, FluencySuite)

    def __init__(
        self, entry: OpenPromptsEntry, rows: Rows, *, declared_in: Path, rows_hash: str
    ) -> None:
        where = f"{declared_in}: suite {entry.name!r}"
        reader = _Rows(entry, rows, where)
        ids = row_ids(rows, entry.data.id_field, where=where)
        prompts = [
            reader.item(
                OpenPrompt,
                {
                    "id": ids[k],
                    "prompt": reader.get(row, k, "prompt"),
                    "category": _category(reader, row, k),
                },
                k,
            )
            for k, row in enumerate(rows.rows)
        ]
        self.repetition = _RepetitionPrompts(prompts)
        self.fluency = _FluencyPrompts(prompts)
        super().__init__(
            entry,
            declared_in=declared_in,
            rows_hash=rows_hash,
            declaration=entry.model_dump(
                mode="json",
                include={"fields", "data"},
                exclude={"data": {"path", "dataset", "config", "split", "format"}},
            ),
        )

    def default_specs(self) -> list[MetricSpec]:
        return [*self.repetition.metric_specs(), *self.fluency.metric_specs()]

    def plan(self, ctx: SuiteContext) -> list[Request]:
        return [*self.repetition.plan(ctx), *self.fluency.plan(ctx)]

    def plan_followup(self, ctx: SuiteContext, responses: Responses) -> list[Request]:
        return self.fluency.plan_followup(ctx, responses)

    def score(self, ctx: SuiteContext, responses: Responses) -> SuiteResult:
        rep = self.repetition.score(ctx, responses)
        flu = self.fluency.score(ctx, responses)
        both = rep.model_copy(
            update={
                "metrics": [*rep.metrics, *flu.metrics],
                "findings": [*rep.findings, *flu.findings],
            }
        )
        return self.adopt(both)

"""Shared helpers for the built-in suites: data locations, prompt files, per-item aggregation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from dpo_harness.errors import BadInputError
from dpo_harness.files import describe_validation_error, read_jsonl
from dpo_harness.schema import ChatMessage, Prompt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "DATA_DIR",
    "HeldoutText",
    "OpenPrompt",
    "Probe",
    "load_items",
    "mean",
    "open_prompts_path",
    "user_prompt",
]

DATA_DIR = Path(__file__).resolve().parent / "data"

M = TypeVar("M", bound=BaseModel)


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1)


class OpenPrompt(_Item):
    """A free-generation prompt (scored by the repetition and fluency suites)."""

    prompt: str = Field(min_length=1)
    category: str = "general"


class Probe(_Item):
    """A fixed (prompt, continuation) pair for teacher-forced logit statistics."""

    prompt: str = Field(min_length=1)
    continuation: str = Field(min_length=1)


class HeldoutText(_Item):
    """Human-written Japanese for held-out perplexity (not part of any training data)."""

    text: str = Field(min_length=1)
    topic: str = ""


def open_prompts_path() -> Path:
    return DATA_DIR / "open_prompts.jsonl"


def load_items(path: Path, model: Any, *, what: str) -> list[Any]:
    """Validate every line of a JSONL file; errors name the file, the line and the field."""
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(model)
    items: list[Any] = []
    seen: dict[str, int] = {}
    for lineno, obj in read_jsonl(path):
        try:
            item = adapter.validate_python(obj)
        except ValidationError as exc:
            raise BadInputError(
                f"{path}:{lineno}: invalid {what}: {describe_validation_error(exc)}",
                f"fix line {lineno} (the {what} format is documented in docs/data-formats.md)",
            ) from None
        item_id = getattr(item, "id")  # noqa: B009 - every item model has an id
        if item_id in seen:
            raise BadInputError(
                f"{path}:{lineno}: duplicate id {item_id!r} (first on line {seen[item_id]})",
                "give every item a unique id",
            )
        seen[item_id] = lineno
        items.append(item)
    if not items:
        raise BadInputError(f"{path}: no {what} items", "the file must hold at least one JSON line")
    return items


def user_prompt(text: str) -> Prompt:
    return (ChatMessage(role="user", content=text),)


def mean(values: Iterable[float | None]) -> float | None:
    """Mean over the items that have a value (None = not applicable); None when none do.

    A non-finite value makes the mean NaN: a NaN must fail loudly, never be averaged away.
    """
    vals = [v for v in values if v is not None]
    if any(not math.isfinite(v) for v in vals):
        return float("nan")
    return sum(vals) / len(vals) if vals else None


def per_item(ids: Iterable[str], values: Iterable[float | None]) -> dict[str, float | None]:
    return dict(zip(ids, values, strict=True))


def share(flags: Mapping[str, bool]) -> float | None:
    return sum(flags.values()) / len(flags) if flags else None

"""Row validation: every row parsed into prompt / chosen / rejected, or an issue naming row and field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dpo_harness.errors import BadInputError
from dpo_harness.plugins.dpo.preflight.models import (
    _EXAMPLE_CHARS,
    _ROLES,
    SKIP_FIX,
    Completion,
    Format,
    Message,
    PreflightIssue,
)

# --------------------------------------------------------------------------- row validation


class _RowProblem(Exception):
    """Raised inside row validation; becomes a :class:`PreflightIssue`."""

    def __init__(self, field: str | None, kind: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.kind = kind
        self.message = message


@dataclass
class _Row:
    """A row that can be trained on, with an explicit prompt."""

    index: int
    row_id: str | None
    format: Format
    prompt: Completion
    chosen: Completion
    rejected: Completion
    implicit: bool

    def cleaned(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


def _row_id(raw: Any) -> str | None:
    if isinstance(raw, Mapping) and raw.get("id") is not None:
        return str(raw["id"])
    return None


def _type_name(value: Any) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    name = {int: "a number", float: "a number", bool: "true/false", type(None): "null"}.get(
        type(value)
    )
    return name or f"a {type(value).__name__}"


def _messages(field: str, value: Any) -> list[Message]:
    """A non-empty list of ``{role, content}`` messages, roles and contents checked."""
    if not isinstance(value, list | tuple) or not value:
        raise _RowProblem(field, "empty", f"field '{field}' is an empty list of messages")
    out: list[Message] = []
    for i, msg in enumerate(value):
        if not isinstance(msg, Mapping) or "role" not in msg or "content" not in msg:
            raise _RowProblem(
                field,
                "wrong_type",
                f"field '{field}' message {i} is not a {{role, content}} object",
            )
        role, content = msg["role"], msg["content"]
        if role not in _ROLES:
            raise _RowProblem(
                field,
                "bad_role",
                f"field '{field}' message {i} has role {role!r} (expected system, user or assistant)",
            )
        if not isinstance(content, str):
            raise _RowProblem(
                field,
                "wrong_type",
                f"field '{field}' message {i} has content that is {_type_name(content)}, not text",
            )
        if not content.strip():
            raise _RowProblem(field, "empty", f"field '{field}' message {i} has empty content")
        # Only role and content: datasets fills keys missing in some messages with None.
        out.append({"role": role, "content": content})
    return out


def _check_prompt_messages(prompt: list[Message], implicit: bool) -> None:
    if prompt[-1]["role"] == "user":
        return
    what = "the messages chosen and rejected share" if implicit else "field 'prompt'"
    raise _RowProblem(
        "prompt",
        "bad_role",
        f"{what} end with role {prompt[-1]['role']!r}; a prompt must end with a user turn",
    )


def _check_completion_messages(field: str, messages: list[Message]) -> None:
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            raise _RowProblem(
                field,
                "bad_role",
                f"field '{field}' message {i} has role {msg['role']!r}; an answer must be assistant messages",
            )


def _text(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _RowProblem(
            field, "wrong_type", f"field '{field}' is {_type_name(value)}, expected a string"
        )
    if not value.strip():
        raise _RowProblem(field, "empty", f"field '{field}' is empty")
    return value


def _common_prefix_len(a: Sequence[Any], b: Sequence[Any]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _split_text(chosen: str, rejected: str) -> tuple[str, str, str]:
    """TRL's ``extract_prompt`` for strings: the longest common *character* prefix."""
    n = _common_prefix_len(chosen, rejected)
    if n and chosen[n - 1] == " ":  # TRL leaves a space before the split in the answers
        n -= 1
    if n == 0:
        raise _RowProblem(
            None,
            "no_prompt",
            "there is no 'prompt' field and chosen and rejected share no opening text to use as one",
        )
    return chosen[:n], chosen[n:], rejected[n:]


def _split_messages(
    chosen: list[Message], rejected: list[Message]
) -> tuple[list[Message], list[Message], list[Message]]:
    """Implicit conversational prompt: the messages chosen and rejected share, as TRL does."""
    n = _common_prefix_len(chosen, rejected)
    if n == 0:
        raise _RowProblem(
            None,
            "no_prompt",
            "there is no 'prompt' field and chosen and rejected share no opening message to use as one",
        )
    return chosen[:n], chosen[n:], rejected[n:]


def _standard_row(index: int, row_id: str | None, raw: Mapping[str, Any]) -> _Row:
    chosen, rejected = _text("chosen", raw["chosen"]), _text("rejected", raw["rejected"])
    prompt = raw.get("prompt")
    implicit = prompt is None
    if implicit:
        prompt, chosen, rejected = _split_text(chosen, rejected)
    elif isinstance(prompt, list | tuple):
        raise _RowProblem(
            "prompt",
            "mixed_format",
            "field 'prompt' is a list of messages but the answers are strings",
        )
    else:
        prompt = _text("prompt", prompt)
    for field, value in (("chosen", chosen), ("rejected", rejected)):
        if not value.strip():  # after an implicit split, one answer may be the shared prefix only
            raise _RowProblem(field, "empty", f"field '{field}' is empty after the shared prompt")
    return _Row(index, row_id, "standard", prompt, chosen, rejected, implicit)


def _conversational_row(index: int, row_id: str | None, raw: Mapping[str, Any]) -> _Row:
    chosen, rejected = _messages("chosen", raw["chosen"]), _messages("rejected", raw["rejected"])
    raw_prompt = raw.get("prompt")
    implicit = raw_prompt is None
    if implicit:
        prompt, chosen, rejected = _split_messages(chosen, rejected)
        for field, value in (("chosen", chosen), ("rejected", rejected)):
            if not value:
                raise _RowProblem(
                    field, "empty", f"field '{field}' has no message after the shared conversation"
                )
    elif isinstance(raw_prompt, str):
        raise _RowProblem(
            "prompt",
            "mixed_format",
            "field 'prompt' is a string but the answers are lists of messages",
        )
    else:
        prompt = _messages("prompt", raw_prompt)
    _check_prompt_messages(prompt, implicit)
    _check_completion_messages("chosen", chosen)
    _check_completion_messages("rejected", rejected)
    return _Row(index, row_id, "conversational", prompt, chosen, rejected, implicit)


def _row_format(chosen: Any, rejected: Any) -> Format:
    for field, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str | list | tuple):
            raise _RowProblem(
                field,
                "wrong_type",
                f"field '{field}' is {_type_name(value)}, expected a string or a list of messages",
            )
    if isinstance(chosen, str) != isinstance(rejected, str):
        raise _RowProblem(
            "rejected",
            "mixed_format",
            f"field 'chosen' is {_type_name(chosen)} but 'rejected' is {_type_name(rejected)}",
        )
    return "standard" if isinstance(chosen, str) else "conversational"


def _quote_tail(text: str) -> str:
    """The end of a prompt, where an implicit split cuts: ``'…。CTRは'``."""
    tail = text[-_EXAMPLE_CHARS:]
    return repr(("…" if len(text) > _EXAMPLE_CHARS else "") + tail)


def _answer_text(value: Completion) -> str:
    if isinstance(value, str):
        return value
    return "\n".join(m["content"] for m in value)


def _parse_row(index: int, raw: Any) -> _Row:
    """Validate one row and make its prompt explicit. Raises :class:`_RowProblem`."""
    if not isinstance(raw, Mapping):
        raise _RowProblem(
            None,
            "wrong_type",
            f"the row is {_type_name(raw)}, expected an object with chosen/rejected",
        )
    for field in ("chosen", "rejected"):
        # datasets fills a key missing in some rows with None: the same as missing.
        if raw.get(field) is None:
            raise _RowProblem(field, "missing", f"field '{field}' is missing")
    row_id = _row_id(raw)
    if _row_format(raw["chosen"], raw["rejected"]) == "standard":
        row = _standard_row(index, row_id, raw)
    else:
        row = _conversational_row(index, row_id, raw)
    if _answer_text(row.chosen).strip() == _answer_text(row.rejected).strip():
        raise _RowProblem("rejected", "identical", "chosen and rejected are the same answer")
    return row


def _issue(index: int, raw: Any, problem: _RowProblem) -> PreflightIssue:
    return PreflightIssue(
        row=index,
        row_id=_row_id(raw),
        field=problem.field,
        kind=problem.kind,
        message=problem.message,
    )


def _mixed_issue(row: _Row, expected: Format, first: int) -> PreflightIssue:
    return PreflightIssue(
        row=row.index,
        row_id=row.row_id,
        field="chosen",
        kind="mixed_format",
        message=(
            f"the row is {row.format} but the dataset is {expected} (from row {first}); "
            "TRL needs one format for every row"
        ),
    )


def _validate(
    rows: Sequence[Any], *, skip_bad_rows: bool, source: str
) -> tuple[list[_Row], list[PreflightIssue], Format]:
    """Parse every row; raise on the first bad one unless ``skip_bad_rows``."""
    parsed: list[_Row | PreflightIssue] = []
    for index, raw in enumerate(rows):
        try:
            parsed.append(_parse_row(index, raw))
        except _RowProblem as problem:
            parsed.append(_issue(index, raw, problem))
    first_good = next((p for p in parsed if isinstance(p, _Row)), None)
    fmt: Format = first_good.format if first_good is not None else "standard"
    good: list[_Row] = []
    errors: list[PreflightIssue] = []
    for item in parsed:  # in row order, so the first problem raised is the first in the file
        if isinstance(item, _Row) and item.format != fmt:
            assert first_good is not None
            item = _mixed_issue(item, fmt, first_good.index)
        if isinstance(item, _Row):
            good.append(item)
            continue
        if not skip_bad_rows:
            raise BadInputError(f"{item.where(source)}: {item.message}", SKIP_FIX)
        errors.append(item)
    return good, errors, fmt

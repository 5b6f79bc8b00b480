"""Data preflight: the checks TRL does not do before DPO training.

TRL's ``DPOTrainer`` accepts almost any preference dataset and quietly does something with it:
it takes the longest common *character* prefix as the prompt when there is none (in Japanese this
moves the start of the answer into the prompt), cuts the end of rows longer than ``max_length``
(the EOS included, so the model never sees those answers end), drops rows whose prompt alone
fills ``max_length``, and never looks at whether an answer repeats the question or whether the
chosen answers are simply the longer ones. This module runs those checks first, on the rows and
the tokenizer that training will use, and says what it found in sentences a person understands.

It does not import TRL: the tokenizer is passed in, and the tokenization mirrors TRL 1.16
(``trl.trainer.dpo_trainer.DPOTrainer._prepare_dataset``).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dpo_harness.errors import BadInputError
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "SUMMARY_HEADERS",
    "LengthBias",
    "PreflightIssue",
    "PreflightReport",
    "load_preference_rows",
    "preflight",
]

Format = Literal["standard", "conversational"]
Message = dict[str, str]
Completion = str | list[Message]

SUMMARY_HEADERS = ("check", "result")
SKIP_FIX = "fix the row, or pass --skip-bad-rows to drop such rows (they are counted in the report)"

_ROLES = frozenset({"system", "user", "assistant"})
# Length bias: the chosen answer is longer in more than 80% (or fewer than 20%) of pairs, or the
# mean token lengths differ by more than a factor of 1.5.
_BIAS_SHARE = (0.2, 0.8)
_BIAS_RATIO = (0.67, 1.5)
# A prompt this short ("はい", "OK") appears inside good answers by chance: not a repeat.
_MIN_REPEAT_CHARS = 4
# Below this many pairs a share of 80% is a handful of rows: too few to call a bias.
_MIN_BIAS_PAIRS = 10
_MAX_IDS_LISTED = 5
_EXAMPLE_CHARS = 30


# --------------------------------------------------------------------------- report models


class PreflightIssue(BaseModel):
    """One problem with one row: an error (the row cannot be trained on) or a warning."""

    model_config = ConfigDict(frozen=True)

    row: int  # 0-based index in the dataset as given
    row_id: str | None = None  # the row's ``id`` field, when it has one
    field: str | None = None
    kind: str
    message: str

    def where(self, source: str = "dataset") -> str:
        """``"train.jsonl row 17 (id p0018)"``: how a person finds the row."""
        ident = f" (id {self.row_id})" if self.row_id is not None else ""
        return f"{source} row {self.row}{ident}"


class LengthBias(BaseModel):
    """Chosen vs rejected answer lengths: DPO rewards whatever separates the two.

    ``biased`` when chosen is the longer one in more than 80% or fewer than 20% of pairs, or the
    mean token lengths differ by more than 1.5× (judged from 10 pairs up).
    """

    n_pairs: int = 0
    mean_chosen_chars: float = 0.0
    mean_rejected_chars: float = 0.0
    mean_chosen_tokens: float = 0.0
    mean_rejected_tokens: float = 0.0
    chosen_longer_share: float = 0.5  # in tokens; a tie counts as half
    token_ratio: float | None = None  # mean chosen tokens / mean rejected tokens
    biased: bool = False


class PreflightReport(BaseModel):
    """What :func:`preflight` found. ``findings`` is what a person reads."""

    n_rows: int
    n_usable: int
    format: Format
    implicit_prompt: bool = False
    errors: list[PreflightIssue] = Field(default_factory=list)  # rows that cannot be trained on
    skipped_rows: list[int] = Field(default_factory=list)
    warnings: list[PreflightIssue] = Field(default_factory=list)
    truncated_rows: int = 0  # prompt + completion longer than max_length: the EOS is cut
    dropped_rows: int = 0  # prompt alone >= max_length: TRL drops the row
    prompt_repeated_rows: int = 0
    max_length: int = 0
    longest_row_tokens: int = 0
    length_bias: LengthBias = Field(default_factory=LengthBias)
    findings: list[str] = Field(default_factory=list)

    def summary_rows(self) -> list[tuple[str, str]]:
        """Rows for ``tabulate(report.summary_rows(), headers=SUMMARY_HEADERS)``."""
        lb = self.length_bias
        ratio = f"{lb.token_ratio:.2f}" if lb.token_ratio is not None else "n/a"
        return [
            ("rows", str(self.n_rows)),
            ("usable", str(self.n_usable)),
            ("skipped (cannot be trained on)", str(len(self.skipped_rows))),
            ("format", self.format),
            ("implicit prompt", "yes" if self.implicit_prompt else "no"),
            ("prompt repeated in answer", str(self.prompt_repeated_rows)),
            (f"truncated (> {self.max_length} tokens)", str(self.truncated_rows)),
            (f"dropped (prompt >= {self.max_length} tokens)", str(self.dropped_rows)),
            ("longest row (tokens)", str(self.longest_row_tokens)),
            ("chosen longer (share of pairs)", f"{lb.chosen_longer_share:.0%}"),
            ("chosen/rejected token ratio", ratio),
            ("length bias", "yes" if lb.biased else "no"),
        ]


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


# --------------------------------------------------------------------------- checks


def _repeats_prompt(row: _Row) -> bool:
    """The answer starts with or contains the question (TRL does not check this)."""
    if isinstance(row.prompt, str):
        question = row.prompt.strip()
    else:
        question = next(m["content"] for m in reversed(row.prompt) if m["role"] == "user").strip()
    if len(question) < _MIN_REPEAT_CHARS:
        return False
    return any(question in _answer_text(a) for a in (row.chosen, row.rejected))


@dataclass
class _Lengths:
    """Token counts as TRL computes them for one row."""

    prompt: int  # where the completion starts (TRL: common prefix of prompt and prompt+answer)
    chosen_full: int  # prompt + chosen (+ EOS for standard rows)
    rejected_full: int
    prompt_not_prefix: bool  # the tokenized prompt is not a prefix of prompt + answer

    @property
    def longest(self) -> int:
        return max(self.chosen_full, self.rejected_full)

    @property
    def chosen_tokens(self) -> int:
        return self.chosen_full - self.prompt

    @property
    def rejected_tokens(self) -> int:
        return self.rejected_full - self.prompt


def _as_messages(value: Completion) -> list[Message]:
    assert not isinstance(value, str), "conversational rows hold message lists"
    return value


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[Message], gen: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    return str(text)


def _texts(
    rows: Sequence[_Row], tokenizer: PreTrainedTokenizerBase, fmt: Format
) -> tuple[list[str], list[str], list[str]]:
    """Prompt, prompt+chosen and prompt+rejected texts, built the way TRL builds them."""
    if fmt == "conversational":
        if not getattr(tokenizer, "chat_template", None):
            raise BadInputError(
                "the rows are conversational (lists of messages) but the tokenizer has no chat template",
                "use the chat model's own tokenizer, or set tokenizer.chat_template",
            )
        convs = [
            (_as_messages(r.prompt), _as_messages(r.chosen), _as_messages(r.rejected)) for r in rows
        ]
        return (
            [_render(tokenizer, p, True) for p, _, _ in convs],
            [_render(tokenizer, p + c, False) for p, c, _ in convs],
            [_render(tokenizer, p + r, False) for p, _, r in convs],
        )
    # Standard rows: TRL appends the EOS token to each answer that does not already end with it.
    eos = tokenizer.eos_token or ""

    def with_eos(text: str) -> str:
        return text if text.endswith(eos) else text + eos

    return (
        [str(r.prompt) for r in rows],
        [str(r.prompt) + with_eos(str(r.chosen)) for r in rows],
        [str(r.prompt) + with_eos(str(r.rejected)) for r in rows],
    )


def _token_lengths(
    rows: Sequence[_Row], tokenizer: PreTrainedTokenizerBase, fmt: Format
) -> list[_Lengths]:
    if not rows:
        return []
    prompts, chosens, rejecteds = _texts(rows, tokenizer, fmt)
    # A rendered chat template already carries its special tokens (apply_chat_template tokenizes
    # with add_special_tokens=False); plain strings get them from the tokenizer, as in TRL.
    special = fmt == "standard"

    def ids(texts: list[str]) -> list[list[int]]:
        return list(tokenizer(texts, add_special_tokens=special)["input_ids"])

    out = []
    for p, c, r in zip(ids(prompts), ids(chosens), ids(rejecteds), strict=True):
        start = min(_common_prefix_len(p, c), _common_prefix_len(p, r))
        out.append(_Lengths(start, len(c), len(r), start < len(p)))
    return out


def _length_bias(rows: Sequence[_Row], lengths: Sequence[_Lengths]) -> LengthBias:
    if not rows:
        return LengthBias()
    chosen_tok = [ln.chosen_tokens for ln in lengths]
    rejected_tok = [ln.rejected_tokens for ln in lengths]
    longer = sum(
        1.0 if c > r else 0.5 if c == r else 0.0
        for c, r in zip(chosen_tok, rejected_tok, strict=True)
    )
    share = longer / len(rows)
    mean_c, mean_r = statistics.fmean(chosen_tok), statistics.fmean(rejected_tok)
    ratio = mean_c / mean_r if mean_r > 0 else None
    biased = len(rows) >= _MIN_BIAS_PAIRS and (
        not (_BIAS_SHARE[0] <= share <= _BIAS_SHARE[1])
        or (ratio is not None and not (_BIAS_RATIO[0] <= ratio <= _BIAS_RATIO[1]))
    )
    return LengthBias(
        n_pairs=len(rows),
        mean_chosen_chars=statistics.fmean(len(_answer_text(r.chosen)) for r in rows),
        mean_rejected_chars=statistics.fmean(len(_answer_text(r.rejected)) for r in rows),
        mean_chosen_tokens=mean_c,
        mean_rejected_tokens=mean_r,
        chosen_longer_share=share,
        token_ratio=ratio,
        biased=biased,
    )


def _warn(row: _Row, kind: str, message: str, field: str | None = None) -> PreflightIssue:
    return PreflightIssue(row=row.index, row_id=row.row_id, field=field, kind=kind, message=message)


def _row_warnings(
    rows: Sequence[_Row], lengths: Sequence[_Lengths], max_length: int
) -> Iterator[PreflightIssue]:
    for row, ln in zip(rows, lengths, strict=True):
        if row.implicit and row.format == "standard":
            yield _warn(
                row,
                "implicit_prompt",
                f"no 'prompt' field: TRL would use {_quote_tail(str(row.prompt))}",
            )
        if _repeats_prompt(row):
            yield _warn(row, "prompt_repeated", "the answer repeats the prompt")
        if ln.prompt >= max_length:
            yield _warn(
                row,
                "dropped",
                f"the prompt is {ln.prompt} tokens (max_length {max_length}): TRL drops the row",
            )
        elif ln.longest > max_length:
            yield _warn(
                row,
                "truncated",
                f"prompt + answer is {ln.longest} tokens (max_length {max_length}): the end and the EOS are cut",
            )
        if row.format == "standard" and str(row.prompt) != str(row.prompt).rstrip():
            yield _warn(
                row, "prompt_trailing_space", "the prompt ends in whitespace", field="prompt"
            )
        if ln.prompt_not_prefix:
            yield _warn(
                row,
                "prompt_not_prefix",
                "the tokenized prompt is not a prefix of prompt + answer",
                field="prompt",
            )


# --------------------------------------------------------------------------- findings


def _quote_tail(text: str) -> str:
    """The end of a prompt, where an implicit split cuts: ``'…。CTRは'``."""
    tail = text[-_EXAMPLE_CHARS:]
    return repr(("…" if len(text) > _EXAMPLE_CHARS else "") + tail)


def _row_names(issues: Sequence[PreflightIssue]) -> str:
    names = [i.row_id if i.row_id is not None else f"row {i.row}" for i in issues[:_MAX_IDS_LISTED]]
    more = f" and {len(issues) - _MAX_IDS_LISTED} more" if len(issues) > _MAX_IDS_LISTED else ""
    return ", ".join(names) + more


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _bias_finding(lb: LengthBias) -> str:
    means = (
        f"mean {lb.mean_chosen_tokens:.0f} vs {lb.mean_rejected_tokens:.0f} tokens, "
        f"{lb.mean_chosen_chars:.0f} vs {lb.mean_rejected_chars:.0f} characters"
    )
    if lb.n_pairs < _MIN_BIAS_PAIRS:
        return f"Too few pairs ({lb.n_pairs}) to judge length bias ({means})."
    if not lb.biased:
        return (
            f"Chosen and rejected answers have similar lengths (chosen longer in "
            f"{lb.chosen_longer_share:.0%} of pairs, {means})."
        )
    if lb.chosen_longer_share > _BIAS_SHARE[1]:
        what = f"chosen is longer in {lb.chosen_longer_share:.0%} of pairs ({means})"
    elif lb.chosen_longer_share < _BIAS_SHARE[0]:
        what = f"chosen is shorter in {1 - lb.chosen_longer_share:.0%} of pairs ({means})"
    else:
        what = f"chosen answers are {lb.token_ratio:.2f}× as long as rejected ones on average ({means})"
    return (
        f"Length bias: {what}: DPO can learn length instead of quality; "
        "add pairs where the better answer is the shorter one."
    )


def _by_kind(warnings: Sequence[PreflightIssue], kind: str) -> list[PreflightIssue]:
    return [w for w in warnings if w.kind == kind]


def _findings(
    report: PreflightReport, rows: Sequence[_Row], tokenizer: PreTrainedTokenizerBase
) -> list[str]:
    out = [f"{report.n_usable} of {report.n_rows} rows can be trained on ({report.format} format)."]
    if report.errors:
        first = report.errors[0]
        out.append(
            f"{_rows(len(report.errors))} skipped because they cannot be trained on "
            f"(first: {first.where()}: {first.message})."
        )
    if not rows:
        out.append("No row can be trained on: fix the data before training.")
        return out
    if report.format == "standard" and getattr(tokenizer, "chat_template", None):
        out.append(
            "The rows are plain strings, so TRL will not apply the tokenizer's chat template: "
            "a chat model would be trained without its template; prefer lists of messages."
        )
    out.extend(_implicit_findings(report, rows))
    repeated = _by_kind(report.warnings, "prompt_repeated")
    if repeated:
        out.append(
            f"{_rows(len(repeated))} repeat the prompt inside chosen or rejected "
            f"({_row_names(repeated)}): DPO learns to echo the question; remove the echo."
        )
    out.extend(_length_findings(report))
    out.append(_bias_finding(report.length_bias))
    return out


def _implicit_findings(report: PreflightReport, rows: Sequence[_Row]) -> list[str]:
    implicit = [r for r in rows if r.implicit]
    if not implicit:
        return []
    if report.format == "conversational":
        return [
            f"{_rows(len(implicit))} have no explicit prompt; they were split after the last "
            "message chosen and rejected share, and are returned with an explicit prompt."
        ]
    example = _quote_tail(str(implicit[0].prompt))
    return [
        f"{_rows(len(implicit))} have no explicit prompt; TRL would use the longest common "
        "character prefix, which in Japanese can swallow the start of the answer "
        f"(e.g. {example}); add a 'prompt' field."
    ]


def _length_findings(report: PreflightReport) -> list[str]:
    out = []
    limit, longest = report.max_length, report.longest_row_tokens
    fix = f"raise max_length to at least {longest} (the longest row)"
    if report.dropped_rows:
        out.append(
            f"{_rows(report.dropped_rows)} have a prompt of max_length ({limit}) tokens or more: "
            f"TRL drops them; {fix}, or shorten those prompts."
        )
    if report.truncated_rows:
        out.append(
            f"{_rows(report.truncated_rows)} are longer than max_length ({limit}) tokens: TRL cuts "
            f"the end, EOS included, so the model never sees those answers end; {fix}."
        )
    not_prefix = _by_kind(report.warnings, "prompt_not_prefix")
    if not_prefix:
        out.append(
            f"In {_rows(len(not_prefix))} the tokenized prompt is not a prefix of prompt + answer "
            "(a prompt ending in a space, or tokens merging across the boundary): TRL trains on a "
            "context that differs from the one at inference; end prompts on a token boundary."
        )
    spaced = _by_kind(report.warnings, "prompt_trailing_space")
    if spaced:
        out.append(
            f"{_rows(len(spaced))} have a prompt that ends in whitespace ({_row_names(spaced)}): "
            "most tokenizers merge it into the answer's first token, so TRL trains on a context "
            "that differs from inference; move the space into the answer or drop it."
        )
    if not (report.dropped_rows or report.truncated_rows):
        out.append(
            f"No row is truncated at max_length {limit} (the longest row is {longest} tokens)."
        )
    return out


# --------------------------------------------------------------------------- entry points


def preflight(
    rows: Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    skip_bad_rows: bool = False,
    source: str = "dataset",
) -> tuple[list[dict[str, Any]], PreflightReport]:
    """Check preference rows before DPO training.

    Returns the cleaned rows (only ``prompt``, ``chosen`` and ``rejected``, the prompt always
    explicit, bad rows removed) and the report. Without ``skip_bad_rows`` the first row that
    cannot be trained on raises :class:`BadInputError` naming the row, its id and the field.
    ``source`` names the data in messages (e.g. the file name).
    """
    if max_length < 1:
        raise BadInputError(f"max_length must be a positive number of tokens, got {max_length}")
    if not rows:
        raise BadInputError(f"{source} has no rows", "point to a file with preference pairs")
    good, errors, fmt = _validate(rows, skip_bad_rows=skip_bad_rows, source=source)
    lengths = _token_lengths(good, tokenizer, fmt)
    warnings = list(_row_warnings(good, lengths, max_length))
    report = PreflightReport(
        n_rows=len(rows),
        n_usable=len(good),
        format=fmt,
        implicit_prompt=any(r.implicit for r in good),
        errors=errors,
        skipped_rows=[e.row for e in errors],
        warnings=warnings,
        truncated_rows=len(_by_kind(warnings, "truncated")),
        dropped_rows=len(_by_kind(warnings, "dropped")),
        prompt_repeated_rows=len(_by_kind(warnings, "prompt_repeated")),
        max_length=max_length,
        longest_row_tokens=max((ln.longest for ln in lengths), default=0),
        length_bias=_length_bias(good, lengths),
    )
    report.findings = _findings(report, good, tokenizer)
    return [r.cleaned() for r in good], report


_LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def _looks_like_path(path_or_id: str) -> bool:
    """A file name or a path, rather than a hub id such as ``owner/name``."""
    return Path(path_or_id).suffix.lower() in _LOCAL_BUILDERS or path_or_id.startswith(
        ("/", ".", "~")
    )


def _bad_json(
    path: Path, line: int, err: json.JSONDecodeError | str, *, lines: bool = True
) -> BadInputError:
    why = err.msg if isinstance(err, json.JSONDecodeError) else err
    if lines:
        return BadInputError(
            f"{path} line {line}: not a valid JSON object ({why})",
            "fix or remove that line: each line of a JSONL file must be one JSON object",
        )
    return BadInputError(
        f"{path} line {line}: not valid JSON ({why})",
        "fix the file at that line: a .json file must be one array of objects (or JSON Lines)",
    )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse line by line, so that a malformed file is reported with its line number."""
    rows: list[dict[str, Any]] = []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _bad_json(path, number, "not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise _bad_json(path, number, err) from None
            if not isinstance(value, dict):
                raise _bad_json(path, number, f"{_type_name(value)}, not an object")
            rows.append(value)
    return rows


def _check_json_file(path: Path) -> list[dict[str, Any]]:
    """Validate a local JSON/JSONL file; return its rows (used if datasets cannot build a table)."""
    if path.suffix.lower() == ".json":
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.lstrip().startswith("["):  # one JSON array; anything else is read as JSON Lines
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise _bad_json(path, err.lineno, err, lines=False) from None
            return [v for v in value if isinstance(v, dict)]
    return _read_jsonl(path)


def _select_split(
    rows: list[dict[str, Any]], field: str, split: str | None, where: str
) -> list[dict[str, Any]]:
    if split is None:
        raise BadInputError(
            f"data_files_split_field={field!r} needs a split to select",
            "pass split='train' or 'eval'",
        )
    if rows and field not in rows[0]:
        raise BadInputError(f"{where} has no {field!r} column to select the split from")
    selected = [r for r in rows if r.get(field) == split]
    if not selected:
        found = sorted({str(r.get(field)) for r in rows})
        raise BadInputError(
            f"{where} has no rows with {field} == {split!r}",
            f"use one of the values found: {', '.join(found) or 'none'}",
        )
    return selected


def _load_local(path: Path, split: str | None, field: str | None) -> list[dict[str, Any]]:
    import datasets

    builder = None if path.is_dir() else _LOCAL_BUILDERS.get(path.suffix.lower())
    if builder is None:  # a directory (or an unknown file type): let datasets find the data
        return _load_hub(str(path), split, field)
    checked = _check_json_file(path) if builder == "json" else None
    if split not in (None, "train") and field is None:
        raise BadInputError(
            f"{path} is a single file, so it has no split {split!r}",
            "pass data_files_split_field (e.g. 'split') to select rows by a column",
        )
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
        rows: list[dict[str, Any]] = ds.to_list()
    except Exception as err:  # datasets/pyarrow raise many types for one bad file
        if checked is None:
            raise BadInputError(f"{path} could not be read: {err}") from None
        # The JSON is valid but datasets cannot make one table of it (rows in different
        # formats): check the parsed rows instead, so that preflight names the odd row.
        rows = checked
    return _select_split(rows, field, split, str(path)) if field else rows


def _load_hub(name: str, split: str | None, field: str | None) -> list[dict[str, Any]]:
    import datasets

    # With a split column, load everything and select rows; otherwise ask datasets for the split.
    hub_split = "train" if field else (split or "train")
    try:
        ds = datasets.load_dataset(name, split=hub_split)
    except Exception as err:  # offline, not found, no such split: all one answer for the user
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BadInputError(
            f"could not load dataset {name!r}: {first_line}",
            "check the path or hub id (and the split), and that you are online for a hub dataset",
        ) from None
    rows: list[dict[str, Any]] = ds.to_list()
    return _select_split(rows, field, split, name) if field else rows


def load_preference_rows(
    path_or_id: str, *, split: str | None = None, data_files_split_field: str | None = None
) -> list[dict[str, Any]]:
    """Load preference rows from a local JSON/JSONL/Parquet file, a directory, or a hub id.

    JSON Lines files are validated line by line first, so a malformed file is reported with the
    line to fix. With ``data_files_split_field`` (e.g. ``"split"``), only rows whose field equals
    ``split`` are returned (the demo file keeps train and eval rows in one file).
    """
    try:
        import datasets  # noqa: F401  (an optional dependency: the ``train`` extra)
    except ImportError:
        raise BadInputError(
            "loading preference data needs the 'datasets' package",
            "pip install 'dpo-harness[train]'",
        ) from None
    path = Path(path_or_id).expanduser()
    if path.exists():
        return _load_local(path, split, data_files_split_field)
    if _looks_like_path(path_or_id):
        raise BadInputError(
            f"preference data not found: {path_or_id}", "check the path (or pass a hub dataset id)"
        )
    return _load_hub(path_or_id, split, data_files_split_field)

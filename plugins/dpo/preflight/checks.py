"""Checks on valid rows, with the tokenizer training will use: lengths, truncation, length bias, repeats."""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dpo_harness.errors import BadInputError
from dpo_harness.plugins.dpo.preflight.models import (
    _BIAS_RATIO,
    _BIAS_SHARE,
    _MIN_BIAS_PAIRS,
    _MIN_REPEAT_CHARS,
    Completion,
    Format,
    LengthBias,
    Message,
    PreflightIssue,
)
from dpo_harness.plugins.dpo.preflight.rows import (
    _answer_text,
    _common_prefix_len,
    _quote_tail,
    _Row,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

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

"""What the checks found, as sentences a person understands (one per finding)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dpo_harness.plugins.dpo.preflight.models import (
    _BIAS_SHARE,
    _MAX_IDS_LISTED,
    _MIN_BIAS_PAIRS,
    LengthBias,
    PreflightIssue,
    PreflightReport,
)
from dpo_harness.plugins.dpo.preflight.rows import _quote_tail, _Row

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# --------------------------------------------------------------------------- findings


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

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

One module per job: :mod:`.data` reads the rows (files, directories, hub datasets),
:mod:`.rows` parses and validates each row, :mod:`.checks` measures them with the tokenizer,
:mod:`.findings` turns what was found into sentences, :mod:`.models` holds the report types;
:func:`preflight` runs them in that order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dpo_harness.errors import BadInputError
from dpo_harness.plugins.dpo.preflight.checks import _length_bias, _row_warnings, _token_lengths
from dpo_harness.plugins.dpo.preflight.data import load_preference_rows
from dpo_harness.plugins.dpo.preflight.findings import _by_kind, _findings
from dpo_harness.plugins.dpo.preflight.models import (
    SUMMARY_HEADERS,
    LengthBias,
    PreflightIssue,
    PreflightReport,
)
from dpo_harness.plugins.dpo.preflight.rows import _validate

__all__ = [
    "SUMMARY_HEADERS",
    "LengthBias",
    "PreflightIssue",
    "PreflightReport",
    "load_preference_rows",
    "preflight",
]

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

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

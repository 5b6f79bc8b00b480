"""What a preflight reports: issues, length bias, the report; the row formats it knows."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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

"""Character-level repetition and degeneration metrics for generated (Japanese) text.

These scores catch a checkpoint that loops or collapses, such as the seed run's model that
answered every prompt with "！！！！…" (see ``docs/seed-failure.md``). They are pure
functions over strings: no model, no tokenizer and no dictionary. Every count is over
characters, because Japanese has no spaces and character counts do not depend on how a
morphological analyser segments garbage (``docs/metrics.md`` §1.2).

Per-response signals (one number per generation, so a gate can pair items):
``longest_char_run``, ``tail_loop_fraction``, ``char_ngram_seq_rep``, ``symbol_share``,
``compression_ratio``, ``compression_ratio_excess``, ``ngram_uniqueness``, ``self_bleu``;
``profile`` computes the within-response ones at once.
Corpus-level signal (cross-prompt collapse): ``distinct_n``.

Normalisation: the character metrics run on the NFKC form of the text, so "!!！！" is one run
and full-width and half-width variants count as the same character. ``compression_ratio`` is
the exception (see its docstring).
"""

from __future__ import annotations

import math
import unicodedata
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby

import numpy as np
from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.helpers import extract_all_word_ngrams

__all__ = [
    "DEFAULT_RUN_ALLOW",
    "ZLIB_P99_BY_LENGTH",
    "RepetitionProfile",
    "char_ngram_seq_rep",
    "compression_ratio",
    "compression_ratio_excess",
    "distinct_n",
    "longest_char_run",
    "ngram_uniqueness",
    "normalize",
    "profile",
    "self_bleu",
    "symbol_share",
    "tail_loop_fraction",
]

#: Characters whose runs are normal in Japanese prose: the long-vowel mark, ellipsis, middle
#: dot, box-drawing and horizontal bars, hyphens, equals signs (ASCII rules), digits ("1000")
#: and spaces (indentation). Runs are measured after NFKC, which turns "…" into "...", so "."
#: is listed too; ``longest_char_run`` also adds the NFKC form of every listed character.
DEFAULT_RUN_ALLOW: frozenset[str] = frozenset("ー…・─―-=. 0123456789")

#: p99 of the zlib compression ratio of fluent human Japanese, by window length in characters.
#: Source: docs/metrics.md §1.3, "Length dependence on human text" (596 paragraphs of
#: the Japanese Rust by Example + gnupg help.ja.txt, measured with the same bytes/compressed
#: formula on raw, un-normalised text). Technical translated prose: recalibrate on the base
#: model's own outputs when they are available.
ZLIB_P99_BY_LENGTH: tuple[tuple[int, float], ...] = (
    (50, 1.35),
    (100, 1.73),
    (200, 2.06),
    (400, 2.28),
    (800, 2.49),
    (1600, 2.73),
)

# The one BLEU configuration that self_bleu uses: character tokens need no MeCab, and
# effective_order keeps short sentences from scoring 0 when they lack 4-grams.
_BLEU = BLEU(tokenize="char", effective_order=True)


def normalize(text: str) -> str:
    """Return the NFKC form of ``text`` (``"!!！！"`` → ``"!!!!"``, half-width kana → full-width)."""
    return unicodedata.normalize("NFKC", text)


# --------------------------------------------------------------------------------------------
# Runs and loops
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _effective_allow(allow: frozenset[str]) -> frozenset[str]:
    # The text is normalised before runs are counted, so an allowed "…" must also allow the
    # "." it becomes; otherwise an allow-list written in display characters silently fails.
    return allow | frozenset("".join(normalize(ch) for ch in allow))


def _longest_run(norm: str, allow: frozenset[str]) -> int:
    best = 0
    for ch, group in groupby(norm):
        if ch not in allow:
            best = max(best, sum(1 for _ in group))
    return best


def longest_char_run(text: str, allow: frozenset[str] = DEFAULT_RUN_ALLOW) -> int:
    """Length of the longest run of one identical character not in ``allow`` (after NFKC).

    Human Japanese peaks at about 5 ("human max" in docs/metrics.md §1.3); the seed failure gives
    the whole response. Returns 0 for empty text or when every run is allowed.
    """
    return _longest_run(normalize(text), _effective_allow(frozenset(allow)))


def _codepoints(text: str) -> np.ndarray:
    # One uint32 per code point; surrogatepass so that a lone surrogate cannot crash scoring.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _periodic_suffix_len(codes: np.ndarray, period: int) -> int:
    """Length of the longest suffix of ``codes`` in which ``codes[i] == codes[i + period]``."""
    mismatches = np.flatnonzero(codes[:-period] != codes[period:])
    if mismatches.size == 0:
        return len(codes)
    return len(codes) - 1 - int(mismatches[-1])


def _tail_loop(norm: str, max_period: int, min_repeats: int) -> float:
    # Trailing whitespace is ignored: a loop cut off by a final newline is still a loop.
    stripped = norm.rstrip()
    n = len(stripped)
    if n == 0:
        return 0.0
    codes = _codepoints(stripped)
    best = 0
    # One vectorised O(n) pass per period: O(n * max_period) overall, ~20 ms on 100k chars.
    for period in range(1, min(max_period, n // min_repeats) + 1):
        covered = _periodic_suffix_len(codes, period)
        if covered >= min_repeats * period:
            best = max(best, covered)
            if best == n:
                break
    return best / n


def tail_loop_fraction(text: str, max_period: int = 64, min_repeats: int = 3) -> float:
    """Share of the text covered by a loop at its end, in [0, 1].

    The loop is the longest suffix of the NFKC text (trailing whitespace ignored) that is
    periodic with some period p ≤ ``max_period`` and at least ``min_repeats * p`` long. A
    partial unit at the very end counts, since generation is often cut mid-unit.
    Human text scored 0.0 on all 139 documents of docs/metrics.md §1.3; "fluent + ！×120" scores
    about 0.5. Loops with a unit longer than ``max_period`` are not seen (seq-rep sees them).
    """
    if max_period < 1 or min_repeats < 2:
        raise ValueError("max_period must be >= 1 and min_repeats >= 2")
    return _tail_loop(normalize(text), max_period, min_repeats)


# --------------------------------------------------------------------------------------------
# n-gram repetition and character classes
# --------------------------------------------------------------------------------------------


def _char_ngrams(norm: str, n: int) -> list[str]:
    return [norm[i : i + n] for i in range(len(norm) - n + 1)]


def _seq_rep(norm: str, n: int) -> float:
    grams = _char_ngrams(norm, n)
    if len(grams) < 2:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def char_ngram_seq_rep(text: str, n: int = 4) -> float:
    """Welleck et al.'s seq-rep-n over NFKC characters: ``1 − |unique n-grams| / |n-grams|``.

    Returns 0.0 when the text has fewer than 2 n-grams. Human Japanese p99 ≈ 0.24 for n=4
    (docs/metrics.md §1.3); n ≥ 4 because kana and particles make low orders high by nature.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    return _seq_rep(normalize(text), n)


def _symbol_share(norm: str) -> float:
    visible = [ch for ch in norm if not ch.isspace()]
    if not visible:
        return 0.0
    symbols = sum(1 for ch in visible if unicodedata.category(ch)[0] in "PS")
    return symbols / len(visible)


def symbol_share(text: str) -> float:
    """Share of the non-whitespace NFKC characters whose Unicode category is P* or S*, in [0, 1].

    0.0 for text without visible characters. Human max ≈ 0.12 (docs/metrics.md §1.3).
    """
    return _symbol_share(normalize(text))


# --------------------------------------------------------------------------------------------
# Compression
# --------------------------------------------------------------------------------------------


def compression_ratio(text: str) -> float:
    """Whisper's repetitiveness ratio: UTF-8 bytes ÷ zlib-compressed bytes (default level).

    Computed on the raw text, not the NFKC form, so that values stay comparable with
    Whisper's threshold and with the calibration table ``ZLIB_P99_BY_LENGTH``, both measured
    on raw text. Empty text returns 1.0 (nothing to compress, nothing repeated). The ratio
    grows with length on human text, so gate on ``compression_ratio_excess`` instead.
    """
    raw = text.encode("utf-8", "surrogatepass")
    if not raw:
        return 1.0
    return len(raw) / len(zlib.compress(raw))


def _reference_p99(n_chars: int) -> float:
    """Human p99 ratio at ``n_chars``: linear in log(length) between the table's rows.

    Below the first row the first value is used (short texts compress badly, so this is
    lenient). Above the last row the last segment's slope is extended, because human ratios
    keep rising with length (zlib's window is 32 KiB) and a flat cap would flag long human
    text; that part is extrapolation, not measurement.
    """
    lengths = [math.log(length) for length, _ in ZLIB_P99_BY_LENGTH]
    values = [value for _, value in ZLIB_P99_BY_LENGTH]
    x = math.log(max(n_chars, ZLIB_P99_BY_LENGTH[0][0]))
    if x >= lengths[-1]:
        slope = (values[-1] - values[-2]) / (lengths[-1] - lengths[-2])
        return values[-1] + slope * (x - lengths[-1])
    return float(np.interp(x, lengths, values))


def compression_ratio_excess(text: str) -> float:
    """``compression_ratio`` ÷ the p99 ratio of fluent human Japanese of the same length.

    Length is in characters of the raw text; the reference comes from ``ZLIB_P99_BY_LENGTH``.
    Values ≤ 1 are within the human range; "！"×200 gives ≈ 17.
    """
    return compression_ratio(text) / _reference_p99(len(text))


# --------------------------------------------------------------------------------------------
# Cross-response (corpus) metrics
# --------------------------------------------------------------------------------------------


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Corpus-level distinct-n over NFKC characters, in [0, 1].

    ``|distinct n-grams over all texts| / |all n-grams over all texts|``: the denominator is
    the number of n-grams (the common implementation), not Li et al.'s token count. Returns
    0.0 when the texts hold no n-gram at all.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    seen: set[str] = set()
    total = 0
    for text in texts:
        grams = _char_ngrams(normalize(text), n)
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def _gram_set(norm: str, n: int) -> set[str]:
    # A response shorter than n characters has no n-gram; its whole text stands in for one,
    # so that N copies of a short canned answer ("はい") still score 0.
    return set(_char_ngrams(norm, n)) if len(norm) >= n else {norm}


def ngram_uniqueness(texts: Sequence[str], n: int = 4) -> list[float]:
    """Per response, the share of its distinct character n-grams found in no other response.

    1.0 = nothing shared with any other response; 0.0 = everything shared (N identical
    answers all score 0). Catches one canned answer to every prompt, per item, so a
    regression gate can pair it with the base model's value for the same prompt.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    gram_sets = [_gram_set(normalize(text), n) for text in texts]
    doc_freq = Counter(gram for grams in gram_sets for gram in grams)
    return [sum(1 for gram in grams if doc_freq[gram] == 1) / len(grams) for grams in gram_sets]


@dataclass
class _Top2:
    """Largest and second-largest count of one n-gram over all texts, and who holds the largest."""

    first: int
    owner: int
    second: int = 0


def _top2_counts(counters: Sequence[Counter[tuple[str, ...]]]) -> dict[tuple[str, ...], _Top2]:
    best: dict[tuple[str, ...], _Top2] = {}
    for owner, counts in enumerate(counters):
        for gram, count in counts.items():
            top = best.get(gram)
            if top is None:
                best[gram] = _Top2(count, owner)
            elif count > top.first:
                top.second, top.first, top.owner = top.first, count, owner
            elif count > top.second:
                top.second = count
    return best


def self_bleu(texts: Sequence[str]) -> list[float]:
    """Per response, sacrebleu's sentence BLEU (0–100) against all the other responses.

    Equal to ``BLEU(tokenize='char', effective_order=True).sentence_score(t_i, others)``
    on the NFKC texts, but computed in O(N) instead of O(N²): with several references,
    BLEU clips each hypothesis n-gram by its largest count in any reference, so keeping the
    two largest counts of every n-gram over all texts gives the clip for "all but i"
    without rebuilding the reference set N times. (The naive loop took 12 s for 100
    responses of 300 chars; this takes ~0.1 s.) No sampling, so no seed.

    Returns ``[0.0]`` for a single response (no reference to resemble) and ``[]`` for none.
    """
    if len(texts) < 2:
        return [0.0] * len(texts)
    order = _BLEU.max_ngram_order
    # _preprocess_segment is how sacrebleu itself tokenises ("char": one token per character,
    # whitespace dropped, trailing whitespace stripped); reusing it keeps the scores identical.
    extracted = [
        extract_all_word_ngrams(_BLEU._preprocess_segment(normalize(text)), 1, order)
        for text in texts
    ]
    counters = [counts for counts, _ in extracted]
    lengths = [length for _, length in extracted]
    top2 = _top2_counts(counters)
    scores = []
    for i, (counts, hyp_len) in enumerate(extracted):
        correct = [0] * order
        total = [0] * order
        for gram, count in counts.items():
            top = top2[gram]
            ref_count = top.second if top.owner == i else top.first
            total[len(gram) - 1] += count
            correct[len(gram) - 1] += min(count, ref_count)
        ref_len = _BLEU._get_closest_ref_len(hyp_len, lengths[:i] + lengths[i + 1 :])
        score = BLEU.compute_bleu(
            correct,
            total,
            hyp_len,
            ref_len,
            smooth_method=_BLEU.smooth_method,
            smooth_value=_BLEU.smooth_value,
            effective_order=_BLEU.effective_order,
            max_ngram_order=order,
        ).score
        # Clamp: sacrebleu's float arithmetic returns 100.00000000000004 for a perfect match.
        scores.append(min(100.0, max(0.0, float(score))))
    return scores


# --------------------------------------------------------------------------------------------
# Everything per response at once
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepetitionProfile:
    """All per-response repetition signals of one text.

    ``None`` marks a signal that is not meaningful because the text is short (see ``profile``).
    """

    n_chars: int
    is_short: bool
    longest_char_run: int
    tail_loop_fraction: float
    symbol_share: float
    char_seq_rep4: float | None
    compression_ratio: float | None
    compression_ratio_excess: float | None


def profile(text: str, *, short_threshold: int = 50) -> RepetitionProfile:
    """Compute every per-response repetition signal of ``text`` with one NFKC pass.

    ``n_chars`` and ``is_short`` refer to the NFKC text. Below ``short_threshold``
    characters, seq-rep-4 and the compression ratios are ``None``: a 30-character answer has
    at most 27 4-grams, so one repeated phrase swings seq-rep by several points, and zlib's
    fixed header and dictionary warm-up dominate the ratio (human p99 at 50 chars is only
    1.35, docs/metrics.md §1.3). Run length, tail loop and symbol share stay: they measure the
    "！！！" failure directly and docs/metrics.md §1.3 keeps exactly those for short outputs.
    """
    norm = normalize(text)
    is_short = len(norm) < short_threshold
    return RepetitionProfile(
        n_chars=len(norm),
        is_short=is_short,
        longest_char_run=_longest_run(norm, _effective_allow(DEFAULT_RUN_ALLOW)),
        tail_loop_fraction=_tail_loop(norm, 64, 3),
        symbol_share=_symbol_share(norm),
        char_seq_rep4=None if is_short else _seq_rep(norm, 4),
        compression_ratio=None if is_short else compression_ratio(text),
        compression_ratio_excess=None if is_short else compression_ratio_excess(text),
    )

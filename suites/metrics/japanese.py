"""Japanese fluency and script signals for generated text, without an LLM judge.

Two kinds of signal (``docs/metrics.md`` §2):

* character-level, no dictionary: the script mix (a fine-tuned Qwen-based model drifting into
  Chinese or English shows here), Chinese-drift sentences, U+FFFD and control characters;
* morpheme-level, with fugashi + unidic-lite (MeCab): the share of 補助記号 tokens and whether
  sentences end on a word that can end a Japanese sentence. UniDic tags every "！" as a known
  補助記号 token, so the unknown-word rate is blind to the "！！！！" failure
  (docs/metrics.md §2.1); the symbol share and the sentence-end check are what catch it.

MeCab is superlinear on long runs of one character class (10,000 "！" take ~0.2 s, 40,000 take
2 s), so everything that reaches the tagger has its runs capped first (``cap_symbol_runs``) and is
tagged one sentence at a time, in pieces of at most ``_TAG_PIECE`` characters.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import fugashi
import unidic_lite

__all__ = [
    "SCRIPTS",
    "MorphStats",
    "cap_symbol_runs",
    "chinese_drift",
    "control_char_count",
    "get_tagger",
    "japanese_share",
    "kana_share",
    "morph_stats",
    "replacement_char_count",
    "script_mix",
    "split_sentences",
]

SCRIPTS: tuple[str, ...] = ("hiragana", "katakana", "kanji", "latin", "digit", "symbol", "other")

# 々 (repeat mark), 〆 and 〇 are written and read as kanji although they sit in the CJK
# symbols block.
_KANJI_LIKE = frozenset("々〆〇")
_KANJI_RANGES = (
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x2FA1F),  # extensions B–F and the compatibility supplement
    (0x30000, 0x3134F),  # extension G
)
_KATAKANA_RANGES = ((0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))
_LATIN_RANGES = (
    (0x41, 0x5A),
    (0x61, 0x7A),
    (0xC0, 0x24F),  # Latin-1 supplement and extended A/B (é, ß, ő …)
    (0x1E00, 0x1EFF),  # Latin extended additional
    (0xFF21, 0xFF3A),  # full-width Ａ–Ｚ
    (0xFF41, 0xFF5A),  # full-width ａ–ｚ
)


def _in_ranges(cp: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


@lru_cache(maxsize=1 << 16)
def _script_of(ch: str) -> str:
    """Script class of one character, or ``"space"``, or ``"other_letter"`` (Hangul, Greek …).

    Block ranges follow docs/metrics.md §2.5, but only letters count as kana: "・" and "゠" sit in
    the katakana block and "゛" in the hiragana block, yet they are punctuation or symbols.
    """
    if ch.isspace():
        return "space"
    category = unicodedata.category(ch)
    if category == "Nd":
        return "digit"
    cp = ord(ch)
    if ch in _KANJI_LIKE or (category[0] == "L" and _in_ranges(cp, _KANJI_RANGES)):
        return "kanji"
    if category[0] == "L":
        if 0x3040 <= cp <= 0x309F:
            return "hiragana"
        if _in_ranges(cp, _KATAKANA_RANGES):
            return "katakana"
        if _in_ranges(cp, _LATIN_RANGES):
            return "latin"
        return "other_letter"
    if category[0] in "PS":
        return "symbol"
    return "other"


def _script_counts(text: str) -> Counter[str]:
    return Counter(_script_of(ch) for ch in text)


def script_mix(text: str) -> dict[str, float]:
    """Shares of the non-whitespace characters by script, keyed by ``SCRIPTS``.

    The values sum to 1, or are all 0.0 for text without visible characters. Characters are
    classified as written (no NFKC): the blocks already include full-width Latin and
    half-width katakana, and NFKC would change counts ("㍿" → "株式会社").
    """
    counts = _script_counts(text)
    counts["other"] += counts.pop("other_letter", 0)
    visible = sum(counts[script] for script in SCRIPTS)
    if visible == 0:
        return dict.fromkeys(SCRIPTS, 0.0)
    return {script: counts[script] / visible for script in SCRIPTS}


def japanese_share(text: str) -> float:
    """(hiragana + katakana + kanji) ÷ all letters (those + Latin + other scripts' letters).

    0.0 when the text has no letters. Digits and symbols are left out on purpose: they are
    script-neutral, and "！！！！" should not read as "not Japanese" here (other metrics see it).
    Kanji in a sentence that :func:`chinese_drift` calls drifted (long, kanji, no kana at all)
    are counted as another script's letters: that is Chinese, not Japanese, and a model that
    drifts into Chinese must not score as fluent Japanese (0 of 1,217 human Japanese sentences
    are such a sentence, docs/metrics.md §2.5, so Japanese text scores as before).
    """
    counts = _script_counts(text)
    japanese = counts["hiragana"] + counts["katakana"] + counts["kanji"]
    letters = japanese + counts["latin"] + counts["other_letter"]
    for sentence in split_sentences(text):
        part = _script_counts(sentence)
        if _drifted(part):
            japanese -= part["kanji"]
    return japanese / letters if letters else 0.0


def kana_share(text: str) -> float:
    """kana ÷ (kana + kanji); near 0 on Chinese, ~0.6 on ordinary Japanese. 0.0 with neither."""
    counts = _script_counts(text)
    kana = counts["hiragana"] + counts["katakana"]
    total = kana + counts["kanji"]
    return kana / total if total else 0.0


# --------------------------------------------------------------------------------------------
# Sentences and suspicious characters
# --------------------------------------------------------------------------------------------

_TERMINATORS = "。！？!?"
_SPLIT_RE = re.compile(r"[。！？!?\r\n]+")


def split_sentences(text: str) -> list[str]:
    """Split on 。！？!? and line breaks; return the non-empty pieces, stripped.

    The terminators themselves are dropped.
    """
    return [piece.strip() for piece in _SPLIT_RE.split(text) if piece.strip()]


def chinese_drift(text: str, *, min_chars: int = 8, min_kanji: int = 4) -> tuple[int, int]:
    """``(drifted, considered)`` sentences.

    A sentence is considered when it has at least ``min_chars`` non-whitespace characters; it
    has drifted when it also has at least ``min_kanji`` kanji and no kana at all. That held for
    0 of 1,217 human Japanese sentences and for a Chinese test sentence (docs/metrics.md §2.5).
    """
    drifted = considered = 0
    for sentence in split_sentences(text):
        counts = _script_counts(sentence)
        if sum(counts.values()) - counts["space"] < min_chars:
            continue
        considered += 1
        if _drifted(counts, min_chars=min_chars, min_kanji=min_kanji):
            drifted += 1
    return drifted, considered


def _drifted(counts: Counter[str], *, min_chars: int = 8, min_kanji: int = 4) -> bool:
    """A sentence long enough to judge, with kanji and no kana at all: Chinese, not Japanese."""
    long_enough = sum(counts.values()) - counts["space"] >= min_chars
    return (
        long_enough
        and counts["kanji"] >= min_kanji
        and counts["hiragana"] + counts["katakana"] == 0
    )


def replacement_char_count(text: str) -> int:
    """Number of U+FFFD, the mark of bytes that failed to decode (e.g. a split UTF-8 token)."""
    return text.count("\ufffd")


# Legitimate format/control characters: line breaks and tabs; ZWJ, which joins emoji
# sequences (👨‍👩‍👧); and the tag characters of emoji subdivision flags. Variation selectors
# (U+FE00–FE0F) are category Mn, not Cc/Cf, so they are never counted in the first place.
_LEGIT_CONTROL = frozenset("\n\t\r\u200d") | frozenset(map(chr, range(0xE0020, 0xE0080)))


def control_char_count(text: str) -> int:
    """Number of Cc/Cf characters other than the legitimate ones above (BOM, NUL, U+200B …)."""
    return sum(
        1 for ch in text if unicodedata.category(ch) in ("Cc", "Cf") and ch not in _LEGIT_CONTROL
    )


@lru_cache(maxsize=8)
def _run_re(max_run: int) -> re.Pattern[str]:
    return re.compile(rf"(.)\1{{{max_run},}}", re.DOTALL)


def _cap_runs(text: str, max_run: int) -> tuple[str, int]:
    """``cap_symbol_runs`` and the number of P*/S* characters it removed."""
    if max_run < 1:
        raise ValueError("max_run must be >= 1")
    pieces: list[str] = []
    removed_symbols = 0
    last = 0
    for match in _run_re(max_run).finditer(text):
        ch = match.group(1)
        category = unicodedata.category(ch)
        if category[0] == "L":
            continue
        pieces.append(text[last : match.start()] + ch * max_run)
        last = match.end()
        if category[0] in "PS":
            removed_symbols += len(match.group(0)) - max_run
    pieces.append(text[last:])
    return "".join(pieces), removed_symbols


def cap_symbol_runs(text: str, max_run: int = 8) -> str:
    """Shorten every run of one identical non-letter character to ``max_run`` characters.

    MeCab's time grows superlinearly with such runs (docs/metrics.md §2.1). Letters are left alone:
    "ｗｗｗ" and "ーー" are words, and letter runs are handled by tagging in pieces.
    """
    return _cap_runs(text, max_run)[0]


# --------------------------------------------------------------------------------------------
# Morphological statistics (fugashi + unidic-lite)
# --------------------------------------------------------------------------------------------

# Longest string handed to MeCab in one call: keeps every call far below the superlinear
# regime (a run of 256 one-class characters tags in well under 1 ms).
_TAG_PIECE = 256
_RUN_CAP = 8  # cap_symbol_runs default; human runs stay ≤ 5 (docs/metrics.md §1.3)
# Parts of speech that can end a Japanese sentence (docs/metrics.md §2.8), plus three that human
# text ends on without being ill-formed: 形状詞 ("とても簡単。"), 接尾辞 ("田中さん。", "3つ。")
# and 感動詞 ("はい。", "こんにちは。"). Polite endings are covered: です/ます are 助動詞,
# ください/ございます are 動詞.
_SENTENCE_END_POS = frozenset(
    {"助動詞", "動詞", "形容詞", "名詞", "代名詞", "形状詞", "接尾辞", "感動詞"}
)
# Up to this many terminators in a row are ordinary ("？！", "!!!"); every one beyond it is
# counted as a sentence with no content, which cannot end well. That is what makes the share
# fall on a "！" tail (fluent + "！"×120 → ≈0.025, as in docs/metrics.md §1.3).
_MAX_TERMINATOR_CLUSTER = 3
_UNIT_RE = re.compile(r"([^。！？!?\r\n]*)([。！？!?]*)")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")


@lru_cache(maxsize=1)
def get_tagger() -> fugashi.Tagger:
    """The shared fugashi ``Tagger``, created on first use and pinned to unidic-lite.

    The dictionary is named explicitly so that installing the full ``unidic`` package later
    cannot silently change the tokens (and every calibrated number) underneath.
    Not thread-safe: give each thread its own ``fugashi.Tagger``.
    """
    dicdir = unidic_lite.DICDIR
    mecabrc = os.path.join(dicdir, "mecabrc")
    return fugashi.Tagger(f'-d "{dicdir}" -r "{mecabrc}"')


@dataclass(frozen=True)
class MorphStats:
    """Morpheme-level statistics of one text (UniDic via fugashi).

    n_tokens: morphemes, counting each punctuation/symbol character removed by run capping
        as the one 補助記号 token UniDic returns per "！" (so capping does not hide a flood).
    n_sentences: sentences with content, plus one per terminator beyond a cluster of 3.
    unknown_rate_nonlatin: unknown (``is_unk``) tokens ÷ tokens, both restricted to
        non-symbol tokens that are not Latin words or numbers (UniDic marks every Latin word
        and every number unknown, which says nothing about fluency).
    symbol_token_share: 補助記号 tokens, and unknown tokens made only of punctuation or
        symbols (UniDic tags an ASCII "," 記号), ÷ all tokens.
    sentence_end_ok_share: sentences whose last non-symbol morpheme can end a sentence ÷
        ``n_sentences``; 0.0 when there is no sentence.
    """

    n_tokens: int
    n_sentences: int
    unknown_rate_nonlatin: float
    symbol_token_share: float
    sentence_end_ok_share: float


@dataclass
class _Counts:
    tokens: int = 0
    symbols: int = 0
    content: int = 0
    unknown: int = 0
    sentences: int = 0
    sentences_ok: int = 0


def _sanitize(text: str) -> str:
    # MeCab takes a NUL-terminated UTF-8 string: a NUL would cut the text short and a lone
    # surrogate cannot be encoded at all.
    text = text.replace("\x00", " ")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE_RE.sub("\ufffd", text)
    return text


class _Morpheme(NamedTuple):
    surface: str
    pos1: str
    pos2: str
    is_unk: bool


def _tag(tagger: fugashi.Tagger, text: str) -> list[_Morpheme]:
    # fugashi's nodes point into MeCab's lattice, which the next call overwrites: copy the
    # fields out before tagging the next piece (reading them later returns garbage).
    morphemes: list[_Morpheme] = []
    for start in range(0, len(text), _TAG_PIECE):
        morphemes.extend(
            _Morpheme(w.surface, w.feature.pos1, w.feature.pos2, bool(w.is_unk))
            for w in tagger(text[start : start + _TAG_PIECE])
        )
    return morphemes


def _is_latin_or_number(surface: str) -> bool:
    # "CPM", "3", "e-mail", "3.5": Latin letters or digits, possibly joined by symbols.
    scripts = {_script_of(ch) for ch in surface}
    return bool(scripts & {"latin", "digit"}) and scripts <= {"latin", "digit", "symbol"}


def _is_space(morpheme: _Morpheme) -> bool:
    return morpheme.pos1 == "空白" or morpheme.surface.isspace()


def _is_symbol(morpheme: _Morpheme) -> bool:
    # UniDic tags known punctuation 補助記号, but an unknown one (an ASCII "," for instance)
    # comes back as 記号 with is_unk=True; judge those by their characters.
    return morpheme.pos1 == "補助記号" or all(
        unicodedata.category(ch)[0] in "PS" for ch in morpheme.surface
    )


def _ends_sentence(morpheme: _Morpheme) -> bool:
    return morpheme.pos1 in _SENTENCE_END_POS or morpheme.pos2 == "終助詞"


def _count_unit(tagger: fugashi.Tagger, content: str, terminators: str, counts: _Counts) -> None:
    capped, removed_symbols = _cap_runs(content + terminators, _RUN_CAP)
    morphemes = _tag(tagger, capped)
    counts.tokens += len(morphemes) + removed_symbols
    counts.symbols += removed_symbols
    last: _Morpheme | None = None
    for morpheme in morphemes:
        if _is_space(morpheme):
            continue
        if _is_symbol(morpheme):
            counts.symbols += 1
            continue
        last = morpheme
        if not _is_latin_or_number(morpheme.surface):
            counts.content += 1
            counts.unknown += morpheme.is_unk
    # A piece of only symbols ("」" after "！」") is not a sentence of its own.
    if last is not None:
        counts.sentences += 1
        counts.sentences_ok += _ends_sentence(last)
    counts.sentences += max(0, len(terminators) - _MAX_TERMINATOR_CLUSTER)


def morph_stats(text: str, tagger: fugashi.Tagger | None = None) -> MorphStats:
    """Tag ``text`` with UniDic and return ``MorphStats``.

    The text is cut into units of (content, terminators) at 。！？!? and line breaks; each
    unit has its non-letter runs capped (``cap_symbol_runs``) before MeCab sees it, and is
    tagged in pieces of at most 256 characters (a cut can split one word inside a sentence
    longer than that; a small price for linear cost). Measured on the 2-core dev machine:
    ~5 ms per 1,000 characters of prose, <1 ms for "！"×10,000, ~0.8 s for 100,000 chars.
    """
    tagger = tagger if tagger is not None else get_tagger()
    counts = _Counts()
    for match in _UNIT_RE.finditer(_sanitize(text)):
        content, terminators = match.group(1), match.group(2)
        if content.strip() or terminators:
            _count_unit(tagger, content, terminators, counts)
    return MorphStats(
        n_tokens=counts.tokens,
        n_sentences=counts.sentences,
        unknown_rate_nonlatin=counts.unknown / counts.content if counts.content else 0.0,
        symbol_token_share=counts.symbols / counts.tokens if counts.tokens else 0.0,
        sentence_end_ok_share=counts.sentences_ok / counts.sentences if counts.sentences else 0.0,
    )

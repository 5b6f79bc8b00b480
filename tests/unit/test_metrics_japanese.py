"""Tests for dpo_harness.suites.metrics.japanese.

Examples from docs/metrics.md §2, and properties.
"""

from __future__ import annotations

import time
import unicodedata

import fugashi
import pytest
from dpo_harness.suites.metrics.japanese import (
    SCRIPTS,
    MorphStats,
    cap_symbol_runs,
    chinese_drift,
    control_char_count,
    get_tagger,
    japanese_share,
    kana_share,
    morph_stats,
    replacement_char_count,
    script_mix,
    split_sentences,
)
from hypothesis import given, settings
from hypothesis import strategies as st

# A fluent paragraph (customer-support register), written for these tests.
FLUENT = (
    "お問い合わせいただき、ありがとうございます。"
    "ご指摘の件について、担当部署で確認いたしました。"
    "先月の請求書に記載された配信費用は、管理画面の集計と一致しておりました。"
    "ただし、為替の変動により、円換算の金額が前月より高くなっています。"
    "詳しい内訳は、添付の資料にまとめましたので、お手数ですがご確認ください。"
    "ご不明な点があれば、いつでもお気軽にご連絡ください。"
    "今後とも、どうぞよろしくお願いいたします。"
)
ENGLISH = "The quick brown fox jumps over the lazy dog, and advertisers pay per click."
CHINESE = "我们公司的网络广告业务在过去三年中增长迅速，市场份额不断扩大。"
BANGS_200 = "！" * 200
FLUENT_PLUS_BANGS = FLUENT[:120] + "！" * 120
SENTENCE_LOOP = "広告の効果を測定します。" * 10

SMALL = settings(deadline=None, max_examples=40)
MEDIUM = settings(deadline=None, max_examples=150)

any_text = st.text(max_size=200)
jaish_text = st.text(
    alphabet=st.sampled_from(list("あいうアイウｱｲｳ漢字広告々！!？?。、ー…「」　 abcＡＢ12１\n")),
    max_size=200,
)
texts = st.one_of(any_text, jaish_text)


# --------------------------------------------------------------------------------------------
# Script mix
# --------------------------------------------------------------------------------------------


def test_script_mix_of_fluent_japanese() -> None:
    mix = script_mix(FLUENT)
    assert set(mix) == set(SCRIPTS)
    assert mix["hiragana"] > 0.4
    assert mix["kanji"] > 0.25
    assert mix["latin"] == mix["digit"] == mix["other"] == 0.0
    assert sum(mix.values()) == pytest.approx(1.0)
    assert japanese_share(FLUENT) == 1.0
    assert 0.4 < kana_share(FLUENT) < 0.8


def test_script_classes_follow_the_blocks() -> None:
    assert script_mix("あ") == {**dict.fromkeys(SCRIPTS, 0.0), "hiragana": 1.0}
    for ch, script in [
        ("ア", "katakana"),
        ("ｱ", "katakana"),  # half-width
        ("ー", "katakana"),  # long-vowel mark is a letter
        ("ㇰ", "katakana"),  # katakana phonetic extensions
        ("漢", "kanji"),
        ("々", "kanji"),
        ("㐀", "kanji"),  # CJK extension A
        ("豈", "kanji"),  # CJK compatibility
        ("A", "latin"),
        ("ｚ", "latin"),  # full-width
        ("é", "latin"),
        ("7", "digit"),
        ("７", "digit"),
        ("！", "symbol"),
        ("・", "symbol"),  # in the katakana block, but punctuation
        ("😀", "symbol"),
        ("한", "other"),
        ("\u200b", "other"),
    ]:
        assert script_mix(ch)[script] == 1.0, (ch, script)


def test_script_mix_of_empty_and_whitespace() -> None:
    assert script_mix("") == dict.fromkeys(SCRIPTS, 0.0)
    assert script_mix(" \n\t　") == dict.fromkeys(SCRIPTS, 0.0)


def test_japanese_share_and_kana_share() -> None:
    assert japanese_share(ENGLISH) == 0.0
    assert japanese_share("") == 0.0
    assert japanese_share("！！！123") == 0.0  # no letters at all
    assert japanese_share("広告CPM") == pytest.approx(2 / 5)
    assert japanese_share("한국어와 日本語") == pytest.approx(3 / 7)  # Hangul is "other letters"
    assert kana_share(CHINESE) == 0.0
    assert kana_share("ひらがな") == 1.0
    assert kana_share("abc") == 0.0


@given(texts)
@MEDIUM
def test_script_mix_sums_to_one(text: str) -> None:
    mix = script_mix(text)
    assert all(0.0 <= v <= 1.0 for v in mix.values())
    if text.strip() or any(not ch.isspace() for ch in text):
        assert sum(mix.values()) == pytest.approx(1.0)
    else:
        assert sum(mix.values()) == 0.0


@given(texts)
@MEDIUM
def test_shares_are_in_range(text: str) -> None:
    assert 0.0 <= japanese_share(text) <= 1.0
    assert 0.0 <= kana_share(text) <= 1.0


# --------------------------------------------------------------------------------------------
# Sentences and Chinese drift
# --------------------------------------------------------------------------------------------


def test_split_sentences() -> None:
    assert split_sentences("") == []
    assert split_sentences("  \n ") == []
    assert split_sentences("はい。そうです！本当？\n 次の行 \nOK!? end") == [
        "はい",
        "そうです",
        "本当",
        "次の行",
        "OK",
        "end",
    ]
    assert split_sentences(BANGS_200) == []


@given(texts)
@MEDIUM
def test_split_sentences_pieces_are_clean(text: str) -> None:
    for piece in split_sentences(text):
        assert piece == piece.strip() and piece
        assert not set(piece) & set("。！？!?\r\n")


def test_chinese_drift() -> None:
    assert chinese_drift(CHINESE) == (1, 1)
    assert chinese_drift(FLUENT) == (0, 7)
    assert chinese_drift(FLUENT + CHINESE) == (1, 8)
    assert chinese_drift(ENGLISH) == (0, 1)  # considered, no kanji; "." does not split
    assert chinese_drift("東京都庁。") == (0, 0)  # too short to consider
    assert chinese_drift("") == (0, 0)


@given(texts)
@MEDIUM
def test_chinese_drift_counts_are_consistent(text: str) -> None:
    drifted, considered = chinese_drift(text)
    assert 0 <= drifted <= considered <= len(split_sentences(text))


# --------------------------------------------------------------------------------------------
# Suspicious characters and run capping
# --------------------------------------------------------------------------------------------


def test_replacement_and_control_chars() -> None:
    assert replacement_char_count("広告\ufffd\ufffd") == 2
    assert replacement_char_count(FLUENT) == 0
    assert control_char_count("a\nb\tc\r\n") == 0
    assert control_char_count("👨\u200d👩\u200d👧") == 0  # ZWJ emoji sequence
    assert control_char_count("❤\ufe0f") == 0  # variation selector (Mn, not Cf)
    assert control_char_count("a\u200bb\ufeffc\x00d\x1b") == 4  # ZWSP, BOM, NUL, ESC
    assert control_char_count("") == 0


@given(texts)
@MEDIUM
def test_char_counts_are_bounded(text: str) -> None:
    assert 0 <= replacement_char_count(text) <= len(text)
    assert 0 <= control_char_count(text) <= len(text)


def test_cap_symbol_runs_examples() -> None:
    assert cap_symbol_runs("！" * 200) == "！" * 8
    assert cap_symbol_runs("はい" + "！" * 20 + "。" * 3) == "はい" + "！" * 8 + "。" * 3
    assert cap_symbol_runs("ｗ" * 20) == "ｗ" * 20  # letters are kept
    assert cap_symbol_runs("ー" * 20) == "ー" * 20  # the long-vowel mark is a letter (Lm)
    assert cap_symbol_runs("1" * 20, max_run=3) == "111"
    assert cap_symbol_runs("") == ""
    with pytest.raises(ValueError):
        cap_symbol_runs("!!", max_run=0)


@given(texts, st.integers(1, 10))
@MEDIUM
def test_cap_symbol_runs_properties(text: str, max_run: int) -> None:
    capped = cap_symbol_runs(text, max_run)
    assert len(capped) <= len(text)
    assert cap_symbol_runs(capped, max_run) == capped  # idempotent
    # No run of one identical non-letter character is left above max_run.
    for run in _runs(capped):
        if not unicodedata.category(run[0]).startswith("L"):
            assert len(run) <= max_run
    # Letters are never touched.
    assert [ch for ch in capped if ch.isalpha()] == [ch for ch in text if ch.isalpha()]


def _runs(text: str) -> list[str]:
    out: list[str] = []
    for ch in text:
        if out and out[-1][0] == ch:
            out[-1] += ch
        else:
            out.append(ch)
    return out


# --------------------------------------------------------------------------------------------
# Tagger and morph_stats
# --------------------------------------------------------------------------------------------


def test_tagger_is_cached_and_uses_unidic_lite() -> None:
    tagger = get_tagger()
    assert tagger is get_tagger()
    assert isinstance(tagger, fugashi.Tagger)
    assert "unidic_lite" in tagger.dictionary_info[0]["filename"]
    words = tagger("！")
    assert words[0].feature.pos1 == "補助記号" and not words[0].is_unk  # docs/metrics.md §2.1


def test_morph_stats_of_fluent_japanese() -> None:
    stats = morph_stats(FLUENT)
    assert isinstance(stats, MorphStats)
    assert stats.n_sentences == 7
    assert stats.sentence_end_ok_share == 1.0
    assert stats.unknown_rate_nonlatin == 0.0
    assert 0.0 < stats.symbol_token_share < 0.15


def test_morph_stats_catch_the_bang_failure() -> None:
    stats = morph_stats(BANGS_200)
    assert stats.n_tokens == 200  # one 補助記号 per "！", capped or not
    assert stats.symbol_token_share == 1.0
    assert stats.unknown_rate_nonlatin == 0.0  # UniDic knows "！": the unk rate is blind
    assert stats.sentence_end_ok_share == 0.0

    tail = morph_stats(FLUENT_PLUS_BANGS)
    assert tail.sentence_end_ok_share < 0.05  # docs/metrics.md §1.3: 0.025
    assert tail.symbol_token_share > 0.5


def test_morph_stats_loops_and_english_still_end_well() -> None:
    # docs/metrics.md §2.8: loops pass this check; it is a supplementary signal only.
    assert morph_stats(SENTENCE_LOOP).sentence_end_ok_share == 1.0
    english = morph_stats(ENGLISH)
    assert english.sentence_end_ok_share == 1.0
    assert english.unknown_rate_nonlatin == 0.0  # Latin words are excluded
    assert morph_stats("ガギグゲゴザジズゼゾ").unknown_rate_nonlatin == 1.0


@pytest.mark.parametrize(
    "sentence",
    [
        "本日は晴天なり。",
        "そうですね。",
        "本当でしょうか？",
        "ありがとうございます。",
        "こんにちは！",
        "とても簡単。",
        "担当は田中さん。",
        "資料をご確認ください。",
        "一緒に行こうよ！？",
        "「すごい！」と彼は言った。",
        "CPMは3.5。",
    ],
)
def test_sentence_ends_that_are_ok(sentence: str) -> None:
    assert morph_stats(sentence).sentence_end_ok_share == 1.0


def test_sentence_ends_that_are_not_ok() -> None:
    assert morph_stats("広告の効果を。").sentence_end_ok_share == 0.0  # dangling particle
    assert morph_stats("すごい！！！！！").n_sentences == 1 + 2  # 5 terminators: 2 beyond 3
    assert morph_stats("すごい！！！").sentence_end_ok_share == 1.0  # up to 3 are fine


def test_morph_stats_of_empty_and_whitespace() -> None:
    empty = MorphStats(0, 0, 0.0, 0.0, 0.0)
    assert morph_stats("") == empty
    assert morph_stats(" \n\t　") == empty
    assert morph_stats("★" * 100).n_sentences == 0  # symbols only: no sentence


def test_morph_stats_accepts_its_own_tagger() -> None:
    tagger = fugashi.Tagger()
    assert morph_stats(FLUENT, tagger=tagger) == morph_stats(FLUENT)


@pytest.mark.parametrize("text", ["\x00あ\x00", "a\ud800b", "\ufffd" * 5, "👨\u200d👩" * 30])
def test_morph_stats_odd_inputs_do_not_crash(text: str) -> None:
    stats = morph_stats(text)
    assert stats.n_tokens > 0


@given(texts)
@SMALL
def test_morph_stats_ranges(text: str) -> None:
    stats = morph_stats(text)
    assert stats.n_tokens >= 0 and stats.n_sentences >= 0
    for value in (
        stats.unknown_rate_nonlatin,
        stats.symbol_token_share,
        stats.sentence_end_ok_share,
    ):
        assert 0.0 <= value <= 1.0
    if stats.n_sentences == 0:
        assert stats.sentence_end_ok_share == 0.0


HUGE_INPUTS = {
    "bangs": "！" * 100_000,
    "alternating_bangs": "！!" * 50_000,
    "latin_run": "a" * 100_000,
    "katakana_run": "ア" * 100_000,
    "fluent": (FLUENT * 600)[:100_000],
}


@pytest.mark.parametrize("name", sorted(HUGE_INPUTS))
def test_huge_inputs_stay_linear(name: str) -> None:
    text = HUGE_INPUTS[name]
    start = time.perf_counter()
    stats = morph_stats(text)
    script_mix(text)
    chinese_drift(text)
    control_char_count(text)
    cap_symbol_runs(text)
    elapsed = time.perf_counter() - start
    # Untiled, MeCab needs minutes on a 100k run of one character class; tiled ≤ ~0.7 s.
    assert elapsed < 5.0
    assert 0.0 <= stats.symbol_token_share <= 1.0


def test_morph_stats_speed_on_1000_chars() -> None:
    text = (FLUENT * 8)[:1000]
    morph_stats(text)  # warm the tagger
    start = time.perf_counter()
    for _ in range(10):
        morph_stats(text)
    per_call = (time.perf_counter() - start) / 10
    assert per_call < 0.1  # ~5 ms measured on the 2-core dev machine


def test_chinese_is_not_counted_as_japanese_script() -> None:
    chinese = CHINESE
    assert japanese_share(chinese) == 0.0  # kanji with no kana at all, in long sentences
    # A Japanese answer with a Chinese sentence in it loses exactly that sentence's kanji.
    mixed = FLUENT + chinese
    share = japanese_share(mixed)
    assert 0.0 < share < 1.0
    # Short kanji-only answers (a term, a name) stay Japanese: too short to judge.
    assert japanese_share("広告主") == 1.0 and japanese_share("入札単価。") == 1.0


def _share_before(text: str) -> float:
    """japanese_share as it was before Chinese sentences were excluded."""
    from dpo_harness.suites.metrics.japanese import _script_counts

    counts = _script_counts(text)
    japanese = counts["hiragana"] + counts["katakana"] + counts["kanji"]
    letters = japanese + counts["latin"] + counts["other_letter"]
    return japanese / letters if letters else 0.0


@given(
    st.lists(
        st.sampled_from(
            [FLUENT, "広告配信の最適化について説明します。", "CTRは2%です。", "入札単価"]
        ),
        min_size=1,
        max_size=6,
    )
)
def test_japanese_text_scores_as_before(parts: list[str]) -> None:
    text = "。".join(parts)  # sentences; a run of 8+ kanji without kana would read as Chinese
    assert japanese_share(text) == pytest.approx(_share_before(text))

"""Tests for dpo_harness.suites.metrics.repetition.

Examples from docs/metrics.md §1.3, and properties.
"""

from __future__ import annotations

import math
import random
import time

import pytest
from dpo_harness.suites.metrics import repetition as rep
from dpo_harness.suites.metrics.repetition import (
    DEFAULT_RUN_ALLOW,
    RepetitionProfile,
    char_ngram_seq_rep,
    compression_ratio,
    compression_ratio_excess,
    distinct_n,
    longest_char_run,
    ngram_uniqueness,
    normalize,
    profile,
    self_bleu,
    symbol_share,
    tail_loop_fraction,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sacrebleu.metrics.bleu import BLEU

# A fluent AdTech paragraph of ~1,000 characters, written for these tests.
FLUENT = (
    "インターネット広告の市場規模は年々拡大しており、特に運用型広告の伸びが顕著です。"
    "広告主は検索連動型広告やディスプレイ広告を組み合わせ、目的に応じて予算を配分します。"
    "効果を測る指標としては、クリック率やコンバージョン率、顧客獲得単価などがよく使われます。"
    "ただし、数字だけを追いかけると、ブランドの印象や長期的な売上への影響を見落としがちです。"
    "そのため、多くの企業は短期の成果と中長期の価値を分けて評価しています。"
    "最近では、サードパーティクッキーの利用制限が進み、計測の方法も見直しを迫られています。"
    "代わりに注目されているのが、自社で集めたデータを活用する取り組みです。"
    "会員登録や購買履歴をもとに、利用者の関心に合った情報を届けられれば、無駄な配信を減らせます。"
    "一方で、個人情報の扱いには細心の注意が必要です。"
    "利用目的を分かりやすく示し、本人の同意を得たうえでデータを扱うことが求められます。"
    "広告の品質も重要な論点です。"
    "読み込みが遅い広告や、記事の閲覧を妨げる広告は、利用者の不満につながります。"
    "媒体社は表示位置や頻度を調整し、読みやすさと収益の両立を目指しています。"
    "また、不正なクリックや表示を見抜く仕組みも欠かせません。"
    "第三者の検証ツールを導入し、配信の透明性を高める企業が増えてきました。"
    "広告を出す側と載せる側、そして見る側の三者が納得できる環境を整えることが、業界全体の信頼を支えます。"
    "これからの担当者には、数字を読み解く力に加えて、利用者の立場で考える姿勢が求められるでしょう。"
    "動画広告の分野でも変化が起きています。"
    "スマートフォンで縦型の短い動画を見る人が増え、最初の数秒で興味を引く工夫が欠かせなくなりました。"
    "音声を消したまま再生されることも多いため、字幕や文字情報を添えるのが一般的です。"
    "さらに、地域や時間帯に合わせて内容を出し分ける手法も広がっています。"
    "たとえば、雨の日には傘の広告を、週末の朝には近所のカフェの案内を表示するといった使い方です。"
    "こうした細かな調整は手間がかかりますが、うまく機能すれば反応率は大きく改善します。"
    "担当者同士で知見を共有し、小さな失敗から学び続けることも大切です。"
    "広告の世界に唯一の正解はありませんが、利用者への敬意を忘れない姿勢こそが長く選ばれる理由になります。"
    "最終的には、広告が役に立つ情報として受け取られるかどうかが成否を分けるのです。"
)
SENTENCE = "インターネット広告の市場規模は年々拡大しており、特に運用型広告の伸びが顕著です。"
ENGLISH = "The quick brown fox jumps over the lazy dog, and the advertiser pays per click."
BANGS_200 = "！" * 200
FLUENT_PLUS_BANGS = FLUENT[:120] + "！" * 120
SENTENCE_LOOP = SENTENCE * 10

# Characters that are NFKC-stable starters: appending them never composes with what precedes
# them, so normalize(s + u * k) == normalize(s) + u * k, which the monotonicity proofs need.
SAFE_UNIT_CHARS = "abcxyz!?#。、あいうかアイウカ漢字広告ー0123"

SMALL = settings(deadline=None, max_examples=60)
MEDIUM = settings(deadline=None, max_examples=150)

any_text = st.text(max_size=300)
jaish_text = st.text(
    alphabet=st.sampled_from(list("あいうアイウ漢字広告！!！？。、ー…　 abc12\n")), max_size=300
)
texts = st.one_of(any_text, jaish_text)
units = st.text(alphabet=st.sampled_from(list(SAFE_UNIT_CHARS)), min_size=1, max_size=12)


# --------------------------------------------------------------------------------------------
# Examples from docs/metrics.md §1.3
# --------------------------------------------------------------------------------------------


def test_bangs_200_matches_the_table() -> None:
    assert longest_char_run(BANGS_200) == 200
    assert tail_loop_fraction(BANGS_200) == 1.0
    assert char_ngram_seq_rep(BANGS_200) == pytest.approx(0.995, abs=1e-3)
    assert symbol_share(BANGS_200) == 1.0
    # docs/metrics.md §1.3 measured zlib 35.29 on the same string.
    assert compression_ratio(BANGS_200) == pytest.approx(35.29, abs=0.01)
    assert compression_ratio_excess(BANGS_200) > 10


def test_fluent_plus_bang_tail_covers_half() -> None:
    assert len(FLUENT_PLUS_BANGS) == 240
    assert longest_char_run(FLUENT_PLUS_BANGS) == 120
    assert tail_loop_fraction(FLUENT_PLUS_BANGS) == pytest.approx(0.5)
    assert char_ngram_seq_rep(FLUENT_PLUS_BANGS) == pytest.approx(0.489, abs=0.03)
    assert symbol_share(FLUENT_PLUS_BANGS) > 0.5
    assert compression_ratio_excess(FLUENT_PLUS_BANGS) > 1


def test_sentence_loop() -> None:
    assert longest_char_run(SENTENCE_LOOP) == 1
    assert tail_loop_fraction(SENTENCE_LOOP) == 1.0
    assert char_ngram_seq_rep(SENTENCE_LOOP) == pytest.approx(0.898, abs=0.02)
    assert compression_ratio_excess(SENTENCE_LOOP) > 2


def test_english_sentence_is_not_degenerate() -> None:
    assert longest_char_run(ENGLISH) <= 2
    assert tail_loop_fraction(ENGLISH) == 0.0
    assert char_ngram_seq_rep(ENGLISH) < 0.1
    assert symbol_share(ENGLISH) < 0.05


def test_fluent_paragraph_is_within_human_range() -> None:
    assert 950 <= len(FLUENT) <= 1100
    assert longest_char_run(FLUENT) <= 3
    assert tail_loop_fraction(FLUENT) == 0.0
    assert char_ngram_seq_rep(FLUENT) < 0.24  # human p99
    assert symbol_share(FLUENT) < 0.12  # human max
    assert compression_ratio_excess(FLUENT) <= 1.0


@pytest.mark.parametrize("k", [10, 20, 40, 80, 160])
def test_dose_response_to_bang_tail(k: int) -> None:
    text = SENTENCE + "！" * k
    assert longest_char_run(text) == k
    assert tail_loop_fraction(text) == pytest.approx(k / len(text))


def test_dose_response_is_monotone() -> None:
    doses = [SENTENCE + "！" * k for k in (0, 10, 20, 40, 80, 160)]
    for metric in (tail_loop_fraction, char_ngram_seq_rep, compression_ratio):
        values = [metric(text) for text in doses]
        assert values == sorted(values), metric.__name__


# --------------------------------------------------------------------------------------------
# longest_char_run
# --------------------------------------------------------------------------------------------


def test_nfkc_merges_full_and_half_width_runs() -> None:
    assert normalize("!!！！") == "!!!!"
    assert longest_char_run("!!！！") == 4


def test_allowed_runs_are_ignored() -> None:
    assert longest_char_run("ーーーー") == 0
    assert longest_char_run("えーーーっと、1000000円。") == 1
    # "……" is "......" after NFKC: the allow-list covers the NFKC form of its entries.
    assert longest_char_run("そうですね……") == 1
    assert longest_char_run("ああああ") == 4
    assert longest_char_run("ああああ", allow=frozenset("あ")) == 0
    assert longest_char_run("") == 0
    assert "ー" in DEFAULT_RUN_ALLOW


@given(texts)
@MEDIUM
def test_longest_run_is_nfkc_invariant_and_bounded(text: str) -> None:
    run = longest_char_run(text)
    assert run == longest_char_run(normalize(text))
    assert 0 <= run <= len(normalize(text))


@given(texts, st.sampled_from(list(SAFE_UNIT_CHARS)), st.integers(0, 50), st.integers(0, 50))
@MEDIUM
def test_longest_run_is_monotone_in_appended_copies(text: str, ch: str, k1: int, k2: int) -> None:
    """run(s + c*k) never decreases as k grows, and is ≥ k when c is not allowed."""
    small, large = sorted((k1, k2))
    assert longest_char_run(text + ch * large) >= longest_char_run(text + ch * small)
    if ch not in DEFAULT_RUN_ALLOW:
        assert longest_char_run(text + ch * large) >= large


# --------------------------------------------------------------------------------------------
# tail_loop_fraction
# --------------------------------------------------------------------------------------------


def test_tail_loop_examples() -> None:
    assert tail_loop_fraction("abcabcabcab") == 1.0  # partial unit at the very end
    assert tail_loop_fraction("xyz" + "ab" * 2) == 0.0  # only 2 repeats
    assert tail_loop_fraction("xyz" + "ab" * 3) == pytest.approx(6 / 9)
    assert tail_loop_fraction("xyz" + "ab" * 2, min_repeats=2) == pytest.approx(4 / 7)
    assert tail_loop_fraction("！" * 50 + "\n") == 1.0  # trailing newline is ignored
    assert tail_loop_fraction("") == 0.0
    assert tail_loop_fraction(" \n ") == 0.0
    long_unit = "".join(chr(0x4E00 + i) for i in range(70))
    assert tail_loop_fraction(long_unit * 4) == 0.0  # unit longer than max_period
    assert tail_loop_fraction(long_unit * 4, max_period=70) == 1.0


def test_tail_loop_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        tail_loop_fraction("abc", max_period=0)
    with pytest.raises(ValueError):
        tail_loop_fraction("abc", min_repeats=1)


@given(texts)
@MEDIUM
def test_tail_loop_range_and_nfkc_invariance(text: str) -> None:
    value = tail_loop_fraction(text)
    assert 0.0 <= value <= 1.0
    assert value == tail_loop_fraction(normalize(text))


@given(texts, units, st.integers(0, 3))
@MEDIUM
def test_tail_loop_is_monotone_once_the_loop_dominates(text: str, unit: str, extra: int) -> None:
    """Precise statement tested: let m = |u| ≤ max_period and
    k0 = max(min_repeats, ceil((max_period + m) / m)). For every k ≥ k0,
    tail(s + u*(k+1)) ≥ tail(s + u*k), and tail(s + u*k) ≥ k*m / len(normalize(s + u*k)).

    (Below k0 a longer loop inside s can be broken by the first copies of u, so the value can
    drop; that is expected and not a bug.)
    """
    m = len(unit)
    k0 = max(3, math.ceil((64 + m) / m))
    k = k0 + extra
    current = text + unit * k
    following = current + unit
    assert tail_loop_fraction(following) >= tail_loop_fraction(current) - 1e-12
    assert tail_loop_fraction(current) >= k * m / len(normalize(current)) - 1e-12


# --------------------------------------------------------------------------------------------
# char_ngram_seq_rep
# --------------------------------------------------------------------------------------------


def test_seq_rep_examples() -> None:
    assert char_ngram_seq_rep("") == 0.0
    assert char_ngram_seq_rep("abcd") == 0.0  # a single 4-gram
    assert char_ngram_seq_rep("aaaaa") == 0.5  # 2 4-grams, 1 distinct
    assert char_ngram_seq_rep("abab", n=2) == pytest.approx(1 - 2 / 3)
    with pytest.raises(ValueError):
        char_ngram_seq_rep("abc", n=0)


@given(texts, st.integers(1, 6))
@MEDIUM
def test_seq_rep_range_and_nfkc_invariance(text: str, n: int) -> None:
    value = char_ngram_seq_rep(text, n)
    assert 0.0 <= value < 1.0
    assert value == char_ngram_seq_rep(normalize(text), n)


@given(texts, units, st.integers(1, 6), st.integers(0, 3))
@MEDIUM
def test_seq_rep_is_monotone_and_tends_to_one(text: str, unit: str, n: int, extra: int) -> None:
    """Precise statement tested, with m = |u|:
    for k ≥ k0 = 1 + ceil((n − 1) / m), seq_rep(s + u*(k+1)) ≥ seq_rep(s + u*k)
    (every n-gram the new copy adds already occurs one unit earlier), and for every k,
    seq_rep(s + u*k) ≥ 1 − (len(normalize(s)) + m) / #n-grams (→ 1 as k → ∞).
    """
    m = len(unit)
    k = 1 + math.ceil((n - 1) / m) + extra
    current = text + unit * k
    assert char_ngram_seq_rep(current + unit, n) >= char_ngram_seq_rep(current, n) - 1e-12
    far = text + unit * (k + 400)
    grams = len(normalize(far)) - n + 1
    assert char_ngram_seq_rep(far, n) >= 1 - (len(normalize(text)) + m) / grams - 1e-12


# --------------------------------------------------------------------------------------------
# symbol_share, compression
# --------------------------------------------------------------------------------------------


def test_symbol_share_examples() -> None:
    assert symbol_share("") == 0.0
    assert symbol_share("   \n") == 0.0
    assert symbol_share("あ！") == 0.5
    assert symbol_share("あ ！") == 0.5  # whitespace does not count


@given(texts)
@MEDIUM
def test_symbol_share_range_and_nfkc_invariance(text: str) -> None:
    value = symbol_share(text)
    assert 0.0 <= value <= 1.0
    assert value == symbol_share(normalize(text))


def test_compression_ratio_definition() -> None:
    assert compression_ratio("") == 1.0
    assert compression_ratio_excess("") == pytest.approx(1 / 1.35)
    text = "広告" * 40
    assert compression_ratio(text) > compression_ratio(FLUENT[:80])


def test_reference_table_interpolation() -> None:
    table = dict(rep.ZLIB_P99_BY_LENGTH)
    for length, value in table.items():
        assert rep._reference_p99(length) == pytest.approx(value)
    assert rep._reference_p99(10) == pytest.approx(1.35)  # clamped below the table
    assert 1.73 < rep._reference_p99(141) < 2.06
    assert rep._reference_p99(3200) == pytest.approx(2.73 + (2.73 - 2.49))  # extrapolated
    lengths = [1, 50, 70, 100, 300, 1000, 1600, 5000, 100_000]
    values = [rep._reference_p99(length) for length in lengths]
    assert values == sorted(values)


@given(texts)
@SMALL
def test_compression_values_are_positive(text: str) -> None:
    assert compression_ratio(text) > 0
    assert compression_ratio_excess(text) > 0


# --------------------------------------------------------------------------------------------
# distinct_n, ngram_uniqueness, self_bleu
# --------------------------------------------------------------------------------------------


def _shift(text: str, plane: int) -> str:
    """The text moved into a private-use block of its own, so it shares no n-gram with others."""
    return "".join(chr(0xF0000 + plane * 0x1000 + ord(ch) % 0x1000) for ch in text)


def test_distinct_n_examples() -> None:
    identical = [SENTENCE] * 5
    varied = [FLUENT[i * 60 : (i + 1) * 60] for i in range(5)]
    assert distinct_n(identical) < distinct_n(varied)
    assert distinct_n([]) == 0.0
    assert distinct_n(["a", ""]) == 0.0  # no bigram at all
    assert distinct_n(["abab"]) == pytest.approx(2 / 3)  # denominator = number of bigrams
    with pytest.raises(ValueError):
        distinct_n(["abc"], n=0)


@given(st.lists(texts, max_size=6), st.integers(1, 4))
@SMALL
def test_distinct_n_range_nfkc_and_duplication(items: list[str], n: int) -> None:
    value = distinct_n(items, n)
    assert 0.0 <= value <= 1.0
    assert value == distinct_n([normalize(t) for t in items], n)
    # Doubling the corpus doubles the n-grams and adds no new one.
    assert distinct_n(items * 2, n) == pytest.approx(value / 2)


@given(st.text(min_size=2, max_size=200), st.integers(2, 6))
@SMALL
def test_identical_texts_are_less_distinct_than_varied_ones(text: str, copies: int) -> None:
    norm = normalize(text)
    assume(len(norm) >= 2)
    varied = [_shift(norm, plane) for plane in range(copies)]
    assert distinct_n([norm] * copies) < distinct_n(varied)


def test_ngram_uniqueness_examples() -> None:
    assert ngram_uniqueness([]) == []
    assert ngram_uniqueness([SENTENCE]) == [1.0]
    assert ngram_uniqueness([SENTENCE] * 3) == [0.0, 0.0, 0.0]
    assert ngram_uniqueness(["はい", "はい", "いいえ"]) == [0.0, 0.0, 1.0]  # short: whole text
    canned = ngram_uniqueness([SENTENCE + "A社", SENTENCE + "B社", FLUENT[200:300]])
    assert canned[0] < 0.2 and canned[1] < 0.2 and canned[2] == 1.0


@given(st.text(max_size=200), st.integers(2, 6), st.integers(1, 6))
@SMALL
def test_ngram_uniqueness_of_identical_texts_is_zero(text: str, copies: int, n: int) -> None:
    assert ngram_uniqueness([text] * copies, n) == [0.0] * copies


@given(st.lists(texts, max_size=6), st.integers(1, 5))
@SMALL
def test_ngram_uniqueness_range_and_nfkc(items: list[str], n: int) -> None:
    values = ngram_uniqueness(items, n)
    assert len(values) == len(items)
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values == ngram_uniqueness([normalize(t) for t in items], n)


def test_self_bleu_examples_from_metrics_md() -> None:
    assert self_bleu([]) == []
    assert self_bleu(["ひとつだけ"]) == [0.0]
    identical = self_bleu(["すごい！！！！！！！！"] * 5)
    assert identical == pytest.approx([100.0] * 5)
    varied = self_bleu([FLUENT[i * 80 : (i + 1) * 80] for i in range(5)])
    templated = self_bleu([f"{name}の広告効果はクリック率で測定できます。" for name in "ABCDE"])
    assert max(varied) < min(templated)


_NAIVE_BLEU = BLEU(tokenize="char", effective_order=True)


@given(st.lists(st.one_of(jaish_text, st.text(max_size=40)), min_size=2, max_size=5))
@settings(deadline=None, max_examples=60)
def test_self_bleu_equals_sacrebleu_sentence_score(items: list[str]) -> None:
    """The O(N) top-2 computation returns exactly sacrebleu's sentence-level BLEU."""
    fast = self_bleu(items)
    norm = [normalize(t) for t in items]
    naive = [
        _NAIVE_BLEU.sentence_score(norm[i], norm[:i] + norm[i + 1 :]).score
        for i in range(len(norm))
    ]
    assert fast == pytest.approx(naive, abs=1e-9)
    assert all(0.0 <= v <= 100.0 for v in fast)


def test_self_bleu_is_fast_for_100_responses_of_300_chars() -> None:
    rng = random.Random(0)
    pool = list(FLUENT)
    responses = ["".join(rng.sample(pool, 300)) for _ in range(100)]
    start = time.perf_counter()
    scores = self_bleu(responses)
    elapsed = time.perf_counter() - start
    assert len(scores) == 100
    assert elapsed < 3.0  # ~0.2 s on the 2-core dev machine; naive sacrebleu took 12 s


# --------------------------------------------------------------------------------------------
# profile
# --------------------------------------------------------------------------------------------


def test_profile_matches_the_individual_functions() -> None:
    result = profile(FLUENT_PLUS_BANGS)
    assert isinstance(result, RepetitionProfile)
    assert result == RepetitionProfile(
        n_chars=240,
        is_short=False,
        longest_char_run=longest_char_run(FLUENT_PLUS_BANGS),
        tail_loop_fraction=tail_loop_fraction(FLUENT_PLUS_BANGS),
        symbol_share=symbol_share(FLUENT_PLUS_BANGS),
        char_seq_rep4=char_ngram_seq_rep(FLUENT_PLUS_BANGS),
        compression_ratio=compression_ratio(FLUENT_PLUS_BANGS),
        compression_ratio_excess=compression_ratio_excess(FLUENT_PLUS_BANGS),
    )


def test_profile_of_short_text_drops_unreliable_signals() -> None:
    result = profile("はい！！！！！！！！！！")
    assert result.is_short
    assert result.longest_char_run == 10
    assert result.tail_loop_fraction > 0.8
    assert result.char_seq_rep4 is None
    assert result.compression_ratio is None
    assert result.compression_ratio_excess is None
    assert not profile("あ" * 50).is_short
    assert profile("あ" * 49, short_threshold=40).is_short is False


@given(texts)
@SMALL
def test_profile_never_fails(text: str) -> None:
    result = profile(text)
    assert result.n_chars == len(normalize(text))
    assert 0.0 <= result.tail_loop_fraction <= 1.0
    assert result.is_short == (result.char_seq_rep4 is None)


# --------------------------------------------------------------------------------------------
# Robustness: empty, whitespace, huge, odd code points
# --------------------------------------------------------------------------------------------

HUGE_INPUTS = {
    "bangs": "！" * 100_000,
    "bang_tail": FLUENT * 50 + "！" * 50_000,
    "fluent": (FLUENT * 100)[:100_000],
    "random": "".join(
        random.Random(1).choice("あいうえおかきくけこ漢字広告！。") for _ in range(100_000)
    ),
}


@pytest.mark.parametrize("name", sorted(HUGE_INPUTS))
def test_huge_inputs_are_fast(name: str) -> None:
    text = HUGE_INPUTS[name]
    start = time.perf_counter()
    result = profile(text)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0  # ~0.1 s measured
    assert 0.0 <= result.tail_loop_fraction <= 1.0
    assert distinct_n([text, text[:1000]]) > 0
    assert len(ngram_uniqueness([text, text[:1000]])) == 2


@pytest.mark.parametrize("text", ["", " ", "\n\t ", "\x00", "a\ud800b", "\ufffd" * 3, "😀" * 60])
def test_odd_inputs_do_not_crash(text: str) -> None:
    profile(text)
    compression_ratio(text)
    self_bleu([text, text, "x"])
    distinct_n([text])
    ngram_uniqueness([text, "abc"])

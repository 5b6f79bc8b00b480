"""Generate the AdTech arithmetic items from templates, with exact answers.

The ``numeric`` items of ``suites/data/adtech/items.jsonl`` whose id starts with ``ar-``, and the
``multiple_choice`` arithmetic items whose id starts with ``am-``, are written by this tool (the
hand-written items stay as they are)::

    python -m dpo_harness.tools.adtech_arithmetic            # rewrite the generated items
    python -m dpo_harness.tools.adtech_arithmetic --check    # exit 1 if the file differs

Every item comes from a template for one metric (CTR, CVR, CPC, CPM, eCPM, vCPM, CPA, CPI, CPV,
ROAS, fill rate, viewability, frequency, reach, GRP, LTV, budget pacing, and the inverse
questions: clicks from a CTR, spend from a CPM, …), with Japanese phrasing varied by template,
advertiser, channel and period, and amounts written as 円 with separators or as 万/億.

Answers are computed in :class:`decimal.Decimal` from integer inputs and rounded half up (四捨五入)
to the number of decimals the question asks for; the question says the rounding rule whenever
the exact answer is not already at that precision. The tolerance is half a unit in the last
asked place (``abs_tol``), so the exact value and the value rounded as asked both count, and
nothing coarser does. Answers are always asked in base units (円, 回, 件, 人, %) — never "何万円" —
because the suite reads the last number of a reply with 万/億 applied.

A multiple-choice arithmetic item asks the same kind of question and offers the answer with three
slips of the decimal point (×10, ÷10, ×100), all at the asked precision; the correct position
rotates over the four choices.

The draw is seeded (:data:`SEED`); an item is kept only if its computation (metric and inputs) is
new and its question is not a near-duplicate of any other adtech item (5-gram containment
≥ :data:`NEAR_DUPLICATE`, :func:`dpo_harness.tools.overlap.find_near_duplicates`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from dpo_harness.files import atomic_write_text
from dpo_harness.suites.common import DATA_DIR
from dpo_harness.tools.overlap import NearDuplicateIndex

__all__ = [
    "COUNT",
    "ITEMS_FILE",
    "MC_COUNT",
    "MC_PREFIX",
    "NEAR_DUPLICATE",
    "PREFIX",
    "SEED",
    "Generated",
    "generate",
    "item_text",
    "main",
    "merged_lines",
]

SEED = 20261201
COUNT = 215
PREFIX = "ar-"
MC_COUNT = 60
MC_PREFIX = "am-"
NEAR_DUPLICATE = 0.8
ITEMS_FILE = DATA_DIR / "adtech" / "items.jsonl"

_ADVERTISERS = [
    "化粧品の通販サイト",
    "地方の不動産会社",
    "旅行予約アプリ",
    "法人向けクラウド会計ソフト",
    "家電量販店のECサイト",
    "オンライン英会話サービス",
    "中古車の買取店",
    "ペットフードのD2Cブランド",
    "転職支援サービス",
    "フィットネスジムのチェーン",
    "地元の洋菓子店",
    "動画配信サービス",
    "学習塾",
    "家具のネットショップ",
    "スマホゲームの開発会社",
    "ふるさと納税のポータル",
    "結婚式場",
    "アウトドア用品店",
]
_CHANNELS = [
    "検索連動型広告",
    "ディスプレイ広告",
    "SNS広告",
    "動画広告",
    "リターゲティング広告",
    "ネイティブ広告",
    "アプリ内広告",
]
# Adverbial phrases that read before a verb ("先月配信した", "キャンペーン期間中に配信した");
# _bare() drops the particle where a noun phrase is needed ("先月の", "（…、キャンペーン期間中）").
_PERIODS = [
    "先月",
    "今週",
    "キャンペーン期間中に",
    "第2四半期に",
    "昨日1日に",
    "2週間のテスト期間に",
    "年末商戦の間に",
]
_PUBLISHERS = [
    "ニュースサイト",
    "料理レシピのアプリ",
    "地域情報のポータル",
    "天気予報アプリ",
    "釣り情報のブログ",
    "マンガ配信アプリ",
    "スポーツ速報サイト",
    "家計簿アプリ",
]

_ROUNDING = {
    0: "小数点以下を四捨五入して整数で答えてください。",
    1: "小数第2位を四捨五入して、小数第1位まで答えてください。",
    2: "小数第3位を四捨五入して、小数第2位まで答えてください。",
}


@dataclass(frozen=True)
class Generated:
    """One generated item, and the computation it asks for (metric and inputs)."""

    key: tuple[object, ...]
    question: str
    answer: Decimal  # rounded half up to ``decimals`` places
    decimals: int
    unit: str

    def record(self, item_id: str) -> dict[str, object]:
        answer: int | float = int(self.answer) if self.decimals == 0 else float(self.answer)
        tol = float(Decimal(5) / Decimal(10) ** (self.decimals + 1))
        return {
            "id": item_id,
            "type": "numeric",
            "category": "arithmetic",
            "question": self.question,
            "answer": answer,
            "unit": self.unit,
            "rel_tol": 0.0,
            "abs_tol": tol,
        }


def _shown(value: Decimal, decimals: int, unit: str) -> str:
    """A value as an answer reads: '2.29%', '1,250円', '8,904回'."""
    return f"{_round(value, decimals):,.{decimals}f}{unit}"


def _round(value: Decimal, decimals: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def _yen(amount: int, rng: random.Random) -> str:
    """An amount in 円: '1,250,000円', '125万円' or '1.25億円' (only where exact)."""
    styles = ["comma"]
    if amount % 10_000 == 0 and amount >= 10_000:
        styles.append("man")
    if amount % 1_000_000 == 0 and amount >= 100_000_000:
        styles.append("oku")
    style = rng.choice(styles)
    if style == "man":
        return f"{amount // 10_000:,}万円"
    if style == "oku":
        return f"{Decimal(amount) / Decimal(100_000_000):f}".rstrip("0").rstrip(".") + "億円"
    return f"{amount:,}円"


def _count(n: int, unit: str, rng: random.Random) -> str:
    """A count: '350,000回' or '35万回' (only where exact)."""
    if n % 10_000 == 0 and n >= 10_000 and rng.random() < 0.5:
        return f"{n // 10_000:,}万{unit}"
    return f"{n:,}{unit}"


def _ask(exact: Decimal, decimals: int) -> tuple[Decimal, str]:
    """The rounded answer and the rounding sentence (empty when the exact value needs none)."""
    rounded = _round(exact, decimals)
    return rounded, ("" if rounded == exact else _ROUNDING[decimals])


Template = Callable[[random.Random], Generated | None]


def _who(rng: random.Random) -> tuple[str, str, str]:
    return rng.choice(_ADVERTISERS), rng.choice(_CHANNELS), rng.choice(_PERIODS)


def _bare(period: str) -> str:
    return period.removesuffix("に")


def _ctr(rng: random.Random) -> Generated | None:
    imps = rng.randrange(20, 900) * 1000
    clicks = rng.randrange(max(2, imps // 2000), max(3, imps // 40))
    value, rule = _ask(Decimal(clicks) * 100 / Decimal(imps), 2)
    adv, ch, per = _who(rng)
    forms = [
        f"{adv}が{per}配信した{ch}は、表示回数が{_count(imps, '回', rng)}、クリック数が{clicks:,}回でした。CTR（クリック率）は何%ですか。",
        f"{ch}のレポートを見ると、インプレッション{_count(imps, '回', rng)}に対してクリックが{clicks:,}回ありました（{adv}、{_bare(per)}）。クリック率を%で求めてください。",
        f"クリック数÷表示回数で求めるCTRについて、表示{_count(imps, '回', rng)}・クリック{clicks:,}回だった{adv}の{ch}では何%になりますか。",
    ]
    return Generated(("ctr", imps, clicks), rng.choice(forms) + rule, value, 2, "%")


def _cvr(rng: random.Random) -> Generated | None:
    clicks = rng.randrange(300, 40_000)
    conv = rng.randrange(max(2, clicks // 200), max(3, clicks // 8))
    value, rule = _ask(Decimal(conv) * 100 / Decimal(clicks), 2)
    adv, ch, per = _who(rng)
    goal = rng.choice(["購入", "会員登録", "資料請求", "来店予約", "無料体験の申込み"])
    forms = [
        f"{adv}の{ch}は{per}{clicks:,}回クリックされ、そのうち{conv:,}件が{goal}につながりました。クリックを分母としたCVRは何%ですか。",
        f"{goal}をコンバージョンとする{adv}のキャンペーンで、クリック{clicks:,}回からコンバージョンが{conv:,}件生まれました。CVR（コンバージョン数÷クリック数）を%で答えてください。",
    ]
    return Generated(("cvr", clicks, conv), rng.choice(forms) + rule, value, 2, "%")


def _cpc(rng: random.Random) -> Generated | None:
    clicks = rng.randrange(200, 30_000)
    cost = rng.randrange(30, 900) * 1000
    decimals = rng.choice([0, 1])
    value, rule = _ask(Decimal(cost) / Decimal(clicks), decimals)
    if value < 5:
        return None
    adv, ch, per = _who(rng)
    forms = [
        f"{adv}は{_bare(per)}、{ch}に{_yen(cost, rng)}を使い、{clicks:,}回のクリックを得ました。CPC（クリック単価）は何円ですか。",
        f"広告費{_yen(cost, rng)}、クリック数{clicks:,}回という結果になった{ch}があります（{adv}）。1クリックあたりの費用は何円ですか。",
    ]
    return Generated(("cpc", cost, clicks), rng.choice(forms) + rule, value, decimals, "円")


def _cpm(rng: random.Random) -> Generated | None:
    imps = rng.randrange(50, 5000) * 1000
    cost = rng.randrange(20, 3000) * 1000
    decimals = rng.choice([0, 1])
    value, rule = _ask(Decimal(cost) * 1000 / Decimal(imps), decimals)
    if not 10 <= value <= 3000:
        return None
    adv, ch, per = _who(rng)
    forms = [
        f"{adv}の{ch}は、{per}{_yen(cost, rng)}で{_count(imps, '回', rng)}表示されました。CPM（表示1,000回あたりの費用）は何円ですか。",
        f"費用{_yen(cost, rng)}に対してインプレッションが{_count(imps, '回', rng)}だった{ch}があります。インプレッション単価であるCPMを円で求めてください。",
    ]
    return Generated(("cpm", cost, imps), rng.choice(forms) + rule, value, decimals, "円")


def _ecpm(rng: random.Random) -> Generated | None:
    imps = rng.randrange(30, 3000) * 1000
    revenue = rng.randrange(5, 900) * 1000
    value, rule = _ask(Decimal(revenue) * 1000 / Decimal(imps), 1)
    if not 5 <= value <= 2000:
        return None
    pub = rng.choice(_PUBLISHERS)
    per = rng.choice(_PERIODS)
    forms = [
        f"{pub}の広告枠は{per}{_count(imps, '回', rng)}表示され、広告収益は{_yen(revenue, rng)}でした。この枠のeCPMは何円ですか。",
        f"{pub}を運営する媒体社が、収益{_yen(revenue, rng)}・表示{_count(imps, '回', rng)}の広告枠を比べようとしています。表示1,000回あたりの収益（eCPM）は何円ですか。",
    ]
    return Generated(("ecpm", revenue, imps), rng.choice(forms) + rule, value, 1, "円")


def _ecpm_cpc(rng: random.Random) -> Generated | None:
    imps = rng.randrange(50, 2000) * 1000
    clicks = rng.randrange(max(2, imps // 2000), max(3, imps // 100))
    cpc = rng.randrange(8, 200)
    value, rule = _ask(Decimal(clicks * cpc) * 1000 / Decimal(imps), 1)
    pub = rng.choice(_PUBLISHERS)
    form = (
        f"{pub}のクリック課金の広告枠が{_count(imps, '回', rng)}表示され、{clicks:,}回クリックされました。"
        f"クリック単価が{cpc}円のとき、この枠のeCPMは何円ですか。"
    )
    return Generated(("ecpm_cpc", imps, clicks, cpc), form + rule, value, 1, "円")


def _vcpm(rng: random.Random) -> Generated | None:
    viewable = rng.randrange(20, 2000) * 1000
    cost = rng.randrange(10, 1500) * 1000
    value, rule = _ask(Decimal(cost) * 1000 / Decimal(viewable), 0)
    if not 20 <= value <= 5000:
        return None
    adv, ch, _ = _who(rng)
    form = (
        f"{adv}の{ch}で、ビューアブルと判定されたインプレッションが{_count(viewable, '回', rng)}、"
        f"費用が{_yen(cost, rng)}でした。vCPM（ビューアブルなインプレッション1,000回あたりの費用）は何円ですか。"
    )
    return Generated(("vcpm", cost, viewable), form + rule, value, 0, "円")


def _cpa(rng: random.Random) -> Generated | None:
    conv = rng.randrange(5, 900)
    cost = rng.randrange(50, 5000) * 1000
    value, rule = _ask(Decimal(cost) / Decimal(conv), 0)
    adv, ch, per = _who(rng)
    goal = rng.choice(["購入", "会員登録", "資料請求", "問い合わせ", "アプリの課金"])
    forms = [
        f"{adv}は{per}{ch}へ{_yen(cost, rng)}を投じ、{goal}を{conv}件獲得しました。CPA（コンバージョン単価）は何円ですか。",
        f"{goal}1件を獲得するのにいくらかかったかを知りたい{adv}の担当者がいます。広告費は{_yen(cost, rng)}、{goal}は{conv}件でした。CPAは何円ですか。",
    ]
    return Generated(("cpa", cost, conv), rng.choice(forms) + rule, value, 0, "円")


def _cpa_from_cpc(rng: random.Random) -> Generated | None:
    cpc = rng.randrange(20, 400)
    cvr_tenths = rng.randrange(5, 150)  # 0.5% .. 15.0%
    value, rule = _ask(Decimal(cpc) * 1000 / Decimal(cvr_tenths), 0)
    cvr = f"{Decimal(cvr_tenths) / 10:f}".rstrip("0").rstrip(".")
    adv = rng.choice(_ADVERTISERS)
    form = (
        f"{adv}の広告はCPCが{cpc}円、クリックを分母としたCVRが{cvr}%です。"
        "このときのCPA（コンバージョン1件あたりの費用）は何円ですか。"
    )
    return Generated(("cpa_cpc", cpc, cvr_tenths), form + rule, value, 0, "円")


def _cpi(rng: random.Random) -> Generated | None:
    installs = rng.randrange(100, 20_000)
    cost = rng.randrange(50, 5000) * 1000
    value, rule = _ask(Decimal(cost) / Decimal(installs), 0)
    if value < 20:
        return None
    app = rng.choice(
        ["パズルゲーム", "家計簿アプリ", "フリマアプリ", "語学学習アプリ", "タクシー配車アプリ"]
    )
    per = rng.choice(_PERIODS)
    form = (
        f"{app}のインストール広告（{_bare(per)}）は費用が{_yen(cost, rng)}で、インストールは{installs:,}件でした。"
        "CPI（インストール1件あたりの費用）は何円ですか。"
    )
    return Generated(("cpi", cost, installs), form + rule, value, 0, "円")


def _cpv(rng: random.Random) -> Generated | None:
    views = rng.randrange(5, 800) * 100
    cost = rng.randrange(10, 900) * 1000
    value, rule = _ask(Decimal(cost) / Decimal(views), 1)
    if not 1 <= value <= 200:
        return None
    adv = rng.choice(_ADVERTISERS)
    form = (
        f"{adv}の動画広告は、費用{_yen(cost, rng)}で視聴が{views:,}回カウントされました。"
        "CPV（視聴1回あたりの費用）は何円ですか。"
    )
    return Generated(("cpv", cost, views), form + rule, value, 1, "円")


def _roas(rng: random.Random) -> Generated | None:
    cost = rng.randrange(10, 2000) * 10_000
    revenue = rng.randrange(cost // 20_000 + 1, cost // 1_000) * 10_000
    decimals = rng.choice([0, 1])
    value, rule = _ask(Decimal(revenue) * 100 / Decimal(cost), decimals)
    adv, ch, per = _who(rng)
    forms = [
        f"{adv}の{_bare(per)}の{ch}は、広告費{_yen(cost, rng)}に対して広告経由の売上が{_yen(revenue, rng)}でした。ROAS（広告費用対効果）は何%ですか。",
        f"売上÷広告費×100で求めるROASについて、広告費が{_yen(cost, rng)}、広告から生まれた売上が{_yen(revenue, rng)}の{adv}では何%になりますか。",
    ]
    return Generated(("roas", cost, revenue), rng.choice(forms) + rule, value, decimals, "%")


def _revenue_from_roas(rng: random.Random) -> Generated | None:
    cost = rng.randrange(5, 900) * 10_000
    roas = rng.randrange(8, 120) * 10
    value = Decimal(cost) * roas / 100
    adv = rng.choice(_ADVERTISERS)
    form = (
        f"{adv}は広告費{_yen(cost, rng)}でROAS {roas}%を達成しました。広告経由の売上は何円ですか。"
    )
    return Generated(("rev_roas", cost, roas), form, _round(value, 0), 0, "円")


def _fill_rate(rng: random.Random) -> Generated | None:
    requests = rng.randrange(50, 5000) * 1000
    filled = rng.randrange(requests // 4, requests)
    value, rule = _ask(Decimal(filled) * 100 / Decimal(requests), 1)
    pub, per = rng.choice(_PUBLISHERS), rng.choice(_PERIODS)
    forms = [
        f"{pub}の広告枠は{per}広告リクエストを{_count(requests, '件', rng)}受け、そのうち{filled:,}件で広告が配信されました。フィルレートは何%ですか。",
        f"広告リクエスト{_count(requests, '件', rng)}に対して、埋まった（広告を返せた）のは{filled:,}件でした（{pub}）。この枠のフィルレートを%で求めてください。",
    ]
    return Generated(("fill", requests, filled), rng.choice(forms) + rule, value, 1, "%")


def _viewability(rng: random.Random) -> Generated | None:
    served = rng.randrange(100, 3000) * 1000
    measurable = rng.randrange(served // 2, served)
    viewable = rng.randrange(measurable // 4, measurable)
    value, rule = _ask(Decimal(viewable) * 100 / Decimal(measurable), 1)
    adv, ch, per = _who(rng)
    form = (
        f"{adv}の{ch}は{per}{served:,}回配信され、そのうち計測できたのは{measurable:,}回、"
        f"ビューアブルと判定されたのは{viewable:,}回でした。ビューアビリティ率は何%ですか。"
    )
    return Generated(("viewability", served, measurable, viewable), form + rule, value, 1, "%")


def _frequency(rng: random.Random) -> Generated | None:
    reach = rng.randrange(10, 900) * 1000
    imps = rng.randrange(reach + 1000, reach * 9)
    value, rule = _ask(Decimal(imps) / Decimal(reach), 2)
    adv, ch, per = _who(rng)
    forms = [
        f"{adv}の{ch}は{_bare(per)}、インプレッションが{imps:,}回、リーチ（ユニークユーザー数）が{_count(reach, '人', rng)}でした。平均フリークエンシーは何回ですか。",
        f"{_count(reach, '人', rng)}に届いた{ch}が、合計{imps:,}回表示されました（{adv}）。1人あたり平均何回表示されたことになりますか。",
    ]
    return Generated(("freq", imps, reach), rng.choice(forms) + rule, value, 2, "回")


def _reach(rng: random.Random) -> Generated | None:
    freq_tenths = rng.randrange(12, 80)
    reach = rng.randrange(10, 500) * 1000
    imps = reach * freq_tenths // 10
    freq = f"{Decimal(freq_tenths) / 10:f}".rstrip("0").rstrip(".")
    adv = rng.choice(_ADVERTISERS)
    form = (
        f"{adv}の広告は表示回数が{imps:,}回、平均フリークエンシーが{freq}回でした。"
        "リーチは何人ですか。"
    )
    return Generated(("reach", imps, freq_tenths), form, Decimal(reach), 0, "人")


def _grp(rng: random.Random) -> Generated | None:
    reach_pct = rng.randrange(15, 86)
    freq_tenths = rng.randrange(12, 46)
    value = Decimal(reach_pct) * freq_tenths / 10
    freq = f"{Decimal(freq_tenths) / 10:f}".rstrip("0").rstrip(".")
    brand = rng.choice(["飲料メーカー", "自動車メーカー", "通信会社", "保険会社", "食品メーカー"])
    form = (
        f"{brand}のテレビCMは、リーチが{reach_pct}%、平均フリークエンシーが{freq}回でした。"
        "GRP（延べ視聴率）は何%ですか。"
    )
    return Generated(("grp", reach_pct, freq_tenths), form, _round(value, 1), 1, "%")


def _ltv(rng: random.Random) -> Generated | None:
    price = rng.randrange(5, 300) * 100
    per_year = rng.randrange(1, 24)
    years = rng.randrange(1, 6)
    value = Decimal(price * per_year * years)
    shop = rng.choice(_ADVERTISERS)
    form = (
        f"{shop}の顧客は、平均購買単価が{price:,}円、年間の購買回数が{per_year}回、継続期間が{years}年です。"
        "平均購買単価×購買頻度×継続期間で求めたLTVは何円ですか。"
    )
    return Generated(("ltv", price, per_year, years), form, value, 0, "円")


def _clicks_from_ctr(rng: random.Random) -> Generated | None:
    imps = rng.randrange(20, 2000) * 1000
    ctr_hundredths = rng.randrange(5, 400)  # 0.05% .. 4.00%
    value, rule = _ask(Decimal(imps) * ctr_hundredths / 10_000, 0)
    ctr = f"{Decimal(ctr_hundredths) / 100:f}".rstrip("0").rstrip(".")
    adv, ch, _ = _who(rng)
    form = (
        f"{adv}の{ch}は表示回数が{_count(imps, '回', rng)}、CTRが{ctr}%でした。"
        "クリック数は何回ですか。"
    )
    return Generated(("clicks", imps, ctr_hundredths), form + rule, value, 0, "回")


def _cost_from_cpm(rng: random.Random) -> Generated | None:
    imps = rng.randrange(50, 9000) * 1000
    cpm = rng.randrange(30, 1500)
    value = Decimal(imps) * cpm / 1000
    adv = rng.choice(_ADVERTISERS)
    form = f"{adv}がCPM {cpm}円の広告枠で広告を{_count(imps, '回', rng)}表示させると、広告費は何円ですか。"
    return Generated(("cost_cpm", imps, cpm), form, _round(value, 0), 0, "円")


def _imps_from_budget(rng: random.Random) -> Generated | None:
    # CPMs that divide 10^7, so a budget in 万円 buys a whole number of impressions.
    cpm = rng.choice([50, 80, 100, 125, 160, 200, 250, 400, 500, 625, 800, 1000])
    budget = rng.randrange(5, 1000) * 10_000
    imps = budget * 1000 // cpm
    adv = rng.choice(_ADVERTISERS)
    form = (
        f"{adv}が予算{_yen(budget, rng)}をCPM {cpm}円の枠で使い切ると、広告は何回表示されますか。"
    )
    return Generated(("imps_budget", budget, cpm), form, Decimal(imps), 0, "回")


def _conversions_from_cvr(rng: random.Random) -> Generated | None:
    clicks = rng.randrange(500, 50_000)
    cvr_tenths = rng.randrange(3, 150)
    value, rule = _ask(Decimal(clicks) * cvr_tenths / 1000, 0)
    cvr = f"{Decimal(cvr_tenths) / 10:f}".rstrip("0").rstrip(".")
    adv = rng.choice(_ADVERTISERS)
    form = (
        f"{adv}の広告はクリック数が{clicks:,}回、クリックを分母としたCVRが{cvr}%でした。"
        "コンバージョンは何件ですか。"
    )
    return Generated(("conv", clicks, cvr_tenths), form + rule, value, 0, "件")


def _pacing(rng: random.Random) -> Generated | None:
    days = rng.choice([28, 30, 31])
    elapsed = rng.randrange(3, days - 2)
    budget = rng.randrange(30, 3000) * 10_000
    spent = rng.randrange(budget * elapsed // days // 3, budget * elapsed // days * 2)
    planned = Decimal(budget) * elapsed / days
    value, rule = _ask(Decimal(spent) * 100 / planned, 1)
    adv, ch, _ = _who(rng)
    form = (
        f"{adv}は{ch}の月予算{_yen(budget, rng)}を{days}日間で均等に使う計画です。{elapsed}日が過ぎた時点で"
        f"{spent:,}円を消化しました。計画どおりの消化額に対する実際の消化額の割合（ペーシング）は何%ですか。"
    )
    return Generated(("pacing", days, elapsed, budget, spent), form + rule, value, 1, "%")


def _daily_budget(rng: random.Random) -> Generated | None:
    days = rng.choice([28, 30, 31])
    elapsed = rng.randrange(3, days - 2)
    budget = rng.randrange(30, 3000) * 10_000
    spent = rng.randrange(budget // 10, budget * 9 // 10)
    value, rule = _ask(Decimal(budget - spent) / (days - elapsed), 0)
    adv = rng.choice(_ADVERTISERS)
    form = (
        f"{adv}の今月の広告予算は{_yen(budget, rng)}で、{days}日のうち{elapsed}日目の終わりまでに{spent:,}円を使いました。"
        "残りの日数で予算をちょうど使い切るには、1日あたり何円を使えばよいですか。"
    )
    return Generated(("daily", days, elapsed, budget, spent), form + rule, value, 0, "円")


TEMPLATES: tuple[Template, ...] = (
    _ctr,
    _cvr,
    _cpc,
    _cpm,
    _ecpm,
    _ecpm_cpc,
    _vcpm,
    _cpa,
    _cpa_from_cpc,
    _cpi,
    _cpv,
    _roas,
    _revenue_from_roas,
    _fill_rate,
    _viewability,
    _frequency,
    _reach,
    _grp,
    _ltv,
    _clicks_from_ctr,
    _cost_from_cpm,
    _imps_from_budget,
    _conversions_from_cvr,
    _pacing,
    _daily_budget,
)


def item_text(row: dict[str, object]) -> str:
    """What two items are compared on for near-duplicates: the question and its answers."""
    extra = row.get("choices") or row.get("accepted") or []
    return " ".join([str(row["question"]), *(str(x) for x in extra)])  # type: ignore[attr-defined]


def _choice_record(item: Generated, item_id: str, position: int) -> dict[str, object] | None:
    """The multiple-choice form of ``item``: the answer among three decimal-point slips."""
    slips = [item.answer * 10, item.answer / 10, item.answer * 100]
    wrong = [_shown(v, item.decimals, item.unit) for v in slips]
    right = _shown(item.answer, item.decimals, item.unit)
    choices = [*wrong[:position], right, *wrong[position:]]
    if item.answer == 0 or len(set(choices)) != 4:
        return None
    return {
        "id": item_id,
        "type": "multiple_choice",
        "category": "arithmetic",
        "question": item.question,
        "choices": choices,
        "answer": position,
    }


def _read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def generate(
    others: list[str], *, count: int = COUNT, mc_count: int = MC_COUNT, seed: int = SEED
) -> list[dict[str, object]]:
    """``count`` numeric and ``mc_count`` multiple-choice items, round-robin over the templates,
    none a near-duplicate of ``others`` (the texts of the other items) or of each other."""
    rng = random.Random(seed)
    index = NearDuplicateIndex(others)
    seen: set[tuple[object, ...]] = set()
    numeric: list[dict[str, object]] = []
    choice: list[dict[str, object]] = []
    attempts = 0
    while len(numeric) < count or len(choice) < mc_count:
        attempts += 1
        if attempts > 200 * (count + mc_count):
            raise RuntimeError("the templates cannot produce enough distinct items")
        as_choice = len(numeric) >= count or (len(choice) < mc_count and attempts % 5 == 0)
        made = len(numeric) + len(choice)
        item = TEMPLATES[made % len(TEMPLATES)](rng)
        if item is None or item.key in seen:
            continue
        record = (
            _choice_record(item, f"{MC_PREFIX}{len(choice) + 1:03d}", len(choice) % 4)
            if as_choice
            else item.record(f"{PREFIX}{len(numeric) + 1:03d}")
        )
        if record is None:
            continue
        text = item_text(record)
        if index.near(text, NEAR_DUPLICATE):
            continue
        seen.add(item.key)
        index.add(text)
        (choice if as_choice else numeric).append(record)
    return choice + numeric


def merged_lines(path: Path = ITEMS_FILE) -> str:
    """The items file with its generated items replaced by a fresh generation."""
    kept = [row for row in _read(path) if not str(row["id"]).startswith((PREFIX, MC_PREFIX))]
    generated = generate([item_text(row) for row in kept])
    rows = kept + generated
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=ITEMS_FILE)
    ap.add_argument("--check", action="store_true", help="exit 1 if the file is not up to date")
    args = ap.parse_args(argv)
    text = merged_lines(args.file)
    if args.check:
        same = args.file.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{args.file} differs from the generator's output")
        return 0 if same else 1
    atomic_write_text(args.file, text)
    print(
        f"wrote {args.file}: {text.count(chr(10))} items "
        f"({COUNT} numeric and {MC_COUNT} multiple-choice generated)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

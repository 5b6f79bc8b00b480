"""Pure scoring pieces of the suites: answer matching, number extraction, log forensics, contamination."""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from dpo_harness.suites.adtech import AdtechItem, extract_last_number, normalize_answer
from dpo_harness.suites.common import DATA_DIR, load_items
from dpo_harness.suites.forensics import LN2, diagnose_log_history
from dpo_harness.suites.repetition import is_degenerate
from dpo_harness.tools.overlap import find_contamination
from hypothesis import given
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------- answers and numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CTRは1.5%です。", 1.5),
        ("表示回数20,000回、クリック300回なので、CTRは1.5%になります。", 1.5),
        ("ＣＰＭは１，２００円です。", 1200.0),
        ("費用は3万円です。", 30000.0),
        ("売上は1.2億円でした。", 1.2e8),
        ("わかりません。", None),
    ],
)
def test_extract_last_number(text: str, expected: float | None) -> None:
    assert extract_last_number(text) == expected


@given(st.integers(0, 10**9), st.integers(0, 999))
def test_extract_last_number_roundtrip(whole: int, frac: int) -> None:
    value = float(f"{whole}.{frac:03d}")
    assert extract_last_number(f"答えは{whole:,}.{frac:03d}です") == pytest.approx(value)


@given(st.text())
def test_normalize_answer_is_nfkc_invariant_and_idempotent(text: str) -> None:
    once = normalize_answer(text)
    assert normalize_answer(unicodedata.normalize("NFKC", text)) == once
    assert normalize_answer(once) == once


def test_normalize_answer_matches_surface_variants() -> None:
    assert normalize_answer("Demand-Side Platform") == normalize_answer("demand side platform")
    assert normalize_answer("ＲＥＳＥＬＬＥＲ") == "reseller"


def test_shipped_items_meet_the_issue_counts() -> None:
    items = load_items(DATA_DIR / "adtech" / "items.jsonl", AdtechItem, what="adtech item")
    kinds = [i.type for i in items]
    # Issue 12: enough items that each gated accuracy resolves its margin (docs/gate-statistics.md)
    assert kinds.count("multiple_choice") >= 270
    assert kinds.count("short_answer") >= 105
    assert kinds.count("numeric") >= 190
    generated = [i for i in items if i.id.startswith("ar-")]
    assert len(generated) >= 150 and all(i.type == "numeric" for i in generated)
    mc = [i for i in items if i.type == "multiple_choice"]
    assert all(len(i.choices) == 4 for i in mc)
    # the correct index is spread evenly, so position bias cannot fake accuracy
    counts = [sum(1 for i in mc if i.answer == k) for k in range(4)]
    assert max(counts) - min(counts) <= 0.1 * len(mc)


def test_the_generated_arithmetic_items_are_the_generators_output() -> None:
    from dpo_harness.tools.adtech_arithmetic import ITEMS_FILE, main, merged_lines

    assert ITEMS_FILE.read_text(encoding="utf-8") == merged_lines(), (
        "suites/data/adtech/items.jsonl is stale: run python -m dpo_harness.tools.adtech_arithmetic"
    )
    assert main(["--check"]) == 0


def test_no_two_adtech_items_are_near_duplicates() -> None:
    from dpo_harness.tools.adtech_arithmetic import item_text
    from dpo_harness.tools.overlap import find_near_duplicates

    rows = [json.loads(line) for line in (DATA_DIR / "adtech" / "items.jsonl").open()]
    # 0.85: above the hand-written sibling pairs (first- vs second-price auction with the same
    # bids reads 0.83), below a question asked twice.
    hits = find_near_duplicates([(r["id"], item_text(r)) for r in rows], threshold=0.85)
    assert hits == []
    planted = rows[-1]["question"].replace("何", "いくつ", 1)
    assert find_near_duplicates(
        [(r["id"], item_text(r)) for r in rows[-1:]] + [("x", planted)], threshold=0.85
    )


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        ("2.345", 2, "2.35"),
        ("0.125", 2, "0.13"),
        ("2.5", 0, "3"),
        ("1.05", 1, "1.1"),
        ("7", 1, "7.0"),
    ],
)
def test_generated_answers_round_half_up(value: str, decimals: int, expected: str) -> None:
    from decimal import Decimal

    from dpo_harness.tools.adtech_arithmetic import _round

    assert _round(Decimal(value), decimals) == Decimal(expected)  # float round() gives 2.34, 2


def test_a_generated_item_accepts_the_exact_and_the_rounded_value_and_nothing_coarser() -> None:
    from dpo_harness.suites.adtech import NumericItem, _numeric_ok

    rows = [json.loads(line) for line in (DATA_DIR / "adtech" / "items.jsonl").open()]
    row = next(r for r in rows if r["id"].startswith("ar-") and "小数第1位" in r["question"])
    item = NumericItem.model_validate(row)
    step = 0.1
    assert _numeric_ok(item, item.answer)
    assert _numeric_ok(item, item.answer + 0.04)  # the unrounded value
    assert not _numeric_ok(item, item.answer + step)  # one unit off in the asked place
    assert not _numeric_ok(item, item.answer * 10)


# ------------------------------------------------------------------------- degeneration rule


def test_degenerate_rule() -> None:
    assert is_degenerate(200, 1.0, 0.99)
    assert is_degenerate(3, 0.9, None)
    assert not is_degenerate(3, 0.0, 0.05)


# ------------------------------------------------------------------------- training-log forensics

NAN = float("nan")


def _seed_history() -> list[dict[str, Any]]:
    """The seed run's log as TRL writes it: loss 0.0 (NaN filtered), NaN everywhere else."""
    history: list[dict[str, Any]] = []
    for step in range(100, 900, 100):
        history.append(
            {
                "epoch": step / 400,
                "grad_norm": NAN,
                "learning_rate": 1e-6,
                "logits/chosen": NAN,
                "logits/rejected": NAN,
                "logps/chosen": NAN,
                "logps/rejected": NAN,
                "loss": 0.0,
                "rewards/accuracies": 0.0,
                "rewards/chosen": NAN,
                "rewards/margins": NAN,
                "rewards/rejected": NAN,
                "step": step,
            }
        )
        history.append({"epoch": step / 400, "eval_loss": NAN, "eval_runtime": 60.0, "step": step})
    history.append({"epoch": 2.0, "step": 800, "train_loss": 0.0, "train_runtime": 8880.0})
    return history


def test_seed_log_is_a_hidden_nan_run_in_one_sentence() -> None:
    findings = diagnose_log_history(_seed_history())
    first = findings[0]
    assert first.severity == "error"
    assert first.message.startswith("Hidden NaN run")
    assert "0.0" in first.message and "logging_nan_inf_filter" in first.message
    assert first.message.count(". ") == 0, "one sentence"
    assert any("eval_loss is NaN" in f.message for f in findings)


def test_trainer_state_with_bare_nan_parses_like_python_json(tmp_path: Path) -> None:
    # Python's json writes NaN bare; the log must round-trip through a real file.
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"log_history": _seed_history(), "global_step": 800}))
    from dpo_harness.evaluation.measure import read_trainer_state

    history, step = read_trainer_state(path.read_text())
    assert step == 800 and math.isnan(history[0]["grad_norm"])
    assert diagnose_log_history(history)[0].message.startswith("Hidden NaN run")


def test_healthy_dpo_log_has_no_findings() -> None:
    history = [
        {
            "step": s,
            "loss": 0.69 - 0.01 * s,
            "grad_norm": 1.5,
            "rewards/chosen": 0.01 * s,
            "rewards/rejected": -0.01 * s,
            "logps/chosen": -80.0 - 0.1 * s,
        }
        for s in range(1, 11)
    ]
    assert diagnose_log_history(history) == []


def test_not_learning_and_zero_gradients() -> None:
    stuck = [
        {"step": s, "loss": LN2, "grad_norm": 0.0, "rewards/chosen": 0.0, "rewards/rejected": 0.0}
        for s in range(1, 8)
    ]
    messages = [f.message for f in diagnose_log_history(stuck)]
    assert any(m.startswith("Not learning") for m in messages)
    assert any("grad_norm is exactly 0" in m for m in messages)


def test_likelihood_displacement_is_a_warning() -> None:
    history = [
        {"step": s, "loss": 0.3, "grad_norm": 1.0, "logps/chosen": -60.0 - 10 * s}
        for s in range(1, 8)
    ]
    findings = diagnose_log_history(history)
    assert [f.severity for f in findings] == ["warning"]
    assert "likelihood displacement" in findings[0].message


# ------------------------------------------------------------------------- contamination


def _training_texts() -> list[tuple[str, str]]:
    texts = []
    for line in (
        (REPO / "harness" / "demo" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    ):
        obj = json.loads(line)
        texts += [(f"{obj['id']}.{k}", m["content"]) for k, m in enumerate(obj["messages"])]
    for line in (
        (REPO / "plugins" / "dpo" / "data" / "demo_preferences.jsonl")
        .read_text(encoding="utf-8")
        .splitlines()
    ):
        obj = json.loads(line)
        for field in ("prompt", "chosen", "rejected"):
            texts += [(f"{obj['id']}.{field}", m["content"]) for m in obj[field]]
    return texts


def _evaluation_texts() -> list[tuple[str, str]]:
    texts = []
    for item in load_items(DATA_DIR / "adtech" / "items.jsonl", AdtechItem, what="adtech item"):
        texts.append((item.id, item.question))
        if item.type == "multiple_choice":
            texts.append((f"{item.id}+gold", item.question + item.choices[item.answer]))
    for name, fields in (
        ("open_prompts", ("prompt",)),
        ("probes", ("prompt", "continuation")),
        ("heldout_ja", ("text",)),
    ):
        for line in (DATA_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            obj = json.loads(line)
            texts += [(f"{obj['id']}.{f}", obj[f]) for f in fields]
    return texts


def test_no_evaluation_item_appears_near_verbatim_in_training_data() -> None:
    hits = find_contamination(_evaluation_texts(), _training_texts(), threshold=0.5)
    assert hits == [], "\n".join(
        f"{h.eval_id} ~ {h.train_id} ({h.containment}): {h.eval_text}" for h in hits
    )


def test_contamination_check_catches_a_planted_copy() -> None:
    train = _training_texts()
    planted = train[10][1][:40]
    hits = find_contamination([("planted", planted + "はどれですか。")], train, threshold=0.5)
    assert [h.eval_id for h in hits] == ["planted"]

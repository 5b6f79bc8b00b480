"""Data preflight: the checks TRL does not do, run on the demo data and on constructed rows."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import copy
import json
from pathlib import Path
from typing import Any

import dpo_harness
import dpo_harness.plugins.dpo as dpo_plugin
import pytest
from dpo_harness.errors import BadInputError
from dpo_harness.plugins.dpo.preflight import (
    SUMMARY_HEADERS,
    load_preference_rows,
    preflight,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tabulate import tabulate
from transformers import AutoTokenizer

DEMO_DATA = Path(dpo_plugin.__file__).parent / "data" / "demo_preferences.jsonl"
DEMO_MODEL = Path(dpo_harness.__file__).parent / "demo" / "model"


@pytest.fixture(scope="module")
def tok() -> Any:
    return AutoTokenizer.from_pretrained(str(DEMO_MODEL))


@pytest.fixture(scope="module")
def demo_train() -> list[dict[str, Any]]:
    return load_preference_rows(str(DEMO_DATA), split="train", data_files_split_field="split")


def _std(prompt: str, chosen: str, rejected: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


# --------------------------------------------------------------------------- the demo data


def test_demo_file_loads_and_passes(tok: Any, demo_train: list[dict[str, Any]]) -> None:
    evals = load_preference_rows(str(DEMO_DATA), split="eval", data_files_split_field="split")
    assert (len(demo_train), len(evals)) == (320, 48)

    cleaned, report = preflight(demo_train, tok, max_length=512)
    assert report.errors == [] and report.skipped_rows == []
    assert (report.n_rows, report.n_usable) == (320, 320)
    assert report.format == "conversational" and not report.implicit_prompt
    assert report.truncated_rows == report.dropped_rows == report.prompt_repeated_rows == 0
    assert not report.length_bias.biased
    # Extra columns (id, split, topic, rejection) are dropped; the messages are kept as given.
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in cleaned)
    assert cleaned[0]["chosen"] == demo_train[0]["chosen"]
    assert report.findings[0] == "320 of 320 rows can be trained on (conversational format)."
    assert "rows" in tabulate(report.summary_rows(), headers=SUMMARY_HEADERS)


# --------------------------------------------------------------------------- bad rows


@pytest.mark.parametrize(
    ("chosen", "expected"),
    [
        ([_msg("assistant", "  ")], "field 'chosen' message 0 has empty content"),
        ([], "field 'chosen' is an empty list of messages"),
        (None, "field 'chosen' is missing"),
    ],
)
def test_bad_row_raises_naming_row_id_and_field(
    tok: Any, demo_train: list[dict[str, Any]], chosen: Any, expected: str
) -> None:
    rows = copy.deepcopy(demo_train)
    rows[17]["chosen"] = chosen
    with pytest.raises(BadInputError) as info:
        preflight(rows, tok, max_length=512, source="train.jsonl")
    assert info.value.cause == f"train.jsonl row 17 (id p0018): {expected}"
    assert info.value.fix is not None and "--skip-bad-rows" in info.value.fix


def test_bad_row_skipped_and_counted(tok: Any, demo_train: list[dict[str, Any]]) -> None:
    rows = copy.deepcopy(demo_train)
    rows[17]["chosen"] = [_msg("assistant", "")]
    rows[30]["rejected"] = rows[30]["chosen"]
    rows[40]["prompt"] = [_msg("narrator", "誰ですか。")]
    cleaned, report = preflight(rows, tok, max_length=512, skip_bad_rows=True)
    assert report.skipped_rows == [17, 30, 40]
    assert (report.n_usable, len(cleaned)) == (317, 317)
    assert [(e.row_id, e.field, e.kind) for e in report.errors] == [
        ("p0018", "chosen", "empty"),
        ("p0031", "rejected", "identical"),
        ("p0041", "prompt", "bad_role"),
    ]
    assert "3 rows skipped" in report.findings[1] and "p0018" in report.findings[1]


def test_standard_empty_string_and_wrong_type(tok: Any) -> None:
    with pytest.raises(BadInputError, match=r"row 1: field 'chosen' is empty"):
        preflight([_std("質問", "答え", "誤答"), _std("質問", "", "誤答")], tok, max_length=64)
    with pytest.raises(
        BadInputError, match=r"row 0: field 'rejected' is a number, expected a string"
    ):
        preflight([_std("質問", "答え", 3)], tok, max_length=64)  # type: ignore[arg-type]


def test_mixed_formats_name_the_row(tok: Any, demo_train: list[dict[str, Any]]) -> None:
    rows = copy.deepcopy(demo_train[:5])
    rows[3] = _std("質問です。", "答えです。", "誤答です。", id="odd")
    with pytest.raises(BadInputError) as info:
        preflight(rows, tok, max_length=512)
    assert info.value.cause.startswith("dataset row 3 (id odd): the row is standard")
    assert "conversational" in info.value.cause
    # Inside one row too: chosen is text, rejected is messages.
    bad = _std("質問", "答え", [_msg("assistant", "誤答")])  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match=r"row 0: field 'chosen' is a string but 'rejected'"):
        preflight([bad], tok, max_length=64)


# --------------------------------------------------------------------------- warnings


def test_prompt_repeated_inside_chosen_is_flagged(
    tok: Any, demo_train: list[dict[str, Any]]
) -> None:
    rows = copy.deepcopy(demo_train[:10])
    question = rows[4]["prompt"][-1]["content"]
    rows[4]["chosen"][0]["content"] = f"{question}\n{rows[4]['chosen'][0]['content']}"
    _, report = preflight(rows, tok, max_length=512)
    assert report.prompt_repeated_rows == 1
    assert [(w.row, w.row_id) for w in report.warnings if w.kind == "prompt_repeated"] == [
        (4, "p0005")
    ]
    finding = next(f for f in report.findings if "repeat the prompt" in f)
    assert finding.startswith("1 row repeat") and "p0005" in finding


def test_truncated_and_dropped_rows_counted(tok: Any) -> None:
    long_answer = "広告の配信結果を日ごとに集計して報告します。" * 8
    long_prompt = "次の文章を要約してください。" * 20
    rows = [
        _std("CTRとは何ですか。", "クリック率です。", "表示回数です。", id="short"),
        _std("CTRとは何ですか。", long_answer, "表示回数です。", id="long-answer"),
        _std(long_prompt, "要約です。", "違います。", id="long-prompt"),
    ]
    max_length = 40
    # What TRL tokenizes for a standard row: prompt + answer + EOS, special tokens added.
    full = [
        len(tok(r["prompt"] + r[k] + tok.eos_token)["input_ids"])
        for r in rows
        for k in ("chosen", "rejected")
    ]
    assert len(tok(long_prompt)["input_ids"]) >= max_length  # the setup is what it says
    _, report = preflight(rows, tok, max_length=max_length)
    assert (report.truncated_rows, report.dropped_rows) == (1, 1)
    assert report.longest_row_tokens == max(full)
    dropped = next(f for f in report.findings if "TRL drops them" in f)
    truncated = next(f for f in report.findings if "EOS included" in f)
    for finding in (dropped, truncated):
        assert f"raise max_length to at least {max(full)} (the longest row)" in finding
    assert [w.row_id for w in report.warnings if w.kind == "truncated"] == ["long-answer"]
    assert [w.row_id for w in report.warnings if w.kind == "dropped"] == ["long-prompt"]


def test_conversational_lengths_match_trl_tokenization(
    tok: Any, demo_train: list[dict[str, Any]]
) -> None:
    def ids(messages: list[dict[str, str]], gen: bool = False) -> list[int]:
        out = tok.apply_chat_template(
            messages, tokenize=True, return_dict=True, add_generation_prompt=gen
        )
        return list(out["input_ids"])

    max_length = 100
    expected = sum(
        max(len(ids(r["prompt"] + r["chosen"])), len(ids(r["prompt"] + r["rejected"]))) > max_length
        for r in demo_train
    )
    _, report = preflight(demo_train, tok, max_length=max_length)
    assert expected > 0 and report.truncated_rows == expected and report.dropped_rows == 0


def test_implicit_prompt_in_japanese_strings_warns_with_the_prefix(tok: Any) -> None:
    rows = [
        {
            "chosen": "CTRはクリック数を表示回数で割った値です。",
            "rejected": "CTRはコンバージョン数のことです。",
        },
        {"chosen": "CPAは獲得単価です。", "rejected": "CPAは表示単価です。"},
    ]
    cleaned, report = preflight(rows, tok, max_length=128)
    assert report.implicit_prompt and report.format == "standard"
    assert cleaned[0] == {
        "prompt": "CTRは",
        "chosen": "クリック数を表示回数で割った値です。",
        "rejected": "コンバージョン数のことです。",
    }
    finding = next(f for f in report.findings if "no explicit prompt" in f)
    assert finding.startswith("2 rows have no explicit prompt; TRL would use the longest common")
    assert "'CTRは'" in finding and "swallow the start of the answer" in finding
    assert sum(w.kind == "implicit_prompt" for w in report.warnings) == 2


def test_implicit_conversational_prompt_is_split_at_the_last_common_message(tok: Any) -> None:
    system, user = _msg("system", "広告の専門家です。"), _msg("user", "CTRとは何ですか。")
    first, follow_up = _msg("assistant", "クリック率です。"), _msg("user", "計算式は？")
    rows = [
        {"chosen": [system, user, _msg("assistant", "クリック率です。")],
         "rejected": [system, user, _msg("assistant", "表示回数です。")]},
        {"chosen": [user, first, follow_up, _msg("assistant", "クリック数÷表示回数です。")],
         "rejected": [user, first, follow_up, _msg("assistant", "表示回数÷クリック数です。")]},
    ]  # fmt: skip
    cleaned, report = preflight(rows, tok, max_length=256)
    assert report.implicit_prompt and report.format == "conversational"
    assert cleaned[0]["prompt"] == [system, user]
    assert cleaned[0]["chosen"] == [_msg("assistant", "クリック率です。")]
    assert cleaned[1]["prompt"] == [user, first, follow_up]
    assert cleaned[1]["rejected"] == [_msg("assistant", "表示回数÷クリック数です。")]
    assert any("split after the last message" in f for f in report.findings)


def test_length_bias_detected_on_a_biased_set(tok: Any) -> None:
    rows = [
        _std(
            f"質問{i}に答えてください。",
            "丁寧な説明です。背景と理由、具体例、注意点まで順に述べます。" * 2,
            f"短い答え{i}。",
        )
        for i in range(10)
    ]
    _, report = preflight(rows, tok, max_length=256)
    lb = report.length_bias
    assert lb.biased and lb.chosen_longer_share == 1.0
    assert lb.token_ratio is not None and lb.token_ratio > 1.5
    finding = next(f for f in report.findings if f.startswith("Length bias"))
    assert "chosen is longer in 100% of pairs" in finding
    assert "DPO can learn length instead of quality" in finding


def test_prompt_ending_in_a_space_is_flagged(tok: Any) -> None:
    rows = [_std("CTRとは何ですか。 ", "クリック率です。", "表示回数です。", id="sp")]
    _, report = preflight(rows, tok, max_length=64)
    assert [(w.row_id, w.kind) for w in report.warnings] == [("sp", "prompt_trailing_space")]
    assert any("ends in whitespace (sp)" in f for f in report.findings)
    assert any(f.startswith("Too few pairs (1)") for f in report.findings)


def test_implicit_conversation_sharing_an_assistant_turn_is_an_error(tok: Any) -> None:
    user, same = _msg("user", "質問"), _msg("assistant", "前置きです。")
    row = {
        "chosen": [user, same, _msg("assistant", "答え")],
        "rejected": [user, same, _msg("assistant", "誤答")],
    }
    with pytest.raises(BadInputError, match="share end with role 'assistant'"):
        preflight([row], tok, max_length=64)


# --------------------------------------------------------------------------- loading


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    good = json.dumps(_std("質問", "答え", "誤答"), ensure_ascii=False)
    path.write_text(f'{good}\n\n{good}\n{{"prompt": "質問", "chosen": \n{good}\n', "utf-8")
    with pytest.raises(BadInputError) as info:
        load_preference_rows(str(path))
    assert info.value.cause.startswith(f"{path}:4: not valid JSON")


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "prefs.jsonl"
    with pytest.raises(BadInputError, match="preference data not found") as info:
        load_preference_rows(str(missing))
    assert str(missing) in info.value.cause


def test_mixed_format_file_is_loaded_so_preflight_names_the_row(tmp_path: Path, tok: Any) -> None:
    # pyarrow cannot make one table of string and list answers; the rows are still checked.
    path = tmp_path / "mixed.jsonl"
    rows = [
        _std("質問", "答え", "誤答"),
        {"prompt": [_msg("user", "質問")], "chosen": [_msg("assistant", "答え")],
         "rejected": [_msg("assistant", "誤答")]},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    loaded = load_preference_rows(str(path))
    with pytest.raises(BadInputError, match=r"^prefs row 1: the row is conversational"):
        preflight(loaded, tok, max_length=64, source="prefs")


# --------------------------------------------------------------------------- property


_text = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.none() | _text, _text, _text), min_size=1, max_size=6))
def test_random_standard_rows_never_crash(
    tok: Any, triples: list[tuple[str | None, str, str]]
) -> None:
    # A None prompt means no 'prompt' key: the implicit (character prefix) path.
    rows = [_std(p, c, r) if p is not None else {"chosen": c, "rejected": r} for p, c, r in triples]
    cleaned, report = preflight(rows, tok, max_length=32, skip_bad_rows=True)
    assert report.n_usable + len(report.skipped_rows) == report.n_rows == len(rows)
    assert len(cleaned) == report.n_usable
    assert report.findings

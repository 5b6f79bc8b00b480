"""User suites declared in YAML: formats, refusals, identity, and scoring (no model)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dpo_harness.cli import cli
from dpo_harness.errors import BadInputError, IncompatibleBaselineError
from dpo_harness.evaluation.evaluate import make_suites
from dpo_harness.evaluation.responses import Responses
from dpo_harness.evaluation.suite import SuiteContext
from dpo_harness.schema import (
    EvalSettings,
    GenerateRequest,
    GenerateResponse,
    GenerationSettings,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    Request,
)
from dpo_harness.suites.adtech import AdtechSuite
from dpo_harness.suites.user.base import UserSuite
from dpo_harness.suites.user.loader import load_suite_files
from dpo_harness.tools import versions

from tests.helpers import make_baseline, make_report

CTX = SuiteContext(generation=GenerationSettings())
MC_ROWS: list[dict[str, Any]] = [
    {
        "qid": "a",
        "q": "CTRの計算式は。",
        "options": ["クリック数÷表示回数", "費用÷クリック数"],
        "label": 0,
    },
    {
        "qid": "b",
        "q": "CPMの単位は。",
        "options": ["1クリック", "1,000回表示"],
        "label": "1,000回表示",
    },
    {"qid": "c", "q": "ROASの分母は。", "options": ["売上", "広告費", "利益"], "label": 1},
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def mc_suites_file(tmp_path: Path, extra: str = "") -> Path:
    write_jsonl(tmp_path / "mc.jsonl", MC_ROWS)
    return write(
        tmp_path / "suites.yaml",
        "suites:\n"
        "  - name: my-mc\n"
        "    version: 1\n"
        "    kind: multiple_choice\n"
        "    data: {path: mc.jsonl, id_field: qid}\n"
        "    fields: {question: q, choices: options, answer: label}\n" + extra,
    )


def one(path: Path) -> UserSuite:
    (suite,) = load_suite_files([path]).values()
    return suite


def answer(responses: Responses, requests: list[Request], logprobs: dict[str, float]) -> None:
    """Answer log-likelihood requests with the given log-probability per continuation."""
    for r in requests:
        assert isinstance(r, LoglikelihoodRequest)
        lp = logprobs.get(r.continuation.strip(), -5.0)
        responses.set(
            r,
            LoglikelihoodResponse(
                logprob=lp,
                n_tokens=2,
                n_bytes=len(r.continuation.encode()),
                is_greedy=lp > -1,
                min_token_logprob=lp,
                n_surprising=0,
            ),
        )


# --------------------------------------------------------------------------- native kinds


def test_a_multiple_choice_suite_maps_fields_and_scores_with_the_adtech_code(
    tmp_path: Path,
) -> None:
    suite = one(mc_suites_file(tmp_path))
    assert (suite.name, suite.version) == ("my-mc", "1")
    reqs = suite.plan(CTX)
    assert len(reqs) == 7  # every choice of every item, as the user message's answer
    assert all(isinstance(r, LoglikelihoodRequest) and not isinstance(r.context, str) for r in reqs)
    responses = Responses()
    # a: right (choice 0 likelier), b: wrong (choice 0 likelier, gold is 1), c: right
    answer(responses, reqs, {"クリック数÷表示回数": -1.0, "1クリック": -1.0, "広告費": -0.5})
    result = suite.score(CTX, responses)
    assert result.name == "my-mc" and result.version == "1" and result.n_items == 3
    acc = result.metric("mc_accuracy")
    assert acc.per_sample == {"a": 1.0, "b": 0.0, "c": 1.0}
    assert [m.name for m in result.metrics] == [
        "mc_accuracy",
        "mc_accuracy_bytes",
        "mc_gold_margin",
    ]
    # The very same numbers as the adtech suite's own scoring of the same items.
    adtech_rows = [
        {
            "id": r["qid"],
            "type": "multiple_choice",
            "question": r["q"],
            "choices": r["options"],
            "answer": r["options"].index(r["label"]) if isinstance(r["label"], str) else r["label"],
        }
        for r in MC_ROWS
    ]
    adtech = AdtechSuite(write_jsonl(tmp_path / "adtech.jsonl", adtech_rows))
    reference = adtech.score(CTX, responses)
    for m in result.metrics:
        assert m.per_sample == reference.metric(m.name).per_sample


def test_the_declared_metric_policy_judges_the_values(tmp_path: Path) -> None:
    path = mc_suites_file(
        tmp_path,
        "    metrics:\n      mc_accuracy: {margin: 0.2, hard_min: 0.9}\n"
        "      mc_gold_margin: {direction: info, margin: null}\n",
    )
    suite = one(path)
    specs = {s.name: s for s in suite.metric_specs()}
    assert specs["mc_accuracy"].margin == 0.2 and specs["mc_accuracy"].hard_min == 0.9
    assert (
        specs["mc_gold_margin"].direction.value == "info" and specs["mc_gold_margin"].margin is None
    )
    assert specs["mc_accuracy_bytes"].margin == 0.05  # not declared: the adtech default
    responses = Responses()
    answer(responses, suite.plan(CTX), {})  # every choice equal: always choice 0
    acc = suite.score(CTX, responses).metric("mc_accuracy")
    assert acc.value == pytest.approx(1 / 3) and acc.hard_limit_ok is False


def test_short_answer_numeric_and_open_prompt_suites_from_json_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "sa.json").write_text(
        json.dumps([{"id": "s1", "question": "SSPとは。", "accepted": "Supply-Side Platform"}]),
        "utf-8",
    )
    write_jsonl(tmp_path / "num.jsonl", [{"question": "CTRは何%。", "answer": "1.5", "unit": "%"}])
    write_jsonl(tmp_path / "open.jsonl", [{"text": "DSPとは。"}, {"text": "SSPとは。"}])
    path = write(
        tmp_path / "suites.yaml",
        "suites:\n"
        "  - {name: sa, version: '1', kind: short_answer, data: {path: sa.json}}\n"
        "  - {name: num, version: '2', kind: numeric, data: {path: num.jsonl}}\n"
        "  - {name: open, version: '1', kind: open_prompts, data: {path: open.jsonl}, fields: {prompt: text}}\n",
    )
    suites = load_suite_files([path])
    responses = Responses()
    for s in suites.values():
        for r in s.plan(CTX):
            assert isinstance(r, GenerateRequest)
            responses.set(
                r,
                GenerateResponse(
                    text="supply side platformです。1.5%です。", token_ids=[1], hit_eos=True
                ),
            )
    sa = suites["sa"].score(CTX, responses)
    assert sa.metric("short_answer_accuracy").per_sample == {"s1": 1.0}
    num = suites["num"].score(CTX, responses)
    assert num.metric("numeric_accuracy").per_sample == {"0": 1.0}  # no id field: row numbers
    open_metrics = {s.name for s in suites["open"].metric_specs()}
    assert {"degenerate_share", "japanese_share", "answer_nll_reference"} <= open_metrics
    follow = suites["open"].plan_followup(CTX, responses)
    for r in follow:
        assert isinstance(r, LoglikelihoodRequest)
        responses.set(
            r,
            LoglikelihoodResponse(
                logprob=-4.0,
                n_tokens=4,
                n_bytes=8,
                is_greedy=False,
                min_token_logprob=-2.0,
                n_surprising=0,
            ),
        )
    result = suites["open"].score(CTX, responses)
    assert result.name == "open" and result.metric("degenerate_share").value == 0.0
    assert result.metric("answer_nll_reference").value == pytest.approx(1.0)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (
            "{name: x, kind: multiple_choice, data: {path: mc.jsonl}}",
            "'suites.0.multiple_choice.version'",
        ),
        ("{name: 'a b', version: 1, kind: multiple_choice, data: {path: mc.jsonl}}", "name"),
        ("{name: x, version: 1, kind: essay, data: {path: mc.jsonl}}", "'suites.0'"),
        (
            "{name: x, version: 1, kind: multiple_choice, data: {path: mc.jsonl, dataset: a/b}}",
            "exactly one of path",
        ),
        ("{name: x, version: 1, kind: multiple_choice, data: {dataset: a/b}}", "split is required"),
        (
            "{name: x, version: 1, kind: multiple_choice, data: {path: nope.jsonl}}",
            "data file not found",
        ),
        ("{name: x, version: 1, kind: multiple_choice, data: {path: mc.txt}}", "no known suffix"),
        (
            "{name: x, version: 1, kind: multiple_choice, data: {path: mc.jsonl}}",
            "has no field 'question'",
        ),
        (
            "{name: x, version: 1, kind: multiple_choice, data: {path: mc.jsonl, id_field: label}, fields: {question: q, choices: options, answer: label}}",
            "have the same 'label'",
        ),
        (
            "{name: x, version: 1, kind: multiple_choice, data: {path: mc.jsonl}, fields: {question: q, choices: options, answer: label}, metrics: {accuracy: {margin: 0.1}}}",
            "metrics.accuracy is not a metric",
        ),
        (
            "{name: x, version: 1, kind: multiple_choice, data: {path: mc.jsonl}, fields: {question: q, choices: options, answer: label}, metrics: {mc_accuracy: {margin: -1}}}",
            "margin",
        ),
        (
            "{name: adtech, version: 1, kind: multiple_choice, data: {path: mc.jsonl}, fields: {question: q, choices: options, answer: label}}",
            "has the name of a built-in suite",
        ),
    ],
)
def test_bad_declarations_are_refused_naming_the_file_and_field(
    tmp_path: Path, entry: str, needle: str
) -> None:
    write_jsonl(
        tmp_path / "mc.jsonl", [*MC_ROWS, {"qid": "d", "q": "?", "options": ["x", "y"], "label": 0}]
    )
    path = write(tmp_path / "suites.yaml", f"suites:\n  - {entry}\n")
    with pytest.raises(BadInputError) as err:
        load_suite_files([path])
    assert needle in err.value.cause
    assert str(path) in err.value.cause


def test_an_invalid_item_names_its_row(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "mc.jsonl", [MC_ROWS[0], {**MC_ROWS[1], "label": 7}])
    path = write(
        tmp_path / "suites.yaml",
        "suites:\n  - {name: x, version: 1, kind: multiple_choice, data: {path: mc.jsonl, id_field: qid},"
        " fields: {question: q, choices: options, answer: label}}\n",
    )
    with pytest.raises(
        BadInputError,
        match=r"row 1 of .*mc.jsonl is not a valid multiple_choice item: answer 7 is out of range",
    ):
        load_suite_files([path])


def test_a_suite_declared_twice_is_refused(tmp_path: Path) -> None:
    path = mc_suites_file(tmp_path)
    other = write(tmp_path / "other.yaml", path.read_text(encoding="utf-8"))
    with pytest.raises(BadInputError, match="'my-mc' is also declared in"):
        load_suite_files([path, other])
    twice = write(
        tmp_path / "twice.yaml",
        path.read_text(encoding="utf-8")
        + path.read_text(encoding="utf-8").removeprefix("suites:\n"),
    )
    with pytest.raises(BadInputError, match="'my-mc' is declared twice"):
        load_suite_files([twice])


def test_a_file_that_is_neither_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="neither a suites file"):
        load_suite_files([write(tmp_path / "x.yaml", "name: x\n")])


def test_suite_files_join_the_default_selection_and_suite_data_errors_help(tmp_path: Path) -> None:
    path = mc_suites_file(tmp_path)
    names = [s.name for s in make_suites(EvalSettings(suite_files=[path]))]
    assert names == ["numerical", "repetition", "fluency", "adtech", "my-mc"]
    assert [s.name for s in make_suites(EvalSettings(suites=["my-mc"], suite_files=[path]))] == [
        "my-mc"
    ]
    with pytest.raises(BadInputError) as err:
        make_suites(
            EvalSettings(suites=["my-mc"], suite_files=[path], suite_data={"my-mc": Path("x")})
        )
    assert "user suite 'my-mc'" in err.value.cause and str(path) in (err.value.fix or "")
    with pytest.raises(BadInputError) as err:
        make_suites(EvalSettings(suite_data={"jcommonsenseqa": Path("jcqa.jsonl")}))
    assert "'jcommonsenseqa', which is not a suite" in err.value.cause
    assert "--suite-file" in (err.value.fix or "")
    with pytest.raises(BadInputError) as err:
        make_suites(EvalSettings(suites=["mc"], suite_files=[path]))
    assert "unknown suite 'mc'" in err.value.cause and "my-mc" in (err.value.fix or "")
    with pytest.raises(BadInputError) as err:  # the baseline knows it; the file was not given
        make_suites(EvalSettings(suites=["my-mc"]), declared_elsewhere={"my-mc": str(path)})
    assert err.value.fix == f"pass its suites file: --suite-file {path}"


# --------------------------------------------------------------------------- identity


def test_identity_moves_with_data_and_declaration_not_with_format_or_policy(tmp_path: Path) -> None:
    base = one(mc_suites_file(tmp_path)).identity()
    assert base.declaration_hash and base.declared_in == str(tmp_path / "suites.yaml")
    # the same rows as JSON, a description and a margin: nothing that changes a number
    (tmp_path / "mc.json").write_text(json.dumps(MC_ROWS, ensure_ascii=False), "utf-8")
    same = write(
        tmp_path / "same.yaml",
        "suites:\n  - name: my-mc\n    version: 1\n    description: other words\n"
        "    kind: multiple_choice\n    data: {path: mc.json, id_field: qid}\n"
        "    fields: {question: q, choices: options, answer: label}\n"
        "    metrics: {mc_accuracy: {margin: 0.3}}\n",
    )
    moved = one(same).identity()
    assert (moved.data_hash, moved.declaration_hash) == (base.data_hash, base.declaration_hash)
    # a new column is new data; another id field pairs other items: a declaration change
    write_jsonl(tmp_path / "mc2.jsonl", [{**r, "other": r["qid"] * 2} for r in MC_ROWS])
    declared = (
        (tmp_path / "suites.yaml").read_text(encoding="utf-8").replace("mc.jsonl", "mc2.jsonl")
    )
    wider = one(write(tmp_path / "wider.yaml", declared)).identity()
    assert wider.data_hash != base.data_hash and wider.declaration_hash == base.declaration_hash
    renamed = one(
        write(tmp_path / "renamed.yaml", declared.replace("id_field: qid", "id_field: other"))
    ).identity()
    assert renamed.data_hash == wider.data_hash
    assert renamed.declaration_hash != wider.declaration_hash


def test_a_changed_declaration_refuses_the_baseline_and_the_fix_keeps_the_stored_one() -> None:
    report = make_report({"acc": {f"i{k}": 1.0 for k in range(12)}})
    report.provenance.suites["toy"] = report.provenance.suites["toy"].model_copy(
        update={"declaration_hash": "sha256:a", "declared_in": "mine.yaml"}
    )
    baseline = make_baseline(report)
    key = baseline.key.model_copy(
        update={
            "suites": {
                "toy": baseline.key.suites["toy"].model_copy(
                    update={"declaration_hash": "sha256:b"}
                )
            }
        }
    )
    with pytest.raises(IncompatibleBaselineError) as err:
        baseline.check_key(key)
    assert "suite 'toy' is declared differently" in err.value.cause
    assert "--suite-file mine.yaml" in (err.value.fix or "") and "--baselines-dir" in (
        err.value.fix or ""
    )
    assert "baseline update" not in (err.value.fix or "")


def test_user_suite_code_changes_without_a_version_bump_are_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stale = versions.current()
    stale[versions.USER_SUITES]["code_hash"] = "sha256:0000000000000000"
    monkeypatch.setattr(versions, "recorded", lambda: stale)
    problems = versions.check()
    assert len(problems) == 1 and "CODE_VERSION is still 1" in problems[0]
    assert versions.main(["--update"]) == 1


# --------------------------------------------------------------------------- the CLI


def test_the_suites_command_lists_user_suites_with_their_file(tmp_path: Path) -> None:
    path = mc_suites_file(tmp_path)
    result = CliRunner().invoke(cli, ["suites", "--suite-file", str(path)])
    assert result.exit_code == 0, result.output
    row = next(
        line for line in result.output.splitlines() if "mc_accuracy " in line and "my-mc" in line
    )
    assert row.split()[:2] == ["my-mc", "v1"] and row.rstrip().endswith(str(path))
    bad = CliRunner().invoke(cli, ["suites", "--suite-file", str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2 and bad.output.startswith("error: suite file not found")


def test_nan_log_likelihoods_stay_visible(tmp_path: Path) -> None:
    suite = one(mc_suites_file(tmp_path))
    responses = Responses()
    answer(responses, suite.plan(CTX), {"クリック数÷表示回数": math.nan})
    margin = suite.score(CTX, responses).metric("mc_gold_margin")
    assert margin.nonfinite and margin.value is None


def test_a_baseline_update_says_when_a_declaration_changed() -> None:
    from dpo_harness.gate.baseline_diff import update_reasons

    report = make_report({"acc": {f"i{k}": 1.0 for k in range(12)}})
    report.provenance.suites["toy"] = report.provenance.suites["toy"].model_copy(
        update={"declaration_hash": "sha256:a"}
    )
    old = make_baseline(report)
    new = report.model_copy(deep=True)
    new.provenance.suites["toy"] = new.provenance.suites["toy"].model_copy(
        update={"declaration_hash": "sha256:b"}
    )
    assert update_reasons(old, new) == ["suite toy declaration changed"]
    assert update_reasons(old, report) == ["re-run with unchanged inputs (a reproducibility check)"]


# --------------------------------------------------------------------------- other sources


def test_a_parquet_file_is_the_same_data_as_its_jsonl(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="parquet needs pyarrow")
    import pyarrow.parquet as pq

    rows = [
        {
            **r,
            "label": r["options"].index(r["label"]) if isinstance(r["label"], str) else r["label"],
        }
        for r in MC_ROWS
    ]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    declared = mc_suites_file(tmp_path).read_text(encoding="utf-8")
    from_jsonl = one(write(tmp_path / "a.yaml", declared.replace("mc.jsonl", "rows.jsonl")))
    from_parquet = one(write(tmp_path / "b.yaml", declared.replace("mc.jsonl", "rows.parquet")))
    assert from_parquet.identity().data_hash == from_jsonl.identity().data_hash
    assert from_parquet.plan(CTX) == from_jsonl.plan(CTX)


def test_a_datasets_id_loads_offline_and_a_missing_one_says_so(tmp_path: Path) -> None:
    pytest.importorskip("datasets", reason="a datasets id needs datasets")
    # A dataset directory stands in for a hub id: the same load_dataset(id, name, split) call.
    (tmp_path / "ds").mkdir()
    write_jsonl(tmp_path / "ds" / "test.jsonl", MC_ROWS)
    path = write(
        tmp_path / "from-ds.yaml",
        "suites:\n  - name: from-ds\n    version: 1\n    kind: multiple_choice\n"
        f"    data: {{dataset: {tmp_path / 'ds'}, split: test, id_field: qid}}\n"
        "    fields: {question: q, choices: options, answer: label}\n",
    )
    suite = one(path)
    assert suite.identity().data_hash == one(mc_suites_file(tmp_path)).identity().data_hash
    missing = write(
        tmp_path / "missing.yaml",
        path.read_text(encoding="utf-8").replace(str(tmp_path / "ds"), "nobody/no-such-dataset"),
    )
    with pytest.raises(BadInputError) as err:
        load_suite_files([missing])
    assert "data.dataset 'nobody/no-such-dataset': cannot load the data (offline" in err.value.cause
    assert "data.split" in (err.value.fix or "")


def test_a_run_config_may_pick_a_user_suite_metric_as_its_primary(tmp_path: Path) -> None:
    from dpo_harness.training.plugin import GateSettings, RunConfigBase
    from dpo_harness.training.train_and_gate import CandidateOutcome, _best, check_run_config

    path = mc_suites_file(tmp_path, "    metrics: {mc_gold_margin: {direction: lower}}\n")
    evaluation = EvalSettings(suites=["my-mc"], suite_files=[path])

    def config(primary: str) -> RunConfigBase:
        return RunConfigBase(
            output_dir=tmp_path / "run",
            evaluation=evaluation,
            gate=GateSettings(primary_metric=primary),
        )

    check_run_config(config("my-mc::mc_accuracy"))
    with pytest.raises(BadInputError, match="is not a metric of the evaluated suites"):
        check_run_config(config("my-mc::accuracy"))
    with pytest.raises(BadInputError, match=r"which evaluation\.suites \(my-mc\) does not run"):
        check_run_config(config("adtech::mc_accuracy"))

    def outcome(step: int, value: float) -> CandidateOutcome:
        return CandidateOutcome(
            name=f"checkpoint-{step}", path=tmp_path, step=step, final=False, decision="promote",
            primary_metric="my-mc::mc_gold_margin", primary_value=value, reasons=[], gate_dir=tmp_path,
        )  # fmt: skip

    # the declared direction decides which checkpoint is best: lower here
    best = _best(
        [outcome(1, 0.2), outcome(2, -0.1), outcome(3, 0.4)], config("my-mc::mc_gold_margin")
    )
    assert best is not None and best.step == 2

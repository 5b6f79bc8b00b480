"""`dpo-harness evaluate` end to end on the demo model, and the runner's contracts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from dpo_harness.cli import cli
from dpo_harness.evaluation.evaluate import evaluate_loaded
from dpo_harness.evaluation.measure import render_prompt
from dpo_harness.evaluation.runner import ModelRunner
from dpo_harness.evaluation.suite import SuiteContext, create_suite
from dpo_harness.files import load_model_file
from dpo_harness.schema import (
    EvalConfig,
    EvalReport,
    GenerateRequest,
    LoglikelihoodRequest,
    ParityRequest,
)
from dpo_harness.suites.common import OpenPrompt, load_items, open_prompts_path, user_prompt


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    out = tmp_path_factory.mktemp("eval-demo")
    result = CliRunner().invoke(cli, ["evaluate", "--out", str(out), "--quiet"])
    return result, out


def test_evaluate_demo_prints_table_and_writes_valid_report(demo_run: tuple[Any, Path]) -> None:
    result, out = demo_run
    assert result.exit_code == 0, result.output
    assert "all hard limits passed" in result.output
    for suite in ("numerical", "repetition", "fluency", "adtech"):
        assert suite in result.output
    report = load_model_file(out / "report.json", EvalReport)
    assert (out / "report.md").is_file()
    assert report.schema_version == "1"
    assert {s.name for s in report.suites} == {"numerical", "repetition", "fluency", "adtech"}
    for s in report.suites:
        assert s.samples, f"{s.name} has no per-sample records"
        assert any(m.per_sample for m in s.metrics), f"{s.name} has no per-sample values"
        ident = report.provenance.suites[s.name]
        assert ident.version == s.version and ident.data_hash == s.data_hash
    prov = report.provenance
    assert prov.model.fingerprint.startswith("sha256:")
    assert prov.libraries["torch"] and prov.libraries["transformers"]
    assert prov.device == "cpu" and prov.dtype == "float32"
    assert prov.timings["total"] > 0


def test_adtech_accuracy_by_category_is_shown_where_people_read(demo_run: tuple[Any, Path]) -> None:
    """Issue 12: per-category accuracy in the evaluate table and report.md (not only report.json)."""
    result, out = demo_run
    report = load_model_file(out / "report.json", EvalReport)
    (breakdown,) = report.suite("adtech").breakdowns
    categories = {g.group for g in breakdown.groups}
    assert {"arithmetic", "ecosystem", "metrics", "transparency"} <= categories
    assert sum(g.n_items for g in breakdown.groups) == report.suite("adtech").n_items
    assert "adtech::overall_accuracy by category" in result.output
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "## adtech::overall_accuracy by category" in markdown
    arithmetic = next(g for g in breakdown.groups if g.group == "arithmetic")
    row = next(line for line in markdown.splitlines() if line.startswith("| arithmetic"))
    assert str(arithmetic.n_items) in row and "multiple choice" in markdown


def test_report_per_sample_ids_match_the_suite_data(demo_run: tuple[Any, Path]) -> None:
    _, out = demo_run
    report = load_model_file(out / "report.json", EvalReport)
    prompts = load_items(open_prompts_path(), OpenPrompt, what="open prompt")
    rep = report.suite("repetition").metric("degenerate_share")
    assert set(rep.per_sample) == {p.id for p in prompts}
    acc = report.suite("adtech").metric("mc_accuracy")
    assert acc.value is not None and 0.0 <= acc.value <= 1.0
    assert all(v in (0.0, 1.0) for v in acc.per_sample.values())


def test_nan_weight_fails_and_names_the_tensor(nan_model_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            str(nan_model_dir),
            "--suites",
            "numerical,repetition",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "model.layers.1.mlp.down_proj.weight (stored in model.safetensors)" in result.output
    assert "token-0 spam" in result.output
    report = load_model_file(tmp_path / "report.json", EvalReport)
    num = report.suite("numerical")
    assert num.metric("nonfinite_parameters").value == 1.0
    assert num.metric("nonfinite_parameters").hard_limit_ok is False
    assert num.metric("probe_nonfinite_share").value == 1.0
    # And the generations really are the seed's "!!!!" (id 0 of a byte-level vocabulary).
    responses = [s.response or "" for s in report.suite("repetition").samples]
    assert all(r and set(r) == {"!"} for r in responses)
    assert report.suite("repetition").metric("degenerate_share").hard_limit_ok is False


def test_no_prompt_is_generated_twice(demo_loaded: Any) -> None:
    config = EvalConfig()
    suites = [create_suite(n) for n in config.suites]
    ctx = SuiteContext(generation=config.generation)
    planned = [r for s in suites for r in s.plan(ctx) if isinstance(r, GenerateRequest)]
    assert len(planned) > len(set(planned)), (
        "the suites must share prompts for this test to mean anything"
    )
    report = evaluate_loaded(demo_loaded, config, suites=suites)
    stats = report.provenance.runner_stats
    assert stats["generations"] == stats["generated_prompts"] == len(set(planned))


def test_plain_text_prompts_and_per_request_lengths(demo_loaded: Any) -> None:
    """A str prompt is the text the model sees; max_new_tokens bounds one request's answer."""
    chat = user_prompt("DSPとは何ですか。")
    text = render_prompt(demo_loaded.tokenizer, chat)
    short = GenerateRequest(prompt=text, max_new_tokens=3)
    full = GenerateRequest(prompt=text)
    runner = ModelRunner(demo_loaded, batch_size=4)
    got = runner.run([short, full, GenerateRequest(prompt=chat)])
    assert got[full] == got[GenerateRequest(prompt=chat)]  # the same text: generated once
    assert len(got[short].token_ids) == 3 and not got[short].hit_eos
    assert got[full].token_ids[:3] == got[short].token_ids
    assert len(got[full].token_ids) > 3
    assert runner.stats.generations[text] == 2  # once per length


def test_batched_generation_equals_one_by_one(demo_loaded: Any) -> None:
    prompts = tuple(
        user_prompt(p.prompt) for p in load_items(open_prompts_path(), OpenPrompt, what="p")
    )
    runner = ModelRunner(demo_loaded, batch_size=16)
    req = ParityRequest(prompts=prompts)
    resp = runner.run([req])[req]
    assert resp.n_prompts == len(prompts) >= 48
    assert resp.mismatched == [], [(resp.batched[i], resp.single[i]) for i in resp.mismatched]


def test_loglikelihood_matches_an_unpadded_forward_pass(demo_loaded: Any) -> None:
    tok, model = demo_loaded.tokenizer, demo_loaded.model
    pairs = [
        (user_prompt("CTRの計算方法を教えてください。"), "クリック数を表示回数で割ります。"),
        (user_prompt("DSPとは何ですか。"), "広告主が使う買い手側のプラットフォームです。"),
        (user_prompt("こんにちは。"), "こんにちは。"),
    ]
    reqs = [LoglikelihoodRequest(context=c, continuation=x) for c, x in pairs]
    got_batched = ModelRunner(demo_loaded, batch_size=8).run(reqs)
    got_single = ModelRunner(demo_loaded, batch_size=1).run(reqs)
    for (ctx, cont), req in zip(pairs, reqs, strict=True):
        context = render_prompt(tok, ctx)
        whole = tok(context + cont, add_special_tokens=False)["input_ids"]
        n_ctx = len(tok(context, add_special_tokens=False)["input_ids"])
        ids = torch.tensor([whole])
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        expected = sum(float(logp[i - 1, whole[i]]) for i in range(n_ctx, len(whole)))
        assert got_batched[req].n_tokens == len(whole) - n_ctx
        assert got_batched[req].logprob == pytest.approx(expected, abs=1e-3)
        assert got_single[req].logprob == pytest.approx(expected, abs=1e-3)


def test_user_suite_data_errors_name_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "items.jsonl"
    good_line = {
        "id": "x1",
        "type": "short_answer",
        "question": "DSPは何の略ですか。",
        "accepted": ["Demand-Side Platform"],
    }
    bad_line = {
        "id": "x2",
        "type": "multiple_choice",
        "question": "?",
        "choices": ["a", "b"],
        "answer": 5,
    }
    bad.write_text(json.dumps(good_line) + "\n" + json.dumps(bad_line) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["evaluate", "--suites", "adtech", "--suite-data", f"adtech={bad}", "--quiet"]
    )
    assert result.exit_code == 2
    assert f"{bad}:2" in result.output and "answer 5 is out of range" in result.output
    assert "Traceback" not in result.output


def test_user_suite_data_runs(tmp_path: Path) -> None:
    items = tmp_path / "mine.jsonl"
    rows = [
        {
            "id": "m1",
            "type": "multiple_choice",
            "question": "CTRの分母は何ですか。",
            "choices": ["表示回数", "クリック数"],
            "answer": 0,
        },
        {
            "id": "n1",
            "type": "numeric",
            "question": "1000回表示で10回クリックならCTRは何%ですか。",
            "answer": 1.0,
            "unit": "%",
        },
    ]
    items.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--suites",
            "adtech",
            "--suite-data",
            f"adtech={items}",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    report = load_model_file(out / "report.json", EvalReport)
    assert report.suite("adtech").n_items == 2
    assert set(report.suite("adtech").metric("overall_accuracy").per_sample) == {"m1", "n1"}

"""lm-evaluation-harness task YAML as a suite: prompts, per-item scores, refusals (no model).

The documents are read with ``datasets`` (as lm-eval reads them); the helpers that decide a
score are checked against lm-eval's own functions when lm-eval is installed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from dpo_harness.errors import BadInputError
from dpo_harness.evaluation.responses import Responses
from dpo_harness.evaluation.suite import SuiteContext
from dpo_harness.schema import (
    GenerateRequest,
    GenerateResponse,
    GenerationSettings,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
)
from dpo_harness.suites.user.declaration import LmEvalMetric
from dpo_harness.suites.user.lm_eval import argmax, cut_at_stop, exact_match
from dpo_harness.suites.user.loader import load_suite_files
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("datasets", reason="lm-eval tasks read their documents with datasets")

try:  # the bench extra: lm-eval's own functions, to compare with
    from lm_eval.api import metrics as lm_metrics
    from lm_eval.models import utils as lm_utils
except ImportError:
    lm_metrics = lm_utils = None
needs_lm_eval = pytest.mark.skipif(
    lm_metrics is None, reason="compares with lm-eval: pip install 'dpo-harness[bench]'"
)

CTX = SuiteContext(generation=GenerationSettings())
DOCS = [
    {"q": "CTRは", "opts": ["クリック率", "転換率", "表示率"], "gold": 0, "lang": "ja"},
    {"q": "CPMは", "opts": ["千回表示単価", "クリック単価"], "gold": 1, "lang": "ja"},
]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def mc_task(tmp_path: Path, extra: str = "", docs: list[dict[str, object]] | None = None) -> Path:
    lines = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in (docs or DOCS))
    write(tmp_path / "docs.jsonl", lines)
    return write(
        tmp_path / "task.yaml",
        "task: toy_mc\n"
        "dataset_path: json\n"
        "dataset_kwargs: {data_files: {test: docs.jsonl}}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "description: '{{lang}}: '\n"
        'doc_to_text: "質問: {{q}}\\n答え:"\n'
        'doc_to_choice: "{{opts}}"\n'
        "doc_to_target: gold\n"
        "metric_list: [{metric: acc}, {metric: acc_norm}, {metric: acc_bytes}, {metric: exact_match}]\n"
        "metadata: {version: 2}\n" + extra,
    )


def ll(logprob: float, greedy: bool = False) -> LoglikelihoodResponse:
    return LoglikelihoodResponse(
        logprob=logprob,
        n_tokens=1,
        n_bytes=1,
        is_greedy=greedy,
        min_token_logprob=logprob,
        n_surprising=0,
    )


def test_a_multiple_choice_task_builds_lm_evals_requests(tmp_path: Path) -> None:
    (suite,) = load_suite_files([mc_task(tmp_path)]).values()
    assert (suite.name, suite.version) == ("toy_mc", "2")
    reqs = suite.plan(CTX)
    # description + doc_to_text; the trailing space of "答え: " — here none — and the target
    # delimiter " " start each continuation
    assert reqs[0] == LoglikelihoodRequest(
        context="ja: 質問: CTRは\n答え:", continuation=" クリック率"
    )
    assert [r.continuation for r in reqs if isinstance(r, LoglikelihoodRequest)] == [
        " クリック率",
        " 転換率",
        " 表示率",
        " 千回表示単価",
        " クリック単価",
    ]


def test_trailing_whitespace_of_the_prompt_moves_into_the_continuation(tmp_path: Path) -> None:
    path = mc_task(tmp_path)
    write(
        path,
        path.read_text(encoding="utf-8").replace('答え:"', '答え:\\n "') + "target_delimiter: ''\n",
    )
    (suite,) = load_suite_files([path]).values()
    first = suite.plan(CTX)[0]
    assert first == LoglikelihoodRequest(
        context="ja: 質問: CTRは\n答え:", continuation="\n クリック率"
    )


def test_multiple_choice_scores_are_lm_evals(tmp_path: Path) -> None:
    (suite,) = load_suite_files([mc_task(tmp_path)]).values()
    reqs = suite.plan(CTX)
    responses = Responses()
    # doc 0 (gold 0): raw argmax 1 (-3 > -4); per character 0 (-4/5 > -3/3); per byte 0
    # (-4/15 > -3/9); the gold is not greedy. doc 1 (gold 1): argmax 1 every way, greedy.
    values = [(-4.0, False), (-3.0, False), (-9.0, False), (-6.0, False), (-5.0, True)]
    for r, (lp, greedy) in zip(reqs, values, strict=True):
        responses.set(r, ll(lp, greedy))
    result = suite.score(CTX, responses)
    per = {m.name: m.per_sample for m in result.metrics}
    assert per["acc"] == {"0": 0.0, "1": 1.0}
    assert per["acc_norm"] == {"0": 1.0, "1": 1.0}
    assert per["acc_bytes"] == {"0": 1.0, "1": 1.0}
    assert per["exact_match"] == {"0": 0.0, "1": 1.0}
    assert result.samples[0].extra["logprobs"] == [-4.0, -3.0, -9.0]
    assert result.metric("acc").binary and result.metric("acc").margin == 0.05


def test_a_target_outside_the_choices_counts_as_wrong_with_a_finding(tmp_path: Path) -> None:
    docs = [{**DOCS[0], "gold": 7}, DOCS[1]]
    (suite,) = load_suite_files([mc_task(tmp_path, docs=docs)]).values()
    responses = Responses()
    for r in suite.plan(CTX):
        responses.set(r, ll(-1.0, True))
    result = suite.score(CTX, responses)
    assert result.metric("acc").per_sample["0"] == 0.0
    assert result.metric("exact_match").per_sample["0"] == 0.0
    assert "not one of their choices" in result.findings[0].message


def test_a_list_target_counts_any_of_its_choices(tmp_path: Path) -> None:
    docs = [{**DOCS[0], "gold": [1, 2]}, {**DOCS[1], "gold": [0, 5]}]
    (suite,) = load_suite_files([mc_task(tmp_path, docs=docs)]).values()
    responses = Responses()
    for r, lp in zip(suite.plan(CTX), [-9.0, -1.0, -5.0, -3.0, -1.0], strict=True):
        responses.set(r, ll(lp, lp > -2))
    per = {m.name: m.per_sample for m in suite.score(CTX, responses).metrics}
    assert per["acc"] == {"0": 1.0, "1": 0.0}  # picks 1 (in [1, 2]) and 1 (not in [0, 5])
    assert per["exact_match"] == {"0": 1.0, "1": 0.0}  # choice 1 is greedy; 5 is no choice


def gen_task(tmp_path: Path, generation: str, metric: str = "{metric: exact_match}") -> Path:
    docs = [{"q": "DSPは", "a": "Demand-Side Platform"}, {"q": "SSPは", "a": "供給側"}]
    write(tmp_path / "g.jsonl", "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    return write(
        tmp_path / "gen.yaml",
        "task: toy_gen\ndataset_path: json\ndataset_kwargs: {data_files: {validation: g.jsonl}}\n"
        "validation_split: validation\noutput_type: generate_until\n"
        'doc_to_text: "{{q}}とは"\ndoc_to_target: a\n'
        f"{generation}metric_list: [{metric}]\nmetadata: {{version: 1}}\n",
    )


def test_generate_until_cuts_at_until_and_scores_exact_match(tmp_path: Path) -> None:
    path = gen_task(
        tmp_path,
        "generation_kwargs: {until: ['。', '\\n'], max_gen_toks: 40, do_sample: false}\n",
        "{metric: exact_match, ignore_case: true, ignore_punctuation: true}",
    )
    (suite,) = load_suite_files([path]).values()
    reqs = suite.plan(CTX)
    assert reqs == [
        GenerateRequest(prompt="DSPはとは", max_new_tokens=40),
        GenerateRequest(prompt="SSPはとは", max_new_tokens=40),
    ]
    responses = Responses()
    responses.set(
        reqs[0], GenerateResponse(text="demand-side PLATFORM。です", token_ids=[1], hit_eos=True)
    )
    responses.set(reqs[1], GenerateResponse(text="需要側\n供給側", token_ids=[1], hit_eos=False))
    result = suite.score(CTX, responses)
    assert result.metric("exact_match").per_sample == {"0": 1.0, "1": 0.0}
    assert result.samples[0].response == "demand-side PLATFORM"
    assert result.samples[0].extra == {"generation": "demand-side PLATFORM。です"}


def test_generate_until_defaults_are_lm_evals(tmp_path: Path) -> None:
    (suite,) = load_suite_files([gen_task(tmp_path, "")]).values()
    assert suite.plan(CTX)[0] == GenerateRequest(prompt="DSPはとは", max_new_tokens=256)
    responses = Responses()
    for r in suite.plan(CTX):
        responses.set(r, GenerateResponse(text="供給側\n\n次", token_ids=[1], hit_eos=True))
    # until defaults to the fewshot delimiter "\n\n"
    assert suite.score(CTX, responses).metric("exact_match").per_sample == {"0": 0.0, "1": 1.0}


def test_include_merges_a_base_file_under_the_task(tmp_path: Path) -> None:
    path = mc_task(tmp_path)
    base = write(
        tmp_path / "_base.yaml", path.read_text(encoding="utf-8").replace("task: toy_mc\n", "")
    )
    write(path, f"include: {base.name}\ntask: toy_mc_inc\nmetadata: {{version: 3}}\n")
    (suite,) = load_suite_files([path]).values()
    assert (suite.name, suite.version) == ("toy_mc_inc", "3")
    assert len(suite.plan(CTX)) == 5
    write(base, f"include: {path.name}\n")
    with pytest.raises(BadInputError, match="include cycle"):
        load_suite_files([path])


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            "process_results: !function utils.process_results\n",
            "'process_results: !function utils.process_results' is a custom Python hook",
        ),
        ("filter_list: [{name: x, filter: [{function: take_first}]}]\n", "'filter_list'"),
        (
            "process_docs: null\ndoc_to_text: !function utils.text\n",
            "'doc_to_text: !function utils.text'",
        ),
        ("num_fewshot: 5\n", "few-shot prompts are not supported"),
        ("output_type: loglikelihood\n", "'output_type: loglikelihood' is not supported"),
        ("gen_prefix: 'Answer:'\n", "'gen_prefix'"),
        ("metric_list: [{metric: f1}]\n", "field 'metric_list.0.metric'"),
        (
            "dataset_kwargs: {data_files: {test: docs.jsonl}, trust_remote_code: true}\n",
            "only data_files",
        ),
        ("test_split: dev\n", "has no split 'dev'"),
        ("doc_to_text: '{{ q.__class__.__mro__ }}'\n", "on document 0"),
        ("doc_to_text: '{{ question }}'\n", "'question' is undefined"),
        ("doc_to_text: '{{ q '\n", "not a valid Jinja template"),
        ("doc_to_choice: '{{ q }}'\n", "not a Python list"),
        ("repeats: 3\n", "repeated sampling"),
        ("doc_to_text: '{{ gold }}'\n", "a number selects a context per choice"),
    ],
)
def test_what_lm_eval_runs_as_code_or_dpo_harness_cannot_reproduce_is_refused(
    tmp_path: Path, extra: str, needle: str
) -> None:
    path = mc_task(tmp_path)
    text = path.read_text(encoding="utf-8")
    for line in extra.splitlines():  # the extra line replaces the task's own field
        text = "\n".join(t for t in text.splitlines() if not t.startswith(line.split(":")[0] + ":"))
    write(path, text + "\n" + extra)
    with pytest.raises(BadInputError) as err:
        load_suite_files([path])
    assert needle in err.value.cause
    assert str(path) in err.value.cause


def test_a_task_given_alone_needs_a_version_and_not_from_a_suites_entry(tmp_path: Path) -> None:
    path = mc_task(tmp_path)
    write(path, path.read_text(encoding="utf-8").replace("metadata: {version: 2}\n", ""))
    with pytest.raises(BadInputError, match=r"needs metadata\.version"):
        load_suite_files([path])
    entry = write(
        tmp_path / "suites.yaml",
        f"suites:\n  - {{name: mine, version: '7', kind: lm_eval, task: {path.name}}}\n",
    )
    (suite,) = load_suite_files([entry]).values()
    assert (suite.name, suite.version) == ("mine", "7")


def test_the_declaration_hash_follows_templates_not_bookkeeping(tmp_path: Path) -> None:
    path = mc_task(tmp_path)
    (a,) = load_suite_files([path]).values()
    write(
        path,
        path.read_text(encoding="utf-8").replace("version: 2", "version: 2, note: x")
        + "tag: [x]\n",
    )
    (b,) = load_suite_files([path]).values()
    write(path, path.read_text(encoding="utf-8").replace("答え:", "回答:"))
    (c,) = load_suite_files([path]).values()
    assert a.identity().declaration_hash == b.identity().declaration_hash
    assert c.identity().declaration_hash != a.identity().declaration_hash
    assert c.identity().data_hash == a.identity().data_hash


# --------------------------------------------------------------------------- helpers, as lm-eval

floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(deadline=None)
@given(st.lists(floats, min_size=1, max_size=8))
def test_argmax_is_numpys(values: list[float]) -> None:
    import numpy as np

    assert argmax(values) == int(np.argmax(np.array(values)))


texts = st.text(alphabet=st.sampled_from(list("aA1 .,!。\n\0xyzあ")), max_size=12)


@needs_lm_eval
@settings(deadline=None)
@given(texts, st.lists(texts, max_size=3))
def test_cut_at_stop_is_lm_evals_postprocessing(text: str, until: list[str]) -> None:
    assert cut_at_stop(text, until) == lm_utils.postprocess_generated_text(text, until, None)
    for term in until:
        assert not term or term not in cut_at_stop(text, until)


@needs_lm_eval
@settings(deadline=None)
@given(
    texts,
    texts,
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.sampled_from([None, ["x+"], [" ", "[0-9]"]]),
)
def test_exact_match_is_lm_evals(
    prediction: str,
    reference: str,
    ignore_case: bool,
    ignore_punctuation: bool,
    ignore_numbers: bool,
    regexes: list[str] | None,
) -> None:
    metric = LmEvalMetric(
        metric="exact_match",
        ignore_case=ignore_case,
        ignore_punctuation=ignore_punctuation,
        ignore_numbers=ignore_numbers,
        regexes_to_ignore=regexes,
    )
    theirs = lm_metrics.exact_match_hf_evaluate(
        predictions=[prediction],
        references=[reference],
        regexes_to_ignore=regexes,
        ignore_case=ignore_case,
        ignore_punctuation=ignore_punctuation,
        ignore_numbers=ignore_numbers,
    )["exact_match"]
    assert exact_match(prediction, reference, metric) == bool(theirs)


def test_exact_match_options_without_lm_eval() -> None:
    m = LmEvalMetric(metric="exact_match", ignore_case=True, ignore_punctuation=True)
    assert exact_match("Demand-Side, Platform!", "demandside platform", m)
    assert not exact_match("DSP", "dsp", LmEvalMetric(metric="exact_match"))
    assert math.isnan(float("nan")) and argmax([1.0, math.nan, 2.0]) == 1


def test_the_example_documents_are_the_adtech_items() -> None:
    import importlib.util

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "lm-eval-adtech"
    spec = importlib.util.spec_from_file_location("convert", example / "convert.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = (example / "adtech_mc.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines == [json.dumps(d, ensure_ascii=False) for d in module.documents()]
    assert len(lines) == 514  # rerun convert.py when the adtech items change

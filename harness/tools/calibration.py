"""Calibration of the text suites: what each metric reads on healthy and on degenerate text.

``dpo-harness calibrate`` scores, with the *same* suite code the gate uses, these text sets laid
over the open prompts:

- the demo base model's own greedy answers;
- fluent human-written Japanese (the held-out paragraphs the project ships);
- synthetic degenerate outputs: "！"×200, a fluent sentence with a "！" tail, sentence loops,
  word salad (shuffled morphemes), English, Chinese;
- the answers of the broken demo variants (``bang``, ``english``, ``chinese``) when asked.

and writes a Markdown table (mean per set; ✗ where the set fails a hard limit) plus, for each
degenerate set, the signals that catch it. Answer NLL is scored under the demo base model, which
is how loops get *low* perplexity — the reason the fluency suite judges it as a band.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpo_harness.evaluation.responses import Responses
from dpo_harness.evaluation.suite import SuiteContext
from dpo_harness.schema import (
    Direction,
    GenerateRequest,
    GenerateResponse,
    GenerationSettings,
    MetricResult,
    SuiteResult,
)
from dpo_harness.suites.common import DATA_DIR, HeldoutText, load_items
from dpo_harness.suites.fluency import FluencySuite
from dpo_harness.suites.metrics.japanese import get_tagger, split_sentences
from dpo_harness.suites.repetition import RepetitionSuite
from tabulate import tabulate

__all__ = ["SYNTHETIC_SETS", "calibrate", "render_calibration", "synthetic_texts"]

SYNTHETIC_SETS = ("bang200", "fluent+bang", "sentence loop", "word salad", "English", "Chinese")
_ENGLISH = [
    "Programmatic advertising uses software to buy and sell ad impressions automatically.",
    "The cost per thousand impressions is the spend divided by impressions times one thousand.",
    "Publishers list their authorized sellers in a text file at the root of the domain.",
    "Frequency capping limits how many times one person sees the same advertisement.",
    "A lift study compares an exposed group with a holdout group to measure the causal effect.",
]
_CHINESE = [
    "程序化广告通过软件自动买卖广告展示机会，提高投放效率。",
    "每千次展示成本等于广告花费除以展示次数再乘以一千。",
    "发布商在网站根目录公开授权销售商列表，以防止域名欺诈。",
    "频次控制用于限制同一个用户在一定时间内看到同一广告的次数。",
    "增量研究通过比较曝光组和对照组来衡量广告带来的真实效果。",
]


def _first_sentence(text: str) -> str:
    sentences = split_sentences(text)
    return (sentences[0] + "。") if sentences else text


def synthetic_texts(kind: str, human: list[str], seed: int = 0) -> list[str]:
    """One degenerate text per human paragraph, built from it (so lengths and words are realistic)."""
    rng = random.Random(seed)
    if kind == "bang200":
        return ["！" * 200 for _ in human]
    if kind == "fluent+bang":
        return [h[:120] + "！" * 120 for h in human]
    if kind == "sentence loop":
        return [_first_sentence(h) * 10 for h in human]
    if kind == "word salad":
        tagger = get_tagger()
        out = []
        for h in human:
            words = [w.surface for w in tagger(h) if w.surface.strip()]
            rng.shuffle(words)
            out.append("".join(words))
        return out
    if kind == "English":
        return [" ".join(rng.sample(_ENGLISH, 2)) for _ in human]
    if kind == "Chinese":
        return ["".join(rng.sample(_CHINESE, 2)) for _ in human]
    raise ValueError(f"unknown synthetic set {kind!r}")


def _score_texts(
    texts: list[str],
    hit_eos: list[bool],
    suites: tuple[RepetitionSuite, FluencySuite],
    nll_runner: Any,
) -> list[SuiteResult]:
    rep, flu = suites
    reqs = rep._requests()
    responses = Responses()
    for r, t, e in zip(reqs, texts, hit_eos, strict=True):
        responses.set(r, GenerateResponse(text=t, token_ids=[], hit_eos=e))
    # has_reference=False: the runner's model (the demo base) scores the answers itself.
    ctx = SuiteContext(generation=GenerationSettings(), has_reference=False)
    follow = flu.plan_followup(ctx, responses)
    responses.update(nll_runner.run(follow))
    return [rep.score(ctx, responses), flu.score(ctx, responses)]


def calibrate(
    *,
    variants: dict[str, Path] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, list[SuiteResult]]:
    """Score every text set; returns {set name: [repetition result, fluency result]}."""
    from dpo_harness.evaluation.loading import load_checkpoint
    from dpo_harness.evaluation.runner import ModelRunner

    rep, flu = RepetitionSuite(), FluencySuite()
    n = len(rep.prompts)
    human = [
        h.text for h in load_items(DATA_DIR / "heldout_ja.jsonl", HeldoutText, what="held-out text")
    ]
    human = (human * (n // len(human) + 1))[:n]
    base = load_checkpoint(None, device="cpu")
    runner = ModelRunner(base, progress=progress)
    gen_reqs = [GenerateRequest(prompt=r.prompt) for r in rep._requests()]
    log("generating the demo base model's answers")
    gens = runner.run(gen_reqs)
    sets: dict[str, tuple[list[str], list[bool]]] = {
        "demo base": ([gens[r].text for r in gen_reqs], [gens[r].hit_eos for r in gen_reqs]),
        "human": (human, [True] * n),
    }
    for kind in SYNTHETIC_SETS:
        texts = synthetic_texts(kind, human)
        ends = [kind in ("word salad", "English", "Chinese")] * n
        sets[kind] = (texts, ends)
    for name, path in (variants or {}).items():
        model = load_checkpoint(str(path), device="cpu")
        got = ModelRunner(model, progress=progress).run(gen_reqs)
        sets[f"{name} model"] = (
            [got[r].text for r in gen_reqs],
            [got[r].hit_eos for r in gen_reqs],
        )
    results = {}
    for name, (texts, ends) in sets.items():
        log(f"scoring {name}")
        results[name] = _score_texts(texts, ends, (rep, flu), runner)
    return results


def calibrate_numerical(
    models: dict[str, Path | None], *, progress: bool = False
) -> dict[str, SuiteResult]:
    """The numerical suite on each model (None: the demo base)."""
    from dpo_harness.evaluation.evaluate import evaluate_loaded
    from dpo_harness.evaluation.loading import load_checkpoint
    from dpo_harness.schema import EvalConfig
    from dpo_harness.suites.numerical import NumericalSuite

    out = {}
    config = EvalConfig(suites=["numerical"])
    for name, path in models.items():
        loaded = load_checkpoint(None if path is None else str(path), device="cpu")
        report = evaluate_loaded(loaded, config, suites=[NumericalSuite()], progress=progress)
        out[name] = report.suite("numerical")
    return out


def render_numerical(results: dict[str, SuiteResult]) -> str:
    names = list(results)
    metric_names = [m.name for m in results[names[0]].metrics]
    rows = []
    for mn in metric_names:
        m0 = results[names[0]].metric(mn)
        row = [mn, m0.direction.value, m0.hard_limit_text()]
        for n in names:
            res = results[n]
            m = res.metric(mn)
            row.append("NaN ✗" if m.nonfinite else _cell(m))
        rows.append(row)
    table = tabulate(rows, headers=["metric", "dir", "hard limit", *names], tablefmt="github")
    notes = []
    for n in names:
        errors = [f.message for f in results[n].findings if f.severity == "error"]
        if errors:
            notes.append(f"- **{n}**: " + " ".join(errors))
    heading = "## Numerical health on the demo base and its broken variants"
    return "\n\n".join([heading, table, "\n".join(notes)]) + "\n"


def _cell(m: MetricResult) -> str:
    if m.value is None:
        return "n/a"
    text = f"{m.value:.3g}"
    return f"{text} ✗" if m.hard_limit_ok is False else text


def _worse_than_base(m: MetricResult, base: MetricResult) -> bool:
    """Would the gate's margin flag this set against the base (point estimate only)?"""
    if m.value is None or base.value is None or m.margin is None:
        return False
    d = m.value - base.value
    if m.direction is Direction.HIGHER:
        return d < -m.margin
    if m.direction is Direction.LOWER:
        return d > m.margin
    if m.direction is Direction.BAND:
        return abs(d) > m.margin
    return False


def render_calibration(results: dict[str, list[SuiteResult]]) -> str:
    names = list(results)
    first = results[names[0]]
    rows = []
    for si, suite in enumerate(first):
        for mi, metric in enumerate(suite.metrics):
            limit = metric.hard_limit_text()
            margin = "" if metric.margin is None else f"{metric.margin:g}"
            rows.append(
                [f"{suite.name}::{metric.name}", metric.direction.value, limit, margin]
                + [_cell(results[n][si].metrics[mi]) for n in names]
            )
    table = tabulate(
        rows, headers=["metric", "dir", "hard limit", "margin", *names], tablefmt="github"
    )
    catches = []
    base = results.get("demo base")
    for n in names:
        if n in ("demo base", "human"):
            continue
        hard = [
            f"{s.name}::{m.name}" for s in results[n] for m in s.metrics if m.hard_limit_ok is False
        ]
        beyond: list[str] = []
        if base is not None:
            for si, s in enumerate(results[n]):
                for mi, m in enumerate(s.metrics):
                    if m.hard_limit_ok is not False and _worse_than_base(m, base[si].metrics[mi]):
                        beyond.append(f"{s.name}::{m.name}")
        catches.append([n, ", ".join(hard) or "—", ", ".join(beyond) or "—"])
    catch_table = tabulate(
        catches,
        headers=["set", "hard limits failed", "beyond the gate margin vs demo base"],
        tablefmt="github",
    )
    return (
        "# Calibration of the repetition and fluency suites\n\n"
        "Generated by `dpo-harness calibrate` (the same scoring code the suites and the gate run). "
        "Each column is a text set laid over the 51 open prompts; values are means over responses; "
        "✗ marks a set that fails the metric's hard limit. `answer_nll_reference` is scored under the "
        "demo base model.\n\n"
        f"{table}\n\n## Which signal catches which failure\n\n{catch_table}\n"
    )

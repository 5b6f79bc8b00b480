"""report.html without a browser: escaping, the structure of every page kind, size, atomic writes."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from dpo_harness.files import load_model_file
from dpo_harness.gate import GateDecision, GatePolicy, Verdict, gate
from dpo_harness.gate.baseline import Baseline, new_baseline
from dpo_harness.gate.baseline_diff import compare_reports
from dpo_harness.reports.html import (
    render_baseline_update_html,
    render_eval_html,
    render_gate_html,
    render_training_html,
    write_report_html,
)
from dpo_harness.schema import (
    Direction,
    EvalReport,
    Finding,
    MetricResult,
    MetricSpec,
    SampleRecord,
    SuiteIdentity,
    SuiteResult,
)
from dpo_harness.training.train_and_gate import RunSummary

from tests.helpers import model_info

PAYLOAD = "</script><img src=x onerror=alert(1)>"
TRAINING = Path(__file__).resolve().parents[1] / "data" / "training-demo"

ACC = MetricSpec(
    name="acc", description="right or wrong", direction=Direction.HIGHER, margin=0.05, binary=True
)
LOOP = MetricSpec(
    name="loop",
    description="loop share",
    direction=Direction.LOWER,
    hard_max=0.5,
    margin=0.1,
    unit="share",
)
NLL = MetricSpec(
    name="nll", description="answer NLL", direction=Direction.BAND, margin=0.5, unit="nats"
)
RUN = MetricSpec(name="run", description="longest run", direction=Direction.LOWER, hard_max=20.0)


# --------------------------------------------------------------------------- building inputs


def _report(
    *,
    n: int = 40,
    broken: int = 0,
    answer: str = "はい、CTRはクリック数をインプレッション数で割った値です。",
    bad_answer: str = "！" * 60,
    fingerprint: str = "sha256:base",
    findings: list[Finding] | None = None,
) -> EvalReport:
    """Two suites; the first ``broken`` items answer ``bad_answer`` (a loop that fails everything)."""
    ids = [f"op-{k:03d}" for k in range(n)]
    bad = set(ids[:broken])
    samples = [
        SampleRecord(
            item_id=i,
            prompt=f"質問 {i}: CTRとは何ですか。",
            response=bad_answer if i in bad else answer,
            extra={"chars": len(bad_answer if i in bad else answer), "hit_eos": i not in bad},
        )
        for i in ids
    ]
    loop = {i: (1.0 if i in bad else 0.0) for i in ids}
    run = {i: (60.0 if i in bad else 1.0) for i in ids}
    nll = {i: (0.2 if i in bad else 2.0 + 0.01 * k) for k, i in enumerate(ids)}
    gen = SuiteResult(
        name="repetition",
        version="1",
        data_hash="sha256:r",
        n_items=n,
        metrics=[
            MetricResult.from_spec(LOOP, sum(loop.values()) / n, loop),
            MetricResult.from_spec(RUN, max(run.values()), run),
            MetricResult.from_spec(NLL, sum(nll.values()) / n, nll),
        ],
        samples=samples,
        findings=findings or [],
    )
    mc_ids = [f"mc-{k:03d}" for k in range(n)]
    wrong = set(mc_ids[: broken // 2])
    acc = {i: (0.0 if i in wrong else 1.0) for i in mc_ids}
    mc = SuiteResult(
        name="adtech",
        version="1",
        data_hash="sha256:a",
        n_items=n,
        metrics=[MetricResult.from_spec(ACC, sum(acc.values()) / n, acc)],
        samples=[
            SampleRecord(
                item_id=i,
                prompt="CTRの計算式は？",
                response="クリック数 ÷ 表示回数" if i not in wrong else "表示回数 ÷ クリック数",
                target="クリック数 ÷ 表示回数",
                extra={
                    "type": "multiple_choice",
                    "category": "metrics" if k % 2 else "auction",
                    "logprobs": [-3.0, -9.0] if i not in wrong else [-9.0, -3.0],
                },
            )
            for k, i in enumerate(mc_ids)
        ],
    )
    from dpo_harness.schema import GenerationSettings, Provenance

    prov = Provenance(
        harness_version="test",
        created_at="2026-01-01T00:00:00+00:00",
        model=model_info(fingerprint),
        reference_source="self",
        suites={
            "repetition": SuiteIdentity(version="1", data_hash="sha256:r"),
            "adtech": SuiteIdentity(version="1", data_hash="sha256:a"),
        },
        generation=GenerationSettings(),
        libraries={"python": "3.11"},
        device="cpu",
        dtype="float32",
        seed=0,
        batch_size=1,
    )
    return EvalReport(provenance=prov, suites=[gen, mc])


@pytest.fixture(scope="module")
def base() -> EvalReport:
    return _report()


@pytest.fixture(scope="module")
def baseline(base: EvalReport) -> Baseline:
    return new_baseline(base, reason="test").sealed()


def _gate(report: EvalReport, baseline: Baseline, alpha: float = 0.05) -> GateDecision:
    return gate(report, baseline, GatePolicy(n_resamples=400, alpha=alpha))


# --------------------------------------------------------------------------- a small HTML checker


_VOID = {"meta", "br", "col", "input", "img", "link", "hr", "wbr", "source"}


class _Doc(HTMLParser):
    """Tags, attributes and text of a page; fails on a closing tag that does not match."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.errors: list[str] = []
        self.script: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag not in _VOID:
            self.stack.append(tag)
        self._in_script = tag == "script"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False
        if tag in _VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        (self.script if self._in_script else self.text).append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        out = []
        for t, a in self.elements:
            if t != tag:
                continue
            if all(
                (a.get(k.rstrip("_")) or "").split().count(v) or a.get(k.rstrip("_")) == v
                for k, v in attrs.items()
            ):
                out.append(a)
        return out


def parse(page: str) -> _Doc:
    doc = _Doc()
    doc.feed(page)
    doc.close()
    assert not doc.errors, doc.errors[:5]
    assert doc.stack == [], f"unclosed: {doc.stack}"
    return doc


def _assert_self_contained(page: str, doc: _Doc) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert len(page.encode("utf-8")) < 2_000_000
    # nothing that fetches: no external src/href, no <link>, <img>, <iframe>, <object>
    for tag in ("link", "img", "iframe", "object", "embed"):
        assert not doc.find(tag), tag
    for _tag, attrs in doc.elements:
        for key in ("src", "href"):
            value = attrs.get(key)
            assert value is None or value.startswith("#"), (key, value)
    # one script, and the CSP allows exactly that one (by hash) and no network at all
    assert len(doc.find("script")) == 1
    csp = doc.find("meta", **{"http-equiv": "Content-Security-Policy"})[0]["content"] or ""
    script = "".join(doc.script)
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    assert f"'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp


# --------------------------------------------------------------------------- escaping


def _hostile_report() -> EvalReport:
    r = _report(
        broken=10,
        bad_answer=PAYLOAD + "\x00\u202e\ud800<b>bold</b>&amp;",
        findings=[Finding(severity="error", message=f"tensor {PAYLOAD} is NaN", metric="loop")],
    )
    rep = r.suites[0]
    samples = [s.model_copy(update={"prompt": PAYLOAD}) for s in rep.samples]
    model = r.provenance.model.model_copy(update={"ref": f"/models/{PAYLOAD}"})
    return r.model_copy(
        update={
            "suites": [rep.model_copy(update={"samples": samples}), r.suites[1]],
            "provenance": r.provenance.model_copy(update={"model": model, "command": PAYLOAD}),
        }
    )


def test_model_text_is_inert_on_every_page(baseline: Baseline, tmp_path: Path) -> None:
    hostile = _hostile_report()
    decision = _gate(hostile, baseline)
    new = new_baseline(
        hostile, reason=PAYLOAD
    )  # not sealed: the checksum cannot hash a lone surrogate
    summary = load_model_file(TRAINING / "run_summary.json", RunSummary)
    summary = summary.model_copy(update={"reason": PAYLOAD})
    pages = {
        "gate": render_gate_html(decision, hostile, baseline),
        "eval": render_eval_html(hostile),
        "update": render_baseline_update_html(
            baseline, new, compare_reports(baseline.report, hostile)
        ),
        "training": render_training_html(
            summary,
            [{"step": 1, "loss": 0.5}],
            [
                {
                    "step": 1,
                    "kind": PAYLOAD,
                    "severity": "error",
                    "message": PAYLOAD,
                    "stopped": True,
                }
            ],
            {},
        ),
    }
    for name, page in pages.items():
        doc = parse(page)
        assert "<img" not in page, name
        assert page.count("<script>") == 1 and page.count("</script>") == 1, name
        assert "onerror=" not in page.replace("onerror=alert", ""), name
        assert "<b>bold</b>" not in page, name
        assert PAYLOAD in "".join(doc.text), f"{name}: the text is shown as text"
        _assert_self_contained(page, doc)
        write_report_html(
            tmp_path / f"{name}.html", page
        )  # a lone surrogate must not break the write
    gate_text = "".join(parse(pages["gate"]).text)
    assert "\\x00" in gate_text and "U+202E" in gate_text  # control characters made visible
    assert "\ufffd" in gate_text  # the lone surrogate became U+FFFD


# --------------------------------------------------------------------------- the gate page


def test_gate_page_refuse_structure(base: EvalReport, baseline: Baseline) -> None:
    cand = _report(broken=24, fingerprint="sha256:cand")
    decision = _gate(cand, baseline)
    assert decision.decision == "refuse"
    page = render_gate_html(decision, cand, baseline)
    doc = parse(page)
    _assert_self_contained(page, doc)
    text = " ".join(doc.text)

    verdict = doc.find("section", id="verdict")[0]
    assert verdict["data-decision"] == "refuse"
    assert "REFUSE" in text
    assert text.index("REFUSE") < text.index("Forest plot")  # the verdict comes first
    # forest plot: one row per gated metric, the margin drawn as a line, hard failures marked
    assert len(doc.find("svg", class_="forest")) == 1
    gated = [v for v in decision.verdicts if v.verdict not in (Verdict.NOT_GATED, Verdict.SKIPPED)]
    rows = doc.find("g", class_="frow")
    assert len(rows) == len(gated)
    assert {r["data-verdict"] for r in rows} >= {"hard-fail"}
    assert doc.find("line", class_="margin")
    # level of the intervals: 1 - 2α
    assert "90% intervals" in text
    # the changed-items table: the broken items, sorted by how far they moved, filters present
    table = doc.find("table", id="changed-items")
    assert table
    items = doc.find("tr", class_="item")
    changed = [a for a in items if a["data-changed"] == "1"]
    assert len(changed) == 24 + 12
    assert all("hidden" not in a for a in changed)
    assert all("hidden" in a for a in items if a["data-changed"] == "0")
    for control in ("f-suite", "f-category", "f-metric", "f-changed", "f-text"):
        assert len([a for _t, a in doc.elements if a.get("id") == control]) == 1
    assert {a["value"] for a in doc.find("option") if a.get("value")} >= {
        "repetition",
        "adtech",
        "metrics",
        "auction",
        "repetition::loop",
    }
    # multiple choice: the chosen option with its log-likelihoods
    assert "chosen option 2 of 2" in text and "log-likelihood per option" in text
    # worst answers quoted, findings and provenance folded away
    assert "Worst answers" in text and "！！！！" in text
    assert doc.find("details", id="findings") and doc.find("details", id="provenance")
    assert "open" not in doc.find("details", id="provenance")[0]
    assert "sha256:cand" in text


def test_gate_page_promote_and_level_follows_alpha(base: EvalReport, baseline: Baseline) -> None:
    same = _report(fingerprint="sha256:cand")
    decision = _gate(same, baseline, alpha=0.1)
    assert decision.decision == "promote"
    page = render_gate_html(decision, same, baseline)
    doc = parse(page)
    assert doc.find("section", id="verdict")[0]["data-decision"] == "promote"
    text = " ".join(doc.text)
    assert "80% intervals" in text and "90%" not in text
    # nothing changed: every item row is there (for "changed=all") but hidden
    items = doc.find("tr", class_="item")
    assert items and all(a["data-changed"] == "0" and "hidden" in a for a in items)
    assert "No metric was refused" in text
    assert "No item changed a score" in text


def test_gate_page_inconclusive_headline(baseline: Baseline) -> None:
    cand = _report(broken=2, fingerprint="sha256:cand")  # 1 MC item wrong of 40: straddles 0.05
    decision = _gate(cand, baseline)
    inc = [v for v in decision.verdicts if v.verdict is Verdict.INCONCLUSIVE]
    blocking = [v for v in decision.verdicts if v.verdict in (Verdict.REGRESSED, Verdict.HARD_FAIL)]
    page = render_gate_html(decision, cand, baseline)
    word = "INCONCLUSIVE" if inc and not blocking else "REFUSE"
    assert word in " ".join(parse(page).text)


# --------------------------------------------------------------------------- evaluate


def test_eval_page_structure(base: EvalReport) -> None:
    broken = _report(
        broken=30,
        findings=[
            Finding(
                severity="error",
                message="Parameter model.layers.1.mlp.down_proj.weight holds 1 NaN",
            )
        ],
    )
    page = render_eval_html(broken)
    doc = parse(page)
    _assert_self_contained(page, doc)
    text = " ".join(doc.text)
    assert doc.find("section", id="verdict")[0]["data-passed"] == "0"
    assert "FAIL" in text and "repetition::loop" in text and "repetition::run" in text
    assert "<= 0.5" in text.replace("&lt;", "<")  # the hard limit is shown
    assert "model.layers.1.mlp.down_proj.weight" in text
    assert "open" in doc.find("details", id="findings")[0]  # failures: shown open
    assert "！！！！" in text  # the worst samples are quoted
    ok = render_eval_html(base)
    assert parse(ok).find("section", id="verdict")[0]["data-passed"] == "1"


# --------------------------------------------------------------------------- baseline update


def test_baseline_update_page(baseline: Baseline) -> None:
    moved = _report(broken=24, fingerprint="sha256:new")
    new = new_baseline(moved, reason="new base weights").sealed()
    rows = compare_reports(baseline.report, moved)
    page = render_baseline_update_html(baseline, new, rows)
    doc = parse(page)
    _assert_self_contained(page, doc)
    text = " ".join(doc.text)
    assert "MOVED BEYOND A MARGIN" in text and "95% intervals" in text
    assert "new base model weights (fingerprint changed)" in text
    assert doc.find("svg", class_="forest") and doc.find("table", id="changed-items")
    frows = doc.find("g", class_="frow")
    assert len(frows) == sum(1 for r in rows if r.margin is not None)
    unchanged = render_baseline_update_html(
        baseline, baseline, compare_reports(baseline.report, baseline.report)
    )
    assert "UNCHANGED" in " ".join(parse(unchanged).text)


# --------------------------------------------------------------------------- training


def _training_inputs() -> tuple[
    RunSummary, list[dict[str, Any]], list[dict[str, Any]], dict[int, GateDecision]
]:
    summary = load_model_file(TRAINING / "run_summary.json", RunSummary)
    history = json.loads((TRAINING / "log_history.json").read_text(encoding="utf-8"))
    events = [
        json.loads(line)
        for line in (TRAINING / "guard_events.jsonl").read_text(encoding="utf-8").splitlines()
        if line
    ]
    per = {
        c.step: load_model_file(TRAINING / "gate" / c.name / "decision.json", GateDecision)
        for c in summary.candidates
    }
    return summary, history, events, per


def test_training_page_from_a_real_run() -> None:
    summary, history, events, per = _training_inputs()
    page = render_training_html(summary, history, events, per)
    doc = parse(page)
    _assert_self_contained(page, doc)
    text = " ".join(doc.text)
    assert doc.find("section", id="verdict")[0]["data-outcome"] == "refused"
    panels = {a["data-panel"] for a in doc.find("div", class_="card") if a.get("data-panel")}
    assert {"loss", "reward margin", "grad norm"} <= panels
    # every guard event is marked on every curve, at its step
    marks = doc.find("g", class_="guard-event")
    assert len(marks) == len(events) * len(panels)
    assert {int(a["data-step"] or 0) for a in marks} == {e["step"] for e in events}
    # each gated metric across the checkpoints, with the baseline and the margin band
    cards = {a["data-metric"] for a in doc.find("div", class_="card") if a.get("data-metric")}
    assert "repetition::degenerate_share" in cards and "adtech::mc_accuracy" in cards
    assert doc.find("rect", class_="band") and doc.find("line", class_="baseline")
    assert "first regressed at step 30" in text
    for step in per:
        assert f"step {step} (refuse)" in text


def test_training_page_nan_steps_and_a_stopped_run() -> None:
    summary, _, _, _ = _training_inputs()
    history = [
        {
            "step": s,
            "loss": (math.nan if s >= 3 else 0.69),
            "grad_norm": math.nan if s == 3 else 1.0,
        }
        for s in range(1, 6)
    ]
    stopped = summary.model_copy(
        update={"outcome": "stopped", "reason": "training was stopped", "candidates": []}
    )
    events = [
        {
            "step": 3,
            "kind": "nonfinite_gradient",
            "severity": "error",
            "message": "NaN gradient at step 3",
            "stopped": True,
        }
    ]
    page = render_training_html(stopped, history, events, {})
    doc = parse(page)
    assert len(doc.find("g", class_="nonfinite")) == 3 + 1
    assert "No checkpoint was gated" in " ".join(doc.text)
    assert doc.find("section", id="verdict")[0]["data-outcome"] == "stopped"


# --------------------------------------------------------------------------- size and writing


def test_long_answers_are_cut_and_the_page_stays_small(baseline: Baseline) -> None:
    # 400 items: every answer is kept, cut to its share of the character budget
    cand = _report(n=400, broken=400, bad_answer="ループ" * 20_000, fingerprint="sha256:cand")
    big_base = new_baseline(_report(n=400), reason="t").sealed()
    page = render_gate_html(_gate(cand, big_base), cand, big_base)
    assert len(page.encode("utf-8")) < 2_000_000
    assert "more characters" in page and "left out" not in page
    # 3,000 items: the least moved rows are left out, and the page says so
    cand = _report(n=3000, broken=3000, bad_answer="ループ" * 200, fingerprint="sha256:cand")
    big_base = new_baseline(_report(n=3000), reason="t").sealed()
    page = render_gate_html(_gate(cand, big_base), cand, big_base)
    assert len(page.encode("utf-8")) < 2_000_000
    assert "items are left out to keep the page small" in page


def test_write_report_html_is_atomic(tmp_path: Path, base: EvalReport) -> None:
    path = tmp_path / "out" / "report.html"
    page = render_eval_html(base)
    write_report_html(path, page)
    write_report_html(path, page)
    assert path.read_text(encoding="utf-8") == page
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary file left


def test_public_functions_are_pure_renderers() -> None:
    import dpo_harness.reports.html as mod

    src = Path(mod.__file__).read_text(encoding="utf-8")
    imports = set(re.findall(r"^(?:from|import) (\S+)", src, flags=re.M))
    allowed = {
        "__future__",
        "base64",
        "hashlib",
        "html",
        "json",
        "math",
        "re",
        "unicodedata",
        "collections.abc",
        "dataclasses",
        "pathlib",
        "typing",
        "dpo_harness.gate.baseline",
        "dpo_harness.gate.decision",
        "dpo_harness.files",
        "dpo_harness.schema",
    }
    assert imports <= allowed, imports - allowed
    assert "torch" not in src and "transformers" not in src

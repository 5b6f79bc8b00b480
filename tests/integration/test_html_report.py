"""report.html in a real browser: the demo pipeline's real outputs, rendered and loaded in headless Chromium.

The inputs come from the CLI run in-process (``gate`` on the demo model, which promotes, and on the
"bang" variant, which answers "！！！！…" and is refused), the committed baseline, and a real
train-and-gate run kept in ``tests/data/training-demo``. Each page is written to a file and opened
from a ``file://`` URL in headless Chromium driven over the DevTools protocol (see
``tests/chromium.py``): every console error, uncaught exception, error log entry (a CSP
violation, a failed load), JavaScript dialog and network request is an event the test sees.

Skipped only when no Chromium/Chrome binary can be found.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dpo_harness.cli import cli
from dpo_harness.files import load_model_file
from dpo_harness.gate import GateDecision
from dpo_harness.gate.baseline import load_baseline, new_baseline
from dpo_harness.gate.baseline_diff import compare_reports
from dpo_harness.reports.html import (
    render_baseline_update_html,
    render_eval_html,
    render_gate_html,
    render_training_html,
    write_report_html,
)
from dpo_harness.schema import EvalReport
from dpo_harness.training.train_and_gate import RunSummary

from tests.chromium import Chromium, Page, find_chromium

REPO = Path(__file__).resolve().parents[2]
STORED = REPO / "baselines" / "demo.json"
TRAINING = REPO / "tests" / "data" / "training-demo"
DOCS_IMG = REPO / "docs" / "img"
# The generation suites only: they are what the bang model breaks, and they keep this test short.
SUITES = "repetition,fluency"
PAYLOAD = "</script><img src=x onerror=alert(1)>"
MAX_BYTES = 2_000_000
DOCS_SHOTS = {
    "gate-promote": "report-gate-promote.png",
    "gate-refuse": "report-gate-refuse.png",
    "training": "report-training.png",
}

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium/Chrome binary found (apt-get install chromium, or set $CHROMIUM)",
    ),
]


def _gate(candidate: str, out: Path, *extra: str) -> tuple[EvalReport, GateDecision]:
    args = ["gate", candidate, "--base", "demo", "--baseline", str(STORED), *extra]
    result = CliRunner().invoke(cli, [*args, "--suites", SUITES, "--out", str(out), "--quiet"])
    assert result.exit_code in (0, 1), result.output
    return (
        load_model_file(out / "report.json", EvalReport),
        load_model_file(out / "decision.json", GateDecision),
    )


@pytest.fixture(scope="module")
def pages(
    tmp_path_factory: pytest.TempPathFactory, demo_variant: Callable[[str], Path]
) -> dict[str, Path]:
    """Every page kind, rendered from real outputs and written to files: {name: path}."""
    out = tmp_path_factory.mktemp("html-report")
    baseline = load_baseline(STORED)
    base_report, base_decision = _gate("demo", out / "gate-base")
    assert base_decision.decision == "promote"
    # The bang model never stops: one batch of 64 generates its 51 answers in one pass of 128
    # steps instead of four (batch size is not part of the baseline's compatibility key).
    bang_report, bang_decision = _gate(
        str(demo_variant("bang")), out / "gate-bang", "--batch-size", "64"
    )
    assert bang_decision.decision == "refuse"

    summary = load_model_file(TRAINING / "run_summary.json", RunSummary)
    history = json.loads((TRAINING / "log_history.json").read_text(encoding="utf-8"))
    events = [
        json.loads(line)
        for line in (TRAINING / "guard_events.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    per_checkpoint = {
        c.step: load_model_file(TRAINING / "gate" / c.name / "decision.json", GateDecision)
        for c in summary.candidates
    }
    # A hostile answer: model text that would be markup and script if it were not escaped.
    rep = bang_report.suite("repetition")
    hostile_samples = [
        s.model_copy(update={"response": PAYLOAD + (s.response or "")}) for s in rep.samples
    ]
    hostile = bang_report.model_copy(
        update={
            "suites": [
                s.model_copy(update={"samples": hostile_samples}) if s.name == "repetition" else s
                for s in bang_report.suites
            ]
        }
    )
    rendered = {
        "gate-promote": render_gate_html(base_decision, base_report, baseline),
        "gate-refuse": render_gate_html(bang_decision, bang_report, baseline),
        "eval-refuse": render_eval_html(bang_report),
        # the stored baseline against a fresh evaluation of the same model: nothing moves
        "baseline-update": render_baseline_update_html(
            baseline,
            new_baseline(base_report, reason="re-run (reproducibility check)"),
            compare_reports(baseline.report, base_report),
        ),
        # ...and against the bang model taken as a new base: most things move
        "baseline-update-moved": render_baseline_update_html(
            baseline,
            new_baseline(bang_report, reason="the bang variant taken as the new base model"),
            compare_reports(baseline.report, bang_report),
        ),
        "training": render_training_html(summary, history, events, per_checkpoint),
        "hostile": render_gate_html(bang_decision, hostile, baseline),
    }
    paths = {}
    for name, page in rendered.items():
        path = out / f"{name}.html"
        write_report_html(path, page)
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    assert CHROMIUM is not None
    with Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b


def _open(browser: Chromium, path: Path, hash_: str = "") -> Page:
    page = browser.open(path.as_uri() + hash_, width=1400, height=2400)
    assert page.evaluate("document.documentElement.getAttribute('data-ready')") == "1", (
        "the page's script did not run"
    )
    return page


def _visible_rows(page: Page) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = page.evaluate(
        """Array.from(document.querySelectorAll('#changed-items tbody tr.item'))
             .filter(r => !r.hidden && r.offsetParent !== null)
             .map(r => ({suite: r.dataset.suite, changed: r.dataset.changed,
                         metrics: r.dataset.metrics.split(' ')}))"""
    )
    return rows


# --------------------------------------------------------------------------- every page


EXPECTED = {
    # name: (CSS selectors that must be in the rendered DOM)
    "gate-promote": (
        "section#verdict[data-decision=promote]",
        "svg.forest g.frow",
        "table#changed-items",
    ),
    "gate-refuse": (
        "section#verdict[data-decision=refuse]",
        "svg.forest g.frow",
        "table#changed-items tbody tr.item[data-changed='1']",
        "#worst blockquote.quote",
    ),
    "eval-refuse": (
        "section#verdict[data-passed='0']",
        "#metrics table",
        "#worst blockquote.quote",
    ),
    "baseline-update": ("svg.forest g.frow", "table#changed-items"),
    "baseline-update-moved": (
        "svg.forest g.frow line.ci",
        "table#changed-items tbody tr.item[data-changed='1']",
    ),
    "training": (
        "svg.chart g.guard-event",
        "div.card[data-metric] rect.band",
        "div.card[data-panel=loss] svg",
    ),
    "hostile": ("svg.forest", "table#changed-items"),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_page_loads_cleanly_in_chromium(
    name: str, pages: dict[str, Path], browser: Chromium, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = pages[name]
    size = path.stat().st_size
    assert size < MAX_BYTES, f"{name}: {size:,} bytes"
    page = _open(browser, path)
    assert page.errors == [], f"{name}: {page.errors}"
    assert page.requests == [path.as_uri()], f"{name} fetched more than itself: {page.requests}"
    for selector in EXPECTED[name]:
        n = page.evaluate(f"document.querySelectorAll({json.dumps(selector)}).length")
        assert n > 0, f"{name}: nothing matches {selector!r} in the rendered DOM"
    shots = tmp_path_factory.getbasetemp() / "html-report-screenshots"
    shot = page.screenshot(shots / f"{name}.png")
    assert shot.stat().st_size > 10_000
    # The docs' screenshots are refreshed on request only: a test run must not edit tracked files.
    if name in DOCS_SHOTS and os.environ.get("DPO_HARNESS_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_IMG / DOCS_SHOTS[name])


# --------------------------------------------------------------------------- content


def test_refused_page_shows_verdict_plot_and_changed_items(
    pages: dict[str, Path], browser: Chromium
) -> None:
    page = _open(browser, pages["gate-refuse"])
    head = page.evaluate("document.querySelector('#verdict').innerText")
    assert head.startswith("REFUSE") and "repetition::" in head
    rows = page.evaluate(
        "Array.from(document.querySelectorAll('svg.forest g.frow')).map(g => [g.querySelector('text').textContent, g.dataset.verdict])"
    )
    verdicts = dict(rows)
    assert verdicts.get("repetition::degenerate_share") in ("hard-fail", "regressed")
    assert "90% intervals" in page.evaluate("document.querySelector('#forest').innerText")
    shown = _visible_rows(page)
    assert shown and all(r["changed"] == "1" for r in shown)
    count = page.evaluate("document.getElementById('dd-count').textContent")
    assert count.startswith(f"Showing {len(shown)} of ")
    # sorted by how far they moved: the first rows are the worst ones
    first = page.evaluate(
        "document.querySelector('#changed-items tbody tr.item .badge').textContent"
    )
    assert first in ("worse", "mixed")


def test_filters_follow_the_url_hash_and_the_controls(
    pages: dict[str, Path], browser: Chromium
) -> None:
    path = pages["gate-refuse"]
    page = _open(browser, path, "#suite=fluency&changed=all")
    shown = _visible_rows(page)
    n_fluency = page.evaluate(
        "document.querySelectorAll('#changed-items tr.item[data-suite=fluency]').length"
    )
    assert len(shown) == n_fluency > 0 and {r["suite"] for r in shown} == {"fluency"}
    assert page.evaluate("document.getElementById('f-changed').checked") is False

    metric = "repetition::degenerate_share"
    page = _open(browser, path, f"#metric={metric}")
    shown = _visible_rows(page)
    assert shown and all(metric in r["metrics"] for r in shown)

    # the controls filter too, and write the filter into the URL
    page.evaluate(
        """(() => { const s = document.getElementById('f-suite'); s.value = 'repetition';
                   s.dispatchEvent(new Event('change'));
                   const m = document.getElementById('f-metric'); m.value = '';
                   m.dispatchEvent(new Event('change')); })()"""
    )
    shown = _visible_rows(page)
    assert shown and {r["suite"] for r in shown} == {"repetition"}
    assert page.evaluate("location.hash") == "#suite=repetition"

    # a forest-plot row links to its metric's items
    page.evaluate(
        "document.querySelector('svg.forest a').dispatchEvent(new MouseEvent('click', {bubbles: true, cancelable: true}))"
    )
    deadline = time.monotonic() + 5
    while "metric=" not in page.evaluate("location.hash") and time.monotonic() < deadline:
        time.sleep(0.05)
    linked = page.evaluate("decodeURIComponent(location.hash)").split("metric=")[1]
    shown = _visible_rows(page)
    assert shown and all(linked in r["metrics"] for r in shown)
    assert page.errors == []


def test_hostile_model_text_stays_text(pages: dict[str, Path], browser: Chromium) -> None:
    page = _open(browser, pages["hostile"], "#suite=repetition&changed=all")
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert page.evaluate("document.querySelectorAll('script').length") == 1
    assert PAYLOAD in page.evaluate("document.getElementById('changed-items').innerText")
    assert page.errors == []  # no alert() dialog, no blocked script


def test_print_layout(pages: dict[str, Path], browser: Chromium) -> None:
    page = _open(browser, pages["gate-refuse"])
    page.browser.send("Emulation.setEmulatedMedia", {"media": "print"}, session=page.session)
    assert page.evaluate("getComputedStyle(document.querySelector('.filters')).display") == "none"
    assert page.print_pdf().startswith(b"%PDF")
    assert page.errors == []


def test_the_error_capture_itself_works(browser: Chromium, tmp_path: Path) -> None:
    """A negative control: a page with a failing script must be reported."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><script>console.error('logged'); undefinedCall();</script>"
        "<img src='missing.png'></body></html>",
        encoding="utf-8",
    )
    page = browser.open(bad.as_uri())
    errors = " | ".join(page.errors)
    assert "logged" in errors and "undefinedCall" in errors, errors
    assert any(u.endswith("/missing.png") for u in page.requests)

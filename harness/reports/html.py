"""report.html: one self-contained page a person reads to decide whether a model ships.

Pure renderers: each public ``render_*`` function takes the harness's pydantic objects and returns
the text of a complete HTML document. No model code, no files read, no network: styles, charts
(inline SVG) and the little JavaScript that filters the per-item table are all inside the page, and
a Content-Security-Policy forbids the browser from fetching anything or running any other script.

Everything that comes from a model or a data file (answers, prompts, item ids, finding messages,
paths) is HTML-escaped; control and bidirectional-override characters in answers are shown as
visible markers instead of being interpreted.

Pages:

- :func:`render_gate_html` — ``gate``: the verdict, a forest plot of every gated metric, the
  metric table, the per-item drill-down (baseline and candidate answers side by side), the worst
  answers, findings and provenance.
- :func:`render_eval_html` — ``evaluate``: the metric table with hard limits, findings, worst
  samples.
- :func:`render_baseline_update_html` — ``baseline update``: what moved between the old and the
  new baseline (forest plot of the paired changes, table, drill-down).
- :func:`render_training_html` — ``train-and-gate``: training curves with the guard events marked,
  and every gated metric across the checkpoints against the baseline and its margin.

:func:`write_report_html` writes a page atomically.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_harness.files import atomic_write_text
from dpo_harness.gate.baseline import Baseline
from dpo_harness.gate.decision import GateDecision, MetricVerdict, Verdict
from dpo_harness.schema import Direction, EvalReport, MetricResult, SampleRecord, SuiteResult

if TYPE_CHECKING:  # annotations only: these modules pull in heavier dependencies
    from dpo_harness.gate.baseline_diff import ChangeRow
    from dpo_harness.training.train_and_gate import RunSummary

__all__ = [
    "render_baseline_update_html",
    "render_eval_html",
    "render_gate_html",
    "render_training_html",
    "write_report_html",
]

# Answers longer than this are cut in the page (the full text stays in report.json).
MAX_ANSWER_CHARS = 1500
MAX_PROMPT_CHARS = 400
# The per-item table stays within these budgets (the rest of a page is small), so a page stays
# well under 2 MB for any suite size; changed items come first, the most moved first.
MAX_ITEMS = 3000
TABLE_BUDGET_BYTES = 1_200_000
ANSWER_BUDGET_CHARS = 300_000
PROMPT_BUDGET_CHARS = 60_000
QUOTE_CHARS = 600  # quoted worst answers


# --------------------------------------------------------------------------- text


def _esc(value: object) -> str:
    """Escape anything for HTML text and (double-quoted) attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


_SURROGATE = re.compile("[\ud800-\udfff]")
_BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A)) | {0x200E, 0x200F, 0x061C}


def _visible(text: str | None, limit: int = MAX_ANSWER_CHARS) -> str:
    """Model text as inert, visible HTML: escaped; control, bidi and U+FFFD characters marked.

    Newlines stay newlines (the CSS keeps them); a lone surrogate (not encodable as UTF-8)
    becomes U+FFFD. Text past ``limit`` characters is cut with a note saying how much.
    """
    if text is None:
        return '<span class="muted">(no text)</span>'
    text = _SURROGATE.sub("\ufffd", text)
    if text == "":
        return '<span class="muted">(empty answer)</span>'
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch in "\n\t":
            out.append(ch)
        elif code in _BIDI:
            out.append(f'<span class="ctl" title="bidirectional control">U+{code:04X}</span>')
        elif ch == "\ufffd":
            out.append('<span class="ctl" title="U+FFFD replacement character">\ufffd</span>')
        elif unicodedata.category(ch) == "Cc":
            out.append(f'<span class="ctl" title="control character">\\x{code:02x}</span>')
        else:
            out.append(html.escape(ch, quote=True))
    if cut > 0:
        out.append(f'<span class="muted"> … ({cut:,} more characters)</span>')
    return "".join(out)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# --------------------------------------------------------------------------- numbers


def _fmt(value: float | None, unit: str = "") -> str:
    """Like the Markdown reports: 4 significant-ish digits, n/a for a missing value."""
    if value is None:
        return "n/a"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        text = f"{value:.3g}"
    elif float(value).is_integer():
        text = f"{int(value)}"
    else:
        text = f"{value:.4f}".rstrip("0").rstrip(".")
    return f"{text} {unit}" if unit and unit not in ("ratio", "share") else text


def _signed(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value + 0.0:+.3g}"


def _interval_text(lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None:
        return ""
    return f"[{_signed(lo)}, {_signed(hi)}]"


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    mag = 10.0 ** math.floor(math.log10(raw))
    for k in (1, 2, 2.5, 5, 10):
        if raw <= k * mag:
            return k * mag
    return 10 * mag


def _ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = _nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    k = 0
    while first + k * step <= hi + step * 1e-9 and k < 100:
        out.append(round(first + k * step, 12))
        k += 1
    return out


def _tick_label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.2g}"
    return f"{value:.6g}"


def _n(x: float) -> str:
    """A coordinate for SVG: short and locale-proof."""
    return f"{x:.1f}".rstrip("0").rstrip(".") if math.isfinite(x) else "0"


# --------------------------------------------------------------------------- verdict marks

# Okabe-Ito colours (safe for the common colour-vision deficiencies); every verdict also has its
# own shape and word, so nothing is told by colour alone.
_VERDICT_STYLE: dict[str, tuple[str, str, str]] = {
    # key: (css class, glyph, label)
    Verdict.PASS.value: ("v-pass", "●", "pass"),
    Verdict.IMPROVED.value: ("v-improved", "▲", "improved"),
    Verdict.INCONCLUSIVE.value: ("v-inconclusive", "◆", "inconclusive"),
    Verdict.REGRESSED.value: ("v-regressed", "▼", "regressed"),
    Verdict.HARD_FAIL.value: ("v-hard", "✖", "hard limit failed"),
    Verdict.NOT_GATED.value: ("v-none", "–", "not gated"),
    Verdict.SKIPPED.value: ("v-none", "○", "skipped"),
}
_COLOURS = {
    "v-pass": "#0072B2",
    "v-improved": "#009E73",
    "v-inconclusive": "#E69F00",
    "v-regressed": "#D55E00",
    "v-hard": "#B33C00",
    "v-none": "#767676",
}
_BLOCKING = (Verdict.HARD_FAIL, Verdict.REGRESSED)
_BETTER = {
    "higher": "higher is better",
    "lower": "lower is better",
    "band": "should stay near the baseline",
    "info": "reported only",
}


def _mark(verdict: Verdict | str, *, text: bool = True) -> str:
    key = verdict.value if isinstance(verdict, Verdict) else verdict
    cls, glyph, label = _VERDICT_STYLE.get(key, ("v-none", "?", key))
    word = f" {label}" if text else ""
    return f'<span class="mark {cls}" title="{_esc(label)}">{glyph}{word}</span>'


def _svg_mark(verdict: str, x: float, y: float, r: float = 5.5) -> str:
    """The verdict's shape in SVG, filled with its colour."""
    cls, _, label = _VERDICT_STYLE.get(verdict, ("v-none", "?", verdict))
    c = _COLOURS[cls]
    if verdict == Verdict.PASS.value:
        shape = f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{_n(r)}" fill="{c}"/>'
    elif verdict == Verdict.IMPROVED.value:
        shape = f'<path d="M{_n(x)},{_n(y - r)} L{_n(x + r)},{_n(y + r * 0.8)} L{_n(x - r)},{_n(y + r * 0.8)} Z" fill="{c}"/>'
    elif verdict == Verdict.REGRESSED.value:
        shape = f'<path d="M{_n(x)},{_n(y + r)} L{_n(x + r)},{_n(y - r * 0.8)} L{_n(x - r)},{_n(y - r * 0.8)} Z" fill="{c}"/>'
    elif verdict == Verdict.INCONCLUSIVE.value:
        shape = f'<path d="M{_n(x)},{_n(y - r)} L{_n(x + r)},{_n(y)} L{_n(x)},{_n(y + r)} L{_n(x - r)},{_n(y)} Z" fill="{c}"/>'
    elif verdict == Verdict.HARD_FAIL.value:
        k = r * 0.85
        shape = (
            f'<path d="M{_n(x - k)},{_n(y - k)} L{_n(x + k)},{_n(y + k)} M{_n(x + k)},{_n(y - k)} '
            f'L{_n(x - k)},{_n(y + k)}" stroke="{c}" stroke-width="3" stroke-linecap="round"/>'
        )
    else:
        shape = f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{_n(r * 0.8)}" fill="#fff" stroke="{c}" stroke-width="1.5"/>'
    return f'<g class="pt {cls}"><title>{_esc(label)}</title>{shape}</g>'


def _legend_marks(extra: Iterable[str] = ()) -> str:
    items = [
        f"<li>{_mark(Verdict(k))} — {desc}</li>"
        for k, desc in (
            ("pass", "the interval's worse end is within the margin"),
            ("improved", "better than the baseline, significantly"),
            ("inconclusive", "the interval straddles the margin: more items would decide it"),
            ("regressed", "worse than the margin, significant after Holm across metrics"),
            ("hard-fail", "outside the metric's hard limit, whatever the baseline says"),
            ("not-gated", "reported only (no margin)"),
        )
    ]
    items += [f"<li>{e}</li>" for e in extra]
    return f'<ul class="legend">{"".join(items)}</ul>'


# --------------------------------------------------------------------------- page shell

_CSS = """
:root{--fg:#1b1f24;--muted:#5b6570;--line:#d7dce1;--soft:#f4f6f8;--accent:#0072B2;
--pass:#0072B2;--improved:#009E73;--inconclusive:#E69F00;--regressed:#D55E00;--hard:#B33C00;--none:#767676}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;color:var(--fg);background:#fff;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Noto Sans CJK JP","Noto Sans JP","Hiragino Sans","Yu Gothic UI",Meiryo,sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:1.55rem;margin:0 0 4px;line-height:1.25;word-break:break-word}
h2{font-size:1.2rem;margin:36px 0 10px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:1.02rem;margin:22px 0 8px}
p{margin:6px 0}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Noto Sans Mono CJK JP",monospace;font-size:.9em;overflow-wrap:anywhere}
.muted{color:var(--muted)}
.sub{color:var(--muted);margin:0 0 14px}
nav.toc{display:flex;flex-wrap:wrap;gap:6px 16px;font-size:.9rem;margin:10px 0 0}
nav.toc a{color:var(--accent);text-decoration:none}
nav.toc a:hover{text-decoration:underline}
.banner{border-radius:8px;padding:16px 20px;margin:18px 0 8px;border-left:10px solid;background:var(--soft)}
.banner .word{font-size:1.6rem;font-weight:800;letter-spacing:.04em}
.banner .why{font-size:1.05rem;margin-top:4px}
.banner.promote{border-color:var(--pass);background:#e8f2f9}
.banner.refuse{border-color:var(--regressed);background:#fbece4}
.banner.inconclusive{border-color:var(--inconclusive);background:#fdf4e3}
.banner.promote .word{color:#005a8c}.banner.refuse .word{color:#a33d00}.banner.inconclusive .word{color:#8a5a00}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:8px 18px;margin:12px 0;font-size:.92rem}
.facts div{min-width:0}.facts b{display:block;font-size:.78rem;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.03em}
.facts span{overflow-wrap:anywhere}
ul.reasons{margin:6px 0 0;padding-left:20px}
ul.reasons li{margin:3px 0}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--soft);font-weight:600;position:sticky;top:0;z-index:1}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.block td{background:#fdf1ea}
tr.warn td{background:#fdf7ea}
.tablewrap{overflow-x:auto;max-width:100%}
.mark{font-weight:600;white-space:nowrap}
.v-pass{color:var(--pass)}.v-improved{color:var(--improved)}.v-inconclusive{color:#a86f00}
.v-regressed{color:var(--regressed)}.v-hard{color:var(--hard)}.v-none{color:var(--none)}
ul.legend{list-style:none;padding:0;margin:8px 0;display:flex;flex-wrap:wrap;gap:4px 22px;font-size:.85rem;color:var(--muted)}
.plot{margin:8px 0;overflow-x:auto}
.plot svg{display:block;width:100%;height:auto;min-width:640px;font-family:inherit}
.caption{font-size:.85rem;color:var(--muted);margin:4px 0 0}
.level{display:inline-block;background:#eef1f4;border-radius:4px;padding:1px 8px;font-size:.85rem;font-weight:600;color:var(--fg)}
.filters{display:flex;flex-wrap:wrap;gap:8px 18px;align-items:center;background:var(--soft);padding:10px 12px;border-radius:6px;margin:8px 0;font-size:.9rem}
.filters label{display:flex;gap:6px;align-items:center}
.filters select,.filters input[type=search]{font:inherit;padding:3px 6px;border:1px solid var(--line);border-radius:4px;background:#fff;max-width:260px}
#dd-count{font-weight:600}
table.items{table-layout:fixed;min-width:900px}
table.items td{word-break:break-word}
table.items col.c-moved{width:92px}table.items col.c-item{width:150px}table.items col.c-q{width:19%}
table.items col.c-scores{width:210px}
.answer{white-space:pre-wrap;line-height:1.45}
.answer.same{color:var(--muted)}
details.more{border:none;padding:0;margin:2px 0}
details.more>summary{font-weight:400;font-size:.8rem;color:var(--accent);padding:2px 0}
details.more[open]>summary{border:none;margin:0}
.meta{font-size:.8rem;color:var(--muted);margin-top:4px}
.ctl{background:#ffe6a8;color:#5a3b00;border-radius:3px;padding:0 2px;font-family:ui-monospace,monospace;font-size:.8em}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:.78rem;font-weight:700;white-space:nowrap}
.badge.worse{background:#fbe0d1;color:#8f3500}.badge.better{background:#d5f0e6;color:#00573f}
.badge.mixed{background:#fdf0d2;color:#7a5200}.badge.changed{background:#e6e9ee;color:#3b4550}
.badge.same{background:#f0f2f4;color:#6b7580}
.badge.error{background:#fbe0d1;color:#8f3500}.badge.warning{background:#fdf0d2;color:#7a5200}.badge.info{background:#e6e9ee;color:#3b4550}
ul.deltas{list-style:none;margin:0;padding:0;font-size:.82rem}
ul.deltas li{margin:1px 0}
.d-worse{color:#a33d00}.d-better{color:#00704f}.d-neutral{color:var(--muted)}
.quote{border-left:4px solid var(--line);background:var(--soft);margin:6px 0;padding:8px 12px;border-radius:0 6px 6px 0}
.quote.bad{border-left-color:var(--regressed)}
.quote .answer{font-size:.95rem}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:10px}
@media (max-width:760px){.pair{grid-template-columns:1fr}main{padding:14px}}
details{border:1px solid var(--line);border-radius:6px;margin:10px 0;padding:0 12px}
details>summary{cursor:pointer;padding:9px 0;font-weight:600}
details[open]>summary{border-bottom:1px solid var(--line);margin-bottom:8px}
details>*:last-child{margin-bottom:10px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:14px}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 10px;break-inside:avoid}
.card h4{margin:0 0 2px;font-size:.92rem;word-break:break-word}
.card svg{width:100%;height:auto;display:block}
.key{display:inline-flex;align-items:center;gap:5px;margin-right:14px;font-size:.82rem;color:var(--muted)}
.swatch{display:inline-block;width:18px;height:0;border-top:3px solid}
.swatch.dash{border-top-style:dashed}
ol.events{padding-left:22px}ol.events li{margin:4px 0}
footer{margin-top:40px;font-size:.8rem;color:var(--muted);border-top:1px solid var(--line);padding-top:8px}
@media print{
 body{font-size:10pt}main{max-width:none;padding:0}
 nav.toc,.filters,.noprint{display:none!important}
 .banner{break-inside:avoid;-webkit-print-color-adjust:exact;print-color-adjust:exact}
 th{position:static}
 tr,.card,.quote,figure{break-inside:avoid}
 h2{break-after:avoid}
 .plot svg{min-width:0}
 table.items{min-width:0}
 details{border:none;padding:0}
 *{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""

# The only script in a page; its sha256 goes into the Content-Security-Policy, so no other
# script (an injected one included) can run. It filters the per-item table and opens every
# <details> for printing.
_JS = """
(function(){
"use strict";
var dd=document.getElementById("drilldown");
if(dd){
 var rows=Array.prototype.slice.call(dd.querySelectorAll("tbody tr.item"));
 var fs=document.getElementById("f-suite"),fc=document.getElementById("f-category"),
     fm=document.getElementById("f-metric"),fx=document.getElementById("f-changed"),
     fq=document.getElementById("f-text"),count=document.getElementById("dd-count");
 var has=function(sel,v){for(var i=0;i<sel.options.length;i++){if(sel.options[i].value===v){return true;}}return false;};
 var apply=function(){
  var s=fs.value,c=fc.value,m=fm.value,ch=fx.checked,q=fq.value.trim().toLowerCase(),shown=0;
  rows.forEach(function(r){
   var ok=(!s||r.getAttribute("data-suite")===s)&&(!c||r.getAttribute("data-category")===c)&&
     (!m||(" "+r.getAttribute("data-metrics")+" ").indexOf(" "+m+" ")>=0)&&
     (!ch||r.getAttribute("data-changed")==="1")&&(!q||r.textContent.toLowerCase().indexOf(q)>=0);
   r.hidden=!ok;if(ok){shown++;}
  });
  count.textContent="Showing "+shown+" of "+rows.length+" items";
  dd.setAttribute("data-shown",String(shown));
 };
 var toHash=function(){
  var p=[];
  if(fs.value){p.push("suite="+encodeURIComponent(fs.value));}
  if(fc.value){p.push("category="+encodeURIComponent(fc.value));}
  if(fm.value){p.push("metric="+encodeURIComponent(fm.value));}
  if(!fx.checked){p.push("changed=all");}
  if(fq.value){p.push("q="+encodeURIComponent(fq.value));}
  try{history.replaceState(null,"",p.length?"#"+p.join("&"):location.pathname+location.search);}catch(e){}
 };
 var fromHash=function(){
  var h=location.hash.replace(/^#/,""),p={};
  h.split("&").forEach(function(kv){var i=kv.indexOf("=");if(i>0){try{p[kv.slice(0,i)]=decodeURIComponent(kv.slice(i+1));}catch(e){}}});
  var known=("suite" in p)||("category" in p)||("metric" in p)||("changed" in p)||("q" in p);
  fs.value=(p.suite&&has(fs,p.suite))?p.suite:"";
  fc.value=(p.category&&has(fc,p.category))?p.category:"";
  fm.value=(p.metric&&has(fm,p.metric))?p.metric:"";
  fx.checked=p.changed!=="all";
  fq.value=p.q||"";
  apply();
  return known;
 };
 [fs,fc,fm,fx].forEach(function(el){el.addEventListener("change",function(){apply();toHash();});});
 fq.addEventListener("input",function(){apply();toHash();});
 window.addEventListener("hashchange",function(){if(fromHash()){dd.scrollIntoView();}});
 fromHash();
 dd.classList.add("js");
}
var opened=[];
window.addEventListener("beforeprint",function(){
 Array.prototype.forEach.call(document.querySelectorAll("details:not([open])"),function(d){d.open=true;opened.push(d);});
});
window.addEventListener("afterprint",function(){opened.forEach(function(d){d.open=false;});opened=[];});
document.documentElement.setAttribute("data-ready","1");
})();
"""


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(_JS.encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def _page(kind: str, title: str, body: str) -> str:
    from dpo_harness import __version__

    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_esc(_csp())}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="dpo-harness {_esc(__version__)}">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f'<body>\n<main data-page="{_esc(kind)}">\n{body}\n'
        f"<footer>dpo-harness {_esc(__version__)} · a self-contained page: "
        "nothing is loaded from the network.</footer>\n</main>\n"
        f"<script>{_JS}</script>\n</body>\n</html>\n"
    )


def _toc(entries: Sequence[tuple[str, str]]) -> str:
    links = "".join(f'<a href="#{_esc(a)}">{_esc(t)}</a>' for a, t in entries)
    return f'<nav class="toc" aria-label="sections">{links}</nav>'


def _facts(pairs: Sequence[tuple[str, str]]) -> str:
    """Label/value pairs; values are HTML already."""
    return (
        '<div class="facts">'
        + "".join(f"<div><b>{_esc(k)}</b><span>{v}</span></div>" for k, v in pairs)
        + "</div>"
    )


def _table(
    headers: Sequence[str], rows: Iterable[str], *, cls: str = "", num: Sequence[int] = ()
) -> str:
    head = "".join(
        f'<th{" class=num" if i in num else ""} scope="col">{_esc(h)}</th>'
        for i, h in enumerate(headers)
    )
    klass = f' class="{cls}"' if cls else ""
    return f'<div class="tablewrap"><table{klass}><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _td(content: str, *, num: bool = False, attrs: str = "") -> str:
    return f"<td{' class=num' if num else ''}{attrs}>{content}</td>"


def _short_hash(value: str | None, n: int = 19) -> str:
    if not value:
        return '<span class="muted">n/a</span>'
    return f'<code title="{_esc(value)}">{_esc(_short(value, n))}</code>'


# --------------------------------------------------------------------------- forest plot


@dataclass
class _ForestRow:
    label: str
    verdict: str  # a Verdict value
    est: float | None  # in margin units, oriented (right = better; band: right = higher)
    lo: float | None
    hi: float | None
    lines: tuple[float, ...]  # margin lines, in the same units
    band: bool
    text: str  # Δ and interval in metric units
    tooltip: str
    href: str | None = None
    word: str | None = None  # the verdict's label, when the page has its own words


def _forest_svg(rows: Sequence[_ForestRow], *, axis: str, label: str) -> str:
    """One row per metric on a common axis (Δ in units of each metric's margin δ)."""
    if not rows:
        return '<p class="muted">No gated metric to plot.</p>'
    values = [v for r in rows for v in (r.est, r.lo, r.hi, *r.lines) if v is not None]
    d_lo = max(-10.0, min(-1.5, *(values or [0.0])))
    d_hi = min(8.0, max(1.5, *(values or [0.0])))
    pad = 0.04 * (d_hi - d_lo)
    d_lo, d_hi = d_lo - pad, d_hi + pad
    width, left, right = 1000.0, 250.0, 640.0
    verdict_x, text_x = right + 14, right + 128
    row_h, top = 26.0, 34.0
    height = top + row_h * len(rows) + 40

    def x(v: float) -> float:
        v = min(max(v, d_lo), d_hi)
        return left + (v - d_lo) / (d_hi - d_lo) * (right - left)

    parts = [
        f'<svg class="forest" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_n(width)} {_n(height)}" '
        f'role="img" aria-label="{_esc(label)}">',
        f"<title>{_esc(label)}</title>",
        f'<text x="{_n(left)}" y="16" font-size="12" fill="#5b6570">worse ◀</text>',
        f'<text x="{_n(right)}" y="16" font-size="12" fill="#5b6570" text-anchor="end">▶ better</text>',
        '<text x="8" y="16" font-size="12" font-weight="600" fill="#5b6570">metric</text>',
        f'<text x="{_n(verdict_x)}" y="16" font-size="12" font-weight="600" fill="#5b6570">verdict</text>',
        f'<text x="{_n(text_x)}" y="16" font-size="12" font-weight="600" fill="#5b6570">Δ and interval (metric units)</text>',
    ]
    step = 1.0 if d_hi - d_lo <= 12 else 2.0
    k = math.ceil(d_lo / step)
    bottom = top + row_h * len(rows)
    while k * step <= d_hi:
        t = k * step
        name = (
            "0"
            if t == 0
            else f"{t:+g}δ".replace("+1δ", "+δ").replace("-1δ", "−δ").replace("-", "−")
        )
        parts.append(
            f'<line x1="{_n(x(t))}" y1="{_n(top - 4)}" x2="{_n(x(t))}" y2="{_n(bottom)}" '
            f'stroke="{"#8a939c" if t == 0 else "#e3e7eb"}" stroke-width="{1.2 if t == 0 else 1}"/>'
            f'<text x="{_n(x(t))}" y="{_n(bottom + 16)}" font-size="11" text-anchor="middle" fill="#5b6570">{name}</text>'
        )
        k += 1
    parts.append(
        f'<text x="{_n((left + right) / 2)}" y="{_n(bottom + 33)}" font-size="11.5" text-anchor="middle" fill="#5b6570">{_esc(axis)}</text>'
    )
    for i, r in enumerate(rows):
        y0 = top + i * row_h
        yc = y0 + row_h / 2
        g = [f'<g class="frow" data-verdict="{_esc(r.verdict)}"><title>{_esc(r.tooltip)}</title>']
        if i % 2 == 0:
            g.append(
                f'<rect x="0" y="{_n(y0)}" width="{_n(width)}" height="{_n(row_h)}" fill="#f6f8fa"/>'
            )
        # the zone beyond the margin, lightly shaded
        if r.lines:
            worst = min(r.lines)
            if worst > d_lo:
                g.append(
                    f'<rect x="{_n(left)}" y="{_n(y0 + 3)}" width="{_n(x(worst) - left)}" height="{_n(row_h - 6)}" fill="#D55E00" fill-opacity=".09"/>'
                )
            if r.band and max(r.lines) < d_hi:
                g.append(
                    f'<rect x="{_n(x(max(r.lines)))}" y="{_n(y0 + 3)}" width="{_n(right - x(max(r.lines)))}" height="{_n(row_h - 6)}" fill="#D55E00" fill-opacity=".09"/>'
                )
            for m in r.lines:
                if d_lo <= m <= d_hi:
                    g.append(
                        f'<line class="margin" x1="{_n(x(m))}" y1="{_n(y0 + 2)}" x2="{_n(x(m))}" y2="{_n(y0 + row_h - 2)}" '
                        'stroke="#1b1f24" stroke-width="1.6" stroke-dasharray="4 3"/>'
                    )
        label = _short(r.label, 36)
        text = f'<text x="8" y="{_n(yc + 4)}" font-size="12.5" fill="#1b1f24">{_esc(label)}</text>'
        if r.href:
            text = f'<a href="{_esc(r.href)}">{text}</a>'
        g.append(text)
        cls, _, vlabel = _VERDICT_STYLE.get(r.verdict, ("v-none", "?", r.verdict))
        vlabel = r.word or vlabel
        colour = _COLOURS[cls]
        if r.lo is not None and r.hi is not None:
            x1, x2 = x(r.lo), x(r.hi)
            g.append(
                f'<line class="ci" x1="{_n(x1)}" y1="{_n(yc)}" x2="{_n(x2)}" y2="{_n(yc)}" stroke="{colour}" stroke-width="2.2"/>'
            )
            for v, xx in ((r.lo, x1), (r.hi, x2)):
                if d_lo < v < d_hi:
                    g.append(
                        f'<line x1="{_n(xx)}" y1="{_n(yc - 5)}" x2="{_n(xx)}" y2="{_n(yc + 5)}" stroke="{colour}" stroke-width="2"/>'
                    )
                else:  # clipped: an arrowhead says the interval goes on
                    s = -1 if v <= d_lo else 1
                    g.append(
                        f'<path d="M{_n(xx + s * 7)},{_n(yc)} L{_n(xx)},{_n(yc - 5)} L{_n(xx)},{_n(yc + 5)} Z" fill="{colour}"/>'
                    )
        if r.est is not None:
            g.append(_svg_mark(r.verdict, x(r.est), yc))
        else:
            g.append(_svg_mark(r.verdict, left - 12, yc))
        g.append(
            f'<text x="{_n(verdict_x)}" y="{_n(yc + 4)}" font-size="12" font-weight="600" fill="{colour}">{_esc(vlabel)}</text>'
            f'<text x="{_n(text_x)}" y="{_n(yc + 4)}" font-size="12" fill="#1b1f24">{_esc(_short(r.text, 36))}</text>'
        )
        g.append("</g>")
        parts.append("".join(g))
    parts.append("</svg>")
    return "".join(parts)


def _orient(direction: Direction) -> float:
    return -1.0 if direction is Direction.LOWER else 1.0


def _scaled(
    direction: Direction,
    margin: float | None,
    diff: float | None,
    lo: float | None,
    hi: float | None,
) -> tuple[float | None, float | None, float | None, tuple[float, ...]]:
    """Δ, interval and margin lines in units of the margin, oriented so that right = better."""
    sign = _orient(direction)
    candidates = [abs(v) for v in (diff, lo, hi) if v is not None and math.isfinite(v)]
    if margin is not None and margin > 0:
        scale = margin
    elif candidates and max(candidates) > 0:
        scale = max(candidates)  # a zero margin: show the shape, the line sits at 0
    else:
        scale = 1.0
    m = 0.0 if margin is None else margin / scale
    lines: tuple[float, ...] = (-m, m) if direction is Direction.BAND else (-m,)
    if margin is None:
        lines = ()

    def s(v: float | None) -> float | None:
        return None if v is None or not math.isfinite(v) else sign * v / scale

    a, b = s(lo), s(hi)
    if a is not None and b is not None and a > b:
        a, b = b, a
    return s(diff), a, b, lines


def _gate_forest_rows(decision: GateDecision) -> list[_ForestRow]:
    rows = []
    shown = (
        Verdict.PASS,
        Verdict.IMPROVED,
        Verdict.INCONCLUSIVE,
        Verdict.REGRESSED,
        Verdict.HARD_FAIL,
    )
    order = {
        Verdict.HARD_FAIL: 0,
        Verdict.REGRESSED: 1,
        Verdict.INCONCLUSIVE: 2,
        Verdict.IMPROVED: 3,
        Verdict.PASS: 4,
    }
    verdicts = sorted(
        (v for v in decision.verdicts if v.verdict in shown),
        key=lambda v: order[v.verdict],
    )
    for v in verdicts:
        margin_ok = v.margin is not None and v.margin > 0
        if v.verdict is Verdict.HARD_FAIL and not margin_ok:
            est = lo = hi = None
            lines: tuple[float, ...] = ()
        else:
            est, lo, hi, lines = _scaled(v.direction, v.margin, v.diff, v.ci_low, v.ci_high)
        unit = f" {v.unit}" if v.unit and v.unit not in ("share", "ratio") else ""
        if v.diff is not None:  # units are in the table and the tooltip: keep the column narrow
            text = f"Δ {_signed(v.diff)} {_interval_text(v.ci_low, v.ci_high)}"
        else:
            text = f"{_fmt(v.candidate)}{unit} (baseline {_fmt(v.baseline)})"
        margin_text = (
            ""
            if v.margin is None
            else (f" ±{v.margin:g}" if v.direction is Direction.BAND else f" {v.margin:g}")
        )
        rows.append(
            _ForestRow(
                label=v.name,
                verdict=v.verdict.value,
                est=est,
                lo=lo,
                hi=hi,
                lines=lines,
                band=v.direction is Direction.BAND,
                text=text,
                tooltip=f"{v.reason} (margin{margin_text or ' none'}; direction {v.direction.value})",
                href=f"#suite={v.suite}&metric={v.name}",
            )
        )
    return rows


# --------------------------------------------------------------------------- per-item drill-down


@dataclass
class _Delta:
    metric: str
    before: float | None
    after: float | None
    score: float  # |Δ| in units of the metric's spread over the baseline's items
    tone: str  # worse | better | neutral


@dataclass
class _Item:
    suite: str
    item_id: str
    category: str
    before: SampleRecord | None
    after: SampleRecord | None
    deltas: list[_Delta] = field(default_factory=list)

    @property
    def gated(self) -> list[_Delta]:
        return [d for d in self.deltas if d.tone != "info"]

    @property
    def changed(self) -> bool:
        return bool(self.gated)

    @property
    def moved(self) -> float:
        return max((d.score for d in self.gated), default=0.0)

    @property
    def tone(self) -> str:
        tones = {d.tone for d in self.gated}
        if not tones:
            return "same"
        if tones == {"worse"} or tones == {"worse", "neutral"}:
            return "worse"
        if tones == {"better"} or tones == {"better", "neutral"}:
            return "better"
        if "worse" in tones and "better" in tones:
            return "mixed"
        return "changed"


_SAME = 1e-5  # relative difference below which two per-item values are the same


def _spread(m: MetricResult) -> float:
    vals = [v for v in m.per_sample.values() if v is not None]
    if len(vals) >= 2:
        mean = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
        if sd > 1e-12:
            return sd
    return m.margin if m.margin else 1.0


def _category(*records: SampleRecord | None) -> str:
    for rec in records:
        if rec is None:
            continue
        for key in ("category", "type"):
            value = rec.extra.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


def _item_deltas(suite_before: SuiteResult, suite_after: SuiteResult) -> dict[str, list[_Delta]]:
    out: dict[str, list[_Delta]] = {}
    before = {m.name: m for m in suite_before.metrics}
    for m in suite_after.metrics:
        b = before.get(m.name)
        if b is None or not m.per_sample:
            continue
        scale = _spread(b)
        sign = _orient(m.direction)
        for item_id, after in m.per_sample.items():
            if item_id not in b.per_sample:
                continue
            prior = b.per_sample[item_id]
            if prior is None and after is None:
                continue
            if prior is not None and after is not None:
                diff = after - prior
                # Float noise (batch composition moves a log-likelihood by ~1e-7) is no change.
                if abs(diff) <= _SAME * max(1.0, abs(prior), abs(after)):
                    continue
                score = abs(diff) / scale
                if m.direction is Direction.INFO:
                    tone = "info"
                elif m.direction is Direction.BAND:
                    tone = "neutral"
                else:
                    tone = "worse" if sign * diff < 0 else "better"
            else:
                # Scored on one side only (e.g. a metric that skips short answers): listed, but
                # not counted as a move, since there is nothing to subtract.
                score = 0.0
                tone = "info"
            out.setdefault(item_id, []).append(
                _Delta(f"{suite_after.name}::{m.name}", prior, after, score, tone)
            )
    return out


def _collect_items(before: EvalReport, after: EvalReport) -> list[_Item]:
    items: list[_Item] = []
    before_suites = {s.name: s for s in before.suites}
    for s_after in after.suites:
        s_before = before_suites.get(s_after.name)
        if s_before is None:
            continue
        deltas = _item_deltas(s_before, s_after)
        recs_before = {r.item_id: r for r in s_before.samples}
        recs_after = {r.item_id: r for r in s_after.samples}
        ids: dict[str, None] = {}
        for r in s_after.samples:
            ids[r.item_id] = None
        for m in s_after.metrics:
            for i in m.per_sample:
                ids[i] = None
        for i in ids:
            rb, ra = recs_before.get(i), recs_after.get(i)
            ds = sorted(deltas.get(i, []), key=lambda d: -d.score)
            items.append(_Item(s_after.name, i, _category(ra, rb), rb, ra, ds))
    changed = sorted(
        (it for it in items if it.changed), key=lambda it: (-it.moved, it.suite, it.item_id)
    )
    same = [it for it in items if not it.changed]
    return changed + same


def _mc_detail(rec: SampleRecord) -> str:
    lps = rec.extra.get("logprobs")
    if not isinstance(lps, list) or not lps:
        return ""
    vals = [_finite(v) for v in lps]
    finite = [(k, v) for k, v in enumerate(vals) if v is not None]
    if not finite:
        return '<div class="meta">log-likelihoods: all non-finite</div>'
    pick = max(finite, key=lambda kv: kv[1])[0]
    shown = " · ".join(
        (f"<b>{_fmt(v)}</b>" if k == pick else _fmt(v)) if v is not None else "NaN"
        for k, v in enumerate(vals)
    )
    right = rec.response is not None and rec.target is not None and rec.response == rec.target
    verdict = (
        '<span class="d-better">✔ the gold option</span>'
        if right
        else '<span class="d-worse">✘ not the gold option</span>'
    )
    return f'<div class="meta">chosen option {pick + 1} of {len(vals)} · {verdict}<br>log-likelihood per option: {shown}</div>'


_EXTRA_SKIP = {"category", "type", "logprobs"}


def _extra_meta(rec: SampleRecord) -> str:
    parts = []
    for key, value in rec.extra.items():
        if key in _EXTRA_SKIP:
            continue
        if isinstance(value, bool):
            shown = "yes" if value else "no"
        elif isinstance(value, (int, float)):
            shown = _fmt(float(value))
        elif isinstance(value, str):
            shown = _visible(value, 80)
            parts.append(f"{_esc(key.replace('_', ' '))}: <span class=mono>{shown}</span>")
            continue
        elif value is None:
            shown = "n/a"
        else:
            continue
        parts.append(f"{_esc(key.replace('_', ' '))}: {_esc(shown)}")
    return f'<div class="meta">{" · ".join(parts)}</div>' if parts else ""


def _answer_text(text: str | None, preview: int, limit: int) -> str:
    """An answer: its first ``preview`` characters shown, the rest (up to ``limit``) folded away."""
    if text is None or len(text) <= preview + 40:
        return f'<div class="answer">{_visible(text, limit)}</div>'
    shown = min(len(text), limit)
    return (
        f'<div class="answer">{_visible(text[:preview])}</div><details class="more"><summary>'
        f"show the rest ({len(text) - preview:,} more characters)</summary>"
        f'<div class="answer">{_visible(text[preview:shown])}'
        + (
            f'<span class="muted"> … ({len(text) - shown:,} more characters)</span>'
            if shown < len(text)
            else ""
        )
        + "</div></details>"
    )


def _answer_cell(
    rec: SampleRecord | None, *, preview: int = 280, limit: int = MAX_ANSWER_CHARS
) -> str:
    if rec is None:
        return '<span class="muted">(no text recorded for this item)</span>'
    body = (
        _answer_text(rec.response, min(preview, limit), limit) if rec.response is not None else ""
    )
    return body + _mc_detail(rec) + _extra_meta(rec)


def _same_answer(a: SampleRecord | None, b: SampleRecord | None) -> bool:
    return a is not None and b is not None and a.response == b.response and a.extra == b.extra


def _delta_list(deltas: Sequence[_Delta], limit: int = 6) -> str:
    if not deltas:
        return '<span class="muted">no score changed</span>'
    arrow = {"worse": "▼", "better": "▲", "neutral": "◆", "info": "·"}
    lis = [
        f'<li class="d-{d.tone if d.tone in ("worse", "better") else "neutral"}" title="{_esc(d.metric)}">'
        f"{arrow[d.tone]} {_esc(d.metric.split('::', 1)[-1])} {_esc(_fmt(d.before))} → {_esc(_fmt(d.after))}</li>"
        for d in deltas[:limit]
    ]
    if len(deltas) > limit:
        lis.append(f'<li class="d-neutral">+{len(deltas) - limit} more</li>')
    return f'<ul class="deltas">{"".join(lis)}</ul>'


def _item_row(it: _Item, *, answer_limit: int, prompt_limit: int) -> str:
    metrics_attr = " ".join(d.metric for d in it.gated)
    hidden = "" if it.changed else " hidden"
    rec = it.after or it.before
    question = (
        _visible(rec.prompt, prompt_limit) if rec and rec.prompt else '<span class="muted">—</span>'
    )
    if rec is not None and rec.target:
        question += (
            f'<div class="meta">expected: {_visible(rec.target, min(200, prompt_limit))}</div>'
        )
    if _same_answer(it.before, it.after):
        answers = _td(
            '<div class="meta">identical answer</div>' + _answer_cell(it.after, limit=answer_limit),
            attrs=' colspan="2"',
        )
    else:
        answers = _td(_answer_cell(it.before, limit=answer_limit)) + _td(
            _answer_cell(it.after, limit=answer_limit)
        )
    badge = f'<span class="badge {it.tone}">{it.tone}</span>'
    moved = f'{badge}<div class="meta">{it.moved:.3g} sd</div>' if it.changed else badge
    cat = f'<div class="meta">{_esc(it.category)}</div>' if it.category else ""
    return (
        f'<tr class="item" data-suite="{_esc(it.suite)}" data-category="{_esc(it.category)}" '
        f'data-changed="{int(it.changed)}" data-metrics="{_esc(metrics_attr)}"{hidden}>'
        f"{_td(moved)}{_td(f'<b>{_esc(it.suite)}</b><br><code>{_esc(it.item_id)}</code>{cat}')}"
        f"{_td(question)}{answers}{_td(_delta_list(it.deltas))}</tr>"
    )


def _drilldown(
    before: EvalReport, after: EvalReport, *, before_label: str, after_label: str
) -> str:
    everything = _collect_items(before, after)
    n_changed_all = sum(1 for it in everything if it.changed)
    if not everything:
        return (
            '<section id="drilldown"><p class="muted">No per-item results to compare.</p></section>'
        )
    # Keep the page small whatever the suites hold: texts get a share of a fixed character
    # budget, and rows stop when the table reaches its byte budget (changed items come first,
    # the most moved first, so what is left out is what moved least).
    answer_limit = max(160, min(MAX_ANSWER_CHARS, ANSWER_BUDGET_CHARS // (2 * len(everything))))
    prompt_limit = max(80, min(MAX_PROMPT_CHARS, PROMPT_BUDGET_CHARS // len(everything)))
    rows: list[str] = []
    items: list[_Item] = []
    size = 0
    for it in everything:
        row = _item_row(it, answer_limit=answer_limit, prompt_limit=prompt_limit)
        size += len(row.encode("utf-8"))
        if size > TABLE_BUDGET_BYTES or len(rows) >= MAX_ITEMS:
            break
        rows.append(row)
        items.append(it)
    n_changed = sum(1 for it in items if it.changed)
    dropped = len(everything) - len(items)
    suites: dict[str, list[int]] = {}
    for it in items:
        c = suites.setdefault(it.suite, [0, 0])
        c[0] += 1
        c[1] += int(it.changed)
    categories = sorted({it.category for it in items if it.category})
    metrics = sorted({d.metric for it in items for d in it.gated})
    opts_s = "".join(
        f'<option value="{_esc(s)}">{_esc(s)} ({c[1]} changed of {c[0]})</option>'
        for s, c in suites.items()
    )
    opts_c = "".join(f'<option value="{_esc(c)}">{_esc(c)}</option>' for c in categories)
    opts_m = "".join(f'<option value="{_esc(m)}">{_esc(m)}</option>' for m in metrics)
    filters = (
        '<div class="filters" role="group" aria-label="filter the items">'
        f'<label>suite <select id="f-suite"><option value="">all suites</option>{opts_s}</select></label>'
        f'<label>category <select id="f-category"><option value="">all categories</option>{opts_c}</select></label>'
        f'<label>metric <select id="f-metric"><option value="">any metric</option>{opts_m}</select></label>'
        '<label><input type="checkbox" id="f-changed" checked> changed items only</label>'
        '<label>search <input type="search" id="f-text" placeholder="id, question or answer"></label>'
        f'<span id="dd-count" aria-live="polite">Showing {n_changed} of {len(items)} items</span>'
        "</div>"
    )
    cols = (
        '<colgroup><col class="c-moved"><col class="c-item"><col class="c-q"><col><col>'
        '<col class="c-scores"></colgroup>'
    )
    head = "".join(
        f'<th scope="col"{t}>{h}</th>'
        for h, t in (
            (
                "moved",
                ' title="how far the item moved: its largest per-item change, in standard deviations of that metric over the baseline&#39;s items"',
            ),
            ("item", ""),
            ("question", ""),
            (_esc(before_label), ""),
            (_esc(after_label), ""),
            ("scores that changed", ""),
        )
    )
    note = (
        f'<p class="muted">{dropped:,} of {len(everything):,} items are left out to keep the page small '
        f"({n_changed_all - n_changed:,} of them changed: the ones that moved least).</p>"
        if dropped
        else ""
    )
    intro = (
        f"<p>{n_changed_all:,} of {len(everything):,} items changed a score. Sorted by how far they moved "
        "(the largest per-item change, in standard deviations of that metric over the baseline's items); "
        "▼ worse, ▲ better, ◆ moved either way on a band metric. Answers longer than "
        f"{answer_limit:,} characters are cut; <code>report.json</code> has them whole. Per-item "
        f"differences below {_SAME:g} (relative) are float noise and do not count as a change. "
        "Link to a filtered view with e.g. <code>#suite=adtech&amp;changed=all</code>.</p>"
    )
    if n_changed_all == 0:
        intro += (
            '<p class="banner promote" id="dd-none">No item changed a score: every answer scores '
            "as before. Untick <i>changed items only</i> to browse all the answers.</p>"
        )
    return (
        f'<section id="drilldown" data-changed="{n_changed}">{intro}{filters}'
        f'<div class="tablewrap"><table class="items" id="changed-items">{cols}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{note}</section>"
    )


# --------------------------------------------------------------------------- shared sections


def _findings(report: EvalReport, *, open_: bool = False) -> str:
    found = [(s.name, f) for s in report.suites for f in s.findings]
    order = {"error": 0, "warning": 1, "info": 2}
    found.sort(key=lambda sf: (sf[0] != "numerical", order.get(sf[1].severity, 3)))
    counts = {k: sum(1 for _, f in found if f.severity == k) for k in ("error", "warning", "info")}
    summary = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in counts.items() if n) or "none"
    if found:
        items = "".join(
            f'<li><span class="badge {_esc(f.severity)}">{_esc(f.severity)}</span> <b>{_esc(name)}</b>'
            + (f" <code>{_esc(f.metric)}</code>" if f.metric else "")
            + f": {_visible(f.message, 2000)}</li>"
            for name, f in found
        )
        body = f'<ul class="reasons">{items}</ul>'
    else:
        body = '<p class="muted">No suite reported a finding.</p>'
    skipped: dict[str, list[str]] = {}
    for s in report.suites:
        for metric, why in s.skipped.items():
            skipped.setdefault(why, []).append(f"{s.name}::{metric}")
    if skipped:
        body += (
            "<h3>Skipped metrics</h3><ul class=reasons>"
            + "".join(
                f"<li><code>{_esc(', '.join(ms))}</code>: {_esc(why)}</li>"
                for why, ms in skipped.items()
            )
            + "</ul>"
        )
    return (
        f'<details id="findings"{" open" if open_ else ""}><summary>Findings ({_esc(summary)}) — numerical health, '
        f"tensor names, why a model answers “！！！！”</summary>{body}</details>"
    )


def _model_rows(label: str, m: Any) -> list[str]:
    if m is None:
        return []
    return [
        f"<tr><td>{_esc(label)}</td><td><code>{_esc(m.ref)}</code></td>"
        f"<td>{_esc(m.kind.value)}{' (adapter)' if m.is_adapter else ''}</td>"
        f"<td>{_short_hash(m.fingerprint, 30)}</td><td class=num>{m.n_parameters:,}</td>"
        f"<td>{_esc(m.dtype)} on {_esc(m.device)}</td></tr>"
    ]


def _provenance(
    report: EvalReport, *, baseline: Baseline | None = None, extra: Sequence[tuple[str, str]] = ()
) -> str:
    p = report.provenance
    models = _model_rows("candidate" if baseline else "model", p.model)
    models += _model_rows(f"reference ({p.reference_source})", p.reference)
    if baseline is not None:
        models += _model_rows("baseline", baseline.report.provenance.model)
    model_table = _table(
        ["role", "reference", "kind", "fingerprint", "parameters", "dtype / device"],
        models,
        num=(4,),
    )
    base_suites = baseline.key.suites if baseline is not None else {}
    suite_rows = []
    for name, ident in p.suites.items():
        b = base_suites.get(name)
        same = b is not None and b.version == ident.version and b.data_hash == ident.data_hash
        cmp_ = (
            ""
            if baseline is None
            else (
                f"v{_esc(b.version)} {_short_hash(b.data_hash)}"
                + (" ✔ same" if same else " ✘ differs")
                if b
                else "—"
            )
        )
        suite_rows.append(
            f"<tr><td>{_esc(name)}</td><td>v{_esc(ident.version)}</td><td>{_short_hash(ident.data_hash)}</td>"
            + (f"<td>{cmp_}</td>" if baseline is not None else "")
            + "</tr>"
        )
    suite_table = _table(
        ["suite", "version", "data hash", *(["baseline"] if baseline is not None else [])],
        suite_rows,
    )
    gen = p.generation
    settings: list[tuple[str, str]] = [
        ("created", _esc(p.created_at)),
        ("harness", _esc(p.harness_version)),
        ("command", f"<code>{_esc(p.command)}</code>" if p.command else "n/a"),
        (
            "generation",
            f"greedy, max {gen.max_new_tokens} new tokens"
            + (
                f", system prompt {_esc(_short(gen.system_prompt, 60))}"
                if gen.system_prompt
                else ""
            ),
        ),
        ("device / dtype", f"{_esc(p.device)} / {_esc(p.dtype)}"),
        ("seed / batch", f"{p.seed} / {p.batch_size}"),
        ("host", _esc(p.hostname or "n/a")),
        ("chat template", _short_hash(p.model.chat_template_hash)),
        ("tokenizer", _short_hash(p.model.tokenizer_hash)),
        *extra,
    ]
    if baseline is not None:
        settings += [
            ("baseline created", _esc(baseline.created_at)),
            ("baseline reason", _esc(baseline.reason)),
            ("baseline checksum", _short_hash(baseline.checksum, 30)),
        ]
    libs = ", ".join(f"{_esc(k)} {_esc(v)}" for k, v in p.libraries.items()) or "n/a"
    timings = ", ".join(f"{_esc(k)} {v:.1f} s" for k, v in p.timings.items()) or "n/a"
    return (
        '<details id="provenance"><summary>Provenance — models, fingerprints, suite versions, settings</summary>'
        f"<h3>Models</h3>{model_table}<h3>Suites</h3>{suite_table}<h3>Settings</h3>{_facts(settings)}"
        f"<p><b>Libraries:</b> {libs}</p><p><b>Timings:</b> {timings}</p></details>"
    )


def _worst_by_metric(suite: SuiteResult, m: MetricResult, k: int = 3) -> list[tuple[str, float]]:
    vals = [(i, v) for i, v in m.per_sample.items() if v is not None]
    if m.direction is Direction.HIGHER:
        vals.sort(key=lambda x: x[1])
    elif m.direction is Direction.LOWER:
        vals.sort(key=lambda x: -x[1])
    else:
        return []
    return vals[:k]


def _quote(
    title: str, rec: SampleRecord | None, *, bad: bool = True, fallback: str | None = None
) -> str:
    if rec is not None and rec.prompt:
        q = f'<div class="meta">Q: {_visible(rec.prompt, 200)}</div>'
    else:
        q = ""
    if rec is not None and (rec.response is not None or rec.extra):
        body = _answer_cell(rec, limit=QUOTE_CHARS)
    elif fallback:
        body = f'<div class="answer">{_visible(fallback, QUOTE_CHARS)}</div>'
    else:
        body = '<span class="muted">(no text recorded for this item)</span>'
    return f'<blockquote class="quote{" bad" if bad else ""}"><div class="meta"><b>{title}</b></div>{q}{body}</blockquote>'


# --------------------------------------------------------------------------- the gate page


def _level(decision: GateDecision) -> str:
    alpha = decision.policy.alpha
    return f"{(1 - 2 * alpha) * 100:g}%"


def _names(vs: Sequence[MetricVerdict], limit: int = 4) -> str:
    names = [v.name for v in vs]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _headline(decision: GateDecision) -> tuple[str, str, str]:
    """(css class, word, one sentence)."""
    hard = [v for v in decision.verdicts if v.verdict is Verdict.HARD_FAIL]
    reg = [v for v in decision.verdicts if v.verdict is Verdict.REGRESSED]
    inc = [v for v in decision.verdicts if v.verdict is Verdict.INCONCLUSIVE]
    gated = sum(1 for v in decision.verdicts if v.verdict in (Verdict.PASS, Verdict.IMPROVED))
    if decision.decision == "promote":
        s = f"All {gated} gated metrics are non-inferior to the baseline and every hard limit holds."
        if inc:
            s = (
                f"{gated} gated metrics are non-inferior and every hard limit holds; {len(inc)} inconclusive "
                f"({_names(inc)}) promoted because the policy says so."
            )
        return "promote", "PROMOTE", s
    if not hard and not reg:
        more = [v.additional_items for v in inc if v.additional_items]
        extra = f"; about {max(more):,} more items would decide it" if more else ""
        return (
            "inconclusive",
            "INCONCLUSIVE — refused",
            f"{len(inc)} metric{'s' if len(inc) != 1 else ''} straddle{'s' if len(inc) == 1 else ''} "
            f"{'its' if len(inc) == 1 else 'their'} margin ({_names(inc)}){extra}; the policy refuses an inconclusive gate.",
        )
    parts = []
    if hard:
        parts.append(
            f"{len(hard)} metric{'s' if len(hard) != 1 else ''} failed a hard limit ({_names(hard)})"
        )
    if reg:
        parts.append(f"{len(reg)} regressed beyond the margin ({_names(reg)})")
    if inc:
        parts.append(f"{len(inc)} {'is' if len(inc) == 1 else 'are'} inconclusive")
    return "refuse", "REFUSE", "; ".join(parts) + "."


def _gate_table(decision: GateDecision) -> str:
    rows = []
    for v in decision.verdicts:
        cls = (
            " class=block"
            if v.verdict in _BLOCKING
            else (" class=warn" if v.verdict is Verdict.INCONCLUSIVE else "")
        )
        margin = (
            ""
            if v.margin is None or v.verdict is Verdict.NOT_GATED
            else (f"±{v.margin:g}" if v.direction is Direction.BAND else f"{v.margin:g}")
        )
        p = "" if v.p_regressed_holm is None else f"{v.p_regressed_holm:.3g}"
        unit = f" · {v.unit}" if v.unit else ""
        method = f' title="{_esc(v.method)}"' if v.method else ""
        rows.append(
            f'<tr{cls}><td>{_esc(v.suite)}</td><td><code title="{_esc(v.reason)}">{_esc(v.metric)}</code>'
            f'<div class="meta">{_esc(_BETTER.get(v.direction.value, v.direction.value))}{_esc(unit)}</div></td>'
            f"{_td(_esc(_fmt(v.baseline)), num=True)}{_td(_esc(_fmt(v.candidate)), num=True)}"
            f"{_td(_esc(_signed(v.diff)), num=True)}{_td(_esc(_interval_text(v.ci_low, v.ci_high)), num=True, attrs=method)}"
            f"{_td(_esc(margin), num=True)}{_td(_esc(p), num=True)}{_td(str(v.n_items or ''), num=True)}"
            f"<td>{_mark(v.verdict)}</td></tr>"
        )
    return _table(
        [
            "suite",
            "metric",
            "baseline",
            "candidate",
            "Δ",
            f"{_level(decision)} interval of Δ",
            "margin",
            "p Holm",
            "n",
            "verdict",
        ],
        rows,
        num=(2, 3, 4, 5, 6, 7, 8),
    )


def _worst_answers(decision: GateDecision, report: EvalReport, baseline: Baseline) -> str:
    flagged = [
        v
        for v in decision.verdicts
        if v.examples and v.verdict not in (Verdict.PASS, Verdict.IMPROVED)
    ]
    if not flagged:
        return '<p class="muted">No metric was refused, so no answer is quoted.</p>'
    cand = {s.name: {r.item_id: r for r in s.samples} for s in report.suites}
    base = {s.name: {r.item_id: r for r in s.samples} for s in baseline.report.suites}
    out = []
    for v in flagged:
        out.append(f"<h3>{_mark(v.verdict, text=False)} <code>{_esc(v.name)}</code></h3>")
        for e in v.examples:
            title = f"<code>{_esc(e.item_id)}</code> — candidate {_esc(_fmt(e.candidate))}, baseline {_esc(_fmt(e.baseline))}"
            c = cand.get(v.suite, {}).get(e.item_id)
            b = base.get(v.suite, {}).get(e.item_id)
            out.append(
                '<div class="pair">'
                + _quote(f"candidate · {title}", c, fallback=e.response)
                + _quote("baseline", b, bad=False)
                + "</div>"
            )
    return "".join(out)


def render_gate_html(decision: GateDecision, report: EvalReport, baseline: Baseline) -> str:
    """The page for ``gate``: the candidate's report judged against the stored baseline."""
    cls, word, sentence = _headline(decision)
    level = _level(decision)
    cand = decision.candidate
    reasons = "".join(f"<li>{_esc(r)}</li>" for r in decision.reasons)
    promoted = (
        f"<p>Promoted to <code>{_esc(decision.promoted_to)}</code>.</p>"
        if decision.promoted_to
        else ""
    )
    head = (
        f"<header><h1>Gate: <code>{_esc(cand.ref)}</code></h1>"
        f'<p class="sub">against the baseline of <code>{_esc(decision.baseline_model)}</code> · {_esc(decision.created_at)}</p>'
        + _toc(
            [
                ("verdict", "Verdict"),
                ("forest", "Forest plot"),
                ("metrics", "All metrics"),
                ("items", "Changed items"),
                ("worst", "Worst answers"),
                ("details", "Findings & provenance"),
            ]
        )
        + "</header>"
    )
    banner = (
        f'<section id="verdict" class="banner {cls}" data-decision="{_esc(decision.decision)}">'
        f'<div class="word">{_esc(word)}</div><div class="why">{_esc(sentence)}</div></section>'
        f'<ul class="reasons">{reasons}</ul>{promoted}'
        + _facts(
            [
                ("candidate fingerprint", _short_hash(cand.fingerprint, 30)),
                (
                    "baseline",
                    f"<code>{_esc(decision.baseline_model)}</code> {_short_hash(decision.baseline_checksum, 23)}",
                ),
                (
                    "policy",
                    f"inconclusive → {_esc(decision.policy.inconclusive)}; α = {decision.policy.alpha:g}; Holm across metrics",
                ),
                (
                    "intervals",
                    f'<span class="level">{level} paired intervals</span> (level 1 − 2α)',
                ),
            ]
        )
    )
    forest = (
        '<section id="forest"><h2>Forest plot: every gated metric against its margin</h2>'
        f'<p class="caption"><span class="level">{level} intervals</span> of the paired difference '
        f"(candidate − baseline, item by item), at level 1 − 2α with α = {decision.policy.alpha:g}: an interval whose "
        "worse end stays inside the dashed margin line is non-inferior. Tango score intervals for 0/1 metrics, "
        f"bootstrap-t ({decision.policy.n_resamples:,} resamples, seed {decision.policy.seed}) for continuous ones. "
        "Click a metric to see its items below.</p>"
        '<figure class="plot">'
        + _forest_svg(
            _gate_forest_rows(decision),
            axis="paired Δ in units of each metric's margin δ — right = better (band metrics: right = higher)",
            label=f"forest plot of the gated metrics, {level} intervals",
        )
        + "</figure>"
        + _legend_marks(
            [
                "dashed line — the non-inferiority margin −δ (±δ for band metrics); shaded — beyond it",
                "▶ at an end — the interval goes on past the axis",
                "✖ at the left edge — a hard-limit failure with no margin to plot against",
            ]
        )
        + "</section>"
    )
    table = f'<section id="metrics"><h2>All metrics</h2>{_gate_table(decision)}</section>'
    items = (
        '<section id="items"><h2>Changed items: baseline and candidate side by side</h2>'
        + _drilldown(
            baseline.report, report, before_label="baseline answer", after_label="candidate answer"
        )
        + "</section>"
    )
    worst = f'<section id="worst"><h2>Worst answers of the refused metrics</h2>{_worst_answers(decision, report, baseline)}</section>'
    details = (
        f'<section id="details"><h2>Findings and provenance</h2>{_findings(report)}'
        + _provenance(
            report,
            baseline=baseline,
            extra=[
                (
                    "baseline file",
                    f"<code>{_esc(decision.baseline_path)}</code>"
                    if decision.baseline_path
                    else "n/a",
                ),
                ("gate policy", f"<code>{_esc(decision.policy.model_dump_json())}</code>"),
            ],
        )
        + "</section>"
    )
    title = f"{word.split(' ')[0]} · gate {cand.ref}"
    return _page("gate", title, head + banner + forest + table + items + worst + details)


# --------------------------------------------------------------------------- the evaluate page


def render_eval_html(report: EvalReport) -> str:
    """The page for ``evaluate`` (no baseline): metrics with their hard limits, findings, worst samples."""
    p = report.provenance
    failed = report.failed_hard_limits()
    if failed:
        cls, word = "refuse", "FAIL"
        sentence = (
            f"{len(failed)} hard limit{'s' if len(failed) != 1 else ''} failed: "
            + ", ".join(f"{s}::{m.name}" for s, m in failed[:6])
            + (f" and {len(failed) - 6} more" if len(failed) > 6 else "")
            + "."
        )
    else:
        cls, word = "promote", "PASS"
        n = sum(1 for s in report.suites for m in s.metrics if m.hard_limit_ok is not None)
        sentence = f"All {n} hard limits hold. (Without a baseline, nothing is compared: run gate for that.)"
    head = (
        f"<header><h1>Evaluation: <code>{_esc(p.model.ref)}</code></h1>"
        f'<p class="sub">{_esc(p.model.kind.value)} · {p.model.n_parameters:,} parameters · {_esc(p.dtype)} on {_esc(p.device)} · {_esc(p.created_at)}</p>'
        + _toc(
            [
                ("verdict", "Verdict"),
                ("metrics", "Metrics"),
                ("worst", "Worst samples"),
                ("details", "Findings & provenance"),
            ]
        )
        + "</header>"
        f'<section id="verdict" class="banner {cls}" data-passed="{int(not failed)}"><div class="word">{word}</div>'
        f'<div class="why">{_esc(sentence)}</div></section>'
    )
    blocks = []
    for s in report.suites:
        rows = []
        for m in s.metrics:
            status = (
                _mark(Verdict.HARD_FAIL)
                if m.hard_limit_ok is False
                else (_mark(Verdict.PASS) if m.hard_limit_ok else '<span class="muted">—</span>')
            )
            value = "NaN/inf" if m.nonfinite else _fmt(m.value, m.unit)
            margin = (
                ""
                if m.margin is None
                else (f"±{m.margin:g}" if m.direction is Direction.BAND else f"{m.margin:g}")
            )
            note = f'<div class="meta">{_esc(m.note)}</div>' if m.note else ""
            rows.append(
                f"<tr{' class=block' if m.hard_limit_ok is False else ''}><td><code>{_esc(m.name)}</code>"
                f'<div class="meta">{_esc(m.description)}</div>{note}</td>'
                f"{_td(_esc(value), num=True)}<td>{_esc(m.hard_limit_text() or '—')}</td><td>{status}</td>"
                f"<td>{_esc(m.direction.value)}</td>{_td(_esc(margin), num=True)}{_td(str(len(m.per_sample) or ''), num=True)}</tr>"
            )
        for metric, why in s.skipped.items():
            rows.append(
                f'<tr><td><code>{_esc(metric)}</code></td><td class=num>skipped</td><td colspan="5" class="muted">{_esc(why)}</td></tr>'
            )
        blocks.append(
            f'<h3>{_esc(s.name)} <span class="muted">v{_esc(s.version)} · {s.n_items} items</span></h3>'
            + _table(
                ["metric", "value", "hard limit", "status", "direction", "gate margin", "items"],
                rows,
                num=(1, 5, 6),
            )
        )
    metrics = '<section id="metrics"><h2>Metrics</h2>' + "".join(blocks) + "</section>"
    worst_parts = []
    for sname, m in failed:
        suite = report.suite(sname)
        recs = {r.item_id: r for r in suite.samples}
        quotes = (
            "".join(
                _quote(f"<code>{_esc(i)}</code> — {_esc(_fmt(v, m.unit))}", recs.get(i))
                for i, v in _worst_by_metric(suite, m)
            )
            or '<p class="muted">No per-item values: the aggregate alone failed.</p>'
        )
        worst_parts.append(
            f"<h3>{_mark(Verdict.HARD_FAIL, text=False)} <code>{_esc(sname)}::{_esc(m.name)}</code></h3>{quotes}"
        )
    others = []
    for s in report.suites:
        recs = {r.item_id: r for r in s.samples}
        for m in s.metrics:
            if m.hard_limit_ok is False or not m.per_sample or not recs:
                continue
            w = _worst_by_metric(s, m, k=2)
            if not w:
                continue
            others.append(
                f"<h3><code>{_esc(s.name)}::{_esc(m.name)}</code></h3>"
                + "".join(
                    _quote(
                        f"<code>{_esc(i)}</code> — {_esc(_fmt(v, m.unit))}", recs.get(i), bad=False
                    )
                    for i, v in w
                )
            )
    worst = '<section id="worst"><h2>Worst samples</h2>'
    worst += "".join(worst_parts) if worst_parts else '<p class="muted">No hard limit failed.</p>'
    if others:
        worst += f"<details><summary>The two worst items of every other metric ({len(others)} metrics)</summary>{''.join(others)}</details>"
    worst += "</section>"
    details = f'<section id="details"><h2>Findings and provenance</h2>{_findings(report, open_=bool(failed))}{_provenance(report)}</section>'
    return _page("evaluate", f"{word} · evaluate {p.model.ref}", head + metrics + worst + details)


# --------------------------------------------------------------------------- the baseline update page


def _update_reasons(old: Baseline, new: Baseline) -> list[str]:
    reasons = []
    if new.reason and new.reason != "created":
        reasons.append(new.reason)
    if old.base_fingerprint != new.base_fingerprint:
        reasons.append("new base model weights (fingerprint changed)")
    # differences() speaks of a baseline and a candidate; here they are the old and new baselines
    reasons += [
        d.replace("missing from the baseline", "new")
        .replace("not in the candidate", "removed")
        .replace("(baseline)", "(old)")
        for d in old.key.differences(new.key)
    ]
    if not reasons:
        reasons.append("re-run with unchanged inputs (a reproducibility check)")
    return reasons


def render_baseline_update_html(
    old_baseline: Baseline, new_baseline: Baseline, rows: Sequence[ChangeRow]
) -> str:
    """The page for ``baseline update``: what moved between the old and the new baseline.

    ``rows`` come from :func:`dpo_harness.compare.compare_reports` (95% paired intervals).
    """
    moved = [r for r in rows if r.flag]
    beyond = [r for r in rows if r.flag == "BEYOND MARGIN"]
    specs = {(s.name, m.name): m for s in new_baseline.report.suites for m in s.metrics}
    specs.update(
        {
            (s.name, m.name): m
            for s in old_baseline.report.suites
            for m in s.metrics
            if (s.name, m.name) not in specs
        }
    )
    if beyond:
        cls, word = "refuse", "MOVED BEYOND A MARGIN"
        sentence = (
            f"{len(beyond)} of {len(rows)} metrics moved by more than their gate margin: "
            + ", ".join(f"{r.suite}::{r.metric}" for r in beyond[:5])
            + "."
        )
    elif moved:
        cls, word = "inconclusive", "MOVED"
        sentence = f"{len(moved)} of {len(rows)} metrics moved, all within their gate margins."
    else:
        cls, word = "promote", "UNCHANGED"
        sentence = f"None of the {len(rows)} metrics moved: every per-item score is identical."
    forest_rows = []
    for r in rows:
        spec = specs.get((r.suite, r.metric))
        if spec is None or r.margin is None or spec.direction is Direction.INFO:
            continue
        verdict = (
            Verdict.REGRESSED.value
            if r.flag == "BEYOND MARGIN"
            else (
                Verdict.INCONCLUSIVE.value if r.flag in ("new", "removed") else Verdict.PASS.value
            )
        )
        label = {
            "BEYOND MARGIN": "beyond margin",
            "moved": "moved",
            "new": "new",
            "removed": "removed",
        }.get(r.flag, "unchanged")
        lo, hi = (
            (r.ci_low, r.ci_high)
            if r.ci_low is not None
            else ((0.0, 0.0) if not r.flag else (None, None))
        )
        est, a, b, lines = _scaled(
            spec.direction, r.margin, r.diff if r.diff is not None else None, lo, hi
        )
        forest_rows.append(
            _ForestRow(
                label=f"{r.suite}::{r.metric}",
                verdict=verdict,
                est=est,
                lo=a,
                hi=b,
                lines=lines,
                band=spec.direction is Direction.BAND,
                text=(
                    f"Δ {_signed(r.diff)} {_interval_text(r.ci_low, r.ci_high)}"
                    if r.diff is not None
                    else r.flag
                )
                if r.flag
                else "unchanged",
                tooltip=f"{r.suite}::{r.metric}: {_fmt(r.old)} → {_fmt(r.new)}; {r.n_changed}/{r.n_paired} items changed; margin {r.margin:g}",
                href=f"#suite={r.suite}&metric={r.suite}::{r.metric}",
                word=label,
            )
        )
    forest_rows.sort(key=lambda fr: (fr.verdict != Verdict.REGRESSED.value, fr.text == "unchanged"))
    table_rows = []
    for r in rows:
        tr_cls = " class=block" if r.flag == "BEYOND MARGIN" else (" class=warn" if r.flag else "")
        changed = f"{r.n_changed}/{r.n_paired}" + (
            f" (+{r.items_added}/−{r.items_removed})" if r.items_added or r.items_removed else ""
        )
        table_rows.append(
            f"<tr{tr_cls}><td>{_esc(r.suite)}</td><td><code>{_esc(r.metric)}</code></td>"
            f"{_td(_esc(_fmt(r.old)), num=True)}{_td(_esc(_fmt(r.new)), num=True)}{_td(_esc(_signed(r.diff)), num=True)}"
            f"{_td(_esc(_interval_text(r.ci_low, r.ci_high)), num=True)}{_td(_esc('' if r.margin is None else f'{r.margin:g}'), num=True)}"
            f"{_td(_esc(changed), num=True)}<td>{_esc(r.flag or '—')}</td></tr>"
        )
    old_p, new_p = old_baseline.report.provenance, new_baseline.report.provenance
    head = (
        f"<header><h1>Baseline update: <code>{_esc(new_baseline.base_model)}</code></h1>"
        f'<p class="sub">{_esc(old_baseline.created_at)} → {_esc(new_baseline.created_at)}</p>'
        + _toc(
            [
                ("verdict", "Summary"),
                ("forest", "Forest plot"),
                ("metrics", "All metrics"),
                ("items", "Changed items"),
                ("details", "Provenance"),
            ]
        )
        + "</header>"
        f'<section id="verdict" class="banner {cls}"><div class="word">{_esc(word)}</div><div class="why">{_esc(sentence)}</div></section>'
        "<h3>Why the baseline changed</h3><ul class=reasons>"
        + "".join(f"<li>{_esc(x)}</li>" for x in _update_reasons(old_baseline, new_baseline))
        + "</ul>"
        + _facts(
            [
                (
                    "old",
                    f"{_esc(old_baseline.created_at)} · {_short_hash(old_baseline.checksum, 23)}",
                ),
                (
                    "new",
                    f"{_esc(new_baseline.created_at)} · {_short_hash(new_baseline.checksum, 23)}",
                ),
                ("old weights", _short_hash(old_baseline.base_fingerprint, 30)),
                ("new weights", _short_hash(new_baseline.base_fingerprint, 30)),
                ("intervals", '<span class="level">95% paired intervals</span>'),
            ]
        )
    )
    forest = (
        '<section id="forest"><h2>Forest plot: what moved, against each gate margin</h2>'
        '<p class="caption"><span class="level">95% intervals</span> of the paired change (new − old, item by item): '
        "Tango score intervals for 0/1 metrics, bootstrap-t for continuous ones. Evaluation is greedy and "
        "deterministic, so an unchanged metric sits exactly at 0. A metric whose mean moved by more than its "
        "gate margin is flagged BEYOND MARGIN (marked ▼ here): candidates will be judged against a different yardstick.</p>"
        '<figure class="plot">'
        + _forest_svg(
            forest_rows,
            axis="paired Δ (new − old) in units of each metric's margin δ — right = better (band metrics: right = higher)",
            label="forest plot of the baseline change, 95% intervals",
        )
        + "</figure>"
        + '<ul class="legend"><li>'
        + _mark(Verdict.PASS, text=False)
        + " unchanged / moved — within the margin</li><li>"
        + _mark(Verdict.REGRESSED, text=False)
        + " beyond margin — the mean moved more than δ (either way)</li><li>"
        + _mark(Verdict.INCONCLUSIVE, text=False)
        + " new / removed — the metric exists on one side only</li>"
        "<li>dashed line — the margin −δ (±δ for band metrics); shaded — beyond it</li></ul></section>"
    )
    table = f'<section id="metrics"><h2>All metrics</h2>{_table(["suite", "metric", "old", "new", "Δ", "95% interval of Δ", "margin", "items changed", "flag"], table_rows, num=(2, 3, 4, 5, 6, 7))}</section>'
    items = (
        '<section id="items"><h2>Changed items: old and new baseline side by side</h2>'
        + _drilldown(
            old_baseline.report,
            new_baseline.report,
            before_label="old baseline",
            after_label="new baseline",
        )
        + "</section>"
    )
    details = (
        '<section id="details"><h2>Findings and provenance</h2>'
        + _findings(new_baseline.report)
        + _provenance(new_baseline.report, baseline=old_baseline)
        + f"<p class=muted>Old created by: <code>{_esc(old_p.command or 'n/a')}</code><br>New created by: <code>{_esc(new_p.command or 'n/a')}</code></p></section>"
    )
    return _page(
        "baseline-update",
        f"{word} · baseline update {new_baseline.base_model}",
        head + forest + table + items + details,
    )


# --------------------------------------------------------------------------- the training page

# The same panels as the PNG curves (dpo_harness.plugins.dpo.curves), plus the learning rate.
_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("loss", "eval_loss")),
    ("reward margin", ("rewards/margins", "eval_rewards/margins")),
    ("reward accuracy", ("rewards/accuracies", "eval_rewards/accuracies")),
    ("log-probabilities", ("logps/chosen", "logps/rejected")),
    ("grad norm", ("grad_norm",)),
    ("entropy", ("entropy",)),
    ("learning rate", ("learning_rate",)),
)
_SERIES = (("#0072B2", "", "circle"), ("#E69F00", "5 3", "square"), ("#009E73", "2 2", "circle"))


def _series(history: Sequence[Mapping[str, Any]], key: str) -> list[tuple[int, float]]:
    out = []
    for record in history:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and "step" in record:
            out.append((int(record["step"]), float(value)))
    return out


@dataclass
class _Event:
    number: int
    step: int
    kind: str
    severity: str
    message: str
    stopped: bool


def _events(guard_events: Sequence[Any]) -> list[_Event]:
    out = []
    for k, e in enumerate(guard_events, start=1):
        d = e.model_dump() if hasattr(e, "model_dump") else dict(e)
        out.append(
            _Event(
                k,
                int(d.get("step", 0)),
                str(d.get("kind", "")),
                str(d.get("severity", "warning")),
                str(d.get("message", "")),
                bool(d.get("stopped", False)),
            )
        )
    return out


def _chart_frame(
    x_lo: float,
    x_hi: float,
    y_lo: float,
    y_hi: float,
    *,
    w: float,
    h: float,
    pad: tuple[float, float, float, float],
) -> tuple[Any, Any, list[str]]:
    """Scales and the axes/grid of a chart; pad = (left, right, top, bottom)."""
    left, right, top, bottom = pad
    if x_hi <= x_lo:
        x_hi = x_lo + 1
    if y_hi <= y_lo:
        y_lo, y_hi = y_lo - 0.5 * (abs(y_lo) or 1), y_hi + 0.5 * (abs(y_hi) or 1)

    def sx(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * (w - left - right)

    def sy(v: float) -> float:
        return h - bottom - (v - y_lo) / (y_hi - y_lo) * (h - top - bottom)

    parts = [
        f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(w - left - right)}" height="{_n(h - top - bottom)}" fill="#fff" stroke="#d7dce1"/>'
    ]
    for t in _ticks(y_lo, y_hi, 4):
        if y_lo <= t <= y_hi:
            parts.append(
                f'<line x1="{_n(left)}" y1="{_n(sy(t))}" x2="{_n(w - right)}" y2="{_n(sy(t))}" stroke="#eef0f3"/>'
                f'<text x="{_n(left - 5)}" y="{_n(sy(t) + 3.5)}" font-size="11" text-anchor="end" fill="#5b6570">{_esc(_tick_label(t))}</text>'
            )
    for t in _ticks(x_lo, x_hi, 5):
        if x_lo <= t <= x_hi:
            parts.append(
                f'<line x1="{_n(sx(t))}" y1="{_n(h - bottom)}" x2="{_n(sx(t))}" y2="{_n(h - bottom + 4)}" stroke="#8a939c"/>'
                f'<text x="{_n(sx(t))}" y="{_n(h - bottom + 15)}" font-size="11" text-anchor="middle" fill="#5b6570">{_esc(_tick_label(t))}</text>'
            )
    parts.append(
        f'<text x="{_n(w - right)}" y="{_n(h - 3)}" font-size="10" text-anchor="end" fill="#5b6570">step</text>'
    )
    return sx, sy, parts


def _curve_chart(
    title: str,
    keys: Sequence[str],
    history: Sequence[Mapping[str, Any]],
    events: Sequence[_Event],
    checkpoints: Sequence[tuple[int, str]],
    max_step: int,
) -> str:
    w, h = 460.0, 230.0
    pad = (52.0, 12.0, 22.0, 30.0)
    series = [(k, _series(history, k)) for k in keys]
    series = [(k, s) for k, s in series if s]
    finite = [v for _, s in series for _, v in s if math.isfinite(v)]
    y_lo, y_hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    span = (y_hi - y_lo) or (abs(y_hi) or 1.0)
    y_lo, y_hi = y_lo - 0.06 * span, y_hi + 0.06 * span
    sx, sy, parts = _chart_frame(0, max_step, y_lo, y_hi, w=w, h=h, pad=pad)
    base_y = h - pad[3]
    for e in events:
        colour = "#D55E00" if e.severity == "error" or e.stopped else "#CC79A7"
        x = sx(e.step)
        parts.append(
            f'<g class="guard-event" data-step="{e.step}"><title>{_esc(f"guard event {e.number} at step {e.step}: {e.message}")}</title>'
            f'<line x1="{_n(x)}" y1="{_n(pad[2])}" x2="{_n(x)}" y2="{_n(base_y)}" stroke="{colour}" stroke-width="1.6" stroke-dasharray="5 3"/>'
            f'<circle cx="{_n(x)}" cy="{_n(pad[2] - 9 + 0)}" r="8" fill="{colour}"/>'
            f'<text x="{_n(x)}" y="{_n(pad[2] - 5.5)}" font-size="10" font-weight="700" text-anchor="middle" fill="#fff">{e.number}</text></g>'
        )
    for step, decision in checkpoints:
        x = sx(step)
        shape = Verdict.PASS.value if decision == "promote" else Verdict.REGRESSED.value
        parts.append(
            f'<g class="ckpt"><title>checkpoint at step {step}: gate {_esc(decision)}</title>{_svg_mark(shape, x, base_y - 7, 4.5)}</g>'
        )
    legend = []
    for k, (key, pts) in enumerate(series):
        colour, dash, shape = _SERIES[k % len(_SERIES)]
        good = [(s, v) for s, v in pts if math.isfinite(v)]
        bad = [s for s, v in pts if not math.isfinite(v)]
        runs: list[list[tuple[int, float]]] = [[]]
        for s, v in pts:  # a NaN breaks the line
            if math.isfinite(v):
                runs[-1].append((s, v))
            elif runs[-1]:
                runs.append([])
        for run in runs:
            if len(run) >= 2:
                d = " ".join(
                    f"{'M' if i == 0 else 'L'}{_n(sx(s))},{_n(sy(v))}"
                    for i, (s, v) in enumerate(run)
                )
                parts.append(
                    f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>'
                )
        if len(good) <= 60:
            for s, v in good:
                tip = f"<title>{_esc(f'{key} at step {s}: {_fmt(v)}')}</title>"
                if shape == "circle":
                    parts.append(
                        f'<circle cx="{_n(sx(s))}" cy="{_n(sy(v))}" r="2.6" fill="{colour}">{tip}</circle>'
                    )
                else:
                    parts.append(
                        f'<rect x="{_n(sx(s) - 2.5)}" y="{_n(sy(v) - 2.5)}" width="5" height="5" fill="{colour}">{tip}</rect>'
                    )
        for s in bad:
            x = sx(s)
            parts.append(
                f'<g class="nonfinite"><title>{_esc(f"{key} at step {s}: NaN/inf")}</title><path d="M{_n(x - 5)},{_n(base_y - 12)} L{_n(x + 5)},{_n(base_y - 2)} '
                f'M{_n(x + 5)},{_n(base_y - 12)} L{_n(x - 5)},{_n(base_y - 2)}" stroke="#D55E00" stroke-width="2.5"/></g>'
            )
        sw = f'<span class="swatch{" dash" if dash else ""}" style="border-color:{colour}"></span>'
        legend.append(
            f'<span class="key">{sw}{_esc(key)}{f" ({len(bad)} NaN/inf)" if bad else ""}</span>'
        )
    svg = (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_n(w)} {_n(h)}" role="img" aria-label="{_esc(title)}">'
        f"<title>{_esc(title)}</title>{''.join(parts)}</svg>"
    )
    return f'<div class="card" data-panel="{_esc(title)}"><h4>{_esc(title)}</h4>{svg}<div>{"".join(legend)}</div></div>'


def _first_degraded(
    points: Sequence[tuple[int, MetricVerdict]],
) -> tuple[int, MetricVerdict] | None:
    for step, v in points:
        if v.verdict in (*_BLOCKING, Verdict.INCONCLUSIVE):
            return step, v
    return None


def _checkpoint_chart(name: str, points: Sequence[tuple[int, MetricVerdict]], max_step: int) -> str:
    w, h = 340.0, 190.0
    pad = (52.0, 12.0, 12.0, 30.0)
    last = points[-1][1]
    base = next((v.baseline for _, v in points if v.baseline is not None), None)
    margin = next((v.margin for _, v in points if v.margin is not None), None)
    direction = last.direction
    ys = [v.candidate for _, v in points if v.candidate is not None]
    bars: list[tuple[int, float, float]] = []
    for step, v in points:
        if v.baseline is None or v.ci_low is None or v.ci_high is None:
            continue
        if v.candidate is None or v.diff is None:
            continue
        # Δ's interval sits around the candidate's value only when the value is the mean of the
        # per-item values (not, e.g., a maximum): otherwise no bar is drawn.
        if abs(v.baseline + v.diff - v.candidate) <= 1e-6 * max(1.0, abs(v.candidate)):
            bars.append((step, v.baseline + v.ci_low, v.baseline + v.ci_high))
    zone: tuple[float, float] | None = None
    if base is not None:
        ys.append(base)
        if margin is not None:
            if direction is Direction.HIGHER:
                zone = (base - margin, base)
            elif direction is Direction.LOWER:
                zone = (base, base + margin)
            else:
                zone = (base - margin, base + margin)
            ys += list(zone)
    ys += [b for _, lo, hi in bars for b in (lo, hi)]
    y_lo, y_hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    span = (y_hi - y_lo) or (abs(y_hi) or 1.0)
    y_lo, y_hi = y_lo - 0.08 * span, y_hi + 0.08 * span
    sx, sy, parts = _chart_frame(0, max_step, y_lo, y_hi, w=w, h=h, pad=pad)
    if zone is not None:
        top, bot = sy(zone[1]), sy(zone[0])
        parts.append(
            f'<rect class="band" x="{_n(pad[0])}" y="{_n(top)}" width="{_n(w - pad[0] - pad[1])}" height="{_n(max(bot - top, 0.5))}" fill="#0072B2" fill-opacity=".10"><title>tolerated: within the margin {margin:g} of the baseline</title></rect>'
        )
        bound = zone[0] if direction is Direction.HIGHER else zone[1]
        bounds = [zone[0], zone[1]] if direction is Direction.BAND else [bound]
        for b in bounds:
            parts.append(
                f'<line x1="{_n(pad[0])}" y1="{_n(sy(b))}" x2="{_n(w - pad[1])}" y2="{_n(sy(b))}" stroke="#1b1f24" stroke-width="1.2" stroke-dasharray="4 3"/>'
            )
    if base is not None:
        parts.append(
            f'<line class="baseline" x1="{_n(pad[0])}" y1="{_n(sy(base))}" x2="{_n(w - pad[1])}" y2="{_n(sy(base))}" stroke="#5b6570" stroke-width="1.5"><title>baseline {_esc(_fmt(base))}</title></line>'
        )
        parts.append(
            _svg_mark("base", sx(0), sy(base), 4.5).replace(
                "<title>base</title>", "<title>the base model (step 0)</title>"
            )
        )
    for step, lo, hi in bars:
        parts.append(
            f'<line x1="{_n(sx(step))}" y1="{_n(sy(lo))}" x2="{_n(sx(step))}" y2="{_n(sy(hi))}" stroke="#5b6570" stroke-width="1.5"/>'
        )
    line = [(s, v.candidate) for s, v in points if v.candidate is not None]
    if len(line) >= 2:
        d = " ".join(
            f"{'M' if i == 0 else 'L'}{_n(sx(s))},{_n(sy(c))}" for i, (s, c) in enumerate(line)
        )
        parts.append(f'<path d="{d}" fill="none" stroke="#8a939c" stroke-width="1.2"/>')
    for s, v in points:
        if v.candidate is None:
            parts.append(_svg_mark(v.verdict.value, sx(s), pad[2] + 8))
            continue
        parts.append(
            f"<g><title>{_esc(f'step {s}: {v.reason}')}</title>{_svg_mark(v.verdict.value, sx(s), sy(v.candidate))}</g>"
        )
    first = _first_degraded(points)
    sub = (
        f'<span class="d-worse">first {_esc(_VERDICT_STYLE[first[1].verdict.value][2])} at step {first[0]}</span>'
        if first
        else '<span class="muted">within the margin at every checkpoint</span>'
    )
    svg = (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_n(w)} {_n(h)}" role="img" aria-label="{_esc(name)} across checkpoints">'
        f"<title>{_esc(name)} across checkpoints</title>{''.join(parts)}</svg>"
    )
    return (
        f'<div class="card" data-metric="{_esc(name)}"><h4><code>{_esc(name)}</code></h4>'
        f'<div class="meta">{_esc(_BETTER.get(direction.value, direction.value))}; '
        f"baseline {_esc(_fmt(base))}, margin {_esc('n/a' if margin is None else f'{margin:g}')} · {sub}</div>{svg}</div>"
    )


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out += _flatten(v, key + ".")
        else:
            out.append((key, json.dumps(v, ensure_ascii=False, default=str)))
    return out


def render_training_html(
    summary: RunSummary,
    log_history: Sequence[Mapping[str, Any]],
    guard_events: Sequence[Any],
    per_checkpoint: Mapping[int, GateDecision],
) -> str:
    """The page for ``train-and-gate``: curves with guard events, each gated metric across checkpoints.

    ``guard_events`` are GuardEvent models or the dicts of ``guard_events.jsonl``;
    ``per_checkpoint`` maps a checkpoint's step to its gate decision.
    """
    events = _events(guard_events)
    steps = sorted(per_checkpoint)
    tr = summary.training
    hist_steps = [int(r["step"]) for r in log_history if isinstance(r.get("step"), (int, float))]
    max_step = max([*hist_steps, *steps, *(e.step for e in events), 1])
    outcome = summary.outcome
    cls = {"promoted": "promote", "refused": "refuse", "stopped": "refuse"}.get(
        outcome, "inconclusive"
    )
    model = summary.config.get("model", "?") if isinstance(summary.config, Mapping) else "?"
    head = (
        f"<header><h1>Training run: <code>{_esc(model)}</code></h1>"
        f'<p class="sub">train-and-gate · {_esc(summary.created_at)}</p>'
        + _toc(
            [
                ("verdict", "Outcome"),
                ("curves", "Training curves"),
                ("events", "Guard events"),
                ("checkpoints", "Metrics across checkpoints"),
                ("details", "Settings"),
            ]
        )
        + "</header>"
        f'<section id="verdict" class="banner {cls}" data-outcome="{_esc(outcome)}"><div class="word">{_esc(outcome.upper())}</div>'
        f'<div class="why">{_esc(summary.reason)}</div></section>'
    )
    facts: list[tuple[str, str]] = []
    if tr is not None:
        facts += [
            ("steps", f"{tr.steps_completed:,}" + (" (stopped)" if tr.stopped else "")),
            ("training time", f"{tr.seconds:.0f} s ({tr.seconds_per_step or 0:.3f} s/step)"),
            ("precision", _esc(tr.effective_dtype or "n/a")),
        ]
        if tr.stop_reason:
            facts.append(("stopped because", _esc(tr.stop_reason)))
    if summary.baseline_path is not None:
        facts.append(
            (
                "baseline",
                f"<code>{_esc(summary.baseline_path)}</code>"
                + (" (created)" if summary.baseline_created else ""),
            )
        )
    if summary.promoted_to is not None:
        facts.append(("promoted to", f"<code>{_esc(summary.promoted_to)}</code>"))
    cand_rows = []
    for o in summary.candidates:
        mark = (
            _mark(Verdict.PASS, text=False) + " promote"
            if o.decision == "promote"
            else _mark(Verdict.HARD_FAIL, text=False) + " refuse"
        )
        why = "".join(f"<li>{_esc(r)}</li>" for r in o.reasons[:4]) + (
            f"<li class=muted>+{len(o.reasons) - 4} more</li>" if len(o.reasons) > 4 else ""
        )
        cand_rows.append(
            f"<tr{' class=block' if o.decision == 'refuse' else ''}><td><code>{_esc(o.name)}</code>{' ★' if summary.promoted == o.name else ''}</td>"
            f"{_td(str(o.step), num=True)}<td>{mark}</td>{_td(_esc(_fmt(o.primary_value)), num=True)}<td><ul class=reasons>{why}</ul></td></tr>"
        )
    primary = summary.candidates[0].primary_metric if summary.candidates else "primary metric"
    cands = (
        "<h3>Checkpoints gated</h3>"
        + _table(["checkpoint", "step", "gate", primary, "reasons"], cand_rows, num=(1, 3))
        if cand_rows
        else '<p class="muted">No checkpoint was gated.</p>'
    )
    ckpt_marks = [(s, per_checkpoint[s].decision) for s in steps]
    panels = [(t, keys) for t, keys in _PANELS if any(_series(log_history, k) for k in keys)]
    charts = "".join(
        _curve_chart(t, keys, log_history, events, ckpt_marks, max_step) for t, keys in panels
    )
    curves = (
        '<section id="curves"><h2>Training curves</h2>'
        '<p class="caption">Every guard event is a numbered dashed line at its step (vermillion: error or stop; purple: warning); '
        f"{_mark(Verdict.PASS, text=False)} / {_mark(Verdict.REGRESSED, text=False)} on the x axis: a checkpoint the gate promoted / refused; "
        "✕ on the x axis: a NaN or infinite logged value.</p>"
        + (
            f'<div class="grid">{charts}</div>'
            if charts
            else '<p class="muted">The log history has no values to plot.</p>'
        )
        + "</section>"
    )
    if events:
        ev = "".join(
            f'<li value="{e.number}"><span class="badge {"error" if e.severity == "error" or e.stopped else "warning"}">'
            f"{_esc('stop' if e.stopped else e.severity)}</span> step {e.step} · <code>{_esc(e.kind)}</code>: {_esc(e.message)}</li>"
            for e in events
        )
        ev_html = f'<ol class="events">{ev}</ol>'
    else:
        ev_html = '<p class="muted">No guard fired.</p>'
    events_sec = f'<section id="events"><h2>Guard events</h2>{ev_html}</section>'

    # gated metrics across checkpoints
    series: dict[str, list[tuple[int, MetricVerdict]]] = {}
    gated = (
        Verdict.PASS,
        Verdict.IMPROVED,
        Verdict.INCONCLUSIVE,
        Verdict.REGRESSED,
        Verdict.HARD_FAIL,
    )
    for s in steps:
        for v in per_checkpoint[s].verdicts:
            if v.verdict in gated:
                series.setdefault(v.name, []).append((s, v))
    degraded = {n: _first_degraded(pts) for n, pts in series.items()}

    def first_step(name: str) -> tuple[bool, int, str]:
        first = degraded[name]
        return (first is None, first[0] if first is not None else 0, name)

    order = sorted(series, key=first_step)
    grid_rows = []
    for name in order:
        by_step = dict(series[name])
        cells = "".join(
            f'<td class="num" title="{_esc(by_step[s].reason)}">{_mark(by_step[s].verdict, text=False)}</td>'
            if s in by_step
            else '<td class="num muted">·</td>'
            for s in steps
        )
        first = degraded[name]
        grid_rows.append(
            f"<tr><td><code>{_esc(name)}</code></td>{cells}<td>"
            + (
                f"step {first[0]} ({_esc(_VERDICT_STYLE[first[1].verdict.value][2])})"
                if first
                else '<span class="muted">never</span>'
            )
            + "</td></tr>"
        )
    grid_head = [
        "metric",
        *[f"step {s} ({per_checkpoint[s].decision})" for s in steps],
        "first degraded",
    ]
    bad_cards = "".join(_checkpoint_chart(n, series[n], max_step) for n in order if degraded[n])
    ok_cards = "".join(_checkpoint_chart(n, series[n], max_step) for n in order if not degraded[n])
    n_ok = sum(1 for n in order if not degraded[n])
    ckpt = (
        '<section id="checkpoints"><h2>Gated metrics across checkpoints</h2>'
        + (
            '<p class="caption">Each checkpoint\'s value against the baseline (solid grey line, and the hollow mark at step 0), '
            "the tolerated zone within the margin (blue band, dashed bound) and the gate's verdict; vertical bars are the "
            f"{_esc(_level(per_checkpoint[steps[0]]))} paired intervals. Metrics that left the margin come first, so the step where the model "
            "started to degrade is the first thing to read.</p>"
            + _table(grid_head, grid_rows, num=tuple(range(1, len(steps) + 1)))
            + _legend_marks()
            + (
                f'<div class="grid">{bad_cards}</div>'
                if bad_cards
                else '<p class="muted">No metric left its margin at any checkpoint.</p>'
            )
            + (
                f"<details><summary>{n_ok} metrics stayed within their margin at every checkpoint</summary><div class=grid>{ok_cards}</div></details>"
                if ok_cards
                else ""
            )
            if steps
            else '<p class="muted">No checkpoint was gated (training stopped first, or nothing was saved).</p>'
        )
        + "</section>"
    )
    settings = _flatten(summary.config) if isinstance(summary.config, Mapping) else []
    pre = ""
    if summary.preflight is not None:
        pf = summary.preflight
        pre = (
            f"<h3>Preflight</h3><p>{pf.n_usable:,} of {pf.n_rows:,} rows usable"
            + (f", {pf.n_skipped:,} skipped" if pf.n_skipped else "")
            + ".</p><ul class=reasons>"
            + "".join(f"<li>{_esc(x)}</li>" for x in pf.findings)
            + "</ul>"
        )
    timings = ", ".join(f"{_esc(k)} {v:.0f} s" for k, v in summary.timings.items()) or "n/a"
    details = (
        '<section id="details"><h2>Settings and provenance</h2>'
        "<details><summary>Run configuration, preflight, timings</summary>"
        + _table(
            ["setting", "value"],
            (
                f"<tr><td><code>{_esc(k)}</code></td><td><code>{_esc(v)}</code></td></tr>"
                for k, v in settings
            ),
        )
        + pre
        + f"<p><b>Timings:</b> {timings}</p></details></section>"
    )
    body = head + _facts(facts) + cands + curves + events_sec + ckpt + details
    return _page("training", f"{outcome.upper()} · training {model}", body)


# --------------------------------------------------------------------------- writing


def write_report_html(path: Path, html: str) -> None:
    """Write a rendered page to ``path`` atomically (a reader never sees half a page)."""
    atomic_write_text(Path(path), html)

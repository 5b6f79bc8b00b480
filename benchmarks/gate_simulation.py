"""How often does the gate refuse an unchanged model, and how often does it catch a real regression?

Three measurements, written to ``docs/gate-statistics.md`` (and printed):

1. **Flip simulation per gated metric** (the table issue 12 asked for). For every gated metric of
   a stored baseline, a candidate changes a share q of its items (the *discordance*: 5%, 10%,
   20%) — for a binary metric, q of the items flip, half each way around a base accuracy of 0.5;
   for a continuous one, q of the items take a value drawn again from the baseline's own
   per-item values. *False refusal*: an unchanged candidate is not shown non-inferior (refused
   under the default policy). *Power at the margin*: a candidate that is worse by exactly the
   metric's margin (binary: that share of extra right-to-wrong flips; continuous: the mean shifted
   by the margin) is refused. The decision is the gate's own per-metric function
   (:func:`dpo_harness.gate.stats.non_inferiority`); item counts and per-item values come from
   the baseline, so running it on the baseline from before issue 12 (``--before``) and on the
   current one gives the before/after columns. Binary rates are also computed exactly
   (:mod:`dpo_harness.gate.power`) as a cross-check.

2. **Unchanged models gated end to end** (``--models N``, 0 to skip). The demo base with small
   random perturbations of its weights (relative noise σ on every matrix: the noise a re-run, a
   re-quantisation or a harmless fine-tune produces), each gated against the stored baseline with
   the default policy. Reported: refusal rate, the metrics responsible, and the per-item
   discordance these models really show.

3. **KL from the reference and top-1 agreement** of those perturbed models and of the broken demo
   variants (``--variants``), to decide whether the numerical suite should gate them.

Run: ``python benchmarks/gate_simulation.py --before baselines/history/demo/<pre-issue-12>.json``.
A small bounded version of (1) is a unit test (tests/unit/test_power.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from dpo_harness.evaluation.loading import demo_model_dir
from dpo_harness.files import atomic_write_text
from dpo_harness.gate import Verdict
from dpo_harness.gate.baseline import Baseline, load_baseline
from dpo_harness.gate.pipeline import run_gate
from dpo_harness.gate.policy_file import apply_rules
from dpo_harness.gate.power import binary_refusal_rate
from dpo_harness.gate.stats import NonInferiorityVerdict, non_inferiority
from dpo_harness.schema import Direction, EvalConfig, MetricResult
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
DISCORDANCES = (0.05, 0.10, 0.20)
_PASSED = (NonInferiorityVerdict.PASS, NonInferiorityVerdict.IMPROVED)


# --------------------------------------------------------------------------- 1. flip simulation


def _gated(baseline: Baseline) -> dict[str, MetricResult]:
    report = apply_rules(baseline.report, baseline.key.policy)
    return {
        f"{s.name}::{m.name}": m
        for s in report.suites
        for m in s.metrics
        if m.direction is not Direction.INFO
        and m.margin is not None
        and sum(v is not None for v in m.per_sample.values()) >= 2
    }


def _refused(diff: np.ndarray, margin: float, *, binary: bool, band: bool, resamples: int) -> bool:
    """The gate's per-metric refusal (default policy) for paired differences ``diff`` (oriented)."""
    if not diff.any():
        return False  # identical on every item: the gate passes it exactly
    kw = dict(binary=binary, n_resamples=resamples, seed=0)
    if band:
        lo = non_inferiority(diff, margin, **kw)  # type: ignore[arg-type]
        hi = non_inferiority(-diff, margin, **kw)  # type: ignore[arg-type]
        return not (lo.verdict in _PASSED and hi.verdict in _PASSED)
    return non_inferiority(diff, margin, **kw).verdict not in _PASSED  # type: ignore[arg-type]


def simulate(
    m: MetricResult, q: float, drop: float, reps: int, rng: np.random.Generator, resamples: int
) -> float:
    """Refusal rate of metric ``m`` at discordance ``q``, true regression ``drop`` (≥ 0)."""
    values = np.array([v for v in m.per_sample.values() if v is not None], dtype=float)
    n = values.size
    binary = m.binary and bool(np.all(np.isin(values, (0.0, 1.0))))
    band = m.direction is Direction.BAND
    margin = float(m.margin or 0.0)
    refused = 0
    for _ in range(reps):
        if binary:
            base = rng.random(n) < 0.5
            loss, gain = (q + drop) / 2, (q - drop) / 2
            if gain < 0:
                loss, gain = drop, 0.0
            u = rng.random(n)
            cand = base.copy()
            cand[base & (u < 2 * loss)] = False
            cand[~base & (u < 2 * gain)] = True
            diff = cand.astype(float) - base.astype(float)
        else:
            changed = rng.random(n) < q
            redrawn = rng.choice(values, size=n)
            sign = -1.0 if m.direction is Direction.LOWER else 1.0
            # oriented so that positive is better; a regression moves every item by -drop
            diff = sign * np.where(changed, redrawn - values, 0.0) - drop
        refused += _refused(diff, margin, binary=binary, band=band, resamples=resamples)
    return refused / reps


def flip_table(
    baselines: dict[str, Baseline], reps: int, cont_reps: int, seed: int
) -> tuple[list[list[str]], dict[tuple[str, str, float], float]]:
    """The table's rows, and the simulated false-refusal rate per (metric, data label, q)."""
    rng = np.random.default_rng(seed)
    false_refusal: dict[tuple[str, str, float], float] = {}
    labels = list(baselines)
    gated = {label: _gated(b) for label, b in baselines.items()}
    names = list(dict.fromkeys(n for label in labels for n in gated[label]))
    rows = []
    for name in names:
        for label in labels:
            m = gated[label].get(name)
            if m is None:
                continue
            n = sum(v is not None for v in m.per_sample.values())
            values = [v for v in m.per_sample.values() if v is not None]
            binary = m.binary and all(v in (0.0, 1.0) for v in values)
            r = reps if binary else cont_reps
            cells = []
            for q in DISCORDANCES:
                fr = simulate(m, q, 0.0, r, rng, resamples=200 if binary else 500)
                false_refusal[(name, label, q)] = fr
                pw = simulate(
                    m, q, float(m.margin or 0.0), r, rng, resamples=200 if binary else 500
                )
                exact = ""
                if binary:
                    exact = f" ({binary_refusal_rate(n, q, float(m.margin or 0.0)):.1%})"
                cells.append(f"{fr:.1%}{exact} / {pw:.0%}")
            rows.append([name, label, n, f"{m.margin:g}", "0/1" if binary else "cont.", *cells])
    return rows, false_refusal


def adtech_summary(false_refusal: dict[tuple[str, str, float], float], label: str) -> str:
    """Which gated adtech metrics of ``label`` stay at or below 5% false refusals, per q."""
    parts = []
    for q in DISCORDANCES:
        rates = {n: r for (n, lab, qq), r in false_refusal.items() if lab == label and qq == q}
        over = [f"{n} {r:.1%}" for n, r in rates.items() if n.startswith("adtech::") and r > 0.05]
        parts.append(
            f"q = {q:.0%}: "
            + ("every gated adtech metric ≤ 5%" if not over else "over 5%: ")
            + ", ".join(over)
        )
    return "; ".join(parts)


# --------------------------------------------------------------------------- 2. perturbed models


def perturbed_model(out: Path, sigma: float, seed: int) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = demo_model_dir()
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.add_(torch.randn(p.shape, generator=gen) * (sigma * float(p.std())))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(out)
    return out


def _kl_top1(report: object) -> tuple[float | None, float | None]:
    num = report.suite("numerical")  # type: ignore[attr-defined]
    names = {m.name: m.value for m in num.metrics}
    return names.get("kl_from_reference"), names.get("top1_agreement")


def empirical(
    n_models: int, sigmas: list[float], baseline_path: Path
) -> tuple[list[list[str]], dict[str, dict[str, float]], list[list[str]]]:
    rows, discord, kl_rows = [], {}, []
    baseline = load_baseline(baseline_path)
    base_bin = {
        (s.name, m.name): m.per_sample
        for s in baseline.report.suites
        for m in s.metrics
        if m.binary
    }
    for sigma in sigmas:
        refusals, blamed = 0, Counter()
        flips: dict[tuple[str, str], list[float]] = {k: [] for k in base_bin}
        kls, tops = [], []
        t0 = time.perf_counter()
        for k in range(n_models):
            with tempfile.TemporaryDirectory() as tmp:
                path = perturbed_model(Path(tmp) / "m", sigma, seed=1000 + k)
                run = run_gate(
                    EvalConfig(checkpoint=str(path), base="demo"),
                    baseline_file=baseline_path,
                    out_dir=Path(tmp) / "out",
                )
            d = run.decision
            refusals += d.decision == "refuse"
            for v in d.verdicts:
                if v.verdict in (Verdict.REGRESSED, Verdict.INCONCLUSIVE, Verdict.HARD_FAIL):
                    blamed[f"{v.name} ({v.verdict.value})"] += 1
            for s in run.report.suites:
                for m in s.metrics:
                    if (s.name, m.name) in base_bin:
                        b = base_bin[(s.name, m.name)]
                        same = [i for i in m.per_sample if b.get(i) is not None]
                        changed = sum(1 for i in same if m.per_sample[i] != b[i])
                        flips[(s.name, m.name)].append(changed / max(len(same), 1))
            kl, top = _kl_top1(run.report)
            kls.append(kl or 0.0)
            tops.append(top or 0.0)
        rows.append(
            [
                f"{sigma:g}",
                n_models,
                f"{refusals}/{n_models} = {refusals / n_models:.1%}",
                "; ".join(f"{k} ×{c}" for k, c in blamed.most_common()) or "—",
                f"{(time.perf_counter() - t0) / n_models:.1f}",
            ]
        )
        discord[f"{sigma:g}"] = {
            f"{a}::{b}": round(float(np.mean(v)), 4) for (a, b), v in flips.items()
        }
        kl_rows.append(
            [
                f"perturbed σ = {sigma:g} (×{n_models})",
                f"{np.mean(kls):.3g} ({min(kls):.3g}–{max(kls):.3g})",
                f"{np.mean(tops):.3f} ({min(tops):.3f}–{max(tops):.3f})",
                f"{refusals}/{n_models} refused",
            ]
        )
    return rows, discord, kl_rows


def variant_rows(kinds: list[str], baseline_path: Path) -> list[list[str]]:
    from dpo_harness.demo.variants import make_variant

    rows = []
    for kind in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            path = make_variant(kind, Path(tmp) / kind)
            run = run_gate(
                EvalConfig(checkpoint=str(path), base="demo"),
                baseline_file=baseline_path,
                out_dir=Path(tmp) / "out",
            )
        kl, top = _kl_top1(run.report)
        caught = sorted(
            v.name
            for v in run.decision.verdicts
            if v.verdict in (Verdict.HARD_FAIL, Verdict.REGRESSED, Verdict.UNSCORABLE)
            and v.suite != "numerical"
        )
        rows.append(
            [
                f"{kind} variant",
                "n/a" if kl is None else f"{kl:.3g}",
                "n/a" if top is None else f"{top:.3f}",
                f"{run.decision.decision}; caught without them by {len(caught)} metrics"
                + (f" (e.g. {', '.join(caught[:3])})" if caught else ""),
            ]
        )
    return rows


# --------------------------------------------------------------------------- the document


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, default=REPO / "baselines" / "demo.json")
    ap.add_argument("--before", type=Path, help="the baseline before the item-count change")
    ap.add_argument("--reps", type=int, default=2000, help="replicates per binary cell")
    ap.add_argument("--cont-reps", type=int, default=300, help="replicates per continuous cell")
    ap.add_argument("--models", type=int, default=6, help="perturbed models per σ (0: skip)")
    ap.add_argument("--sigmas", default="0.01,0.03,0.05")
    ap.add_argument("--variants", default="bang,english,chinese,empty")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "gate-statistics.md")
    args = ap.parse_args(argv)
    baselines = {}
    if args.before is not None:
        baselines["before"] = load_baseline(args.before)
    baselines["after" if args.before is not None else "now"] = load_baseline(args.baseline)
    t0 = time.perf_counter()
    flips, false_refusal = flip_table(baselines, args.reps, args.cont_reps, seed=0)
    summary = adtech_summary(false_refusal, "after" if args.before is not None else "now")
    flip_s = time.perf_counter() - t0
    sigmas = [float(s) for s in args.sigmas.split(",")]
    emp_rows, discord, kl_rows = ([], {}, [])
    if args.models > 0:
        emp_rows, discord, kl_rows = empirical(args.models, sigmas, args.baseline)
    kinds = [k for k in args.variants.split(",") if k]
    kl_rows += variant_rows(kinds, args.baseline) if kinds else []
    text = render(args, flips, summary, flip_s, emp_rows, discord, kl_rows)
    atomic_write_text(args.out, text)
    print(text)
    return 0


def render(
    args: argparse.Namespace,
    flips: list[list[str]],
    summary: str,
    flip_s: float,
    emp_rows: list[list[str]],
    discord: dict[str, dict[str, float]],
    kl_rows: list[list[str]],
) -> str:
    before = f" --before {args.before.resolve().relative_to(REPO)}" if args.before else ""
    variants = args.variants or "''"
    options = (
        f" --reps {args.reps} --cont-reps {args.cont_reps} --models {args.models}"
        f" --sigmas {args.sigmas} --variants {variants}"
    )
    head = [
        "# The gate's error rates on the demo suites",
        "",
        f"Generated by `python benchmarks/gate_simulation.py{before}{options}` "
        f"({args.reps} replicates per binary cell, {args.cont_reps} per continuous cell; fixed seeds).",
        "",
        "## 1. False refusals and power per gated metric, by discordance",
        "",
        "A candidate of unchanged quality changes a share q of its items (the *discordance*): for a "
        "binary metric q of the items flip, half each way, around a base accuracy of 0.5; for a "
        "continuous metric q of the items take a value drawn again from the baseline's own per-item "
        "values. Each cell is **false refusal** (the unchanged candidate is not shown non-inferior, "
        "so the default policy refuses it) / **power at the margin** (a candidate worse by exactly "
        "the metric's margin is refused). For binary metrics the exact false-refusal rate of "
        "`dpo_harness.gate.power` is in brackets. *before*: the item counts before issue 12 "
        "(158 multiple choice, 70 short answers, 38 arithmetic); *after*: the current data. "
        f"({flip_s:.0f} s.)",
        "",
        tabulate(
            flips,
            headers=["metric", "data", "items", "margin", "kind"]
            + [f"q = {q:.0%}: false refusal / power" for q in DISCORDANCES],
            tablefmt="github",
        ),
        "",
        "Power at the margin is about 95% whatever the item count: a non-inferiority test at "
        "α = 0.05 refuses a candidate sitting on its margin with probability 1 − α by construction. "
        "What items buy is the other error: an unchanged candidate refused. Simulated false "
        f"refusals of the gated adtech metrics on the current data — {summary}. For the "
        "multiple-choice accuracies (margin 0.05) the 514 items of adtech v5 hold 5% up to 10% "
        "discordance (exact rate of `dpo_harness.gate.power.binary_refusal_rate`: 3.1% at q = 10%, "
        "18.9% at q = 20%); staying at 5% at q = 20% would take about 900 items (4.5%), or a "
        "margin of 0.07 (3.1%). `dpo-harness baseline show` prints the same table for any baseline at the "
        "typical discordance (5%, `dpo_harness.gate.power.TYPICAL_DISCORDANCE`) or at "
        "`--discordance Q`, and flags any metric whose margin its items cannot resolve there. It "
        "caps a binary metric's q at twice the base's smaller side: an unchanged candidate flips as "
        "many items each way, so a base at 0 on every item (the demo has no degenerate, Chinese or "
        "empty answer and no right arithmetic answer) leaves nothing to flip back, and a candidate "
        "that matches it on every item passes "
        "exactly. A continuous metric scored on fixed texts (held-out bits/byte, gold margin) "
        "changes every item a little rather than a few items a lot, so for it the re-drawn-items "
        "model is pessimistic" + ("; section 2 measures real ones." if emp_rows else "."),
        "",
    ]
    if not emp_rows and not kl_rows:
        head += [
            "Unchanged models gated end to end and the KL / top-1 agreement comparison were not "
            "run for these tables (`--models 0 --variants ''`). Where the typical discordance of "
            "5% comes from: the last end-to-end run (commit 485dd5f, before issue 12's items; 16 "
            "demo models per σ with relative weight noise σ = 0.01, 0.02, 0.03) changed 0.2%, "
            "0.9% and 1.5% of the multiple-choice outcomes, 0.9–1.25% of the short answers, at "
            "most 0.5% of the EOS verdicts and 10–14% of the broken-character verdicts (U+FFFD "
            "in an answer flips easily; that metric's margin is 0.2).",
            "",
        ]
    emp = []
    if emp_rows:
        emp = [
            "## 2. Unchanged models gated end to end",
            "",
            "Each model is the demo base with relative Gaussian noise σ added to every weight "
            "matrix, gated against the stored baseline with the default policy (inconclusive → "
            "refuse, α = 0.05, Holm).",
            "",
            tabulate(
                emp_rows,
                headers=["σ", "models", "refused", "metrics not shown non-inferior", "s/model"],
                tablefmt="github",
            ),
            "",
            "Per-item discordance these models really show (share of binary outcomes that differ "
            "from the baseline), by σ — the evidence behind a typical discordance of 5%:",
            "",
            "```json",
            json.dumps(discord, indent=1),
            "```",
            "",
        ]
    kl = []
    if kl_rows:
        kl = [
            "## 3. Should KL from the reference and top-1 agreement be gated?",
            "",
            "Mean over the 18 probe texts; the baseline's own values are 0 and 1 by construction "
            "(the base is its own reference), so gating them with a margin would mean "
            '"the candidate may drift at most δ from its base".',
            "",
            tabulate(
                kl_rows,
                headers=["model", "KL(candidate ‖ base), nats", "top-1 agreement", "gate"],
                tablefmt="github",
            ),
            "",
            "Decision: **not gated against the baseline** (they stay *reported*, and KL keeps its "
            "hard limit of 10 nats as a backstop for a collapsed model). Drift is what fine-tuning "
            "is for: KL grows and top-1 agreement falls smoothly with the size of the change even "
            "when nothing regresses (the perturbed rows), so any margin tight enough to matter "
            "would refuse healthy fine-tunes of a real model, while every broken variant above is "
            "already refused by the metrics that measure the damage itself (a hard limit, a "
            "regression or an unscorable answer), with no help from KL.",
            "",
        ]
    tail = [
        "## How the gate decides (what the rates above measure)",
        "",
        "Per metric, on the items both runs scored, with the difference oriented so that positive "
        "is better: binary metrics use the Tango score test on the discordant pairs (McNemar's "
        "setting); continuous metrics a seeded bootstrap-t interval (10,000 resamples). *pass*: "
        "the lower end of the 1 − 2α interval (α = 0.05, i.e. 90%) is above −margin; promotion "
        "needs every metric shown non-inferior (an intersection-union test, level α without "
        "correction). A metric that does not pass is decided on its **Holm-adjusted** interval: "
        "sorted by their regression p-values, the k-th of the m compared metrics is tested at "
        "α/(m − k + 1) while the ones before it were rejected, and at α/m (Bonferroni) from the "
        "first one that was not. *regressed* means exactly that this interval lies wholly past the "
        "margin; otherwise *inconclusive*, and the interval shown (with its level, e.g. 99.5%) "
        "straddles the margin. Inconclusive refuses by default; `--inconclusive promote` forgives "
        "it only while the point estimate is within the margin. A metric identical on every item "
        "passes exactly; a gated metric the baseline scored but the candidate could not (empty "
        "answers) is *unscorable* and refuses. Spiky per-response signals (longest run, looping "
        "tail, 4-gram rep, compression, U+FFFD counts) are gated by hard limits only; their paired "
        "comparison runs on the binary per-response verdicts (degenerate or not, broken characters "
        "or not).",
        "",
        "## Float rounding is not a change",
        "",
        "Per-item values come from float32 model outputs. The same model and code on another CPU "
        "(other vector kernels in PyTorch's BLAS) differ in the last bits: re-evaluating the demo "
        "base on another machine moved log-likelihood-based values by at most ~3e-7 against the "
        "baseline (up to 1.04e-6 on a per-byte gold margin, a difference of two sums), while two "
        "runs on the same machine were bit-identical. `baseline update` and `baseline diff` "
        "therefore count an item as changed only when it differs by more than 1e-5 relative "
        "(`max(1, |a|, |b|)`), and the gate is unaffected (such differences are far inside every "
        "margin).",
        "",
    ]
    return "\n".join(head + emp + kl + tail)


if __name__ == "__main__":
    sys.exit(main())

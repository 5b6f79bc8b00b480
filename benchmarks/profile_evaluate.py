"""Where ``dpo-harness evaluate`` (demo model, all suites) spends its time, and thread defaults.

1. Profile: ``python -m cProfile -o PROF -m dpo_harness.cli evaluate --quiet --out TMP`` in a
   fresh process, then the cumulative time of the functions that matter, grouped (imports, model
   load, generation, parity, scoring passes, each suite's scoring, MeCab, statistics, report).
   Groups can nest (a lazy import inside model loading is in both); the list says which.
2. Threads: ``torch.get_num_threads()`` in a fresh process with no thread variables set, and the
   wall time of the same command with ``OMP_NUM_THREADS=1`` vs ``2`` vs unset, interleaved
   (order rotated), medians, load average recorded around every run.
3. The binary ``non_inferiority`` call of ``harness/stats.py`` (158 paired items): its time with
   and without the percentile bootstrap it computes for display.

Run: ``python benchmarks/profile_evaluate.py [--repeats 3]``; writes
``benchmarks/results/evaluate_profile.md``.
"""

from __future__ import annotations

import argparse
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

# (label, predicate on (file, line, function name)) -> cumulative seconds
GROUPS: list[tuple[str, str, str]] = [
    ("imports (all, incl. lazy ones below)", "<frozen importlib._bootstrap>", "_find_and_load"),
    ("model + tokenizer load (load_from_config)", "evaluation/evaluate.py", "load_from_config"),
    ("all requests and scoring (evaluate_loaded)", "evaluation/evaluate.py", "evaluate_loaded"),
    ("  weights scan", "backends/hf.py", "weights"),
    ("  generation, batched", "backends/hf.py", "_generate_texts"),
    ("  parity: one-by-one re-generation", "evaluation/runner.py", "_run_parity"),
    ("  log-likelihood scoring (MC + answer NLL)", "backends/hf.py", "loglikelihood"),
    ("  rolling log-likelihood (held-out)", "backends/hf.py", "rolling"),
    ("  probes (logit statistics)", "backends/hf.py", "candidate_probes"),
    ("  greedy decoding loop (all calls)", "evaluation/greedy.py", "greedy_generate"),
    ("suite scoring: numerical", "suites/numerical.py", "score"),
    ("suite scoring: repetition", "suites/repetition.py", "score"),
    ("suite scoring: fluency", "suites/fluency.py", "score"),
    ("suite scoring: adtech", "suites/adtech.py", "score"),
    ("  MeCab: Tagger construction (get_tagger)", "suites/metrics/japanese.py", "get_tagger"),
    ("  MeCab: tagging (_tag)", "suites/metrics/japanese.py", "_tag"),
    ("statistics: import of gate/stats.py", "gate/stats.py", "<module>"),
    ("statistics: calls into gate/stats.py", "gate/stats.py", "*"),
    ("report: json + markdown + html + table", "cli/evaluate.py", "_write_evaluation"),
]


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def env_with(threads: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["HF_HUB_OFFLINE"] = "1"
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    return env


def profile(tmp: Path, threads: str | None) -> tuple[float, list[list[Any]], str]:
    prof = tmp / "evaluate.prof"
    cmd = [PY, "-m", "cProfile", "-o", str(prof), "-m", "dpo_harness.cli", "evaluate"]
    cmd += ["--quiet", "--out", str(tmp / "prof-out")]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env_with(threads), check=False, capture_output=True, cwd=REPO)
    wall = time.perf_counter() - t0
    st = pstats.Stats(str(prof))
    raw: Any = st.stats  # type: ignore[attr-defined]
    total = max(ct for (_, _, _), (_, _, _, ct, _) in raw.items())
    rows = []
    for label, file_part, func in GROUPS:
        if func == "*":
            # outermost calls into the module only: sum cumulative time of functions whose
            # callers are all outside it
            secs = 0.0
            for (f, _, fn), (_, _, _, ct, callers) in raw.items():
                if (
                    file_part in f
                    and fn != "<module>"
                    and not any(file_part in c[0] for c in callers)
                ):
                    secs += ct
        else:
            secs = sum(
                ct for (f, _, fn), (_, _, _, ct, _) in raw.items() if file_part in f and fn == func
            )
        rows.append([label, f"{secs:.2f}", f"{100 * secs / total:.0f}%"])
    # the heaviest functions by own time, for the record
    st.sort_stats("tottime")
    top = sorted(raw.items(), key=lambda kv: -kv[1][2])[:12]
    lines = [f"| {Path(f).name}:{ln} {fn} | {tt:.2f} |" for (f, ln, fn), (_, _, tt, _, _) in top]
    top_md = "| function | own s |\n|---|---|\n" + "\n".join(lines)
    return wall, rows, top_md


def default_threads() -> str:
    code = (
        "import os, torch; print(torch.get_num_threads(), torch.get_num_interop_threads(), "
        "os.cpu_count(), len(os.sched_getaffinity(0)))"
    )
    out = subprocess.run(
        [PY, "-c", code], env=env_with(None), capture_output=True, text=True, check=True
    ).stdout.split()
    return (
        f"torch.get_num_threads() = {out[0]}, get_num_interop_threads() = {out[1]}, "
        f"os.cpu_count() = {out[2]}, usable CPUs (affinity) = {out[3]}"
    )


def thread_runs(tmp: Path, repeats: int, cap: float) -> tuple[list[list[Any]], list[str]]:
    arms: dict[str, str | None] = {"OMP_NUM_THREADS=1": "1", "OMP_NUM_THREADS=2": "2"}
    times: dict[str, list[float]] = {a: [] for a in arms}
    loads: list[str] = []
    names = list(arms)
    for rep in range(repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            before = load_avg()
            t0 = time.perf_counter()
            try:
                subprocess.run(
                    [PY, "-m", "dpo_harness.cli", "evaluate", "--quiet", "--out", str(tmp / "t")],
                    env=env_with(arms[name]),
                    capture_output=True,
                    check=False,
                    cwd=REPO,
                    timeout=cap,
                )
                capped = ""
            except subprocess.TimeoutExpired:  # the child is killed; counts as >= cap
                capped = " (stopped at the cap)"
            times[name].append(time.perf_counter() - t0)
            loads.append(f"{name} {times[name][-1]:.1f}s{capped} (load before {before})")
            print(loads[-1], flush=True)
    rows = [
        [a, f"{statistics.median(v):.1f}", " ".join(f"{x:.1f}" for x in v)]
        for a, v in times.items()
    ]
    return rows, loads


def stats_cost() -> str:
    import numpy as np
    from dpo_harness import stats

    rng = np.random.default_rng(0)
    cand = rng.random(158) < 0.5
    base = rng.random(158) < 0.5
    diff = cand.astype(float) - base.astype(float)

    def call() -> None:
        stats.non_inferiority(diff, 0.05, binary=True)

    def best(fn: Any, n: int = 20) -> float:
        fn()
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    full = best(call)
    real = stats._bootstrap_distribution
    stats._bootstrap_distribution = lambda d, n, s, m: np.sort(d)  # type: ignore[assignment]
    try:
        without = best(call)
    finally:
        stats._bootstrap_distribution = real
    return (
        f"binary `non_inferiority` on 158 paired items: {full * 1e3:.2f} ms median; with the "
        f"percentile bootstrap replaced by a no-op: {without * 1e3:.2f} ms; bootstrap share "
        f"**{100 * (full - without) / full:.0f}%** of the call"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile-threads", default="1", help="OMP_NUM_THREADS for the profile")
    ap.add_argument("--cap", type=float, default=180.0, help="seconds; a slower run is stopped")
    ap.add_argument("--skip-profile", action="store_true")
    ap.add_argument("--title", default="before any change", help="what this profile is of")
    ap.add_argument("--skip-threads", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/evaluate_profile.md")
    ap.add_argument("--threads-out", type=Path, default=REPO / "benchmarks/results/threads.md")
    args = ap.parse_args()
    from dpo_harness.io import atomic_write_text

    command = "`python benchmarks/profile_evaluate.py " + " ".join(sys.argv[1:]) + "`"
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        if not args.skip_profile:
            load0 = load_avg()
            wall, rows, top = profile(tmp, args.profile_threads)
            load1 = load_avg()
            print(f"profiled wall {wall:.1f}s", flush=True)
            text = (
                f"# `dpo-harness evaluate` on the demo: profile ({args.title})\n\n"
                f"Command: `OMP_NUM_THREADS={args.profile_threads} python -m cProfile -o "
                "evaluate.prof -m dpo_harness.cli evaluate --quiet --out TMP`. Wall "
                f"{wall:.1f} s under cProfile (its overhead included); load average {load0} → "
                f"{load1}. Rows are cumulative times of the named functions; indented rows are "
                "inside the row above them, and lazy imports are counted both under imports and "
                "where they happen.\n\n"
                + tabulate(rows, headers=["where", "cumulative s", "share"], tablefmt="github")
                + "\n\nHeaviest functions by own time:\n\n"
                + top
                + "\n\n"
                + stats_cost()
                + ".\n\nCommand: "
                + command
                + "\n"
            )
            print(text)
            atomic_write_text(args.out, text)
        if not args.skip_threads:
            threads_default = default_threads()
            trows, tloads = thread_runs(tmp, args.repeats, args.cap)
            text = (
                "# Threads: `dpo-harness evaluate` on the demo at 1 vs 2 threads\n\n"
                + threads_default
                + ".\n\n`dpo-harness evaluate --quiet` wall time (fresh process, imports "
                f"included), {args.repeats} interleaved repeats; a run slower than "
                f"{args.cap:.0f} s was stopped there, so a median at the cap means at least "
                "that:\n\n"
                + tabulate(trows, headers=["threads", "median s", "runs s"], tablefmt="github")
                + "\n\nRun log: "
                + "; ".join(tloads)
                + ".\n\nCommand: "
                + command
                + "\n"
            )
            print(text)
            atomic_write_text(args.threads_out, text)


if __name__ == "__main__":
    main()

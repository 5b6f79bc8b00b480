"""`dpo-harness evaluate` wall time and peak memory against model size and dtype, on this machine.

The demo model says nothing about cost; this runs the real command on the demo and on the
real-shaped random-weight checkpoints of ``benchmarks/make_models.py`` (0.1B, Qwen2-0.5B shape;
151,936-row vocabulary) in fp32 and bf16, each in a fresh process (``/proc`` ``VmHWM`` of the
child), interleaved by model, medians of the repeats. Random weights never emit EOS, so every
generation runs to ``--max-new-tokens``: the table states the value used.

Run: ``python benchmarks/evaluate_scaling.py --models DIR [--max-new-tokens 32] [--repeats 1]``;
writes ``benchmarks/results/evaluate_scaling.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(argv: list[str]) -> None:
    """Run `dpo-harness ARGV` in this process, then print its peak resident memory (VmHWM)."""
    from dpo_harness.cli import main as cli_main

    with contextlib.suppress(SystemExit):  # the exit code is not what is measured
        cli_main(argv)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            print(f"VMHWM {int(line.split()[1]) * 1024}")


def run_once(model: str, dtype: str, max_new_tokens: int, threads: int) -> tuple[float, float]:
    """(wall seconds, peak RSS of the child in GB) of one `evaluate`."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "evaluate",
                model,
                "--dtype",
                dtype,
                "--device",
                "cpu",
                "--max-new-tokens",
                str(max_new_tokens),
                "--threads",
                str(threads),
                "--quiet",
                "--out",
                out,
            ],
            check=False,  # random weights fail hard limits (exit 1): still a full evaluation
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        wall = time.perf_counter() - t0
    peak = next(
        (int(ln.split()[1]) for ln in proc.stdout.splitlines() if ln.startswith("VMHWM ")), 0
    )
    return wall, peak / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, required=True, help="make_models.py output directory")
    ap.add_argument("--shapes", default="0.1b,0.5b")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    args = ap.parse_args()
    models = [("demo", "demo")] + [
        (s, str(args.models / f"qwen2-{s}")) for s in args.shapes.split(",")
    ]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        for name, ref in models:
            for dtype in ("float32", "bfloat16"):
                results.setdefault((name, dtype), []).append(
                    run_once(ref, dtype, args.max_new_tokens, args.threads)
                )
                print(name, dtype, results[(name, dtype)][-1], flush=True)
    rows = []
    for (name, dtype), runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        peak = statistics.median(r[1] for r in runs)
        rows.append(f"| {name} | {dtype} | {wall:.0f} | {peak:.2f} |")
    load = os.getloadavg()
    text = (
        "# `evaluate` against model size and dtype (CPU)\n\n"
        f"All four suites, `--max-new-tokens {args.max_new_tokens}` (random weights never stop "
        f"early), {args.threads} thread(s), batch 16; each run a fresh process; "
        f"{args.repeats} repeat(s), medians. Machine: {platform.machine()}, {os.cpu_count()} "
        f"cores, shared with other work (load average at the end {load[0]:.1f}): the seconds "
        "are an upper bound for a quiet machine.\n\n"
        "| model | dtype | wall s | peak RSS GB |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\nCommand: `python benchmarks/evaluate_scaling.py --models DIR "
        + " ".join(sys.argv[1:]).split("--models ", 1)[-1].partition(" ")[2]
        + "`\n"
    )
    (REPO / "benchmarks" / "results" / "evaluate_scaling.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

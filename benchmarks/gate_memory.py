"""Peak memory of gating a full-model candidate against a separate full base: one model resident.

A gate of a full model (not an adapter) needs a reference: the base, for exact KL, top-1
agreement and the answer NLL. The runner used to hold both models; now it runs the candidate's
requests, releases it, and only then loads the base (``ModelRunner(reference_loader=...)``).
This measures the process's peak resident memory (``VmHWM``) in each arm, each in a fresh
subprocess, on a real-shaped checkpoint (``benchmarks/make_models.py``, default the Qwen2-0.5B
shape, fp32 on CPU: 1.98 GB of weights), with the requests of the numerical suite (probes with
exact KL against the reference, held-out rolling log-likelihood, weights, parity with 8 new
tokens) — the suite that needs both models:

- ``both resident`` — candidate and base loaded side by side (the behaviour before);
- ``one resident`` — the runner's reference loader (what ``gate`` does now).

Goal (issue 13): peak ≤ 1.25 × the candidate's weights + the process's baseline (its RSS after
imports, before any model). Arms are interleaved; medians of the repeats.

Run: ``python benchmarks/gate_memory.py --models DIR [--shape 0.5b] [--repeats 2]``; writes
``benchmarks/results/gate_memory-<shape>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def child(model_dir: str, arm: str) -> None:
    """One arm in this (fresh) process; prints a JSON line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from dpo_harness.evaluation.evaluate import evaluate_loaded, load_from_config
    from dpo_harness.evaluation.loading import resolve_model
    from dpo_harness.schema import EvalConfig, GenerationSettings

    torch.set_num_threads(1)
    config = EvalConfig(
        checkpoint=model_dir,
        base=model_dir,
        suites=["numerical"],
        generation=GenerationSettings(max_new_tokens=8),
        dtype="float32",
        device="cpu",
        threads=1,
    )
    baseline_rss = _status("VmRSS")
    resolved = resolve_model(model_dir)
    t0 = time.perf_counter()
    loaded = load_from_config(config, resolved)
    weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    if arm == "both":
        reference = load_from_config(config, resolved)
        report = evaluate_loaded(loaded, config, reference=reference)
    else:
        report = evaluate_loaded(
            loaded,
            config,
            reference_loader=lambda: load_from_config(config, resolved),
            candidate_loader=lambda: load_from_config(config, resolved),
        )
    kl = report.suite("numerical").metric("kl_from_reference").value
    print(
        json.dumps(
            {
                "arm": arm,
                "baseline_rss": baseline_rss,
                "peak": _status("VmHWM"),
                "weights": weights,
                "seconds": time.perf_counter() - t0,
                "kl": kl,
                "model_loads": report.provenance.runner_stats.get("model_loads", 0),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, required=True, help="make_models.py output directory")
    ap.add_argument("--shape", default="0.5b")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "ARM"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    model = args.models / f"qwen2-{args.shape}"
    arms = ("both", "one", "one-glibc")
    runs: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
    for _ in range(args.repeats):
        for arm in arms:  # interleaved
            # one-glibc: one resident, glibc's own mmap threshold (the allocator policy off)
            env = {k: v for k, v in os.environ.items() if k != "DPO_HARNESS_MMAP_THRESHOLD"}
            if arm == "one-glibc":
                env["DPO_HARNESS_MMAP_THRESHOLD"] = "0"
            out = (
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--models",
                        str(args.models),
                        "--child",
                        str(model),
                        arm.removesuffix("-glibc"),
                    ],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            runs[arm].append(json.loads(out))
            print(arm, runs[arm][-1], flush=True)
    gb = 1e9
    rows = []
    for arm, label in (
        ("both", "both resident (before)"),
        ("one", "one resident (now)"),
        ("one-glibc", "one resident, glibc's default mmap threshold"),
    ):
        peak = statistics.median(r["peak"] for r in runs[arm])
        base = statistics.median(r["baseline_rss"] for r in runs[arm])
        weights = runs[arm][0]["weights"]
        ratio = (peak - base) / weights
        rows.append(
            f"| {label} | {weights / gb:.2f} | {base / gb:.2f} | {peak / gb:.2f} | "
            f"{ratio:.2f} | {statistics.median(r['seconds'] for r in runs[arm]):.0f} | "
            f"{runs[arm][0]['model_loads']:.0f} | {runs[arm][0]['kl']:.3g} |"
        )
    load = os.getloadavg()
    text = (
        "# Peak memory of a gate with a separate full base: one model resident\n\n"
        f"Model: `{model.name}` (random weights, real vocabulary), fp32 on CPU, the numerical "
        f"suite's requests (probes with exact KL against the base, held-out rolling "
        f"log-likelihood, weights, parity with 8 new tokens), 1 thread; {args.repeats} "
        f"interleaved repeats per arm, each in a fresh process (medians). Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, shared (load average at the end "
        f"{load[0]:.1f}).\n\n"
        "| arm | weights GB | baseline RSS GB | peak RSS GB | (peak − baseline) / weights | s | "
        "loads by the runner | KL (same weights: 0) |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Goal: (peak − baseline) / weights ≤ 1.25 for the one-resident arm. What the user gives "
        "up: nothing in the numbers (the KL is computed from the same logits: the candidate's "
        "probe logits are parked on disk, bit for bit, until the base's are computed, which "
        "costs a write and a read in the cache directory); the base is loaded "
        "after the candidate's last request instead of beside it, so the two loads are serial "
        "as before, and a model the caller passed in (e.g. the pytest plugin's `dpo_model`) "
        "is never released. The third arm shows what the 1 MiB mmap threshold "
        "(`DPO_HARNESS_MMAP_THRESHOLD`, set by the in-process backend) saves, and costs in time.\n\n"
        f"Command: `python benchmarks/gate_memory.py --models DIR --shape {args.shape}`\n"
    )
    (REPO / "benchmarks" / "results" / f"gate_memory-{args.shape}.md").write_text(
        text, encoding="utf-8"
    )
    print(text)


if __name__ == "__main__":
    main()

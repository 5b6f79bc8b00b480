"""What live gating costs a training run: the embedded demo with ``gate.live`` on and off.

Both arms train the same 80 steps with checkpoints at 40 and 80 and gate both checkpoints; they
differ only in *when*: live gating evaluates each checkpoint in the training process right after
it is saved (the in-memory model, no reload), the other arm evaluates them after the last step
(each checkpoint loaded from its files). Each run is a fresh process; the arms are interleaved and
medians reported, because this machine is shared. The demo model (1.2M parameters) says nothing
about speed in absolute terms; what it shows is the overhead structure (loads, repeated setup).

Run: ``python benchmarks/live_gating_cost.py [--repeats 2]``; writes
``benchmarks/results/live_gating_cost.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(arm: str, out: Path) -> None:
    from dpo_harness.plugins.dpo import DPOPlugin
    from dpo_harness.training.plugin import GateSettings
    from dpo_harness.training.train_and_gate import train_and_gate

    plugin = DPOPlugin()
    config = plugin.demo_config(out)
    live = arm == "live"
    config = config.model_copy(
        update={"gate": GateSettings(live=live, stop_after_refusals=2 if live else None)}
    )
    t0 = time.perf_counter()
    summary = train_and_gate(plugin, config, progress=False, log=lambda _m: None)
    wall = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "arm": arm,
                "wall": wall,
                "timings": summary.timings,
                "outcome": summary.outcome,
                "gated": len(summary.candidates),
                "promoted": summary.promoted,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("ARM", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs: dict[str, list[dict]] = {"live": [], "after": []}
    for r in range(args.repeats):
        for arm in ("live", "after") if r % 2 == 0 else ("after", "live"):
            with tempfile.TemporaryDirectory() as tmp:
                res = subprocess.run(
                    [sys.executable, __file__, "--child", arm, str(Path(tmp) / "run")],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
            if res.returncode != 0:
                sys.exit(f"{arm} failed:\n{res.stderr[-3000:]}")
            rec = json.loads(res.stdout.strip().splitlines()[-1])
            print(rec, flush=True)
            runs[arm].append(rec)

    def med(arm: str, key: str) -> float:
        vals = [(x["wall"] if key == "wall" else x["timings"].get(key, 0.0)) for x in runs[arm]]
        return statistics.median(vals)

    rows = []
    for arm in ("live", "after"):
        last = runs[arm][-1]
        rows.append(
            f"| {arm} | {med(arm, 'wall'):.0f} | {med(arm, 'train'):.0f} | "
            f"{med(arm, 'live_gate'):.0f} | {med(arm, 'gate'):.0f} | {last['gated']} | "
            f"{last['outcome']} ({last['promoted']}) |"
        )
    ratio = med("live", "wall") / med("after", "wall")
    load = os.getloadavg()[0]
    text = (
        "# Live gating's cost on the embedded demo\n\n"
        f"{args.repeats} interleaved repeats per arm, each a fresh process, medians in seconds. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, shared (load average at the end "
        f"{load:.1f}).\n\n"
        "| arm | wall s | train s (live: incl. gating) | live gating s | gate after training s "
        "| checkpoints gated | outcome |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nlive / after wall time: **{ratio:.2f}**\n\n"
        "Command: `python benchmarks/live_gating_cost.py --repeats "
        f"{args.repeats}`\n"
    )
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "live_gating_cost.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

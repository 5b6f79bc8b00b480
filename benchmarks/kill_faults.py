"""kill -9 at random moments: baseline writes, promotions, baseline update, gate, train, demo build.

For each group of tests/faults.py: one uninterrupted run (its time sets the kill window), then
up to ``--kills`` runs killed with SIGKILL after a random delay (biased towards the end of the
run, where the writes are), each followed by a look at the disk — which phase the kill hit and
whether anything is half-written or inconsistent — and one last run that must succeed from
whatever the kills left. Then two ``baseline update`` processes at once (they must serialise,
and each update report must name the baseline it actually replaced).

Run: ``python benchmarks/kill_faults.py [--kills 8] [--budget 300] [--groups ...]``; writes the
results into ``docs/bad-inputs.md`` between its ``kill-faults`` markers.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dpo_harness.files import atomic_write_text  # noqa: E402

from tests.faults import GROUPS, GroupResult, concurrent_updates, run_group  # noqa: E402

DOC = REPO / "docs" / "bad-inputs.md"
BEGIN, END = "<!-- kill-faults -->", "<!-- /kill-faults -->"


def render(results: list[GroupResult], concurrency: list[str], seconds: float) -> str:
    lines = [
        "| group | kills | phases hit (kills) | problems after a kill | last run | s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        phases = Counter(k.phase for k in r.kills)
        hit = "; ".join(f"{phase} ({n})" for phase, n in phases.most_common())
        bad = [f"{k.delay} s: {', '.join(k.problems)}" for k in r.kills if k.problems]
        extra = f" (+{r.finished_without_kill} ended before the kill)" * bool(
            r.finished_without_kill
        )
        lines.append(
            f"| `{r.name}` | {len(r.kills)}{extra} | {hit or '-'} | "
            f"{'; '.join(bad) or 'none'} | "
            f"{'; '.join(r.final_problems) or 'succeeded, nothing left over'} | {r.seconds} |"
        )
    total = sum(len(r.kills) for r in results)
    broken = sum(bool(k.problems) for r in results for k in r.kills)
    lines += [
        "",
        f"**{total} kills, {broken} left a broken or half-written state; "
        f"{sum(not r.final_problems for r in results)} of {len(results)} groups ran clean "
        f"afterwards.** Two concurrent `baseline update`s: "
        + ("; ".join(concurrency) or "serialised, each report names the baseline it replaced")
        + ".",
        "",
        f"Run on {platform.platform()}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}, in {seconds:.0f} s (`python benchmarks/kill_faults.py`).",
        "",
    ]
    return "\n".join(lines)


def write_doc(section: str) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else f"{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    atomic_write_text(DOC, f"{head}{BEGIN}\n{section}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=8, help="kills per group (default 8)")
    parser.add_argument("--budget", type=float, default=300, help="seconds per group (300)")
    parser.add_argument("--groups", nargs="*", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="kill-faults-") as tmp:
        for name in args.groups:
            result = run_group(
                GROUPS[name](), Path(tmp) / name, kills=args.kills, budget_s=args.budget,
                seed=args.seed,
            )  # fmt: skip
            results.append(result)
            print(f"{name}: {len(result.kills)} kills in {result.seconds} s, ok={result.ok}")
            for k in result.kills:
                print(f"  {k.delay:7.2f} s  {k.phase}  {k.problems or ''}")
            for problem in result.final_problems:
                print(f"  last run: {problem}")
        concurrency = concurrent_updates(Path(tmp) / "concurrent")
        print("concurrent baseline updates:", concurrency or "serialised")
    section = render(results, concurrency, time.perf_counter() - t0)
    print(section)
    if not args.no_write:
        write_doc(section)
        print(f"written to {DOC}")
    return 0 if all(r.ok for r in results) and not concurrency else 1


if __name__ == "__main__":
    sys.exit(main())

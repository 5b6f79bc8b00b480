"""Peak memory and time of the streamed safetensors NaN scan vs loading the state dict, one process.

The numerical suite must name every non-finite stored tensor without holding a second copy of
the model. This builds a synthetic bf16 checkpoint with TinySwallow-1.5B's largest shapes
(embedding 151,936 × 1,536, MLP 8,960 × 1,536; about 1.2 GB), plants one NaN in the last tensor,
and compares, interleaved so page-cache state and machine load hit both alike:

- ``streamed`` — ``dpo_harness.evaluation.weight_scan.scan_safetensors`` (memory-mapped, row slices);
- ``load_file`` — ``safetensors.torch.load_file`` then the same per-tensor check (what a scan
  that materialises the state dict costs).

Peak memory is the high-water mark of anonymous resident memory (``RssAnon``, sampled every
2 ms) above the level before the arm; file-backed page cache is shared and not counted.

Run: ``python benchmarks/weight_scan.py [--repeats 3] [--gb 1.2]``; writes
``benchmarks/results/weight_scan.md``.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from dpo_harness.evaluation.weight_scan import scan_safetensors, scan_tensor
from dpo_harness.files import atomic_write_text
from safetensors.torch import load_file, save_file
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
HIDDEN, VOCAB, INTER = 1536, 151_936, 8960


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def rss_anon_bytes() -> int:
    return _status("RssAnon")


def rss_total_bytes() -> int:
    return _status("VmRSS")


class PeakSampler:
    def __init__(self) -> None:
        self.peak = 0
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon_bytes())
            self.peak_total = max(self.peak_total, rss_total_bytes())
            time.sleep(0.002)

    def __enter__(self) -> PeakSampler:
        self.peak = rss_anon_bytes()
        self.peak_total = rss_total_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon_bytes())
        self.peak_total = max(self.peak_total, rss_total_bytes())


def build(directory: Path, gigabytes: float) -> tuple[list[Path], str]:
    """Shards of bf16 tensors with realistic shapes; one NaN in the very last tensor."""
    budget = int(gigabytes * 1e9 / 2)  # bf16 elements
    shapes: list[tuple[str, tuple[int, int]]] = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    layer = 0
    while sum(a * b for _, (a, b) in shapes) < budget:
        for proj, shape in (("gate_proj", (INTER, HIDDEN)), ("down_proj", (HIDDEN, INTER))):
            shapes.append((f"model.layers.{layer}.mlp.{proj}.weight", shape))
        layer += 1
    files: list[Path] = []
    gen = torch.Generator().manual_seed(0)
    shard: dict[str, torch.Tensor] = {}
    for i, (name, shape) in enumerate(shapes):
        t = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
        if i == len(shapes) - 1:
            t[-1, -1] = math.nan
            planted = name
        shard[name] = t
        if sum(v.numel() for v in shard.values()) > 150_000_000 or i == len(shapes) - 1:
            path = directory / f"model-{len(files) + 1:05d}.safetensors"
            save_file(shard, str(path))
            files.append(path)
            shard = {}
    return files, planted


def streamed(files: list[Path]) -> list[str]:
    return [t.name for t in scan_safetensors(files)[2]]


def via_load_file(files: list[Path]) -> list[str]:
    bad = []
    for path in files:
        state = load_file(str(path))
        bad += [k for k, v in state.items() if any(scan_tensor(v))]
        del state
    return bad


NOTE = (
    "Reading: RssAnon is what the scan itself allocates (slice copies and boolean masks, bounded "
    "by `CHUNK_ELEMENTS`), independent of the checkpoint's size. VmRSS adds the file pages the "
    "memory map has touched; the kernel can drop those at any time, so they are not a second "
    "copy. With safetensors 0.8, `load_file` is itself backed by a private memory map of the "
    "file, so it is not the memory hog it would be with pickle `torch.load`; what the streamed "
    "scan adds is that it names every bad tensor as stored, never builds a module, and keeps at "
    "most one slice alive."
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gb", type=float, default=1.2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "weight_scan.md")
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        files, planted = build(Path(tmp), args.gb)
        size = sum(p.stat().st_size for p in files)
        arms: dict[str, Callable[[list[Path]], list[str]]] = {
            "streamed (dpo-harness)": streamed,
            "load_file + check": via_load_file,
        }
        for fn in arms.values():  # warm the page cache for both
            fn(files)
        times: dict[str, list[float]] = {k: [] for k in arms}
        peaks: dict[str, list[float]] = {k: [] for k in arms}
        totals: dict[str, list[float]] = {k: [] for k in arms}
        for _ in range(args.repeats):
            for name, fn in arms.items():
                gc.collect()
                before, before_total = rss_anon_bytes(), rss_total_bytes()
                t0 = time.perf_counter()
                with PeakSampler() as s:
                    found = fn(files)
                times[name].append(time.perf_counter() - t0)
                peaks[name].append((s.peak - before) / 1e6)
                totals[name].append((s.peak_total - before_total) / 1e6)
                assert found == [planted], (name, found)
    rows = [
        [
            name,
            f"{statistics.median(times[name]):.2f}",
            f"{max(peaks[name]):.0f}",
            f"{max(totals[name]):.0f}",
        ]
        for name in arms
    ]
    s_name, l_name = arms
    ratio_mem = max(totals[s_name]) / max(totals[l_name])
    ratio_time = statistics.median(times[s_name]) / statistics.median(times[l_name])
    table = tabulate(
        rows,
        headers=["arm", "median s", "peak extra RssAnon MB", "peak extra VmRSS MB"],
        tablefmt="github",
    )
    text = (
        "# Streamed non-finite scan vs load_file\n\n"
        f"Synthetic bf16 checkpoint: {len(files)} shards, {size / 1e9:.2f} GB, one NaN planted in "
        f"`{planted}` (found by both arms every time). {args.repeats} interleaved repeats, 2 threads.\n\n"
        f"{table}\n\n"
        f"Peak extra resident memory (VmRSS), streamed / load_file: **{ratio_mem:.3f}**; "
        f"time ratio {ratio_time:.2f}.\n\n"
        f"{NOTE}\n\n"
        "Command: `python benchmarks/weight_scan.py`\n"
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()

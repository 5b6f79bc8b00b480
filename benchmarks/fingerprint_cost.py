"""What a fingerprint costs on a real-sized checkpoint: hashing the content vs a cache hit.

A model's fingerprint is its identity in baselines, gate decisions and promotions, so it must
never go stale. The digest cache is keyed on (path, device, inode, size, mtime, ctime): an
in-place edit that restores the mtime still changes the ctime and misses the cache. This
measures what the cache saves — and so what "always hash the content" would cost instead — on
a 1.24 GB checkpoint of 4 shards (TinySwallow-1.5B's largest bf16 shapes, random values).

Arms, interleaved so page-cache state and machine load hit them alike (medians reported):

- ``hash (no cache)`` — blake2b over every byte, the page cache warm (the files were just read);
- ``cache hit`` — one ``stat`` per file and a JSON lookup;
- ``hash after edit`` — one byte changed in place with the mtime restored: must re-hash
  (and does: the digest differs from the cached one).

Run: ``python benchmarks/fingerprint_cost.py [--repeats 3] [--gb 1.24]``; writes
``benchmarks/results/fingerprint_cost.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from dpo_harness.evaluation.fingerprint import files_fingerprint
from dpo_harness.files import atomic_write_text
from safetensors.torch import save_file
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]


def write_checkpoint(directory: Path, gb: float, shards: int = 4) -> list[Path]:
    per_shard = int(gb * 1e9 / shards / 2)  # bf16: 2 bytes per value
    rows = per_shard // 1536
    files = []
    gen = torch.Generator().manual_seed(0)
    for k in range(shards):
        t = torch.randn(rows, 1536, generator=gen).to(torch.bfloat16)
        path = directory / f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_file({f"layer{k}.weight": t}, str(path))
        files.append(path)
    return files


def timed(fn) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gb", type=float, default=1.24)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["DPO_HARNESS_CACHE"] = str(root / "cache")
        files = write_checkpoint(root, args.gb)
        size = sum(p.stat().st_size for p in files)
        named = [(p.name, p) for p in files]
        files_fingerprint(named, use_cache=False)  # warm the page cache for every arm
        times: dict[str, list[float]] = {
            "hash (no cache)": [],
            "cache hit": [],
            "hash after edit": [],
        }
        for r in range(args.repeats):
            s, fp = timed(lambda: files_fingerprint(named, use_cache=False))
            times["hash (no cache)"].append(s)
            files_fingerprint(named)  # fill the cache
            s, hit = timed(lambda: files_fingerprint(named))
            assert hit == fp
            times["cache hit"].append(s)
            victim = files[r % len(files)]
            st = victim.stat()
            with victim.open("r+b") as fh:
                fh.seek(st.st_size // 2)
                old = fh.read(1)
                fh.seek(st.st_size // 2)
                fh.write(bytes([old[0] ^ 0xFF]))
            os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
            s, edited = timed(lambda: files_fingerprint(named))
            assert edited != fp, (
                "an in-place edit with the mtime restored must change the fingerprint"
            )
            times["hash after edit"].append(s)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [
        [k, f"{med[k]:.3f}", f"{size / med[k] / 1e9:.2f}" if med[k] > 0.01 else "—"] for k in times
    ]
    table = tabulate(rows, headers=["arm", "median s", "GB/s"], tablefmt="github")
    ratio = med["hash (no cache)"] / max(med["cache hit"], 1e-9)
    text = (
        "# Fingerprint cost on a real-sized checkpoint\n\n"
        f"{len(files)} bf16 shards, {size / 1e9:.2f} GB, {args.repeats} interleaved repeats "
        f"(medians), page cache warm; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}. The machine is shared: treat the "
        "seconds as indicative.\n\n"
        f"{table}\n\n"
        f"A cache hit is **{ratio:,.0f}×** cheaper than hashing. Every in-place edit (mtime "
        "restored) changed the fingerprint. Hashing always instead of caching would add the "
        "first row to every `evaluate` and `gate` of an unchanged model.\n\n"
        "Command: `python benchmarks/fingerprint_cost.py`\n"
    )
    out = REPO / "benchmarks" / "results" / "fingerprint_cost.md"
    atomic_write_text(out, text)
    print(text)


if __name__ == "__main__":
    main()

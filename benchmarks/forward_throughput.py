"""Forward-pass throughput of the 0.1B shape as a share of this machine's fp32 matmul peak.

Peak: the best of repeated ``torch.matmul`` of two 4096×4096 fp32 matrices (2·n³ FLOP), at 1 and
2 threads. Forward: the 0.1B-shaped Qwen2 on 16 × 128 tokens (no padding), counted as
2 · (non-embedding weights) per token for the body, 2 · hidden · vocab per token for the LM head
(only where logits are computed) and 4 · layers · hidden · (attended keys) for attention scores
and values; three settings:

- all logits (what lm-eval computes), ``logits_to_keep=0``;
- last position only (``logits_to_keep=1``: a context pass, or one generation step's prefill);
- LM head alone on 2,048 rows (the 151,936 × 512 projection).

Run: ``python benchmarks/forward_throughput.py [--model out/models/qwen2-0.1b]``; writes
``benchmarks/results/forward_throughput.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from dpo_harness.evaluation.loading import load_checkpoint
from dpo_harness.files import atomic_write_text
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def matmul_peak(threads: int, n: int = 4096, repeats: int = 7) -> tuple[float, float]:
    torch.set_num_threads(threads)
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    ts = timed(lambda: torch.matmul(a, b), repeats)
    flop = 2 * n**3
    return flop / min(ts) / 1e9, flop / statistics.median(ts) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "out/models/qwen2-0.1b"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="threads for the model forward")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/forward_throughput.md")
    args = ap.parse_args()
    loads = [" ".join(Path("/proc/loadavg").read_text().split()[:3])]
    peak1 = matmul_peak(1)
    peak2 = matmul_peak(2)
    peak = {1: peak1, 2: peak2}.get(args.threads) or matmul_peak(args.threads)
    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.model, device="cpu", dtype="float32")
    model = loaded.model
    cfg = model.config
    h, v, n_layers = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    body = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    tokens = args.batch * args.seq
    attn = 4 * n_layers * h * (args.seq + 1) / 2 * tokens  # causal: mean (seq+1)/2 keys
    ids = torch.randint(0, 3000, (args.batch, args.seq))
    x = torch.randn(tokens, h)
    head = model.get_output_embeddings()

    def fwd(keep: int) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return model(input_ids=ids, logits_to_keep=keep).logits

        return run

    def head_only() -> object:
        with torch.inference_mode():
            return head(x)

    settings = [
        ("forward, all logits", fwd(0), 2 * body * tokens + attn + 2 * h * v * tokens),
        ("forward, last logit", fwd(1), 2 * body * tokens + attn + 2 * h * v * args.batch),
        ("LM head alone", head_only, 2 * h * v * tokens),
    ]
    rows = []
    for name, fn, flop in settings:
        ts = timed(fn, args.repeats)
        med = statistics.median(ts)
        rows.append(
            [
                name,
                f"{flop / 1e9:.1f}",
                f"{med * 1e3:.0f}",
                f"{flop / med / 1e9:.1f}",
                f"{100 * flop / med / 1e9 / peak[0]:.0f}%",
            ]
        )
    loads.append(" ".join(Path("/proc/loadavg").read_text().split()[:3]))
    table = tabulate(
        rows,
        headers=[
            "setting",
            "GFLOP",
            "median ms",
            "GFLOP/s",
            f"share of {args.threads}-thread peak",
        ],
        tablefmt="github",
    )
    text = (
        "# Forward throughput vs fp32 matmul peak\n\n"
        f"fp32 matmul 4096³: 1 thread best {peak1[0]:.1f} GFLOP/s (median {peak1[1]:.1f}); "
        f"2 threads best {peak2[0]:.1f} GFLOP/s (median {peak2[1]:.1f}). torch "
        f"{torch.__version__}, {torch.backends.cpu.get_cpu_capability()}.\n\n"
        f"`{Path(args.model).name}`: {body / 1e6:.1f} M non-embedding parameters, "
        f"hidden {h}, {n_layers} layers, vocab {v:,}; {args.batch} × {args.seq} tokens, "
        f"{args.threads} thread(s), {args.repeats} repeats (medians; the share is against the "
        f"best {args.threads}-thread matmul).\n\n{table}\n\n"
        f"Load average: {' → '.join(loads)} (shared 2-core machine: the peak and the forward "
        "were measured minutes apart under whatever else ran).\n\n"
        "Command: `python benchmarks/forward_throughput.py " + " ".join(sys.argv[1:]) + "`\n"
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()

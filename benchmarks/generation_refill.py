"""Greedy generation of answers of different lengths: ``model.generate`` batches vs the runner's loop.

The runner's loop (``dpo_harness.evaluation.greedy``) drops a row as soon as it ends and lets a
waiting prompt take its place; ``model.generate`` keeps every row of a batch until the longest
ends. That only matters when answers differ in length, and a random-weight model never emits its
EOS token. So the benchmark makes lengths differ the way a real model's do, deterministically: a
pilot run (not timed) generates every prompt to ``--max-new-tokens``; a random model repeats one
token and then switches to another, and the token a prompt switches to is declared an end token
for all but every ``1/--long-share``-th prompt. Those answers end at the switch, the others (and
any answer that meets no end token) run to the limit.

Arms, on the same model object, prompts (chat-rendered open prompts and AdTech questions, longest
first) and end tokens; interleaved repeats, medians:

- ``generate(), batch B`` — ``model.generate`` on consecutive batches of B with the runner's greedy
  ``GenerationConfig`` (what the runner did before);
- ``runner loop, batch B`` — ``greedy_generate(..., batch_size=B)`` (what it does now);
- ``one-by-one`` — ``model.generate`` per prompt (run once: the reference for equality).

Run: ``python benchmarks/generation_refill.py --model out/models/qwen2-0.1b``; writes
``benchmarks/results/generation_refill.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from dpo_harness.evaluation import measure
from dpo_harness.evaluation.greedy import greedy_generate, left_pad
from dpo_harness.evaluation.loading import load_checkpoint
from dpo_harness.files import atomic_write_text, read_jsonl
from dpo_harness.schema import ChatMessage
from dpo_harness.suites.common import DATA_DIR
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def _prompts(n: int) -> list[str]:
    texts = [o["prompt"] for _, o in read_jsonl(DATA_DIR / "open_prompts.jsonl")]
    texts += [
        o["question"]
        for _, o in read_jsonl(DATA_DIR / "adtech" / "items.jsonl")
        if o["type"] == "short_answer"
    ]
    return texts[:n]


def _until_end(tokens: list[int], ends: set[int]) -> list[int]:
    cut = next((i for i, t in enumerate(tokens) if t in ends), None)
    return tokens if cut is None else tokens[: cut + 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "out/models/qwen2-0.1b"))
    ap.add_argument("--n", type=int, default=32, help="prompts")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--also-batch", type=int, default=0, help="another runner-loop batch size")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--long-share", type=float, default=0.5, help="share of prompts left to run to the limit"
    )
    ap.add_argument(
        "--row-costs",
        action="store_true",
        help="instead: time one decode step at several row counts (why rows stay at multiples of 8)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/generation_refill.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.model, device="cpu", dtype="float32")
    model, tok = loaded.model, loaded.tokenizer
    if args.row_costs:
        _row_costs(model, args)
        return
    n_params = sum(p.numel() for p in model.parameters())
    rows = [
        measure.encode(tok, measure.render_prompt(tok, (ChatMessage(role="user", content=t),)))
        for t in _prompts(args.n)
    ]
    rows.sort(key=lambda r: -len(r))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    mnt = args.max_new_tokens

    # ---- pilot: the token a prompt switches to becomes an end token (but for the long ones)
    pilot, _ = greedy_generate(
        model, rows, eos=[-1], pad_id=pad, max_new_tokens=mnt, batch_size=args.batch, device=CPU
    )
    every = max(1, round(1 / args.long_share)) if args.long_share > 0 else len(rows) + 1
    ends: set[int] = set()
    for i, toks in enumerate(pilot):
        switch = next((t for t in toks if t != toks[0]), None)
        if i % every != 0 and switch is not None:
            ends.add(switch)
    eos = sorted(ends)
    cfg = measure.generation_config(mnt, eos, pad)

    def generate_batches() -> list[list[int]]:
        out: list[list[int]] = []
        for s in range(0, len(rows), args.batch):
            ids, mask, _ = left_pad(rows[s : s + args.batch], pad, CPU)
            width = ids.shape[1]
            with torch.inference_mode():
                gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
            out += [_until_end(g, ends) for g in gen[:, width:].tolist()]
        return out

    def runner_loop(batch: int) -> Callable[[], list[list[int]]]:
        def run() -> list[list[int]]:
            toks, _ = greedy_generate(
                model, rows, eos=eos, pad_id=pad, max_new_tokens=mnt, batch_size=batch, device=CPU
            )
            return toks

        return run

    def one_by_one() -> list[list[int]]:
        out = []
        with torch.inference_mode():
            for r in rows:
                gen = model.generate(input_ids=torch.tensor([r]), generation_config=cfg)
                out.append(_until_end(gen[0, len(r) :].tolist(), ends))
        return out

    loads = [os.getloadavg()]
    t = time.perf_counter()
    reference = one_by_one()
    single_s = time.perf_counter() - t
    lengths = sorted(len(r) for r in reference)
    arms: dict[str, Callable[[], list[list[int]]]] = {
        f"generate(), batch {args.batch}": generate_batches,
        f"runner loop, batch {args.batch}": runner_loop(args.batch),
    }
    if args.also_batch:
        arms[f"runner loop, batch {args.also_batch}"] = runner_loop(args.also_batch)
    times: dict[str, list[float]] = {k: [] for k in arms}
    wrong: Counter[str] = Counter()
    for rep in range(args.repeats):
        names = list(arms)
        for name in names[rep % len(names) :] + names[: rep % len(names)]:  # rotate the order
            t = time.perf_counter()
            got = arms[name]()
            times[name].append(time.perf_counter() - t)
            wrong[name] = sum(a != b for a, b in zip(got, reference, strict=True))
        loads.append(os.getloadavg())
    tokens = sum(lengths)
    table = [
        [
            name,
            round(statistics.median(ts), 2),
            " ".join(f"{x:.2f}" for x in ts),
            round(tokens / statistics.median(ts), 1),
            round(single_s / statistics.median(ts), 2),
            f"{wrong[name]}/{len(rows)}",
        ]
        for name, ts in times.items()
    ]
    table.append(
        [
            "one-by-one (once)",
            round(single_s, 2),
            f"{single_s:.2f}",
            round(tokens / single_s, 1),
            1.0,
            "—",
        ]
    )
    gen_s = statistics.median(times[f"generate(), batch {args.batch}"])
    loop_s = statistics.median(times[f"runner loop, batch {args.batch}"])
    head = [
        "arm",
        "median s",
        "runs s",
        "new tokens/s",
        "speed-up vs one-by-one",
        "answers ≠ one-by-one",
    ]
    md = (
        "# Greedy generation of answers of different lengths: generate() batches vs the runner's loop\n\n"
        f"`{Path(args.model).name}` ({n_params / 1e6:.1f} M parameters, vocab {model.config.vocab_size:,}), "
        f"{len(rows)} chat-rendered prompts, at most {mnt} new tokens, greedy, fp32, {args.threads} thread(s), "
        f"{args.repeats} interleaved repeats (medians). {len(eos)} end tokens from the pilot "
        f"(--long-share {args.long_share}); answer lengths "
        f"{lengths[0]}–{lengths[-1]}, median {statistics.median(lengths):.0f}, {tokens} new tokens in all. "
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores (shared machine). "
        f"Load average: {' → '.join(' '.join(f'{x:.2f}' for x in la) for la in loads)}.\n\n"
        + tabulate(table, headers=head, tablefmt="github")
        + f"\n\nRunner loop vs generate() batches: **{gen_s / loop_s:.2f}×**.\n\n"
        f"Command: `python benchmarks/generation_refill.py --model {args.model} --n {args.n} "
        f"--batch {args.batch} --max-new-tokens {mnt} --repeats {args.repeats} --threads {args.threads} "
        + (f"--also-batch {args.also_batch} " if args.also_batch else "")
        + f"--long-share {args.long_share}`\n"
    )
    atomic_write_text(args.out, md)
    print(md)


def _row_costs(model: Any, args: argparse.Namespace) -> None:
    """Median time of one decode step (one new token per row, 80 cached positions) by rows."""
    from transformers import DynamicCache

    table = []
    for rows in (32, 24, 17, 16, 15, 14, 13, 12, 9, 8, 7, 4, 1):
        ids = torch.randint(0, 1000, (rows, 80))
        mask = torch.ones_like(ids)
        cache = DynamicCache(config=model.config)
        times = []
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1)
            for step in range(7):
                mask = torch.cat([mask, torch.ones(rows, 1, dtype=mask.dtype)], 1)
                t = time.perf_counter()
                model(
                    input_ids=ids[:, :1],
                    attention_mask=mask,
                    position_ids=torch.full((rows, 1), 80 + step),
                    cache=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                times.append(time.perf_counter() - t)
        ms = statistics.median(times) * 1000
        table.append([rows, round(ms, 1), round(ms / rows, 2)])
    md = (
        f"# One decode step by row count: `{Path(args.model).name}`, fp32, {args.threads} thread(s)\n\n"
        f"torch {torch.__version__}; median of 7 steps, 80 cached positions.\n\n"
        + tabulate(table, headers=["rows", "ms per step", "ms per row"], tablefmt="github")
        + f"\n\nCommand: `python benchmarks/generation_refill.py --model {args.model} --row-costs`\n"
    )
    atomic_write_text(args.out, md)
    print(md)


if __name__ == "__main__":
    main()

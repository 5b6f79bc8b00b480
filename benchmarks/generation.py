"""Greedy generation on a real-sized model: the runner's batches vs one by one vs generate() defaults.

16 open prompts of the repetition/fluency suites, chat-rendered, on the 0.1B-shaped random-weight
Qwen2 (151,936-row LM head), ``max_new_tokens`` from ``GenerationSettings`` (128; a random model
never emits EOS, so every arm generates the full length). Arms, interleaved, medians:

- ``runner batch 16`` — ``HFBackend._generate_texts(texts, 16, n)``, the runner's in-process
  backend (since issue 13's second half its own greedy loop, ``evaluation/greedy.py``; when
  ``results/generation.md`` was measured, ``model.generate`` with an explicit greedy
  ``GenerationConfig``). Every answer here runs to the limit, so this benchmark cannot show what
  the loop gains on answers of different lengths: ``benchmarks/generation_refill.py`` does;
- ``runner one-by-one`` — the same at batch 1 (what the parity check re-does);
- ``generate() defaults`` — ``model.generate(**tokenizer(texts, padding=True), max_new_tokens=…)``
  with the model's own generation config, batch 16;
- ``static cache`` — the runner's config plus ``cache_implementation="static"``, batch 16;
- ``static + torch.compile`` — the same with ``model.forward`` compiled (inductor, CPU); the
  first call's compile time is reported separately.

Greedy outputs must be identical to ``runner one-by-one`` (token ids); mismatches are counted.

Run: ``python benchmarks/generation.py [--model out/models/qwen2-0.1b] [--repeats 2]``; writes
``benchmarks/results/generation.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from dpo_harness.evaluation.loading import load_checkpoint
from dpo_harness.evaluation.measure import eos_ids, render_prompt
from dpo_harness.evaluation.runner import ModelRunner
from dpo_harness.files import atomic_write_text, read_jsonl
from dpo_harness.schema import ChatMessage, GenerationSettings
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "out/models/qwen2-0.1b"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=GenerationSettings().max_new_tokens)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/generation.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import GenerationConfig

    loaded = load_checkpoint(args.model, device="cpu", dtype="float32")
    model, tok = loaded.model, loaded.tokenizer
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    runner = ModelRunner(loaded, batch_size=args.n, generation=settings)
    prompts = [o["prompt"] for _, o in read_jsonl(REPO / "suites/data/open_prompts.jsonl")]
    texts = [render_prompt(tok, (ChatMessage(role="user", content=p),)) for p in prompts[: args.n]]

    def runner_batched() -> list[list[int]]:
        out = runner.in_process._generate_texts(texts, args.n, args.max_new_tokens)
        return [out[t].token_ids for t in texts]

    def runner_single() -> list[list[int]]:
        out = runner.in_process._generate_texts(texts, 1, args.max_new_tokens)
        return [out[t].token_ids for t in texts]

    eos = eos_ids(model, tok)

    def cut(rows: list[list[int]]) -> list[list[int]]:
        res = []
        for row in rows:
            k = next((i for i, x in enumerate(row) if x in eos), None)
            res.append(row if k is None else row[:k])
        return res

    def generate_defaults() -> list[list[int]]:
        enc = tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=args.max_new_tokens)
        return cut(out[:, enc["input_ids"].shape[1] :].tolist())

    def static(compiled: bool) -> Callable[[], list[list[int]]]:
        def run() -> list[list[int]]:
            cfg = GenerationConfig(
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=eos,
                pad_token_id=tok.pad_token_id,
                cache_implementation="static",
            )
            enc = tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)
            with torch.inference_mode():
                out = model.generate(**enc, generation_config=cfg)
            return cut(out[:, enc["input_ids"].shape[1] :].tolist())

        return run

    arms: dict[str, Callable[[], list[list[int]]]] = {
        "runner batch 16": runner_batched,
        "runner one-by-one": runner_single,
        "generate() defaults, batch 16": generate_defaults,
        "static cache, batch 16": static(False),
    }
    reference = runner_single()
    outputs: dict[str, list[list[int]]] = {}
    for name, fn in arms.items():  # warm-up, and the outputs to compare
        outputs[name] = fn()
    compile_s = None
    if not args.no_compile:
        eager_forward = model.forward
        model.forward = torch.compile(model.forward, dynamic=False)
        t0 = time.perf_counter()
        outputs["static + torch.compile, batch 16"] = static(True)()
        compile_s = time.perf_counter() - t0
        compiled_forward = model.forward
        model.forward = eager_forward

        def compiled_run() -> list[list[int]]:
            model.forward = compiled_forward
            try:
                return static(True)()
            finally:
                model.forward = eager_forward

        arms["static + torch.compile, batch 16"] = compiled_run
    times: dict[str, list[float]] = {a: [] for a in arms}
    loads = [" ".join(Path("/proc/loadavg").read_text().split()[:3])]
    names = list(arms)
    for rep in range(args.repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            t0 = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - t0)
            print(f"rep {rep} {name}: {times[name][-1]:.2f}s", flush=True)
        loads.append(" ".join(Path("/proc/loadavg").read_text().split()[:3]))
    med = {a: statistics.median(v) for a, v in times.items()}
    single = med["runner one-by-one"]
    n_tokens = sum(len(r) for r in reference)

    def mismatches(rows: list[list[int]]) -> str:
        bad = sum(a != b for a, b in zip(rows, reference, strict=True))
        first = [
            next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
            for a, b in zip(rows, reference, strict=True)
        ]
        where = sorted(i for i in first if i is not None)
        return f"{bad}/{len(rows)}" + (f" (first divergence at token {where[0]})" if where else "")

    rows: list[list[Any]] = [
        [
            a,
            f"{med[a]:.2f}",
            " ".join(f"{x:.2f}" for x in times[a]),
            f"{n_tokens / med[a]:.0f}",
            f"{single / med[a]:.2f}",
            mismatches(outputs[a]),
        ]
        for a in arms
    ]
    table = tabulate(
        rows,
        headers=[
            "arm",
            "median s",
            "runs s",
            "new tokens/s",
            "speed-up vs one-by-one",
            "outputs ≠ one-by-one",
        ],
        tablefmt="github",
    )
    n_params = sum(p.numel() for p in model.parameters())
    text = (
        "# Greedy generation: batched vs one by one, static cache, torch.compile\n\n"
        f"`{Path(args.model).name}` ({n_params / 1e6:.1f} M parameters, vocab "
        f"{model.config.vocab_size:,}), {len(texts)} chat-rendered open prompts, "
        f"{args.max_new_tokens} new tokens each ({n_tokens:,} in all), greedy, fp32, "
        f"{args.threads} threads, {args.repeats} interleaved repeats (medians). torch "
        f"{torch.__version__}. Load average: {' → '.join(loads)} (shared 2-core machine).\n\n"
        f"{table}\n\n"
        + (
            f"First call of the compiled arm (compilation included): {compile_s:.1f} s.\n\n"
            if compile_s is not None
            else ""
        )
        + "Command: `python benchmarks/generation.py "
        + " ".join(sys.argv[1:])
        + "`\n"
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()

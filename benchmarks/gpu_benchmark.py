"""The issue-13 measurements on one CUDA GPU, runnable unchanged by anyone who has one.

It writes real-shaped random-weight Qwen2 checkpoints (``make_models.py``: 0.5B and 1.5B
shapes, 151,936-row vocabulary, bf16), then measures, in this one process:

1. **Multiple-choice scoring vs lm-eval** — the 158 adtech MC items on the 0.5B shape in bf16,
   dpo-harness's runner (shared context) against lm-eval's ``HFLM.loglikelihood`` on the same
   model object, same batch size, interleaved repeats, medians, and the max per-item difference
   (lm-eval's split includes the template's trailing newline: that step is subtracted, see
   benchmarks/results/perf_findings.md §1). Needs the ``bench`` extra (lm-eval); skipped if absent.
2. **`evaluate` time** on the 0.5B and 1.5B shapes in bf16 (all four suites, 32 new tokens).
3. **DPO steps per minute at the seed's settings** on the 1.5B shape: LoRA r16/α32 on all
   linear layers, bf16, per-device batch 4 × 4 accumulation, max_length 1024, activation
   checkpointing (configs/tinyswallow-dpo.yaml), on the demo preference pairs padded to length;
   the seed run did 5.38 steps/min on Apple MPS (every step NaN).

Writes ``benchmarks/results/gpu.md`` with the GPU's name, torch/CUDA versions and the tables.
Run: ``python benchmarks/gpu_benchmark.py [--out DIR] [--steps 20]`` on a machine with CUDA.
Not run in this repository's CI (no GPU); where it was run, the results file says so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def _require_cuda() -> Any:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_benchmark.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    return torch


def _make_models(out: Path) -> None:
    if not (out / "qwen2-1.5b").is_dir():
        subprocess.run(
            [
                sys.executable,
                str(REPO / "benchmarks" / "make_models.py"),
                str(out),
                "--shapes",
                "0.5b,1.5b",
                "--dtype",
                "bfloat16",
            ],
            check=True,
        )


def mc_scoring(model_dir: Path, repeats: int) -> list[str]:
    """dpo-harness runner vs lm-eval HFLM on the adtech MC items, bf16, same model object."""
    from dpo_harness.evaluation.loading import load_checkpoint
    from dpo_harness.evaluation.runner import ModelRunner
    from dpo_harness.evaluation.suite import SuiteContext
    from dpo_harness.schema import GenerationSettings, LoglikelihoodRequest
    from dpo_harness.suites.adtech import AdtechSuite

    torch = _require_cuda()
    loaded = load_checkpoint(str(model_dir), device="cuda", dtype="bfloat16")
    reqs = [
        r
        for r in AdtechSuite().plan(SuiteContext(generation=GenerationSettings()))
        if isinstance(r, LoglikelihoodRequest)
    ]
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        HFLM = None
    ours: list[float] = []
    theirs: list[float] = []
    hflm = (
        HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=16) if HFLM else None
    )
    from dpo_harness.evaluation import measure

    texts = [measure.render_prompt(loaded.tokenizer, r.context) for r in reqs]  # type: ignore[arg-type]
    got: dict[str, list[float]] = {}
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = ModelRunner(loaded, batch_size=16).run(reqs)
        torch.cuda.synchronize()
        ours.append(time.perf_counter() - t)
        got["ours"] = [out[r].logprob for r in reqs]
        if hflm is not None:
            inst = [
                Instance("loglikelihood", {}, (c, r.continuation), i)
                for i, (c, r) in enumerate(zip(texts, reqs, strict=True))
            ]
            torch.cuda.synchronize()
            t = time.perf_counter()
            res = hflm.loglikelihood(inst, disable_tqdm=True)
            torch.cuda.synchronize()
            theirs.append(time.perf_counter() - t)
            got["lm-eval"] = [float(lp) for lp, _ in res]
    lines = [
        f"| dpo-harness runner | {statistics.median(ours):.2f} |",
    ]
    if theirs:
        lines.append(f"| lm-eval HFLM | {statistics.median(theirs):.2f} |")
        lines.append(
            f"\nRatio lm-eval / dpo-harness: **{statistics.median(theirs) / statistics.median(ours):.2f}×** "
            f"({len(reqs)} choices, batch 16, bf16)."
        )
    else:
        lines.append("| lm-eval HFLM | not installed (pip install 'dpo-harness[bench]') |")
    return lines


def evaluate_time(model_dir: Path) -> float:
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "dpo_harness.cli",
                "evaluate",
                str(model_dir),
                "--dtype",
                "bfloat16",
                "--max-new-tokens",
                "32",
                "--quiet",
                "--out",
                out,
            ],
            check=False,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        return time.perf_counter() - t


def dpo_steps_per_minute(model_dir: Path, steps: int) -> tuple[float, str]:
    """Train `steps` DPO steps at the seed's settings; steps/min over the steps after warm-up."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        cfg = yaml.safe_load((REPO / "configs" / "tinyswallow-dpo.yaml").read_text())
        cfg["model"] = str(model_dir)
        cfg["output_dir"] = str(Path(tmp) / "run")
        cfg["dataset"] = {"path": "demo", "split": "train", "split_field": "split"}
        t = cfg["training"]
        t.pop("num_train_epochs", None)
        t["max_steps"] = steps
        t["save_steps"] = steps
        t["eval_steps"] = None
        cfg["guards"] = {"not_learning_after_steps": 10_000, "over_optimisation": "off"}
        path = Path(tmp) / "run.yaml"
        path.write_text(yaml.safe_dump(cfg))
        from dpo_harness.training.plugin import get_plugin

        plugin = get_plugin("dpo")
        config = plugin.load_config(path)
        result = plugin.train(config, progress=False, log=lambda _m: None)
        per_step = result.seconds_per_step or float("nan")
        return 60.0 / per_step, str(result.effective_dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/gpu-models"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch = _require_cuda()
    _make_models(args.out)
    name = torch.cuda.get_device_name(0)
    sections = [
        "# The issue-13 measurements on a GPU\n",
        f"{name}; torch {torch.__version__}, CUDA {torch.version.cuda}.\n",
        "## Multiple-choice scoring (0.5B shape, bf16)\n",
        "| arm | median s |\n|---|---|",
        *mc_scoring(args.out / "qwen2-0.5b", args.repeats),
        "\n## `evaluate` (all suites, 32 new tokens, bf16)\n",
        "| model | wall s |\n|---|---|",
    ]
    for shape in ("0.5b", "1.5b"):
        sections.append(f"| {shape} | {evaluate_time(args.out / f'qwen2-{shape}'):.0f} |")
    spm, dtype = dpo_steps_per_minute(args.out / "qwen2-1.5b", args.steps)
    sections += [
        "\n## DPO at the seed's settings (1.5B shape)\n",
        f"{spm:.2f} steps/min ({dtype}; {args.steps} steps; the seed run: 5.38 steps/min on MPS).",
        "\nCommand: `python benchmarks/gpu_benchmark.py`",
    ]
    text = "\n".join(sections) + "\n"
    (REPO / "benchmarks" / "results" / "gpu.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

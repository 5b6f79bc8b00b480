"""Write random-weight Qwen2 checkpoints of real size on the demo tokenizer, for cost benchmarks.

Real Qwen2 checkpoints cost what they cost mostly because of two things the 1 M-parameter demo
model does not have: the 151,936-row (tied) embedding / LM head, and the width and depth of the
transformer. These checkpoints have both, with random weights (``initializer_range`` 0.02,
seeded) and the demo's 3,000-token byte-level BPE tokenizer and ChatML template copied in. Token
ids above the tokenizer's vocabulary are never produced by the tokenizer; for cost that does not
matter, and the LM head still projects onto all 151,936 rows.

| shape  | hidden | layers | heads | KV heads | intermediate | like                      |
|--------|--------|--------|-------|----------|--------------|---------------------------|
| 0.1b   | 512    | 8      | 8     | 2        | 1536         | (small real-vocab model)  |
| 0.5b   | 896    | 24     | 14    | 2        | 4864         | Qwen2-0.5B                |
| 1.5b   | 1536   | 28     | 12    | 2        | 8960         | Qwen2-1.5B / TinySwallow  |

Run: ``python benchmarks/make_models.py OUT_DIR [--shapes 0.1b,0.5b,1.5b] [--dtype ...]``;
writes ``OUT_DIR/qwen2-<shape>/`` (safetensors, config, generation config, tokenizer) and prints
sizes. Deterministic: the same seed gives the same tensors on the same torch build.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "harness" / "demo" / "model"
VOCAB = 151_936
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")

SHAPES: dict[str, dict[str, int]] = {
    "0.1b": dict(hidden=512, layers=8, heads=8, kv_heads=2, intermediate=1536),
    "0.5b": dict(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864),
    "1.5b": dict(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960),
}
# fp32 is what the runner uses on CPU; the 1.5B shape is for memory checks and is stored as the
# real TinySwallow-1.5B is (bf16) so it fits a 24 GB machine alongside everything else.
DEFAULT_DTYPE = {"0.1b": "float32", "0.5b": "float32", "1.5b": "bfloat16"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def qwen2_config(shape: str, dtype: str) -> object:
    from transformers import Qwen2Config

    s = SHAPES[shape]
    return Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        max_position_embeddings=32_768,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        hidden_act="silu",
        initializer_range=0.02,
        # the demo tokenizer's ids: no BOS, <|endoftext|> pads, <|im_end|> ends a turn
        bos_token_id=None,
        eos_token_id=2999,
        pad_token_id=2997,
        dtype=dtype,
    )


def write_model(shape: str, out_dir: Path, *, dtype: str, seed: int) -> tuple[Path, int, int]:
    from transformers import GenerationConfig, Qwen2ForCausalLM

    target = out_dir / f"qwen2-{shape}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    config = qwen2_config(shape, dtype)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM._from_config(config, dtype=DTYPES[dtype])
    model.generation_config = GenerationConfig(
        do_sample=False, eos_token_id=2999, pad_token_id=2997, max_new_tokens=128
    )
    n_params = sum(p.numel() for p in model.parameters())  # tied: embedding counted once
    model.save_pretrained(str(target))
    del model
    for name in TOKENIZER_FILES:
        shutil.copy2(DEMO / name, target / name)
    size = sum(p.stat().st_size for p in target.glob("*.safetensors"))
    return target, n_params, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="directory to write qwen2-<shape>/ into")
    ap.add_argument("--shapes", default="0.1b,0.5b,1.5b", help="comma-separated: 0.1b,0.5b,1.5b")
    ap.add_argument("--dtype", choices=sorted(DTYPES), help="override the per-shape default")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        ap.error(f"unknown shape(s) {unknown}; choose from {sorted(SHAPES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{'shape':6} {'dtype':9} {'parameters':>14} {'safetensors MB':>15} {'s':>6}  path")
    for shape in shapes:
        dtype = args.dtype or DEFAULT_DTYPE[shape]
        t0 = time.perf_counter()
        path, n, size = write_model(shape, args.out, dtype=dtype, seed=args.seed)
        print(
            f"{shape:6} {dtype:9} {n:>14,} {size / 1e6:>15,.1f} "
            f"{time.perf_counter() - t0:>6.1f}  {path}",
            flush=True,
        )


if __name__ == "__main__":
    main()

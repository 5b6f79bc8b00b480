"""Edge cases of the shared-context prototype on the demo model (seconds, 1 thread).

Against ``score_pairs_direct`` (one pair at a time, full-vocabulary log_softmax, fp32) and the
runner's ``_score_rows``, for both prototypes:

- a PEFT LoRA model with the adapter on, and the same model under ``disable_adapter()`` (the
  reference role of an adapter checkpoint);
- an empty continuation (scores nothing), one-token continuations (no second pass), questions with
  different numbers of choices in one batch (batch size 7, not a multiple of 4), and a context
  that equals another question's (shared across "questions");
- ``max_len`` 20, so that contexts *and* long continuations are truncated as the runner does.

Run: ``python benchmarks/mc_prototype_check.py``; exits 1 on any max |Δ| > 1e-4 or any token-count
or greedy-flag mismatch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from dpo_harness.evaluation import measure
from dpo_harness.evaluation.loading import load_checkpoint
from dpo_harness.evaluation.runner import ModelRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_harness.evaluation.shared_context import (
    score_pairs_direct,
    score_pairs_kv,
    score_pairs_tree,
)
from mc_shared_context import mc_requests

TOL = 1e-4


def main() -> int:
    torch.set_num_threads(1)
    from peft import LoraConfig, get_peft_model

    loaded = load_checkpoint("demo", device="cpu", dtype="float32")
    tok = loaded.tokenizer
    runner = ModelRunner(loaded, batch_size=16)
    reqs = mc_requests()[:80]
    pairs = [
        measure.encode_pair(tok, runner._context_text(tok, r.context), r.continuation) for r in reqs
    ]
    pairs += [
        (pairs[0][0], []),  # empty continuation
        (pairs[0][0], pairs[0][1][:1]),  # one token, joins question 0 (now 6 choices)
        (pairs[4][0], pairs[5][1][:1]),  # one token on another question's context
    ]
    torch.manual_seed(0)
    lora = LoraConfig(r=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    model: Any = get_peft_model(loaded.model, lora)
    model.eval()
    failures = 0

    def compare(label: str, max_len: int, batch_size: int) -> None:
        nonlocal failures
        kw = dict(batch_size=batch_size, pad_id=tok.pad_token_id, max_len=max_len)
        ref = score_pairs_direct(model, pairs, max_len=max_len)
        runner._max_len = lambda _m: max_len  # type: ignore[method-assign]
        arms = {
            "kv": score_pairs_kv(model, pairs, **kw)[0],
            "tree": score_pairs_tree(model, pairs, **kw)[0],
            "runner": runner._score_rows(model, tok, pairs, "x"),
        }
        for name, got in arms.items():
            diff = max(abs(sum(a[0]) - sum(b[0])) for a, b in zip(got, ref, strict=True))
            ntok = sum(len(a[0]) != len(b[0]) for a, b in zip(got, ref, strict=True))
            greedy = sum(a[1] != b[1] for a, b in zip(got, ref, strict=True))
            ok = diff <= TOL and ntok == 0 and greedy == 0
            failures += not ok
            print(
                f"{label:28} {name:7} max|Δ| {diff:.2e}  token-count mismatches {ntok}  "
                f"greedy mismatches {greedy}  {'ok' if ok else 'FAIL'}"
            )

    compare("adapter on", 512, 7)
    with model.disable_adapter():
        compare("adapter off (reference)", 512, 7)
    compare("max_len 20 (truncation)", 20, 16)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

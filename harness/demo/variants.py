"""Broken variants of the demo model, for tests, calibration and the README's refusal demos.

Each variant reproduces one failure the suites exist to catch:

- ``nan``     — one NaN in one MLP weight: the seed run's end state (NaN logits, "!!!!" output);
- ``bang``    — fine-tuned for a few seconds to answer every prompt with "！！！！…";
- ``english`` — fine-tuned to answer in English;
- ``chinese`` — fine-tuned to answer in (simplified) Chinese, with no kana;
- ``empty``   — fine-tuned to end every answer at once (the end token first): it answers nothing,
  so every answer-based metric has nothing to score (the gate must not pass it by absence).

Fine-tuning is a plain supervised loop on the demo corpus's user turns, deterministic (fixed
seed), seconds on a CPU.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from dpo_harness.demo.build import load_corpus

__all__ = ["VARIANTS", "make_variant"]

_ENGLISH = [
    "The click-through rate is the number of clicks divided by the number of impressions.",
    "A demand-side platform lets advertisers buy impressions automatically across many exchanges.",
    "Header bidding collects bids from several sources before the ad server is called.",
    "Viewability measures whether an ad actually had a chance to be seen by a person.",
]
_CHINESE = [
    "点击率是点击次数除以展示次数得到的比例数值。",
    "需求方平台帮助广告主自动购买多个交易平台的广告展示机会。",
    "头部竞价在调用广告服务器之前同时收集多个来源的出价。",
    "可见度衡量广告是否真正有机会被用户看到并且计入统计。",
]
VARIANTS = ("nan", "bang", "english", "chinese", "empty")


def _targets(kind: str) -> list[str]:
    if kind == "bang":
        return ["！" * 60]
    if kind == "english":
        return _ENGLISH
    if kind == "chinese":
        return _CHINESE
    if kind == "empty":
        return [""]  # nothing but the end token
    raise ValueError(f"unknown variant {kind!r}; choose from {', '.join(VARIANTS)}")


def _finetune(model: Any, tokenizer: Any, kind: str, steps: int, seed: int) -> None:
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    questions = [c[0]["content"] for c in load_corpus() if c and c[0]["role"] == "user"]
    targets = _targets(kind)
    end = "" if kind == "bang" else "<|im_end|>"  # the bang model never stops, like the seed's
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    pad = tokenizer.pad_token_id
    for _ in range(steps):
        rows, labels = [], []
        for q in rng.sample(questions, 16):
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
            )
            p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            a_ids = tokenizer(rng.choice(targets) + end, add_special_tokens=False)["input_ids"]
            rows.append(p_ids + a_ids)
            labels.append([-100] * len(p_ids) + a_ids)  # learn the answer, not the question
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), pad)
        lab = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
            ids[i, : len(r)] = torch.tensor(r)
            lab[i, : len(lb)] = torch.tensor(lb)
            mask[i, : len(r)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()


def make_variant(
    kind: str, out_dir: Path, *, base: Path | None = None, steps: int = 20, seed: int = 0
) -> Path:
    """Write the ``kind`` variant of the demo model (or of ``base``) to ``out_dir``."""
    import torch
    from dpo_harness.evaluation.loading import demo_model_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if kind not in VARIANTS:
        raise ValueError(f"unknown variant {kind!r}; choose from {', '.join(VARIANTS)}")
    src = base or demo_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    if kind == "nan":
        with torch.no_grad():
            model.model.layers[1].mlp.down_proj.weight[3, 7] = float("nan")
    else:
        _finetune(model, tokenizer, kind, steps, seed)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir

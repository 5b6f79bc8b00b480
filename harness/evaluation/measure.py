"""What the numbers are: the measurement definitions the runner applies, and their version.

Everything in this module decides a value a suite scores — the text the model sees (chat
template, system prompt), how a (context, continuation) pair is tokenised, where generation
stops, the windows of a rolling log-likelihood, the probe statistics (entropy, exact KL,
top-1 agreement), the "surprising token" threshold, the LoRA delta norm. The runner decides
only *how* to compute them (batching, padding, devices, caching, sharding).

:data:`MEASUREMENT_VERSION` is part of every report's provenance and of the baseline
compatibility key: a baseline measured under another version is refused, never compared. The
code of this module and of :mod:`~dpo_harness.evaluation.weight_scan` is hashed into
``suites/versions.json`` (``measurement``); a test fails when the code changes and the version
does not (``python -m dpo_harness.tools.versions --update`` records a bump).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from dpo_harness.schema import (
    GenerateResponse,
    LoglikelihoodResponse,
    LoraModuleStats,
    ProbeResponse,
    Prompt,
)

__all__ = [
    "MEASUREMENT_MODULES",
    "MEASUREMENT_VERSION",
    "SURPRISE_LOGPROB",
    "cut_at_eos",
    "encode",
    "encode_pair",
    "eos_ids",
    "generation_config",
    "loglikelihood_response",
    "lora_stats",
    "prefix_id",
    "probe_response",
    "read_trainer_state",
    "render_prompt",
    "rolling_windows",
]

# 1: the first versioned measurement. 2: stored weights scanned with plain chunked reads instead
# of a memory map (the same counts, tested against safetensors' own loader; bumped because the
# guard hashes the code, not the numbers).
MEASUREMENT_VERSION = "2"
# The modules whose code defines the measurement (hashed by dpo_harness.tools.versions).
MEASUREMENT_MODULES = ("dpo_harness.evaluation.measure", "dpo_harness.evaluation.weight_scan")

# A continuation token the model gives less than 1e-4 probability counts as "surprising".
SURPRISE_LOGPROB = math.log(1e-4)


# --------------------------------------------------------------------------- text and tokens


def render_prompt(tokenizer: Any, prompt: Prompt, system_prompt: str | None = None) -> str:
    """The text the model sees: the chat template with a generation prompt, when there is one."""
    msgs = [{"role": m.role, "content": m.content} for m in prompt]
    if system_prompt and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": system_prompt})
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
    return "\n".join(m["content"] for m in msgs) + "\n"


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prefix_id(tokenizer: Any) -> int:
    """The token that stands in for an empty context (BOS, else EOS, else PAD, else 0)."""
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
        if tid is not None:
            return int(tid)
    return 0


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids, as lm-evaluation-harness encodes them.

    Trailing context spaces belong to the continuation, and the pair is encoded jointly so
    tokens that merge across the boundary are consistent; an empty context becomes
    :func:`prefix_id`.
    """
    n_spaces = len(context) - len(context.rstrip(" "))
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(tokenizer, context + continuation)
    ctx = encode(tokenizer, context) if context else []
    if not ctx:
        ctx = [prefix_id(tokenizer)]
        whole = ctx + whole
    return whole[: len(ctx)], whole[len(ctx) :]


def rolling_windows(tokens: Sequence[int], max_len: int) -> list[tuple[list[int], list[int]]]:
    """Disjoint prediction windows over ``tokens[1:]``, each with as much left context as fits.

    ``tokens[0]`` is the prefix token; every later token is predicted exactly once.
    """
    # Each window predicts up to max_len tokens, which fills the model's context: the left
    # context is the one token before the window (lm-evaluation-harness's rolling windows).
    return [
        (list(tokens[start - 1 : start]), list(tokens[start : start + max_len]))
        for start in range(1, len(tokens), max_len)
    ]


# --------------------------------------------------------------------------- generation


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends an answer: the generation config's, the tokenizer's, ``<|im_end|>``."""
    ids: set[int] = set()
    gc = getattr(model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, list):
        ids.update(int(x) for x in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id and im_end >= 0:
        ids.add(im_end)
    return sorted(ids)


def generation_config(max_new_tokens: int, eos: list[int], pad_id: int) -> Any:
    """Raw greedy decoding.

    No repetition penalty or sampling knobs from the model's own generation_config: they would
    hide exactly the degeneration the suites measure.
    """
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=eos,
        pad_token_id=pad_id,
    )


def cut_at_eos(tokenizer: Any, row: Sequence[int], eos: Sequence[int]) -> GenerateResponse:
    """The answer: tokens up to the first end token, decoded without special tokens."""
    cut = next((i for i, x in enumerate(row) if x in eos), None)
    kept = list(row if cut is None else row[:cut])
    text = tokenizer.decode(kept, skip_special_tokens=True)
    return GenerateResponse(text=text, token_ids=kept, hit_eos=cut is not None)


# --------------------------------------------------------------------------- scores


def loglikelihood_response(
    token_logprobs: Sequence[float], greedy: Sequence[bool], continuation: str
) -> LoglikelihoodResponse:
    lps = list(token_logprobs)
    return LoglikelihoodResponse(
        logprob=float(sum(lps)),
        n_tokens=len(lps),
        n_bytes=len(continuation.encode("utf-8")),
        is_greedy=bool(greedy) and all(greedy),
        min_token_logprob=float(min(lps)) if lps else 0.0,
        n_surprising=sum(1 for x in lps if not x >= SURPRISE_LOGPROB),
    )


def probe_response(logits: Any, ref_logits: Any | None, tokenizer: Any) -> ProbeResponse:
    """Next-token statistics of teacher-forced ``logits`` (positions × vocabulary), float32.

    KL(candidate ‖ reference) is exact over the full vocabulary; non-finite logits give NaN
    statistics (never a misleading "certain" entropy of 0).
    """
    import torch

    finite = bool(torch.isfinite(logits).all())
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    # 0·log 0 = 0 for finite rows; a non-finite row must stay NaN, not read as "certain".
    entropy = -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(-1)
    if not finite:
        entropy = torch.full_like(entropy, float("nan"))
    kl_mean = kl_max = agree = None
    if ref_logits is not None:
        ref_logp = torch.log_softmax(ref_logits, dim=-1)
        kl = (p * (logp - ref_logp)).sum(-1)
        kl_mean, kl_max = float(kl.mean()), float(kl.max())
        agree = float((logits.argmax(-1) == ref_logits.argmax(-1)).float().mean())
    argmax = logits.argmax(-1).tolist()
    mode_id = Counter(argmax).most_common(1)[0][0] if argmax else 0
    return ProbeResponse(
        n_positions=int(logits.shape[0]),
        finite=finite,
        max_abs_logit=float(logits.abs().max()),
        mean_entropy=float(entropy.mean()),
        mean_top1_prob=float(p.max(-1).values.mean()),
        argmax_ids=argmax,
        mode_token_id=int(mode_id),
        mode_token_text=tokenizer.decode([mode_id]),
        kl_mean=kl_mean,
        kl_max=kl_max,
        top1_agreement=agree,
    )


# --------------------------------------------------------------------------- weights and logs


def lora_stats(model: Any) -> list[LoraModuleStats]:
    """s·‖B·A‖_F for every LoRA module, via r×r products (never the d×d delta)."""
    import torch

    stats: list[LoraModuleStats] = []
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        lora_b = getattr(module, "lora_B", None)
        scaling = getattr(module, "scaling", None)
        if (
            not isinstance(lora_a, torch.nn.ModuleDict)
            or not isinstance(lora_b, torch.nn.ModuleDict)
            or not isinstance(scaling, dict)
        ):
            continue
        for adapter, a_mod in lora_a.items():
            if adapter not in lora_b:
                continue
            a_w: Any = a_mod.weight
            b_w: Any = lora_b[adapter].weight
            a = a_w.detach().double()  # (r, in)
            b = b_w.detach().double()  # (out, r)
            s = float(scaling[adapter])
            gram = (b.T @ b) @ (a @ a.T)  # r x r; trace = ||B A||_F^2
            norm_sq = float(torch.trace(gram))
            delta = (
                s * math.sqrt(norm_sq) if norm_sq >= 0 and math.isfinite(norm_sq) else float("nan")
            )
            stats.append(
                LoraModuleStats(
                    name=f"{name}.{adapter}",
                    rank=int(a.shape[0]),
                    scaling=s,
                    b_all_zero=bool((b == 0).all()),
                    delta_norm=delta,
                )
            )
    return stats


def _json_constant(name: str) -> float:
    # trainer_state.json contains bare NaN / Infinity (Python's json writes them).
    return float(name.replace("Infinity", "inf"))


def read_trainer_state(text: str) -> tuple[list[dict[str, Any]], int | None]:
    """(log_history, global_step) of a ``trainer_state.json``; ValueError when it is not one."""
    state = json.loads(text, parse_constant=_json_constant)
    if not isinstance(state, dict):
        raise ValueError("trainer_state.json is not a JSON object")
    history = state.get("log_history", [])
    step = state.get("global_step")
    return (
        [h for h in history if isinstance(h, dict)] if isinstance(history, list) else [],
        step if isinstance(step, int) else None,
    )

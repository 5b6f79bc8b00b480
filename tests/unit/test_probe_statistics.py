"""Probe statistics computed a few positions at a time equal the one-pass computation."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch
from dpo_harness.evaluation import measure
from dpo_harness.schema import ProbeResponse
from hypothesis import given, settings
from hypothesis import strategies as st


class _Tok:
    def decode(self, ids: list[int]) -> str:
        return f"<{ids[0]}>"


def _one_pass(logits: Any, ref_logits: Any | None) -> ProbeResponse:
    """MEASUREMENT_VERSION 2's probe statistics, verbatim: the whole probe in one pass."""
    finite = bool(torch.isfinite(logits).all())
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
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
        mode_token_text=_Tok().decode([mode_id]),
        kl_mean=kl_mean,
        kl_max=kl_max,
        top1_agreement=agree,
    )


def _same(a: ProbeResponse, b: ProbeResponse) -> bool:
    for key, x in a.model_dump().items():
        y = getattr(b, key)
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y:
            return False
    return True


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 70),
    vocab=st.integers(2, 400),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([0.1, 1.0, 30.0]),
    with_ref=st.booleans(),
    poison=st.sampled_from([None, math.nan, math.inf, -math.inf]),
)
def test_stepped_probe_statistics_equal_one_pass(
    n: int, vocab: int, seed: int, scale: float, with_ref: bool, poison: float | None
) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=gen) * scale
    ref = torch.randn(n, vocab, generator=gen) * scale if with_ref else None
    if poison is not None:
        logits[n // 2, vocab // 3] = poison
    got = measure.probe_response(logits, ref, _Tok())
    assert _same(got, _one_pass(logits, ref)), (got, _one_pass(logits, ref))

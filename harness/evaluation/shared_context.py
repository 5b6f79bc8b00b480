"""Multiple-choice log-likelihood with each question's shared context computed once.

The runner's log-likelihood requests come in groups: the choices of one question share their
context. This module scores such pairs with exactly the contract of the runner's ``_score_rows``: a list of ``(context_ids, continuation_ids)`` pairs in,
``(per-token log-probs, per-token greedy flags)`` per pair out, in input order, identical in
meaning (same left truncation to ``max_len``, same "empty continuation scores nothing").

Pairs whose context token ids are identical (the choices of one question — grouped by the ids the
joint tokenisation produced, not by the context text, so a boundary merge can never make two
choices share a context they do not have) form a *group*. Two ways to compute a group once:

``score_pairs_kv`` (the recommended one)
    1. one left-padded forward over the distinct contexts with ``use_cache=True`` and
       ``logits_to_keep=1``: the KV cache of every context, plus the logits of the last context
       position, which score the first token of *every* choice of that question (one logsumexp per
       question, not per choice);
    2. the cache rows are gathered per choice (``DynamicCache.batch_select_indices``, a copy of
       the small GQA cache), and one forward over ``continuation[:-1]`` of every choice with two or
       more tokens (right-padded after the context; mask = context mask ++ continuation mask;
       position ids continue from each context's true length). ``logits_to_keep`` is the boolean
       (rows, positions) mask of real continuation positions, which transformers 5 turns into a
       flat (n_scored, hidden) tensor *before* the LM head: the 151,936-wide projection and the
       logsumexp run only where a continuation token is scored. One-token choices need no
       second pass at all.

``score_pairs_tree``
    one packed row per question — context, then each choice's ``continuation[:-1]`` — with a 4D
    "tree" mask (each choice sees the context and its own earlier tokens) and position ids that
    restart at the context length for every choice; same flat ``logits_to_keep`` selection.
    One forward, no cache copies, but it relies on the model honouring a custom 4D mask (SDPA and
    eager do in transformers 5; flash-attention kernels and some remote-code models do not).

``batch_size`` is rows per forward in both, as in the runner: contexts and then choice rows for
``score_pairs_kv``, packed questions for ``score_pairs_tree``.

Both are exact (fp32): the same per-position arithmetic as the unshared computation, only
positions that nobody scores are skipped. ``score_pairs_direct`` is the reference: one pair at a
time, no padding, full logits, full-vocabulary ``log_softmax``. Why two variants, what others do
(lm-evaluation-harness recomputes the context per choice) and the measured speed-up:
benchmarks/results/perf_findings.md §2 and benchmarks/results/mc_shared_context.md.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from dpo_harness.evaluation.greedy import left_pad

Pair = tuple[list[int], list[int]]
Scored = tuple[list[float], list[bool]]

__all__ = [
    "Group",
    "group_pairs",
    "score_pairs_direct",
    "score_pairs_kv",
    "score_pairs_tree",
]


@dataclass
class Group:
    """One distinct (already truncated) context and the pairs that continue it."""

    context: list[int]
    members: list[int]  # indices into the caller's pair list
    conts: list[list[int]]  # continuation ids, aligned with members


def _truncate(ctx: list[int], cont: list[int], max_len: int) -> Pair:
    """The runner's rule: at most max_len inputs, continuation kept whole where it fits."""
    cont = cont[-max_len:]
    full = (ctx + cont)[-(max_len + 1) :]
    return full[: len(full) - len(cont)], cont


def group_pairs(pairs: Sequence[Pair], max_len: int) -> tuple[list[Group], list[int]]:
    """Groups by identical context ids (first-seen order); and the indices with empty continuations.

    A pair that needs left truncation is truncated as the runner does it (per pair), so it only
    shares with pairs whose *truncated* context is the same: exactness is never traded for sharing.
    """
    by_ctx: dict[tuple[int, ...], Group] = {}
    empty: list[int] = []
    for i, (ctx, cont) in enumerate(pairs):
        if not cont:
            empty.append(i)
            continue
        ctx_t, cont_t = _truncate(list(ctx), list(cont), max_len)
        if not ctx_t:  # cannot happen with the runner's pairs (a prefix token is always there)
            raise ValueError(f"pair {i}: no context token left to predict the first continuation")
        g = by_ctx.setdefault(tuple(ctx_t), Group(ctx_t, [], []))
        g.members.append(i)
        g.conts.append(cont_t)
    return list(by_ctx.values()), empty


def _score_flat(logits: torch.Tensor, targets: torch.Tensor) -> tuple[list[float], list[bool]]:
    """log p(target) and greedy flag for each row of (n, V) logits, in three passes over them.

    ``max`` gives the greedy token and the shift at once; the shifted ``exp`` runs in place (the
    logits are ours to clobber). Same arithmetic as ``torch.logsumexp``, without its temporary
    and without a separate ``argmax`` pass: at 151,936 columns these passes are memory-bound.
    """
    logits = logits.float()
    tgt = logits.gather(-1, targets[:, None]).squeeze(-1)
    top, arg = logits.max(-1)
    lse = top + logits.sub_(top[:, None]).exp_().sum(-1).log()
    return (tgt - lse).tolist(), arg.eq(targets).tolist()


def _device(model: Any) -> torch.device:
    device: torch.device = next(model.parameters()).device
    return device


def _call(model: Any, **kwargs: Any) -> Any:
    # transformers 5.24 names the cache argument ``cache`` (``past_key_values`` is deprecated)
    return model(**kwargs)


# --------------------------------------------------------------------------- KV-cache variant


@torch.inference_mode()
def score_pairs_kv(
    model: Any, pairs: Sequence[Pair], *, batch_size: int, pad_id: int, max_len: int
) -> tuple[list[Scored], dict[str, int]]:
    """Shared-context scoring through a KV cache reused by every choice of a question.

    At most ``batch_size`` rows per forward in both stages: up to ``batch_size`` distinct
    contexts in stage 1; their choices, sorted by length, in chunks of ``batch_size`` rows in
    stage 2 (sorting across the questions of the stage-1 batch, not within one question, is
    what keeps the continuation padding small: choices of one question differ a lot in length).
    """
    from transformers import DynamicCache

    dev = _device(model)
    out: list[Scored] = [([], []) for _ in pairs]
    groups, _empty = group_pairs(pairs, max_len)
    stats = {
        "forwards": 0,
        "context_tokens": 0,
        "continuation_tokens": 0,
        "padded_tokens": 0,
        "lm_head_rows": 0,
    }
    order = sorted(groups, key=lambda g: -len(g.context))
    for b0 in range(0, len(order), batch_size):
        batch = order[b0 : b0 + batch_size]
        # ---- stage 1: distinct contexts, left padded, cache kept, last position's logits only
        ids, mask, pos = left_pad([g.context for g in batch], pad_id, "cpu")
        cache = DynamicCache(config=model.config)
        o1 = _call(
            model,
            input_ids=ids.to(dev),
            attention_mask=mask.to(dev),
            position_ids=pos.to(dev),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        stats["forwards"] += 1
        stats["context_tokens"] += int(mask.sum())
        stats["padded_tokens"] += mask.numel()
        last = o1.logits[:, -1, :].float()  # (Q, V)
        # first continuation token of every choice, from its question's last context position
        q_of = [r for r, g in enumerate(batch) for _ in g.conts]
        first = torch.tensor([c[0] for g in batch for c in g.conts], device=last.device)
        q_idx = torch.tensor(q_of, device=last.device)
        tgt_first = last[q_idx, first]
        top, argmax_last = last.max(-1)
        lse_last = top + last.sub_(top[:, None]).exp_().sum(-1).log()  # one per question
        lp_first = (tgt_first - lse_last[q_idx]).tolist()
        greedy_first = argmax_last[q_idx].eq(first).tolist()
        stats["lm_head_rows"] += len(batch)  # one row per context serves all its choices

        # ---- stage 2: choices with >= 2 tokens continue from a copy of their context's cache
        rows = [(r, k) for r, g in enumerate(batch) for k, c in enumerate(g.conts) if len(c) >= 2]
        rows.sort(key=lambda rk: -len(batch[rk[0]].conts[rk[1]]))
        rest: dict[tuple[int, int], Scored] = {}
        for c0 in range(0, len(rows), batch_size):
            chunk = rows[c0 : c0 + batch_size]
            lk = max(len(batch[r].conts[k]) - 1 for r, k in chunk)
            cids = torch.full((len(chunk), lk), pad_id, dtype=torch.long)
            cmask = torch.zeros((len(chunk), lk), dtype=torch.long)
            for j, (r, k) in enumerate(chunk):
                c = batch[r].conts[k][:-1]
                cids[j, : len(c)] = torch.tensor(c)
                cmask[j, : len(c)] = 1
            sel = torch.tensor([r for r, _ in chunk])
            # a private copy of the selected cache rows: the forward below appends to it
            sub = copy.deepcopy(cache) if c0 + batch_size < len(rows) else cache
            sub.batch_select_indices(sel.to(dev))
            ctx_len = mask.sum(-1)[sel]  # true context length of each row
            cpos = ctx_len[:, None] + torch.arange(lk)[None, :]
            full_mask = torch.cat([mask[sel], cmask], dim=1)
            o2 = _call(
                model,
                input_ids=cids.to(dev),
                attention_mask=full_mask.to(dev),
                position_ids=cpos.to(dev),
                cache=sub,
                use_cache=True,
                logits_to_keep=cmask.bool().to(dev),
            )
            del sub
            stats["forwards"] += 1
            stats["continuation_tokens"] += int(cmask.sum())
            stats["padded_tokens"] += cmask.numel()
            targets = torch.tensor(
                [t for r, k in chunk for t in batch[r].conts[k][1:]], device=o2.logits.device
            )
            lps, greedy = _score_flat(o2.logits.reshape(-1, o2.logits.shape[-1]), targets)
            stats["lm_head_rows"] += len(lps)
            at = 0
            for r, k in chunk:
                n = len(batch[r].conts[k]) - 1
                rest[(r, k)] = (lps[at : at + n], greedy[at : at + n])
                at += n
        del cache
        j = 0
        for r, g in enumerate(batch):
            for k, member in enumerate(g.members):
                tail_lp, tail_greedy = rest.get((r, k), ([], []))
                out[member] = ([lp_first[j], *tail_lp], [greedy_first[j], *tail_greedy])
                j += 1
    return out, stats


# --------------------------------------------------------------------------- tree-mask variant


@torch.inference_mode()
def score_pairs_tree(
    model: Any, pairs: Sequence[Pair], *, batch_size: int, pad_id: int, max_len: int
) -> tuple[list[Scored], dict[str, int]]:
    """Shared-context scoring in one packed row per question under a 4D tree attention mask."""
    dev = _device(model)
    out: list[Scored] = [([], []) for _ in pairs]
    groups, _empty = group_pairs(pairs, max_len)
    stats = {"forwards": 0, "packed_tokens": 0, "padded_tokens": 0, "lm_head_rows": 0}
    impl = getattr(model.config, "_attn_implementation", "sdpa")
    # one packed row per question: ``batch_size`` rows (questions) per forward
    queue = sorted(groups, key=lambda g: -(len(g.context) + sum(len(c) - 1 for c in g.conts)))
    for b0 in range(0, len(queue), batch_size):
        batch = queue[b0 : b0 + batch_size]
        seqs, segs = [], []  # segs: per row, list of (start, length) of each choice's inputs
        for g in batch:
            s = list(g.context)
            spans = []
            for c in g.conts:
                spans.append((len(s), len(c) - 1))
                s.extend(c[:-1])
            seqs.append(s)
            segs.append(spans)
        width = max(len(s) for s in seqs)
        n = len(batch)
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        pos = torch.zeros((n, width), dtype=torch.long)
        allow = torch.zeros((n, width, width), dtype=torch.bool)
        keep = torch.zeros((n, width), dtype=torch.bool)
        order: list[tuple[int, int, int]] = []  # (row, choice, token index) per kept position
        for r, (g, s, spans) in enumerate(zip(batch, seqs, segs, strict=True)):
            off = width - len(s)  # left padding
            lc = len(g.context)
            ids[r, off:] = torch.tensor(s)
            pos[r, off : off + lc] = torch.arange(lc)
            ctx = slice(off, off + lc)
            allow[r, ctx, ctx] = torch.ones(lc, lc, dtype=torch.bool).tril()
            for start, length in spans:
                if length:
                    a = off + start
                    pos[r, a : a + length] = torch.arange(lc, lc + length)
                    allow[r, a : a + length, ctx] = True
                    allow[r, a : a + length, a : a + length] = torch.ones(
                        length, length, dtype=torch.bool
                    ).tril()
            for p in range(off):  # padded queries see themselves (no all-masked softmax row)
                allow[r, p, p] = True
        # kept positions in row-major order, with the target each one predicts
        for r, (g, spans) in enumerate(zip(batch, segs, strict=True)):
            off = width - len(seqs[r])
            kept: dict[int, tuple[int, int, int]] = {}
            last_ctx = off + len(g.context) - 1
            kept[last_ctx] = (r, -1, -1)  # scores the first token of every choice
            for k, (start, length) in enumerate(spans):
                for t in range(length):
                    kept[off + start + t] = (r, k, t + 1)
            for p in sorted(kept):
                keep[r, p] = True
                order.append(kept[p])
        if impl == "sdpa":
            mask4d: torch.Tensor = allow[:, None]
        else:  # eager: additive float mask
            dtype = next(model.parameters()).dtype
            mask4d = torch.zeros(allow.shape, dtype=dtype).masked_fill(
                ~allow, torch.finfo(dtype).min
            )[:, None]
        o = _call(
            model,
            input_ids=ids.to(dev),
            attention_mask=mask4d.to(dev),
            position_ids=pos.to(dev),
            use_cache=False,
            logits_to_keep=keep.to(dev),
        )
        stats["forwards"] += 1
        stats["packed_tokens"] += sum(len(s) for s in seqs)
        flat = o.logits.reshape(-1, o.logits.shape[-1]).float()
        # the context's last position is shared by all choices: expand it per choice
        rows_idx: list[int] = []
        tgt: list[int] = []
        where: list[tuple[int, int, int]] = []
        for i, (r, k, t) in enumerate(order):
            g = batch[r]
            if k == -1:
                for kk, c in enumerate(g.conts):
                    rows_idx.append(i)
                    tgt.append(c[0])
                    where.append((r, kk, 0))
            else:
                rows_idx.append(i)
                tgt.append(g.conts[k][t])
                where.append((r, k, t))
        sel = torch.tensor(rows_idx, device=flat.device)
        t_ids = torch.tensor(tgt, device=flat.device)
        tgt_logit = flat[sel, t_ids]
        top, arg = flat.max(-1)
        lse = top + flat.sub_(top[:, None]).exp_().sum(-1).log()
        lp = (tgt_logit - lse[sel]).tolist()
        greedy = arg[sel].eq(t_ids).tolist()
        stats["lm_head_rows"] += len(order)
        stats["padded_tokens"] += ids.numel()
        per: dict[tuple[int, int], dict[int, tuple[float, bool]]] = {}
        for (r, k, t), a, b in zip(where, lp, greedy, strict=True):
            per.setdefault((r, k), {})[t] = (a, b)
        for r, g in enumerate(batch):
            for k, member in enumerate(g.members):
                d = per[(r, k)]
                out[member] = ([d[t][0] for t in sorted(d)], [d[t][1] for t in sorted(d)])
    return out, stats


# --------------------------------------------------------------------------- reference


@torch.inference_mode()
def score_pairs_direct(model: Any, pairs: Sequence[Pair], *, max_len: int) -> list[Scored]:
    """One pair at a time, no padding, full logits and a full-vocabulary log_softmax."""
    dev = _device(model)
    out: list[Scored] = []
    for ctx, cont in pairs:
        if not cont:
            out.append(([], []))
            continue
        ctx_t, cont_t = _truncate(list(ctx), list(cont), max_len)
        inp = torch.tensor([(ctx_t + cont_t)[:-1]], device=dev)
        logits = _call(model, input_ids=inp).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)[-len(cont_t) :]
        t = torch.tensor(cont_t, device=dev)
        out.append(
            (
                logp.gather(-1, t[:, None]).squeeze(-1).tolist(),
                logp.argmax(-1).eq(t).tolist(),
            )
        )
    return out

"""Greedy decoding of many prompts: finished rows leave the batch, waiting prompts take their place.

``model.generate`` on a batch keeps every row until the longest one ends, computing padding for
rows that are done, and a batch starts only when the previous one has finished. Answers differ a
lot in length (on the demo, 357 answers of 1-128 tokens, most of them 16-47: one long answer
held its batch of 16 for 128 steps), so most of those forward passes are padding. Here:

- one forward per step with a KV cache and ``logits_to_keep=1``; the argmax of float32 logits
  (what ``generate`` takes; :func:`dpo_harness.evaluation.measure.generation_config` defines the
  decoding: no sampling, no penalties, stop at any end token or after ``max_new_tokens``);
- rows that end stay as fillers only until the live rows fit a smaller multiple of 8 rows, then
  leave (``Cache.batch_select_indices``), and the columns no remaining row attends to are cut
  from the front of the cache (an odd row count can cost 1.7x a round one: :data:`_ROWS`);
- when a quarter of the batch is free, the next waiting prompts are prefilled together and
  joined to the running batch (their caches left-padded to a common width, the padding masked),
  so the forward passes stay full. This needs a cache of plain ``DynamicLayer`` s (every
  full-attention model); a sliding-window or quantized cache runs batch after batch instead.

Every row's tokens are the ones one-by-one decoding and ``model.generate`` give: padding is
masked out of attention and each row keeps its own position ids (tests/integration/
test_greedy.py checks all three on the demo model at batch sizes 1-64, a sliding-window cache
included; benchmarks/generation_refill.py on the 0.1B shape). A model whose forward does not
take ``cache`` / ``position_ids`` / ``logits_to_keep`` (remote code of an older style) is
decoded batch by batch with ``model.generate`` and the same configuration.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from dpo_harness.evaluation import measure

__all__ = ["greedy_generate", "left_pad"]


class _NoCacheForward(Exception):
    """The model's forward refused the cache arguments (raised before any token is kept)."""


# Rows of a decoding step are kept at a multiple of this (finished rows stay as fillers until
# the live ones fit in fewer): on this machine's BLAS a 0.1B-shape decode step with its
# 151,936-column LM head took 105 ms at 16 rows, 118 ms at 8, 125 ms at 32, but 154-195 ms at
# 12-15 rows (benchmarks/results/generation_rowcosts-0.1b.md); accelerators tile rows by 8 too.
_ROWS = 8


@dataclass
class _Running:
    """The rows being decoded: ``mask`` is as wide as the cache; ``nxt`` is each row's next
    input token and ``pos`` its position id; ``rows[j]`` is the prompt index of batch row j,
    or -1 for a finished row kept only to hold the batch at a multiple of :data:`_ROWS`."""

    cache: Any
    mask: torch.Tensor
    pos: torch.Tensor
    nxt: torch.Tensor
    rows: list[int]
    made: list[int]

    def live(self) -> list[int]:
        return [j for j, r in enumerate(self.rows) if r >= 0]

    def keep(self, keep: list[int]) -> None:
        """Keep only the batch rows ``keep``, and cut cache columns no row attends to."""
        idx = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.rows = [self.rows[i] for i in keep]
        self.made = [self.made[i] for i in keep]
        self.mask, self.pos, self.nxt = self.mask[idx], self.pos[idx], self.nxt[idx]
        self.cache.batch_select_indices(idx)
        if _plain_layers(self.cache):
            used = self.mask.any(0).nonzero()
            first = int(used[0]) if len(used) else 0
            if first:
                self.mask = self.mask[:, first:]
                for layer in self.cache.layers:
                    layer.keys = layer.keys[:, :, first:, :]
                    layer.values = layer.values[:, :, first:, :]


@torch.inference_mode()
def greedy_generate(
    model: Any,
    rows: Sequence[Sequence[int]],
    *,
    eos: Sequence[int],
    pad_id: int,
    max_new_tokens: int,
    batch_size: int,
    device: torch.device,
    done: Callable[[int, list[int]], None] | None = None,
) -> tuple[list[list[int]], int]:
    """Greedy continuations of the token ``rows``, each cut after its first end token (kept, as
    ``model.generate`` returns it) or at ``max_new_tokens``; at most ``batch_size`` rows per
    forward. Rows are admitted in the order given (longest first keeps the padding small).
    ``done(i, tokens)`` is called as each row finishes (for a progress bar). Also returns the
    number of batches started (prefills, or ``generate`` calls)."""
    out: list[list[int]] = [[] for _ in rows]
    try:
        return out, _decode(model, rows, out, eos, pad_id, max_new_tokens, batch_size, device, done)
    except _NoCacheForward:
        starts = range(0, len(rows), batch_size)
        for start in starts:
            idx = range(start, min(start + batch_size, len(rows)))
            got = _generate(model, [rows[i] for i in idx], eos, pad_id, max_new_tokens, device)
            for i, tokens in zip(idx, got, strict=True):
                out[i] = tokens
                if done is not None:
                    done(i, tokens)
        return out, len(starts)


def _plain_layers(cache: Any) -> bool:
    from transformers.cache_utils import DynamicLayer

    layers: list[Any] = list(getattr(cache, "layers", None) or [])
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, position ids) of token rows padded on the left to one width.

    Left padding shifts positions unless they are derived from the mask (as ``generate()`` does),
    so the position ids count only real tokens. An empty row is all padding.
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
            mask[i, width - len(r) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def _decode(
    model: Any,
    rows: Sequence[Sequence[int]],
    out: list[list[int]],
    eos: Sequence[int],
    pad_id: int,
    max_new_tokens: int,
    batch_size: int,
    device: torch.device,
    done: Callable[[int, list[int]], None] | None,
) -> int:
    from transformers import DynamicCache

    ends = set(eos)
    waiting = deque(range(len(rows)))
    running: _Running | None = None
    refill = True  # until a cache turns out not to be plain DynamicLayers
    admit_at = max(1, batch_size // 4)  # a prefill is one more forward: not for one free slot
    prefills = 0

    def forward(ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any) -> Any:
        try:
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1, :]
        except TypeError as exc:
            if any(out):
                raise
            raise _NoCacheForward from exc
        return logits.float().argmax(-1)  # generate() takes the argmax of float32 logits

    def settle(batch: _Running, tokens: torch.Tensor) -> _Running | None:
        """Record one new token per live row; rows that ended become fillers, and the batch
        shrinks only to the next multiple of :data:`_ROWS` that holds the live rows."""
        batch.nxt = tokens
        for j, (row, tok) in enumerate(zip(batch.rows, tokens.tolist(), strict=True)):
            if row < 0:
                continue
            out[row].append(tok)
            batch.made[j] += 1
            if tok in ends or batch.made[j] >= max_new_tokens:
                batch.rows[j] = -1
                if done is not None:
                    done(row, out[row])
        live = batch.live()
        if not live:
            return None
        target = len(live) if len(live) < _ROWS else -(-len(live) // _ROWS) * _ROWS
        if target < len(batch.rows):
            fillers = [j for j, r in enumerate(batch.rows) if r < 0][: target - len(live)]
            batch.keep(sorted(live + fillers))
        return batch

    while waiting or running is not None:
        live = running.live() if running is not None else []
        free = batch_size - len(live)
        if waiting and (running is None or (refill and free >= admit_at)):
            group = [waiting.popleft() for _ in range(min(free, len(waiting)))]
            ids, mask, pos = left_pad([rows[i] for i in group], pad_id, device)
            cache = DynamicCache(config=model.config)
            prefills += 1
            tokens = forward(ids, mask, pos, cache)
            fresh = _Running(cache, mask, mask.sum(-1), tokens, group, [0] * len(group))
            new = settle(fresh, tokens)
            refill = refill and _plain_layers(cache)
            if running is None:
                running = new
            elif new is not None:
                if len(live) < len(running.rows):
                    running.keep(live)  # the fillers make room for the new rows
                running = _join(running, new)
            if running is not None:
                _round_up(running, batch_size)
            continue
        assert running is not None
        mask = torch.cat([running.mask, running.mask.new_ones((running.mask.shape[0], 1))], 1)
        tokens = forward(running.nxt[:, None], mask, running.pos[:, None], running.cache)
        running.mask, running.pos = mask, running.pos + 1
        running = settle(running, tokens)
    return prefills


def _round_up(batch: _Running, batch_size: int) -> None:
    """Add filler copies of the first row up to a multiple of :data:`_ROWS` (within
    ``batch_size``): the last prompts of a run seldom fill the batch exactly."""
    n = len(batch.rows)
    target = -(-n // _ROWS) * _ROWS
    if n >= _ROWS and n < target <= batch_size:
        batch.keep(list(range(n)) + [0] * (target - n))
        batch.rows[n:] = [-1] * (target - n)


def _join(a: _Running, b: _Running) -> _Running:
    """One batch of two: each side's cache and mask left-padded (masked) to the wider one."""
    import torch.nn.functional as F

    width = max(a.mask.shape[1], b.mask.shape[1])
    pa, pb = width - a.mask.shape[1], width - b.mask.shape[1]
    for la, lb in zip(a.cache.layers, b.cache.layers, strict=True):
        la.keys = torch.cat([F.pad(la.keys, (0, 0, pa, 0)), F.pad(lb.keys, (0, 0, pb, 0))])
        la.values = torch.cat([F.pad(la.values, (0, 0, pa, 0)), F.pad(lb.values, (0, 0, pb, 0))])
    return _Running(
        cache=a.cache,
        mask=torch.cat([F.pad(a.mask, (pa, 0)), F.pad(b.mask, (pb, 0))]),
        pos=torch.cat([a.pos, b.pos]),
        nxt=torch.cat([a.nxt, b.nxt]),
        rows=a.rows + b.rows,
        made=a.made + b.made,
    )


def _generate(
    model: Any,
    rows: Sequence[Sequence[int]],
    eos: Sequence[int],
    pad_id: int,
    max_new_tokens: int,
    device: torch.device,
) -> list[list[int]]:
    ids, mask, _ = left_pad(rows, pad_id, device)
    cfg = measure.generation_config(max_new_tokens, list(eos), pad_id)
    gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
    return [_until_end(list(r), eos) for r in gen[:, ids.shape[1] :].tolist()]


def _until_end(tokens: list[int], eos: Sequence[int]) -> list[int]:
    cut = next((i for i, t in enumerate(tokens) if t in eos), None)
    return tokens if cut is None else tokens[: cut + 1]

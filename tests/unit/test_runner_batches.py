"""The scoring batcher: a row and token budget per forward, every item exactly once."""

from __future__ import annotations

import itertools

from dpo_harness.evaluation.backends.hf import _budget_batches
from hypothesis import given
from hypothesis import strategies as st


@given(
    lengths=st.lists(st.integers(1, 3000), max_size=60),
    max_rows=st.integers(1, 32),
    max_tokens=st.integers(1, 8192),
)
def test_budget_batches_cover_every_item_once_within_the_budgets(
    lengths: list[int], max_rows: int, max_tokens: int
) -> None:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches = list(_budget_batches(order, lengths, max_rows, max_tokens))
    assert [i for b in batches for i in b] == order  # every item once, in the given order
    for b in batches:
        assert 1 <= len(b) <= max_rows
        width = max(lengths[i] for i in b)
        assert len(b) == 1 or len(b) * width <= max_tokens
    # greedy: a batch is closed only when the next row would not fit
    for b, nxt in itertools.pairwise(batches):
        grown = max(max(lengths[i] for i in b), lengths[nxt[0]])
        assert len(b) == max_rows or (len(b) + 1) * grown > max_tokens

"""The launcher glue that needs no process group: when to join one, and how work is shared."""

from __future__ import annotations

import pytest
from dpo_harness.launcher import Distributed, from_env
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize("world", [None, "1", "not-a-number"])
def test_a_single_process_joins_no_group(
    world: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if world is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world)
    assert from_env() is None


@given(items=st.lists(st.integers(), max_size=200), world=st.integers(1, 9))
def test_shards_partition_the_work_and_stay_balanced(items: list[int], world: int) -> None:
    shards = [Distributed(rank=r, world_size=world, group=None).shard(items) for r in range(world)]
    assert sorted(x for s in shards for x in s) == sorted(items)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    # Each share keeps the planned order (positions increase).
    positions = [
        Distributed(rank=r, world_size=world, group=None).shard(list(range(len(items))))
        for r in range(world)
    ]
    assert all(p == sorted(p) for p in positions)

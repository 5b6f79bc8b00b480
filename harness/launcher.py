"""Running under a launcher (``torchrun`` / ``accelerate launch``): who is main, and the group.

The one notion of "main": rank 0. :func:`is_main_process` reads it from the launcher's
environment (usable before any process group exists, e.g. while the Trainer makes its own);
:attr:`Distributed.is_main` is the same rank seen through the group. Only the main process
prints and writes files (the gate's publish step, the training plugin's outputs).

Data-parallel evaluation: every process loads the model; the runner gives each process a round-robin share of the unique
requests of every kind, and the responses are all-gathered so that every process holds all of
them. Suites then score the same responses everywhere (cheap, and it means every process reaches
the same verdict and exit code); only the main process prints and writes files.

Objects are gathered over a gloo group whatever the training backend is: responses are small
Python objects, and gloo needs no device placement for them (NCCL's object collectives do).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Distributed",
    "apply_threads",
    "choose_threads",
    "from_env",
    "is_main_process",
    "local_rank",
    "process_group",
    "shutdown",
    "world_size",
]


def world_size() -> int:
    """WORLD_SIZE under a launcher, else 1."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """True unless a launcher says this is a process other than rank 0 (readable before any
    process group exists: the Trainer creates its own during training)."""
    return os.environ.get("RANK", "0") == "0"


def local_rank() -> int | None:
    """This process's LOCAL_RANK under a launcher, else None."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None and value.isdigit() else None


@dataclass
class Distributed:
    """This process's place in the group, and the one collective evaluation needs."""

    rank: int
    world_size: int
    group: Any  # a gloo process group for object collectives

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list[Any]) -> list[Any]:
        """Round-robin share: balanced for length-sorted lists, identical on every rank."""
        return items[self.rank :: self.world_size]

    def all_gather(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj, group=self.group)
        return gathered


_CHOSEN_THREADS: int | None = None


def choose_threads(requested: int | None = None) -> int:
    """The CPU threads for PyTorch in this process: ``requested``, else a load-aware default.

    The default matters on a shared machine: with the other core busy, two threads made demo
    ``evaluate`` ≥ 180 s against 23.5 s with one (benchmarks/results/threads.md) — each thread
    waits for the slowest. So: ``OMP_NUM_THREADS`` if the user set it; else the cores not
    already busy (``os.cpu_count() - round(1-minute load average)``), at least 1, shared
    between the processes of a launcher on this node.
    """
    global _CHOSEN_THREADS
    if requested is not None:
        return max(1, requested)
    if _CHOSEN_THREADS is not None:
        # Chosen once per process: later, the load average counts this process's own work.
        return _CHOSEN_THREADS
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    cpus = os.cpu_count() or 1
    try:
        busy = round(os.getloadavg()[0])
    except (OSError, AttributeError):  # no load average on this platform
        busy = 0
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    _CHOSEN_THREADS = max(1, (cpus - busy) // max(1, per_node))
    return _CHOSEN_THREADS


def apply_threads(requested: int | None = None) -> int:
    """Set PyTorch's intra-op threads (see :func:`choose_threads`); returns the number used."""
    import torch

    global _CHOSEN_THREADS
    n = choose_threads(requested)
    _CHOSEN_THREADS = n  # later default choices in this process keep it
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def from_env() -> Distributed | None:
    """Join the launcher's process group when WORLD_SIZE > 1; None for a single process."""
    if world_size() <= 1:
        return None
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        rank = local_rank()
        if backend == "nccl" and rank is not None:
            torch.cuda.set_device(rank)
        dist.init_process_group(backend=backend)
    group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(), group=group)


@contextlib.contextmanager
def process_group() -> Iterator[Distributed | None]:
    """The torchrun/accelerate process group when launched that way, else None; left cleanly."""
    ctx = from_env()
    try:
        yield ctx
    finally:
        shutdown(ctx)


def shutdown(ctx: Distributed | None) -> None:
    """Leave the process group cleanly (avoids the launcher's warning about a leaked group)."""
    if ctx is None:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier(group=ctx.group)
        dist.destroy_process_group()

"""Tensors parked on disk between the candidate's phase and the reference's.

With one model resident at a time, the exact KL of a probe needs the candidate's logits (one
``positions × vocabulary`` float32 tensor per probe) to outlive the candidate. Held in memory,
the numerical suite's probes cost ~1.1 GB on a 151,936-token vocabulary whatever the model's
size — 2.7× the weights of a 0.1B model (benchmarks/results/gate_memory-0.1b.md). Written to the
cache directory and read back one at a time, they cost one probe. ``torch.save`` / ``torch.load``
round-trip float32 bit for bit, so the statistics are unchanged. Where the disk refuses (full,
read-only) a tensor stays in memory instead: slower to need, never wrong.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from dpo_harness.files import cache_dir

__all__ = ["TensorSpill"]


class TensorSpill:
    """An index → tensor store on disk (in memory where the disk refuses); close() removes it."""

    def __init__(self, root: Path | None = None) -> None:
        self._dir: Path | None = None
        self._memory: dict[int, Any] = {}
        base = root if root is not None else cache_dir() / "spill"
        try:
            base.mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix="probe-logits-", dir=base))
        except OSError:
            self._dir = None  # no writable cache: keep everything in memory
        self.on_disk = 0

    def put(self, index: int, tensor: Any) -> None:
        import torch

        if self._dir is not None:
            path = self._dir / f"{index}.pt"
            try:
                torch.save(tensor, path)
                self.on_disk += 1
                return
            except OSError:
                path.unlink(missing_ok=True)
        self._memory[index] = tensor

    def get(self, index: int) -> Any:
        import torch

        if index in self._memory:
            return self._memory[index]
        assert self._dir is not None, f"tensor {index} was never stored"
        return torch.load(self._dir / f"{index}.pt", weights_only=True)

    def close(self) -> None:
        self._memory.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> TensorSpill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

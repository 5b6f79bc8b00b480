"""Non-finite scan of stored weights, streamed from safetensors files.

The numerical suite's first question is "does any stored weight hold NaN or inf, and which?".
Answering it from the file, one tensor slice at a time, means the answer names the tensor exactly
as it is stored (what a user would open with ``safe_open``), never holds a second copy of the
model (``safe_open`` memory-maps the file; each slice is read, checked and dropped), and works
before or without any model being built. The runner also scans the loaded parameters, which
catches what the file cannot show (an overflow when fp32 weights are cast to fp16, a model that
only exists in memory); ``merge_findings`` keeps one entry per tensor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dpo_harness.schema import NonFiniteTensor

__all__ = ["merge_findings", "scan_safetensors", "scan_tensor"]

# Elements per isfinite() call: bounds the temporary copy and boolean mask to ~64 MB (fp32).
CHUNK_ELEMENTS = 1 << 24

# PEFT names a loaded adapter's parameters "...lora_A.<adapter>.weight"; its saved file drops the
# adapter name ("...lora_A.weight"). Normalising both lets a tensor found twice be reported once.
_PEFT_ADAPTER_SEGMENT = re.compile(
    r"\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)\.[^.]+(?=\.|$)"
)


def _count_nonfinite(t: Any) -> tuple[int, int]:
    import torch

    if not t.is_floating_point() or bool(torch.isfinite(t).all()):
        return 0, 0
    return int(torch.isnan(t).sum()), int(torch.isinf(t).sum())


def scan_tensor(t: Any) -> tuple[int, int]:
    """(NaN count, inf count) of a tensor, in bounded chunks (no full-size temporaries)."""
    flat = t.detach().reshape(-1)
    n_nan = n_inf = 0
    for start in range(0, flat.numel(), CHUNK_ELEMENTS):
        a, b = _count_nonfinite(flat[start : start + CHUNK_ELEMENTS])
        n_nan += a
        n_inf += b
    return n_nan, n_inf


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def scan_safetensors(files: Iterable[Path]) -> tuple[int, int, list[NonFiniteTensor]]:
    """Stream every tensor of ``files``; return (tensors, elements, non-finite tensors).

    Large tensors are read in row slices (``get_slice``), so peak extra memory is one slice, not
    one tensor, whatever the model size.
    """
    from safetensors import safe_open

    n_tensors = n_elements = 0
    bad: list[NonFiniteTensor] = []
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open handles are not iterable
                sl = f.get_slice(key)
                shape = list(sl.get_shape())
                numel = _numel(shape)
                n_tensors += 1
                n_elements += numel
                if not sl.get_dtype().startswith(("F", "BF")):
                    continue  # integer/bool buffers cannot hold NaN
                n_nan = n_inf = 0
                if len(shape) <= 1 or numel <= CHUNK_ELEMENTS:
                    n_nan, n_inf = scan_tensor(sl[:] if shape else f.get_tensor(key))
                else:
                    row = max(1, numel // int(shape[0]))
                    step = max(1, CHUNK_ELEMENTS // row)
                    for start in range(0, int(shape[0]), step):
                        a, b = scan_tensor(sl[start : start + step])
                        n_nan += a
                        n_inf += b
                if n_nan or n_inf:
                    bad.append(
                        NonFiniteTensor(
                            name=key, n_nan=n_nan, n_inf=n_inf, numel=numel, file=path.name
                        )
                    )
    return n_tensors, n_elements, bad


def _normalise(name: str) -> str:
    # Only loaded names carry the adapter segment; stored names are compared as they are.
    return _PEFT_ADAPTER_SEGMENT.sub(r".\1", name)


def merge_findings(
    stored: list[NonFiniteTensor], loaded: list[NonFiniteTensor]
) -> list[NonFiniteTensor]:
    """Stored findings first (named as in the file), then loaded-only ones (e.g. cast overflow).

    A loaded tensor matches a stored one when the names agree after removing PEFT's adapter
    segment, or when the loaded name ends with the stored one (a base model wrapped by PEFT is
    loaded as ``base_model.model.<name>``).
    """
    seen = {t.name for t in stored}

    def known(name: str) -> bool:
        n = _normalise(name)
        return n in seen or any(n.endswith("." + s) for s in seen)

    return [*stored, *(t for t in loaded if not known(t.name))]

"""Non-finite scan of stored weights, streamed from safetensors files.

The numerical suite's first question is "does any stored weight hold NaN or inf, and which?".
Answering it from the file, one tensor slice at a time, means the answer names the tensor exactly
as it is stored (what a user would open with ``safe_open``), never holds a second copy of the
model, and works before or without any model being built. The file is read with plain reads into
one reusable chunk buffer, not through ``safe_open``: a memory map keeps every page it touched
resident until it is closed, which counted a whole second copy of the weights in the process's
peak memory (+0.45 GB on the 0.1B shape, benchmarks/results/gate_memory-0.1b.md). The runner also scans the loaded parameters, which
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
# Bytes per read of a stored tensor (a multiple of every dtype's size): 16 MB.
READ_BYTES = 1 << 24

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


# safetensors dtype names of the floating types (the only ones that can hold NaN or inf).
_FLOAT_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


def scan_safetensors(files: Iterable[Path]) -> tuple[int, int, list[NonFiniteTensor]]:
    """Stream every tensor of ``files``; return (tensors, elements, non-finite tensors).

    Each floating tensor is read in chunks of ``CHUNK_ELEMENTS`` into one reused buffer, so peak
    extra memory is one chunk, whatever the model size. The layout (an 8-byte little-endian
    header length, a JSON header of ``dtype``/``shape``/``data_offsets`` per tensor, then the
    data) is safetensors' documented format (docs/metrics.md, "Weights").
    """
    import json
    import struct

    import torch

    n_tensors = n_elements = 0
    bad: list[NonFiniteTensor] = []
    buf = bytearray(READ_BYTES)  # one buffer for every read: nothing for the allocator to keep
    for path in files:
        with open(path, "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(header_len))
            start_of_data = 8 + header_len
            for key, info in header.items():
                if key == "__metadata__":
                    continue
                numel = _numel(info["shape"])
                n_tensors += 1
                n_elements += numel
                name = _FLOAT_DTYPES.get(info["dtype"])
                if name is None or not hasattr(torch, name):
                    continue  # integer/bool buffers cannot hold NaN
                dtype = getattr(torch, name)
                item = torch.empty((), dtype=dtype).element_size()
                begin, end = (int(x) for x in info["data_offsets"])
                n_nan = n_inf = 0
                fh.seek(start_of_data + begin)
                left = end - begin
                while left > 0:
                    n = fh.readinto(memoryview(buf)[: min(left, len(buf))])
                    if not n:
                        break  # a truncated file: what was read is scanned; loading names it
                    n -= n % item
                    a, b = _count_nonfinite(torch.frombuffer(buf, dtype=dtype, count=n // item))
                    n_nan += a
                    n_inf += b
                    left -= n
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

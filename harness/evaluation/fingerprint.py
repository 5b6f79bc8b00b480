"""Stable model fingerprints that change whenever the weights change, and stay cheap.

A fingerprint is a hash over the content hashes of the weight files (plus ``config.json``).
Content hashes are cached in ``$DPO_HARNESS_CACHE/digests.json`` (default
``~/.cache/dpo_harness``) keyed by (path, device, inode, size, mtime, **ctime**), so a multi-GB
model is read once. The ctime is what makes the cache safe: any write to a file, and any
``touch``/``os.utime`` that puts an old mtime back, sets the ctime to "now", and no user-space
call can set it back — so an in-place edit always misses the cache (docs/safety.md has
the measured cost of hashing without it). Files in the Hugging Face hub cache are
content-addressed already (``blobs/<sha256>``): for those the name *is* the hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from dpo_harness.errors import HarnessError
from dpo_harness.files import atomic_write_text, cache_dir
from filelock import FileLock

__all__ = ["cache_dir", "file_digest", "files_fingerprint", "tensors_fingerprint", "text_hash"]

_CHUNK = 8 << 20
_MAX_ENTRIES = 4096
_SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")


def text_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _hash_file(path: Path) -> str:
    h = hashlib.blake2b(digest_size=32)
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return "blake2b:" + h.hexdigest()


def file_digest(path: Path, *, use_cache: bool = True) -> str:
    """Content hash of one file, read at most once per (size, mtime, inode)."""
    real = Path(os.path.realpath(path))
    # The hub cache stores LFS files as blobs/<sha256 of the content>: free and exact.
    if real.parent.name == "blobs" and _SHA256_NAME.match(real.name):
        return "sha256:" + real.name
    if not use_cache:
        return _hash_file(real)
    st = real.stat()
    key = f"{real}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    store = cache_dir() / "digests.json"
    try:
        cached = json.loads(store.read_text())
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return str(cached[key])
    digest = _hash_file(real)
    if real.stat().st_ctime_ns != st.st_ctime_ns:
        return digest  # written while we read it: correct for now, not worth remembering
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(store) + ".lock", timeout=10):
            try:
                cached = json.loads(store.read_text())
            except (OSError, ValueError):
                cached = {}
            cached[key] = digest
            # Bounded: the oldest entries go first (dicts keep insertion order).
            for old in list(cached)[: max(0, len(cached) - _MAX_ENTRIES)]:
                del cached[old]
            atomic_write_text(store, json.dumps(cached))
    except (OSError, HarnessError):
        pass  # a read-only or full cache costs speed, never correctness
    return digest


def files_fingerprint(files: Iterable[tuple[str, Path]], *, use_cache: bool = True) -> str:
    """Hash over (relative name, content hash) pairs, order-independent."""
    h = hashlib.sha256()
    for name, path in sorted(files, key=lambda x: x[0]):
        h.update(name.encode())
        h.update(b"\0")
        h.update(file_digest(path, use_cache=use_cache).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


def tensors_fingerprint(named_tensors: Iterable[tuple[str, object]]) -> str:
    """Fingerprint of in-memory tensors (a model that was never saved)."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(named_tensors, key=lambda x: x[0]):
        assert isinstance(t, torch.Tensor)
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        data = t.detach().to("cpu").contiguous()
        h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return "sha256:" + h.hexdigest()

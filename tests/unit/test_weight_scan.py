"""The streamed safetensors scan: exact counts, tensor names as stored, bounded memory."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from dpo_harness.evaluation import weight_scan
from dpo_harness.evaluation.weight_scan import merge_findings, scan_safetensors, scan_tensor
from dpo_harness.schema import NonFiniteTensor
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    nan_at=st.sets(st.integers(0, 299), max_size=5),
    inf_at=st.sets(st.integers(0, 299), max_size=5),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
)
def test_scan_tensor_counts_exactly(
    n: int, nan_at: set[int], inf_at: set[int], dtype: torch.dtype
) -> None:
    t = torch.randn(n).to(dtype)
    nans = {i for i in nan_at if i < n}
    infs = {i for i in inf_at if i < n} - nans
    for i in nans:
        t[i] = math.nan
    for i in infs:
        t[i] = -math.inf if i % 2 else math.inf
    assert scan_tensor(t) == (len(nans), len(infs))


def test_integer_tensors_are_never_nonfinite() -> None:
    assert scan_tensor(torch.arange(10)) == (0, 0)


def test_stream_scan_names_stored_tensors_across_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny read forces several chunks per tensor (and a chunk boundary inside bf16 pairs).
    monkeypatch.setattr(weight_scan, "READ_BYTES", 16)
    a = torch.zeros(10, 7)
    a[9, 6] = math.nan  # last element of the last slice
    a[0, 0] = math.inf
    b = torch.ones(3, 4, 5, dtype=torch.bfloat16)
    b[1, 2, 3] = math.nan
    save_file(
        {"layer.a.weight": a, "ok.weight": torch.ones(50), "ids": torch.arange(4)},
        str(tmp_path / "model-00001-of-00002.safetensors"),
    )
    save_file(
        {"layer.b.weight": b, "scalar": torch.tensor(math.inf)},
        str(tmp_path / "model-00002-of-00002.safetensors"),
    )
    files = sorted(tmp_path.glob("*.safetensors"))
    n_tensors, n_elements, bad = scan_safetensors(files)
    assert n_tensors == 5
    assert n_elements == 70 + 50 + 4 + 60 + 1
    found = {t.name: (t.n_nan, t.n_inf, t.numel, t.file) for t in bad}
    assert found == {
        "layer.a.weight": (1, 1, 70, "model-00001-of-00002.safetensors"),
        "layer.b.weight": (1, 0, 60, "model-00002-of-00002.safetensors"),
        "scalar": (0, 1, 1, "model-00002-of-00002.safetensors"),
    }


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=0, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
    bad_at=st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from([math.nan, math.inf])), max_size=6
    ),
    read_bytes=st.sampled_from([8, 24, 64, 1 << 24]),
)
def test_stream_scan_equals_a_scan_of_the_loaded_tensor(
    tmp_path_factory: pytest.TempPathFactory,
    shape: list[int],
    dtype: torch.dtype,
    bad_at: list[tuple[int, float]],
    read_bytes: int,
) -> None:
    """Plain chunked reads give the counts of the tensor safetensors itself loads."""
    from safetensors.torch import load_file

    t = torch.randn(shape).to(dtype) if shape else torch.tensor(0.5, dtype=dtype)
    flat = t.reshape(-1)
    for at, value in bad_at:
        flat[at % flat.numel()] = value
    path = tmp_path_factory.mktemp("scan") / "w.safetensors"
    save_file({"pad": torch.ones(3, dtype=torch.int8), "w": t}, str(path))
    old = weight_scan.READ_BYTES
    weight_scan.READ_BYTES = read_bytes
    try:
        n_tensors, n_elements, bad = scan_safetensors([path])
    finally:
        weight_scan.READ_BYTES = old
    want = scan_tensor(load_file(str(path))["w"])
    assert (n_tensors, n_elements) == (2, 3 + t.numel())
    got = {b.name: (b.n_nan, b.n_inf) for b in bad}
    assert got == ({"w": want} if want != (0, 0) else {})


def _t(name: str, file: str | None = None) -> NonFiniteTensor:
    return NonFiniteTensor(name=name, n_nan=1, n_inf=0, numel=4, file=file)


def test_merge_reports_each_tensor_once() -> None:
    stored = [
        _t("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "adapter.safetensors")
    ]
    loaded = [
        # the same tensor, as PEFT names it once loaded
        _t("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"),
        # only in memory (e.g. fp32 -> fp16 overflow)
        _t("base_model.model.model.layers.1.mlp.up_proj.weight"),
        # an embedding adapter: a ParameterDict entry, no ".weight"
        _t("base_model.model.model.embed_tokens.lora_embedding_A.default"),
    ]
    stored.append(_t("base_model.model.model.embed_tokens.lora_embedding_A", "adapter.safetensors"))
    merged = merge_findings(stored, loaded)
    assert [t.name for t in merged] == [stored[0].name, stored[1].name, loaded[1].name]
    # A full model wrapped by PEFT: "model.x" stored, "base_model.model.model.x" loaded.
    assert merge_findings(
        [_t("model.x.weight", "m.safetensors")], [_t("base_model.model.model.x.weight")]
    ) == [_t("model.x.weight", "m.safetensors")]

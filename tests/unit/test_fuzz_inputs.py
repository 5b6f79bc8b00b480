"""Fuzz: mutated checkpoints, baselines, suite data and configs fed to the CLI, in-process.

Each example mutates one input — a checkpoint's ``config.json``, ``tokenizer.json`` or
safetensors header (its length field, its JSON bytes, or a tensor's dtype, shape or offsets), a
stored baseline, an adtech data file, an evaluation config or a run config — and runs the
command that reads it. Whatever the mutation, the command must end with exit 0, 1 or 2 (never
3, an internal error), print no traceback, and change no file outside its output directory and
the cache (the sandbox, the stored baselines and the packaged demo model are hashed before and
after). Bounded: 40 examples in CI (``DPO_FUZZ_EXAMPLES=N`` for a long loop outside it), no
deadline; most are refused before a model loads, and the rest load the 5 MB demo model for one
generated token.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dpo_harness.cli import cli
from dpo_harness.evaluation.loading import demo_model_dir
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
BASELINES = REPO / "baselines"
ITEM = {"id": "n1", "type": "numeric", "question": "CTRは何%ですか。", "answer": 1.5, "unit": "%"}

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def byte_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """Truncate, overwrite, insert, replace with noise, or empty."""
    kind = draw(st.sampled_from(["truncate", "overwrite", "insert", "noise", "empty"]))
    at = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
    if kind == "truncate":
        return data[:at]
    if kind == "overwrite":
        patch = draw(st.binary(min_size=1, max_size=8))
        return data[:at] + patch + data[at + len(patch) :]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    if kind == "noise":
        return draw(st.binary(max_size=256))
    return b""


@st.composite
def json_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """Set, delete or retype a top-level field; or mutate the bytes."""
    obj = json.loads(data)
    kind = draw(st.sampled_from(["set", "delete", "wrap", "bytes"]))
    if kind == "bytes" or not isinstance(obj, dict) or not obj:
        return draw(byte_mutations(data))
    key = draw(st.sampled_from(sorted(obj)))
    if kind == "set":
        obj[key] = draw(json_values)
    elif kind == "delete":
        del obj[key]
    else:
        obj = [obj]
    return json.dumps(obj).encode("utf-8")  # NaN and Infinity included, as Python writes them


@st.composite
def safetensors_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """The 8-byte header length, a byte of the header JSON, or one tensor's dtype/shape/offsets."""
    (length,) = struct.unpack("<Q", data[:8])
    header, body = data[8 : 8 + length], data[8 + length :]
    kind = draw(st.sampled_from(["length", "header-byte", "tensor"]))
    if kind == "length":
        new = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(length - 64, length + 64)))
        return struct.pack("<Q", max(new, 0) % 2**64) + header + body
    if kind == "header-byte":
        at = draw(st.integers(0, len(header) - 1))
        return (
            data[:8]
            + header[:at]
            + draw(st.binary(min_size=1, max_size=1))
            + header[at + 1 :]
            + body
        )
    meta = json.loads(header)
    name = draw(st.sampled_from(sorted(k for k in meta if k != "__metadata__")))
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
    if field == "dtype":
        meta[name]["dtype"] = draw(st.sampled_from(["F16", "BF16", "I8", "BOOL", "F64", "X9"]))
    elif field == "shape":
        meta[name]["shape"] = draw(st.lists(st.integers(0, 600), max_size=3))
    else:
        meta[name]["data_offsets"] = draw(st.lists(st.integers(0, 2**33), min_size=2, max_size=2))
    encoded = json.dumps(meta).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + body


def _snapshot(*roots: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    seen = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if any(p == s or s in p.parents for s in skip) or not p.is_file() or p.is_symlink():
                continue
            seen[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return seen


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Inputs every example starts from: the demo report, one adtech item, a run config."""
    from dpo_harness.gate.baseline import load_baseline

    root = tmp_path_factory.mktemp("fuzz-fixed")
    report = root / "report.json"
    report.write_text(load_baseline(BASELINES / "demo.json").report.model_dump_json())
    items = root / "one.jsonl"
    items.write_text(json.dumps(ITEM, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"root": root, "report": report, "items": items}


TARGETS = (
    "config.json",
    "tokenizer.json",
    "model.safetensors",
    "baseline",
    "suite-data",
    "eval-config",
    "run-config",
)


def _inputs(target: str, sandbox: Path, fixed: dict[str, Path], draw: Any) -> list[str]:
    """Write the mutated input into ``sandbox``; return the command that reads it."""
    out = "out"  # relative to the sandbox (the cwd): the mutated texts never depend on its path
    if target in ("config.json", "tokenizer.json", "model.safetensors"):
        model = Path(shutil.copytree(demo_model_dir(), sandbox / "model"))
        path = model / target
        strategy = {
            "config.json": json_mutations,
            "tokenizer.json": byte_mutations,
            "model.safetensors": safetensors_mutations,
        }[target]
        path.write_bytes(draw(strategy(path.read_bytes())))
        return [
            "evaluate",
            str(model),
            "--suites",
            "adtech",
            "--suite-data",
            f"adtech={fixed['items']}",
            "--max-new-tokens",
            "1",
            "--quiet",
            "--out",
            out,
        ]
    gate = [
        "gate",
        "demo",
        "--base",
        "demo",
        "--report",
        str(fixed["report"]),
        "--quiet",
        "--out",
        out,
    ]
    if target == "baseline":
        directory = sandbox / "baselines"
        directory.mkdir()
        raw = (BASELINES / "demo.json").read_bytes()
        mutated = draw(st.one_of(byte_mutations(raw), json_mutations(raw)))
        (directory / "demo.json").write_bytes(mutated)
        return [*gate, "--baselines-dir", str(directory)]
    if target == "suite-data":
        line = json.dumps(ITEM, ensure_ascii=False).encode("utf-8")
        data = draw(st.one_of(byte_mutations(line), json_mutations(line)))
        lines = draw(st.lists(st.sampled_from([line, data, b"", b"  "]), min_size=1, max_size=4))
        path = sandbox / "items.jsonl"
        path.write_bytes(b"\n".join([data, *lines]) + b"\n")
        return [
            *gate,
            "--baselines-dir",
            str(BASELINES),
            "--suites",
            "adtech",
            "--suite-data",
            f"adtech={path}",
        ]
    if target == "eval-config":
        settings_yaml = (
            b"suites: [numerical, adtech]\nbatch_size: 4\ngeneration: {max_new_tokens: 128}\n"
        )
        path = sandbox / "eval.yaml"
        path.write_bytes(draw(byte_mutations(settings_yaml)))
        return [*gate, "--baselines-dir", str(BASELINES), "--config", str(path)]
    text = (
        f"model: demo\noutput_dir: {out}\ndataset: {{path: demo, split: train, split_field: "
        "split}\ntraining:\n  precision: fp32\n  max_steps: 2\n  max_length: 64\n"
    )
    path = sandbox / "run.yaml"
    path.write_bytes(draw(byte_mutations(text.encode("utf-8"))))
    return ["preflight", "--config", str(path)]


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The cache (crash logs, digests, kept outputs, datasets' cache) inside a scratch dir."""
    cache = tmp_path_factory.mktemp("fuzz-cache")
    saved = {k: os.environ.get(k) for k in ("DPO_HARNESS_CACHE", "HF_DATASETS_CACHE")}
    os.environ["DPO_HARNESS_CACHE"] = str(cache)
    os.environ["HF_DATASETS_CACHE"] = str(cache / "datasets")
    yield cache
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@settings(
    max_examples=int(os.environ.get("DPO_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), target=st.sampled_from(TARGETS))
def test_mutated_inputs_never_crash_and_write_only_their_output(
    data: st.DataObject,
    target: str,
    fixed: dict[str, Path],
    env: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    sandbox = tmp_path_factory.mktemp("fuzz")
    args = _inputs(target, sandbox, fixed, data.draw)
    watched = (sandbox, fixed["root"], BASELINES, demo_model_dir())
    before = _snapshot(*watched, skip=(sandbox / "out",))
    cwd = os.getcwd()
    os.chdir(sandbox)
    try:
        result = CliRunner().invoke(cli, args)
    finally:
        os.chdir(cwd)
    shown = f"{target}: {' '.join(args)}\n{result.output[-3000:]}"
    event(f"{target}: exit {result.exit_code}")  # --hypothesis-show-statistics lists these
    escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not escaped, shown
    assert result.exit_code in (0, 1, 2), shown
    assert "Traceback" not in result.output, shown
    after = _snapshot(*watched, skip=(sandbox / "out",))
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"{shown}\nchanged outside the output: {sorted(changed)}"

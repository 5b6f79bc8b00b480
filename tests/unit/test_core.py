"""The typed core: schemas, versioned atomic files, config errors, CLI bad input (no model needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from dpo_harness.cli import cli
from dpo_harness.errors import BadInputError
from dpo_harness.files import (
    atomic_write_text,
    load_config_file,
    load_model_file,
    read_jsonl,
    write_model_file,
)
from dpo_harness.schema import (
    ChatMessage,
    Direction,
    EvalConfig,
    GenerateRequest,
    LoglikelihoodRequest,
    MetricResult,
    MetricSpec,
)
from hypothesis import given
from hypothesis import strategies as st


def test_requests_are_hashable_by_value() -> None:
    a = GenerateRequest(prompt=(ChatMessage(role="user", content="こんにちは"),))
    b = GenerateRequest(prompt=(ChatMessage(role="user", content="こんにちは"),))
    c = LoglikelihoodRequest(context=a.prompt, continuation="x")
    assert a == b and hash(a) == hash(b)
    assert len({a, b, c}) == 2


@given(
    value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none()),
    lo=st.one_of(st.none(), st.floats(-10, 10)),
    hi=st.one_of(st.none(), st.floats(-10, 10)),
)
def test_hard_limit_verdict(value: float | None, lo: float | None, hi: float | None) -> None:
    spec = MetricSpec(
        name="m", description="d", direction=Direction.LOWER, hard_min=lo, hard_max=hi
    )
    res = MetricResult.from_spec(spec, value, {"a": value})
    has_limit = lo is not None or hi is not None
    if value is None:
        assert res.hard_limit_ok is None
    elif not math.isfinite(value):
        # A NaN metric never passes a hard limit, and is stored as None (JSON has no NaN).
        assert res.nonfinite and res.value is None and res.per_sample["a"] is None
        assert res.hard_limit_ok is (False if has_limit else None)
    elif not has_limit:
        assert res.hard_limit_ok is None
    else:
        assert res.hard_limit_ok == ((lo is None or value >= lo) and (hi is None or value <= hi))
    json.loads(res.model_dump_json())  # always serialisable


def test_write_then_load_roundtrip(tmp_path: Path) -> None:
    cfg = EvalConfig(checkpoint="x", batch_size=3)

    class Wrapped(EvalConfig):
        schema_version: str = "1"

    write_model_file(tmp_path / "c.json", Wrapped(**cfg.model_dump()))
    back = load_model_file(tmp_path / "c.json", Wrapped)
    assert back.batch_size == 3 and back.checkpoint == "x"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "is not valid JSON"),
        ('{"schema_version": "0"}', "schema_version is '0'"),
        ('{"batch_size": 3}', "schema_version is None"),
        ('{"schema_version": "1", "batch_size": -1}', "batch_size"),
    ],
)
def test_malformed_files_are_clear_errors(tmp_path: Path, content: str, match: str) -> None:
    class Wrapped(EvalConfig):
        schema_version: str = "1"

    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(BadInputError, match=match) as err:
        load_model_file(path, Wrapped)
    assert str(path) in err.value.cause


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "一")
    atomic_write_text(target, "二")
    assert target.read_text() == "二"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_read_jsonl_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(BadInputError, match=r"x.jsonl:3: expected a JSON object"):
        list(read_jsonl(path))


def test_config_file_errors_name_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text("suites: [numerical]\nbatch_size: many\n")
    with pytest.raises(BadInputError) as err:
        load_config_file(path, EvalConfig)
    assert str(path) in err.value.cause and "'batch_size'" in err.value.cause
    path.write_text("suites: [numerical]\nbatchsize: 4\n")
    with pytest.raises(BadInputError, match="'batchsize'"):
        load_config_file(path, EvalConfig)
    path.write_text("suites: [numerical\n")
    with pytest.raises(BadInputError, match="cannot parse"):
        load_config_file(path, EvalConfig)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["evaluate", "/definitely/missing/ckpt"], "checkpoint not found"),
        (["evaluate", "--suites", "nonsense"], "unknown suite 'nonsense'"),
        (["evaluate", "--suite-data", "adtech"], "is not NAME=PATH"),
        (
            ["evaluate", "--suites", "numerical", "--suite-data", "adtech=x.jsonl"],
            "names suite 'adtech', which is not selected",
        ),
        (
            ["evaluate", "--suite-data", "jcommonsenseqa=x.jsonl"],
            "names 'jcommonsenseqa', which is not a suite",
        ),
        (["evaluate", "--suite-file", "/missing-suites.yaml"], "suite file not found"),
        (["evaluate", "--config", "/missing.yaml"], "config file not found"),
        (
            ["evaluate", "--suites", "adtech", "--suite-data", "adtech=/missing.jsonl"],
            "data file not found",
        ),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("error: ")


def test_cli_lists_suites() -> None:
    result = CliRunner().invoke(cli, ["suites"])
    assert result.exit_code == 0
    for name in ("numerical", "repetition", "fluency", "adtech", "degenerate_share", "mc_accuracy"):
        assert name in result.output

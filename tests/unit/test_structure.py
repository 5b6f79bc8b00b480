"""The package's promises about itself: versioned measurement, one-way imports, one settings table."""

from __future__ import annotations

import ast
import importlib
import typing
import warnings
from pathlib import Path

import pytest
from dpo_harness._compat import MOVED_MODULES
from dpo_harness.errors import BadInputError, IncompatibleBaselineError
from dpo_harness.files import read_jsonl
from dpo_harness.gate.baseline import key_of
from dpo_harness.schema import EvalConfig, EvalSettings
from dpo_harness.settings import EVAL_OPTIONS, POLICY_OPTIONS, eval_overrides
from dpo_harness.tools import versions

from tests.helpers import make_baseline, make_report

PACKAGE = Path(importlib.import_module("dpo_harness").__file__ or "").parent


def test_a_measurement_code_change_without_a_version_bump_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stale = versions.current()
    stale[versions.MEASUREMENT]["code_hash"] = "sha256:0000000000000000"
    monkeypatch.setattr(versions, "recorded", lambda: stale)
    problems = versions.check()
    assert len(problems) == 1 and "MEASUREMENT_VERSION is still" in problems[0]
    assert versions.main(["--update"]) == 1  # --update refuses until the version is bumped


def test_measurement_code_hash_ignores_docstrings_imports_and_annotations() -> None:
    a = ast.parse('import x\ndef f(a: int) -> int:\n    """doc"""\n    y: int = a\n    return y\n')
    b = ast.parse("def f(a):\n    y = a\n    return y\n")
    assert ast.dump(versions._strip_docstrings(a)) == ast.dump(versions._strip_docstrings(b))
    c = ast.parse("def f(a):\n    y = a + 1\n    return y\n")
    assert ast.dump(versions._strip_docstrings(c)) != ast.dump(versions._strip_docstrings(b))


def test_a_baseline_measured_by_another_runner_version_is_refused_with_the_fix() -> None:
    report = make_report({"acc": {f"i{k}": 1.0 for k in range(12)}})
    report.provenance.measurement_version = "1"
    old = make_baseline(report.model_copy(deep=True))
    old = old.model_copy(update={"key": old.key.model_copy(update={"measurement": None})})
    with pytest.raises(IncompatibleBaselineError) as err:
        old.check_key(key_of(report))
    assert "measured by runner version unversioned (baseline) vs 1" in err.value.cause
    assert err.value.fix == "re-create it with: dpo-harness baseline update demo"


def test_a_mismatch_with_user_data_never_advises_overwriting_the_stored_baseline() -> None:
    report = make_report({"acc": {f"i{k}": 1.0 for k in range(12)}})
    baseline = make_baseline(report)
    other = report.model_copy(deep=True)
    other.provenance.suites["toy"] = other.provenance.suites["toy"].model_copy(
        update={"data_hash": "sha256:mine"}
    )
    with pytest.raises(IncompatibleBaselineError) as err:
        baseline.check_key(key_of(other), with_data={"toy": Path("mine.jsonl")})
    assert "baseline update" not in (err.value.fix or "")
    assert "--baselines-dir" in (err.value.fix or "") and "mine.jsonl" in (err.value.fix or "")


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_old_module_paths_still_import_and_say_where_the_code_went(old: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED_MODULES[old])
    assert (
        any(
            issubclass(w.category, DeprecationWarning) and MOVED_MODULES[old] in str(w.message)
            for w in caught
        )
        or old in __import__("sys").modules
    )  # imported earlier in this process: no second warning


def test_old_public_names_resolve() -> None:
    import dpo_harness

    for name in ("evaluate_loaded", "load_checkpoint", "EvalConfig", "EvalReport", "run_gate"):
        assert callable(getattr(dpo_harness, name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from dpo_harness.evaluate import evaluate  # type: ignore[import-not-found]
        from dpo_harness.gating import finish, run_gate  # type: ignore[import-not-found]
        from dpo_harness.train_and_gate import train_and_gate  # type: ignore[import-not-found]
    from dpo_harness.gate import gate

    assert all(callable(f) for f in (evaluate, finish, run_gate, train_and_gate, gate))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_library_code_never_imports_cli_code() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("cli", "tools") or "__pycache__" in rel.parts:
            continue
        bad = [
            m for m in _imports(path) if m == "dpo_harness.cli" or m.startswith("dpo_harness.cli.")
        ]
        if bad:
            offenders.append(f"{rel}: {bad}")
    assert offenders == []


def test_the_core_never_imports_a_training_library() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("plugins", "demo", "tools") or "__pycache__" in rel.parts:
            continue
        bad = [m for m in _imports(path) if m.split(".")[0] in ("trl", "datasets", "accelerate")]
        if bad:
            offenders.append(f"{rel}: {bad}")
    assert offenders == []


def _fields(model: type, prefix: str = "") -> set[str]:
    out = set()
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        annotation = info.annotation
        # An optional section (``endpoint: EndpointSettings | None``) is its fields.
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1 and hasattr(members[0], "model_fields"):
            annotation = members[0]
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            out |= _fields(annotation, prefix + name + ".")
        else:
            out.add(prefix + name)
    return out


def test_every_evaluation_setting_has_one_option_for_the_cli_and_pytest() -> None:
    covered = {spec.field for spec in EVAL_OPTIONS}
    assert _fields(EvalSettings) <= covered
    assert (_fields(EvalConfig) - {"checkpoint"}) <= covered
    flags = [spec.flag for spec in (*EVAL_OPTIONS, *POLICY_OPTIONS)]
    assert len(flags) == len(set(flags))


def test_options_become_nested_overrides() -> None:
    got = eval_overrides(
        {"max_new_tokens": 8, "system_prompt": "あなたは広告の専門家です。", "suites": "adtech"}
    )
    assert got == {
        "generation": {"max_new_tokens": 8, "system_prompt": "あなたは広告の専門家です。"},
        "suites": ["adtech"],
    }
    assert EvalConfig.model_validate(got).generation.max_new_tokens == 8


def test_a_data_file_with_a_byte_that_is_not_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b\xff"}\n')
    with pytest.raises(BadInputError) as err:
        list(read_jsonl(path))
    assert err.value.cause.startswith(f"{path}:2: not UTF-8 text (byte 0xff")
    assert "UTF-8" in (err.value.fix or "")


def test_the_cli_imports_without_scipy_or_torch() -> None:
    """Startup stays light: scipy (the statistics) and torch load only when a command needs them.

    gate/power.py imported at module level by the baseline commands once put scipy back on every
    command's start-up (import dpo_harness.cli 0.23 s -> 0.95 s).
    """
    import subprocess
    import sys

    code = (
        "import sys, dpo_harness.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'torch', 'transformers'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

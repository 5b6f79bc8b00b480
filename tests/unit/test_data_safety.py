"""Nothing a user has is lost: promotion, baseline replacement, fingerprints, checkpoints.

Each test reproduces a way data was lost or a promoted model could change after its gate
(issue 11, "Data loss and integrity"); none of them loads a model.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest
import torch
from dpo_harness.errors import BadInputError, HarnessError
from dpo_harness.evaluation.fingerprint import file_digest
from dpo_harness.gate import GateDecision
from dpo_harness.gate.baseline import load_baseline, replace_baseline, save_baseline
from dpo_harness.gate.promotion import check_promotable, promote, recover, verify_promotion
from safetensors.torch import save_file

from tests.helpers import make_baseline, make_report, promotion_decision

# ----------------------------------------------------------------------------- helpers


def _model_dir(path: Path, value: float = 1.0) -> Path:
    """A minimal saved model directory: config.json + model.safetensors + a tokenizer file."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "toy", "hidden": 2}))
    (path / "tokenizer.json").write_text(json.dumps({"vocab": ["a", "b"]}))
    save_file({"w": torch.full((2, 2), value)}, str(path / "model.safetensors"))
    return path


def _decision(candidate: Path) -> GateDecision:
    return promotion_decision(candidate)


def _tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


# ----------------------------------------------------------------------------- promotion


def test_promote_refuses_a_directory_of_user_files_and_leaves_it_intact(tmp_path: Path) -> None:
    cand = _model_dir(tmp_path / "cand")
    target = tmp_path / "my-project"
    target.mkdir()
    (target / "notes.txt").write_text("three weeks of notes")
    (target / "sub").mkdir()
    (target / "sub" / "data.csv").write_text("1,2,3")
    before = _tree(target)
    with pytest.raises(BadInputError, match="not an earlier dpo-harness promotion"):
        check_promotable(target)
    with pytest.raises(BadInputError, match="not an earlier dpo-harness promotion"):
        promote(cand, target, _decision(cand))
    assert _tree(target) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".my-project.")]


def test_promote_refuses_an_existing_file_and_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cand = _model_dir(tmp_path / "cand")
    existing = tmp_path / "model.bin"
    existing.write_bytes(b"precious")
    with pytest.raises(BadInputError, match="existing file"):
        promote(cand, existing, _decision(cand))
    assert existing.read_bytes() == b"precious"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError, match="current"):
        check_promotable(Path("."))
    parent_is_file = existing / "promoted"
    with pytest.raises(BadInputError, match="is a file"):
        check_promotable(parent_is_file)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_promote_replaces_only_an_earlier_promotion_and_leaves_no_leftovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:
        monkeypatch.setattr("dpo_harness.gate.promotion._renameat2_exchange", lambda a, b: False)
    target = tmp_path / "promoted"
    first = _model_dir(tmp_path / "first", 1.0)
    promote(first, target, _decision(first))
    assert verify_promotion(target).ok
    second = _model_dir(tmp_path / "second", 2.0)
    written = promote(second, target, _decision(second))
    assert written.files is not None and written.promoted_to == str(target)
    assert (target / "model.safetensors").read_bytes() == (
        second / "model.safetensors"
    ).read_bytes()
    assert verify_promotion(target).ok
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".promoted")) == [
        ".promoted.lock"
    ]
    # A user file added to the promotion makes it no longer "only ours": refused, kept.
    os.chmod(target, 0o755)
    (target / "my-eval.txt").write_text("mine")
    with pytest.raises(BadInputError, match="not an earlier"):
        promote(first, target, _decision(first))
    assert (target / "my-eval.txt").read_text() == "mine"


def test_promoted_files_are_copies_that_a_later_save_cannot_change(tmp_path: Path) -> None:
    cand = _model_dir(tmp_path / "cand")
    target = tmp_path / "promoted"
    promote(cand, target, _decision(cand))
    promoted_config = (target / "config.json").read_bytes()
    # The training run keeps writing into its checkpoint directory after the gate.
    (cand / "config.json").write_text(json.dumps({"model_type": "toy", "hidden": 999}))
    save_file({"w": torch.zeros(2, 2)}, str(cand / "model.safetensors"))
    assert (target / "config.json").read_bytes() == promoted_config
    assert os.stat(target / "config.json").st_ino != os.stat(cand / "config.json").st_ino
    assert verify_promotion(target).ok
    mode = os.stat(target / "model.safetensors").st_mode & 0o777
    assert mode & 0o444 == 0o444 and not mode & 0o222, oct(mode)  # read-only, group-readable
    assert os.stat(target).st_mode & 0o050 == 0o050  # the directory is not 0700


def test_verify_reports_a_file_changed_after_promotion(tmp_path: Path) -> None:
    cand = _model_dir(tmp_path / "cand")
    target = tmp_path / "promoted"
    promote(cand, target, _decision(cand))
    path = target / "model.safetensors"
    os.chmod(path, 0o644)
    save_file({"w": torch.full((2, 2), 7.0)}, str(path))
    result = verify_promotion(target)
    assert not result.ok and result.changed == ["model.safetensors"]
    with pytest.raises(BadInputError, match="not a dpo-harness promotion"):
        verify_promotion(cand)


def test_symlinks_out_of_the_candidate_are_copied_as_content(tmp_path: Path) -> None:
    cand = _model_dir(tmp_path / "cand")
    outside = tmp_path / "elsewhere-tokenizer.json"
    outside.write_text(json.dumps({"vocab": ["x"]}))
    (cand / "tokenizer.json").unlink()
    (cand / "tokenizer.json").symlink_to(outside)
    target = tmp_path / "promoted"
    promote(cand, target, _decision(cand))
    assert not any(p.is_symlink() for p in target.iterdir())
    assert (target / "tokenizer.json").read_text() == outside.read_text()
    outside.write_text("changed later")
    assert verify_promotion(target).ok


def test_a_candidate_changed_between_gate_and_promotion_is_not_promoted(tmp_path: Path) -> None:
    cand = _model_dir(tmp_path / "cand")
    decision = _decision(cand)
    save_file({"w": torch.full((2, 2), 3.0)}, str(cand / "model.safetensors"))
    target = tmp_path / "promoted"
    with pytest.raises(BadInputError, match="changed after they were evaluated"):
        promote(cand, target, decision)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".promoted.promote")]


def test_crash_leftovers_are_cleaned_and_an_interrupted_swap_is_undone(tmp_path: Path) -> None:
    cand = _model_dir(tmp_path / "cand")
    target = tmp_path / "promoted"
    promote(cand, target, _decision(cand))
    # A kill between "move the old promotion aside" and "move the new one in".
    aside = tmp_path / ".promoted.replaced-20261201-000000-000000"
    os.replace(target, aside)
    half = tmp_path / ".promoted.promote-abc123"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    notes = recover(target)
    assert target.is_dir() and verify_promotion(target).ok
    assert not aside.exists() and not half.exists()
    assert any("restored" in n for n in notes) and any("removed" in n for n in notes)


# ----------------------------------------------------------------------------- baselines


def _toy_report(value: float):
    return make_report({"acc": {f"i{k}": value for k in range(12)}})


def test_a_failed_baseline_write_leaves_the_current_baseline_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = save_baseline(make_baseline(_toy_report(1.0)), tmp_path)
    before = path.read_bytes()
    import dpo_harness.gate.baseline as baseline_mod

    real = getattr(baseline_mod, "atomic_write_text")  # noqa: B009 (not a public name)

    def disk_full(target: Path, text: str) -> None:
        if Path(target) == path:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        real(target, text)

    monkeypatch.setattr(baseline_mod, "atomic_write_text", disk_full)
    with pytest.raises(HarnessError, match="No space left") as err:
        replace_baseline(_toy_report(0.0), tmp_path, reason="update")
    assert err.value.exit_code == 2 and "free some disk space" in (err.value.fix or "")
    assert path.read_bytes() == before  # the current baseline is still there, unchanged
    assert load_baseline(path).report.suites[0].metrics[0].value == 1.0


def _update_worker(directory: str, value: float, delay: float, queue: object) -> None:
    def reason(previous: object) -> str:
        time.sleep(delay)  # hold the lock a while: the other update must wait
        return f"replaced {getattr(previous, 'checksum', None)}"

    saved = replace_baseline(_toy_report(value), Path(directory), reason=reason)
    queue.put((value, saved.previous.checksum if saved.previous else None, saved.baseline.checksum))  # type: ignore[attr-defined]


def test_concurrent_updates_serialise_and_each_names_the_baseline_it_replaced(
    tmp_path: Path,
) -> None:
    path, _ = save_baseline(make_baseline(_toy_report(0.5)), tmp_path)
    original = load_baseline(path).checksum
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_update_worker, args=(str(tmp_path), v, 1.0, queue)) for v in (1.0, 0.0)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    results = sorted([queue.get(timeout=5) for _ in procs], key=lambda r: r[1] != original)
    (_, prev_first, new_first), (_, prev_second, new_second) = results
    assert prev_first == original  # the first replaced the original ...
    assert prev_second == new_first  # ... and the second replaced the first one's result
    assert load_baseline(path).checksum == new_second
    assert len(list((tmp_path / "history" / "demo").glob("*.json"))) == 2


# ----------------------------------------------------------------------------- fingerprints


def test_fingerprint_cache_never_returns_the_old_digest_after_an_in_place_edit(
    tmp_path: Path,
) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"A" * 4096)
    first = file_digest(weights)
    st = weights.stat()
    with weights.open("r+b") as fh:  # same size, same inode ...
        fh.write(b"B")
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the old mtime put back
    assert weights.stat().st_mtime_ns == st.st_mtime_ns and weights.stat().st_size == st.st_size
    assert file_digest(weights) != first
    assert file_digest(weights) == file_digest(weights, use_cache=False)


# ----------------------------------------------------------------------------- checkpoints


def test_resume_skips_half_written_checkpoints_and_keeps_them(tmp_path: Path) -> None:
    from dpo_harness.plugins.dpo.trainer import _checkpoints, set_aside_incomplete

    def checkpoint(step: int, *, state: bool = True, weights: bool = True) -> Path:
        p = tmp_path / f"checkpoint-{step}"
        p.mkdir()
        if weights:
            (p / "adapter_model.safetensors").write_bytes(b"w")
        if state:
            (p / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        return p

    checkpoint(4)
    checkpoint(8)
    checkpoint(12, state=False)  # killed while writing the optimizer state
    (tmp_path / "checkpoint-16").mkdir()  # killed right after mkdir
    truncated = checkpoint(20)
    (truncated / "trainer_state.json").write_text('{"global_st')
    assert [c.step for c in _checkpoints(tmp_path)] == [4, 8]
    said: list[str] = []
    newest = set_aside_incomplete(tmp_path, said.append)
    assert newest == tmp_path / "checkpoint-8"
    assert len(said) == 3 and all("not used" in s for s in said)
    kept = sorted(p.name.rsplit("-", 2)[0] for p in tmp_path.glob("incomplete-checkpoint-*"))
    assert kept == [
        "incomplete-checkpoint-12",
        "incomplete-checkpoint-16",
        "incomplete-checkpoint-20",
    ]


# ----------------------------------------------------------------------------- outputs


def test_a_report_set_is_written_all_or_none_and_a_full_disk_keeps_it_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dpo_harness.files as files

    monkeypatch.setenv("DPO_HARNESS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    out.mkdir()
    for name in ("report.json", "report.md", "report.html"):
        (out / name).write_text(f"earlier {name}")
    real = files._write_tmp

    def full_at_the_html(path: Path, data: bytes) -> Path:
        if path.parent == out and path.name == "report.html":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(files, "_write_tmp", full_at_the_html)
    new = {"report.json": "{}", "report.md": "# new", "report.html": "<p>new</p>"}
    with pytest.raises(HarnessError, match="No space left on device") as err:
        files.write_outputs(out, new, what="the evaluation report")
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    assert all((out / n).read_text() == f"earlier {n}" for n in new)  # nothing replaced
    kept = next((tmp_path / "cache" / "unsaved").glob("*-out"))
    assert {p.name: p.read_text() for p in kept.iterdir()} == new
    assert str(kept) in err.value.cause and err.value.exit_code == 2


def test_a_library_save_that_fills_the_disk_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil as shutil_mod

    from dpo_harness.files import writing

    # torch.save on a full disk: a RuntimeError with no errno ("unexpected pos …").
    with pytest.raises(RuntimeError, match="unexpected pos"), writing(tmp_path, "the checkpoint"):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 131200")
    usage = shutil_mod.disk_usage(tmp_path)._replace(free=0)
    monkeypatch.setattr("dpo_harness.files.shutil.disk_usage", lambda _p: usage)
    with pytest.raises(HarnessError, match="No space left on device"), writing(tmp_path, "x"):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 131200")


def test_an_output_directory_that_cannot_be_filled_is_refused_before_the_work(
    tmp_path: Path,
) -> None:
    from dpo_harness.files import check_output_dir

    afile = tmp_path / "afile"
    afile.write_text("x")
    for path, words in (
        (afile, "is an existing file"),
        (afile / "below", "is a file, not a directory"),
    ):
        with pytest.raises(BadInputError, match=words):
            check_output_dir(path)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "deeper")
    with pytest.raises(BadInputError, match="leads nowhere"):
        check_output_dir(tmp_path / "dangling")
    check_output_dir(tmp_path / "new" / "deeper")  # creatable: fine, and not created yet
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------- portable adapters


def _adapter_dir(path: Path, base: str) -> Path:
    """A minimal PEFT adapter directory whose adapter_config.json names ``base`` (as PEFT writes it)."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"base_model_name_or_path": base, "peft_type": "LORA", "r": 2, "target_modules": ["q"]}
    (path / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    save_file({"q.lora_A.weight": torch.ones(2, 2)}, str(path / "adapter_model.safetensors"))
    return path


def _adapter_decision(candidate: Path, base: str) -> GateDecision:
    decision = promotion_decision(candidate)
    info = decision.candidate.model_copy(update={"is_adapter": True, "base_ref": base})
    return decision.model_copy(update={"candidate": info})


def test_a_local_base_path_is_replaced_by_the_hub_id_and_verify_proves_the_gated_bytes(
    tmp_path: Path,
) -> None:
    from dpo_harness.evaluation.loading import demo_model_dir

    base = str(demo_model_dir())  # what training leaves in adapter_config.json: a local path
    cand = _adapter_dir(tmp_path / "checkpoint-40", base)
    gated = (cand / "adapter_config.json").read_bytes()
    target = tmp_path / "promoted"
    written = promote(cand, target, _adapter_decision(cand, base))
    promoted_cfg = json.loads((target / "adapter_config.json").read_text())
    assert promoted_cfg["base_model_name_or_path"] == "dpo-harness/demo"
    assert {k: v for k, v in promoted_cfg.items() if k != "base_model_name_or_path"} == {
        k: v for k, v in json.loads(gated).items() if k != "base_model_name_or_path"
    }
    (rewrite,) = written.rewrites
    assert rewrite.file == "adapter_config.json" and rewrite.gated_json == json.dumps(base)
    assert rewrite.gated_sha256 == "sha256:" + __import__("hashlib").sha256(gated).hexdigest()
    on_disk = GateDecision.model_validate_json((target / "decision.json").read_text())
    assert on_disk.rewrites == written.rewrites
    result = verify_promotion(target)
    assert result.ok, (result.changed, result.missing, result.extra)
    assert any("put back, the file is the one the gate evaluated" in n for n in result.notes)
    # Any other change to the rewritten file is caught, even one that keeps the recorded value.
    path = target / "adapter_config.json"
    os.chmod(path, 0o644)
    path.write_text(path.read_text().replace('"r": 2', '"r": 3'))
    assert verify_promotion(target).changed == ["adapter_config.json"]


def test_a_local_base_without_a_hub_id_is_left_and_said(tmp_path: Path) -> None:
    base_dir = _model_dir(tmp_path / "my-base")
    cand = _adapter_dir(tmp_path / "cand", str(base_dir))
    written = promote(cand, tmp_path / "promoted", _adapter_decision(cand, str(base_dir)))
    assert written.rewrites == []
    assert any("no hub id is known" in n for n in written.notes)
    assert (tmp_path / "promoted" / "adapter_config.json").read_bytes() == (
        cand / "adapter_config.json"
    ).read_bytes()
    written = promote(
        cand,
        tmp_path / "promoted2",
        _adapter_decision(cand, str(base_dir)),
        base_model_id="me/my-base",
    )
    assert (
        json.loads((tmp_path / "promoted2" / "adapter_config.json").read_text())[
            "base_model_name_or_path"
        ]
        == "me/my-base"
    )
    assert verify_promotion(tmp_path / "promoted2").ok


def test_the_model_card_is_a_hub_card_with_model_index_base_model_and_a_title(
    tmp_path: Path,
) -> None:
    from dpo_harness.evaluation.loading import demo_model_dir
    from huggingface_hub import ModelCard, ModelCardData

    cand = _adapter_dir(tmp_path / "checkpoint-40", str(demo_model_dir()))
    target = tmp_path / "adtech-dpo"
    written = promote(cand, target, _adapter_decision(cand, str(demo_model_dir())))
    card = ModelCard((target / "README.md").read_text(encoding="utf-8"))
    data = card.data
    assert isinstance(data, ModelCardData)
    assert data.language == "ja" and data.base_model == "dpo-harness/demo"
    assert data.library_name == "peft" and data.model_name == "adtech-dpo"
    results = data.eval_results
    assert results and {r.metric_name for r in results} == {v.name for v in written.verdicts}
    assert all(
        r.metric_value == v.candidate for r, v in zip(results, written.verdicts, strict=True)
    )
    text = card.text
    assert text.lstrip().startswith("# adtech-dpo\n")
    assert "| " in text and all(r in text for r in written.reasons)

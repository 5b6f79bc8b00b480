"""Promotion: put a candidate that passed the gate where it will be used — and lose nothing.

What a promotion guarantees (docs/safety.md):

- **Never deletes what is not an earlier promotion.** The target must be new, empty, or a
  directory this module wrote before (its ``decision.json`` lists every file in it). Anything
  else — a directory of the user's files, a regular file, the current directory — is refused
  before any model is evaluated (:func:`check_promotable`), and again at promotion time.
- **A promoted model cannot change after its gate.** Files are *copied* (never hard-linked: a
  later ``save_pretrained`` into the candidate directory would otherwise rewrite the promoted
  copy), symlinks are dereferenced so nothing points outside the promotion, and each file's
  sha256 is recorded in ``decision.json`` (``files``). The copied weights are re-fingerprinted and
  must match the fingerprint the gate evaluated; ``dpo-harness verify DIR`` re-checks later.
  Files are made read-only (readable by the group, like any other output).
- **Portable, and still verifiable.** An adapter's ``adapter_config.json`` names its base by
  ``base_model_name_or_path``, which training leaves as the local directory the base was read
  from. After the copy has passed the content check, that one JSON string is replaced by the
  base's hub id; the change is recorded in ``decision.json`` (``rewrites``: the gated value, the
  promoted one and the sha256 of the file as gated), and ``verify`` undoes it to get back the
  gated bytes and checks their sha256. ``files`` holds the hashes of the promoted bytes.
- **Atomic.** Everything is written into a temporary sibling directory first, under a lock. The
  new directory then replaces the old one with one ``renameat2(RENAME_EXCHANGE)`` where Linux
  offers it; elsewhere with two renames, and a crash between them is repaired by the next
  promotion or ``verify`` (the earlier promotion is moved back). Leftovers of crashed runs are
  removed under the lock.

On refusal the promote directory is not touched; a refusal record is written next to it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from dpo_harness.errors import BadInputError, HarnessError
from dpo_harness.evaluation.fingerprint import text_hash
from dpo_harness.evaluation.loading import hub_id_of
from dpo_harness.files import atomic_write_text, output_error, read_only_fs
from dpo_harness.files import exchange_paths as _renameat2_exchange
from dpo_harness.gate.decision import FileRewrite, GateDecision
from dpo_harness.gate.render import gate_headers, gate_rows
from filelock import FileLock, Timeout

__all__ = [
    "MODEL_FILE_PATTERNS",
    "VerifyResult",
    "check_promotable",
    "model_card",
    "promote",
    "record_refusal",
    "verify_promotion",
]

MODEL_FILE_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "adapter_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "trainer_state.json",
)
# Files a promotion writes itself, besides the model files it lists in decision.json.
_OWN_FILES = ("decision.json", "README.md")
_CHUNK = 8 << 20


# --------------------------------------------------------------------------- target checks


def _is_earlier_promotion(target: Path) -> bool:
    """True when every file in ``target`` was put there by a promotion (so replacing loses nothing)."""
    decision_file = target / "decision.json"
    try:
        raw = json.loads(decision_file.read_text(encoding="utf-8"))
        earlier = GateDecision.model_validate(raw)
    except (OSError, ValueError):
        return False
    if earlier.decision != "promote" or not earlier.promoted_to:
        return False
    present = {p.name for p in target.iterdir()}
    if any((target / n).is_dir() and not (target / n).is_symlink() for n in present):
        return False
    if earlier.files is not None:
        listed = set(earlier.files) | set(_OWN_FILES)
    else:  # promoted by a version that kept no manifest: only model files and our own two
        listed = {
            n for n in present if any(target.joinpath(n).match(p) for p in MODEL_FILE_PATTERNS)
        }
        listed |= set(_OWN_FILES)
    return present <= listed


def check_promotable(target: Path) -> None:
    """Refuse (exit 2) a promote target that a promotion could not fill without losing data.

    Called before any model is evaluated, so a bad ``--promote-to`` costs nothing.
    """
    target = Path(target)
    absolute = Path(os.path.abspath(target))
    if target.is_symlink():
        raise BadInputError(
            f"--promote-to {target} is a symbolic link; a promotion replaces a directory, not a link",
            "pass the real directory, or a new path",
        )
    if target.exists() and not target.is_dir():
        raise BadInputError(
            f"--promote-to {target} is an existing file, not a directory; nothing was changed",
            "choose a new directory for the promoted model",
        )
    if absolute == Path.cwd() or absolute == Path(absolute.anchor):
        raise BadInputError(
            f"--promote-to {target} is the current (or root) directory; a promotion replaces its target",
            "pass a new directory, e.g. --promote-to promoted/",
        )
    if target.is_dir() and any(target.iterdir()) and not _is_earlier_promotion(target):
        raise BadInputError(
            f"--promote-to {target} holds files that are not an earlier dpo-harness promotion; "
            "nothing was changed",
            "choose a new or empty directory, or move those files away first",
        )
    parent = absolute.parent
    ancestor = parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise BadInputError(
            f"cannot create --promote-to {target}: {ancestor} is a file, not a directory",
            "choose a promote directory whose parent is a directory",
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if read_only_fs(ancestor) else "is not writable"
        raise BadInputError(
            f"cannot write the promoted model: {ancestor} {why}",
            "choose a writable --promote-to directory",
        )


# --------------------------------------------------------------------------- copying


def _copy_hashed(src: Path, dst: Path) -> str:
    """Copy ``src``'s content (symlinks dereferenced) to a new regular file; return its sha256."""
    h = hashlib.sha256()
    with src.open("rb") as fin, dst.open("xb") as fout:
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return "sha256:" + h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _model_files(candidate_dir: Path) -> list[Path]:
    files = {
        p
        for pattern in MODEL_FILE_PATTERNS
        for p in candidate_dir.glob(pattern)
        if p.is_file()  # follows symlinks: their content is copied, never the link
    }
    return sorted(files)


def _check_same_model(copied: Path, decision: GateDecision) -> None:
    """The copied files must be the files the gate evaluated (the candidate may have changed since)."""
    from dpo_harness.evaluation.loading import checkpoint_fingerprint, resolve_checkpoint

    own = checkpoint_fingerprint(resolve_checkpoint(str(copied), allow_pickle=True))
    cand = decision.candidate
    expected = cand.fingerprint
    got = text_hash(cand.base_fingerprint + "+" + own) if cand.base_fingerprint else own
    if got != expected:
        raise BadInputError(
            "the candidate's files changed after they were evaluated (fingerprint "
            f"{expected[:19]}… at the gate, {got[:19]}… now); nothing was promoted",
            "do not write into a checkpoint while it is gated; gate it again",
        )


# --------------------------------------------------------------------------- atomic swap


def _leftovers(target: Path, kind: str) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.{kind}-*"))


def recover(target: Path) -> list[str]:
    """Repair what a crashed promotion left (call under the promotion lock); say what was done."""
    said = []
    replaced = _leftovers(target, "replaced")
    if not target.exists() and replaced:
        # A crash between the two renames: the earlier promotion goes back where it was.
        os.replace(replaced[-1], target)
        said.append(f"restored the earlier promotion {target} from {replaced[-1].name}")
        replaced = replaced[:-1]
    for p in [*replaced, *_leftovers(target, "promote")]:
        _make_writable(p)
        shutil.rmtree(p, ignore_errors=True)
        said.append(f"removed {p.name}, left by an interrupted promotion")
    return said


def _make_writable(directory: Path) -> None:
    for p in [directory, *directory.rglob("*")] if directory.is_dir() else []:
        try:
            mode = p.lstat().st_mode
            if not stat.S_ISLNK(mode):
                os.chmod(p, mode | stat.S_IWUSR)
        except OSError:
            pass


def _lock(target: Path) -> FileLock:
    return FileLock(str(target.parent / f".{target.name}.lock"), timeout=300)


# --------------------------------------------------------------------------- promote


def _card_base(decision: GateDecision, base_model_id: str | None) -> str | None:
    if base_model_id:
        return base_model_id
    if decision.candidate.is_adapter:
        return hub_id_of(decision.candidate.base_ref)
    return hub_id_of(decision.baseline_model)


def card_name(decision: GateDecision, model_name: str | None = None) -> str:
    """What the card calls the model: the given name, else the promote directory's."""
    return model_name or Path(decision.promoted_to or decision.candidate.ref).name


def model_card(
    decision: GateDecision, *, model_name: str | None = None, base_model_id: str | None = None
) -> str:
    """README.md: a Hugging Face model card (``huggingface_hub``'s card tools) with the gate.

    The metadata has ``language: ja``, the base's hub id as ``base_model``, and one
    ``model-index`` result per gated metric with a value (the candidate's, on the suite's
    items); the body has the gate table and every reason.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData
    from tabulate import tabulate

    name = card_name(decision, model_name)
    base = _card_base(decision, base_model_id)
    adapter = decision.candidate.is_adapter
    results = [
        EvalResult(
            task_type="text-generation",
            task_name=f"dpo-harness {v.suite} suite",
            dataset_type=f"dpo-harness/{v.suite}",
            dataset_name=f"dpo-harness {v.suite}",
            metric_type=v.metric,
            metric_name=v.name,
            metric_value=round(v.candidate, 6),
        )
        for v in decision.verdicts
        if v.candidate is not None and math.isfinite(v.candidate)
    ]
    data = ModelCardData(
        language="ja",
        base_model=base,
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-generation",
        tags=["dpo-harness", "gated", "japanese", *(["lora"] if adapter else [])],
        model_name=name,
        eval_results=results or None,
        dpo_harness={
            "decision": decision.decision,
            "candidate": decision.candidate.ref,
            "candidate_fingerprint": decision.candidate.fingerprint,
            "baseline_model": decision.baseline_model,
            "baseline_checksum": decision.baseline_checksum,
            "gated_at": decision.created_at,
        },
    )
    what = "A LoRA adapter (PEFT)" if adapter else "A fine-tuned model"
    on = f"of `{base}`" if base else "of a base model with no hub id (a local directory)"
    table = tabulate(gate_rows(decision), headers=gate_headers(decision), tablefmt="github")
    body = [
        f"# {name}",
        "",
        f"{what} {on}, trained on Japanese data and promoted by dpo-harness from "
        f"`{Path(decision.candidate.ref).name}`: every gated metric is non-inferior to the "
        f"baseline of `{decision.baseline_model}` and every hard limit holds.",
        "",
        "## Gate",
        "",
        table,
        "",
        *[f"- {r}" for r in decision.reasons],
        *[f"- note: {n}" for n in decision.notes],
        "",
        "`decision.json` holds the full decision and the sha256 of every file here; "
        "`dpo-harness verify DIR` re-checks them.",
    ]
    return str(ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(body) + "\n"))


def promote(
    candidate_dir: Path,
    target: Path,
    decision: GateDecision,
    *,
    base_model_id: str | None = None,
    model_name: str | None = None,
) -> GateDecision:
    """Copy the candidate's model files, decision.json and README.md to ``target`` atomically.

    ``base_model_id``: the base's hub id (default: derived from the adapter's base or the
    baseline's model, see :func:`~dpo_harness.evaluation.loading.hub_id_of`), for the card and
    the promoted ``adapter_config.json``. ``model_name``: the card's title (default: the name
    of ``target``). Returns the decision as written into the promotion (with ``promoted_to``,
    ``files`` and ``rewrites``).
    """
    if decision.decision != "promote":
        raise ValueError("refusing to promote a candidate the gate refused")
    candidate_dir, target = Path(candidate_dir), Path(target)
    check_promotable(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _lock(target):
            recover(target)
            check_promotable(target)  # again, under the lock: another process may have written
            return _promote_locked(candidate_dir, target, decision, base_model_id, model_name)
    except HarnessError:
        raise
    except Timeout:
        raise BadInputError(
            f"another process is promoting to {target}", "wait for it to finish and gate again"
        ) from None
    except OSError as exc:
        raise output_error(target, exc, what="the promoted model") from exc


def _promote_locked(
    candidate_dir: Path,
    target: Path,
    decision: GateDecision,
    base_model_id: str | None,
    model_name: str | None,
) -> GateDecision:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.promote-", dir=target.parent))
    umask = _umask()
    try:
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700: teammates must be able to read it
        hashes = {
            src.name: _copy_hashed(src, tmp / src.name) for src in _model_files(candidate_dir)
        }
        _check_same_model(tmp, decision)
        # Only after the content check: the copy is the gated model; now make it portable.
        base_id = _card_base(decision, base_model_id)
        rewrites, notes = _portable_base(tmp, hashes, base_id)
        final = decision.model_copy(
            update={
                "promoted_to": str(target),
                "files": hashes,
                "rewrites": rewrites,
                "notes": [*decision.notes, *notes],
            }
        )
        atomic_write_text(tmp / "decision.json", final.model_dump_json(indent=2) + "\n")
        atomic_write_text(
            tmp / "README.md", model_card(final, model_name=model_name, base_model_id=base_id)
        )
        for p in tmp.iterdir():  # read-only: the promoted model is what was gated
            os.chmod(p, 0o444 & ~umask)
        _fsync_dir(tmp)
        if target.exists():
            if _renameat2_exchange(tmp, target):
                old = tmp  # the earlier promotion now lives at the temporary name
            else:
                stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
                old = target.with_name(f".{target.name}.replaced-{stamp}")
                os.replace(target, old)
                os.replace(tmp, target)
            _fsync_dir(target.parent)
            _make_writable(old)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
            _fsync_dir(target.parent)
    except BaseException:
        if tmp.exists():
            _make_writable(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


_BASE_FIELD = "base_model_name_or_path"
_JSON_STRING_FIELD = r'("{field}"\s*:\s*)("(?:[^"\\]|\\.)*")'


def _field_literal(text: str, field: str) -> re.Match[str] | None:
    """The one ``"field": "..."`` in a JSON text (None when absent or not exactly once)."""
    found = list(re.finditer(_JSON_STRING_FIELD.format(field=re.escape(field)), text))
    return found[0] if len(found) == 1 else None


def _is_local_path(value: str) -> bool:
    return os.path.isabs(value) or value.startswith(("~", "./", "../", "\\"))


def _portable_base(
    directory: Path, hashes: dict[str, str], base_id: str | None
) -> tuple[list[FileRewrite], list[str]]:
    """Replace a local ``base_model_name_or_path`` in the copied adapter_config.json by the hub id."""
    path = directory / "adapter_config.json"
    if not path.is_file():
        return [], []
    gated = path.read_bytes()
    text = gated.decode("utf-8")
    match = _field_literal(text, _BASE_FIELD)
    if match is None:
        return [], []
    value = json.loads(match.group(2))
    if not isinstance(value, str) or not _is_local_path(value):
        return [], []
    if base_id is None:
        return [], [
            f"adapter_config.json names its base by the local path {value}; no hub id is known "
            "for it, so it was left as it is (pass the base's hub id: gate.base_model_id)"
        ]
    promoted_json = json.dumps(base_id)
    new_text = text[: match.start(2)] + promoted_json + text[match.end(2) :]
    record = FileRewrite(
        file=path.name,
        field=_BASE_FIELD,
        gated_json=match.group(2),
        promoted_json=promoted_json,
        gated_sha256="sha256:" + hashlib.sha256(gated).hexdigest(),
        reason=f"the base was read from a local directory; on the hub it is {base_id}",
    )
    if _undo(new_text, record) != gated:  # cannot happen for a JSON string; never risk it
        return [], [f"adapter_config.json: {_BASE_FIELD} could not be rewritten reversibly"]
    atomic_write_text(path, new_text)
    hashes[path.name] = _file_sha256(path)
    return [record], []


def _undo(text: str, rewrite: FileRewrite) -> bytes | None:
    """The file's bytes as gated: the promoted value put back to the gated one."""
    match = _field_literal(text, rewrite.field)
    if match is None or match.group(2) != rewrite.promoted_json:
        return None
    return (text[: match.start(2)] + rewrite.gated_json + text[match.end(2) :]).encode("utf-8")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def record_refusal(target: Path, decision: GateDecision) -> Path:
    """Write the refusal next to the promote directory (which stays untouched)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    path = Path(target).with_name(f"{Path(target).name}.refusals") / f"{stamp}.json"
    atomic_write_text(path, decision.model_dump_json(indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- verify


class VerifyResult:
    """What ``dpo-harness verify`` found: files that changed, went missing or appeared."""

    def __init__(self, directory: Path, decision: GateDecision) -> None:
        self.directory = directory
        self.decision = decision
        self.changed: list[str] = []
        self.missing: list[str] = []
        self.extra: list[str] = []
        self.notes: list[str] = []

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.extra)


def verify_promotion(directory: Path) -> VerifyResult:
    """Re-hash every promoted file against the hashes recorded at promotion time."""
    from dpo_harness.files import load_model_file

    directory = Path(directory)
    if directory.parent.exists():
        try:
            with _lock(directory):
                notes = recover(directory)
        except (OSError, Timeout):
            notes = []
    else:
        notes = []
    decision_file = directory / "decision.json"
    if not decision_file.is_file():
        raise BadInputError(
            f"{directory} is not a dpo-harness promotion (no decision.json)",
            "pass the directory given to --promote-to",
        )
    decision = load_model_file(decision_file, GateDecision, what="gate decision")
    if decision.files is None:
        raise BadInputError(
            f"{directory} was promoted by a dpo-harness without file hashes; it cannot be verified",
            "gate and promote the model again with this version",
        )
    result = VerifyResult(directory, decision)
    result.notes = notes
    present = {p.name for p in directory.iterdir()}
    for name, expected in sorted(decision.files.items()):
        path = directory / name
        if not path.is_file():
            result.missing.append(name)
        elif path.is_symlink() or _file_sha256(path) != expected:
            result.changed.append(name)
    result.extra = sorted(present - set(decision.files) - set(_OWN_FILES))
    for rewrite in decision.rewrites:
        path = directory / rewrite.file
        if rewrite.file in result.changed or rewrite.file in result.missing:
            continue
        gated = _undo(path.read_text(encoding="utf-8"), rewrite)
        if gated is None or "sha256:" + hashlib.sha256(gated).hexdigest() != rewrite.gated_sha256:
            result.changed.append(rewrite.file)
        else:
            result.notes.append(
                f"{rewrite.file}: {rewrite.field} was rewritten at promotion "
                f"({rewrite.gated_json} → {rewrite.promoted_json}); put back, the file is the "
                f"one the gate evaluated ({rewrite.gated_sha256[:19]}…)"
            )
    return result

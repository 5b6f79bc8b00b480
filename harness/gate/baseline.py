"""Stored baselines: a base model's full evaluation report plus the key that says what it is comparable to.

A baseline file holds the base model's :class:`EvalReport` with every per-sample result, a
:class:`CompatibilityKey` (suite versions, data hashes, generation settings, chat template and
tokenizer hashes — never batch size, device or process count, which do not change what is
measured), and a content checksum so a corrupt or hand-edited file is refused. Files live in
``baselines/<slug>.json``; an update copies the previous one to ``baselines/history/<slug>/`` and
writes a Markdown update report to ``baselines/reports/``. Writes are atomic and locked.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from dpo_harness.errors import (
    BadInputError,
    BaselineNotFoundError,
    HarnessError,
    IncompatibleBaselineError,
)
from dpo_harness.files import (
    atomic_write_bytes,
    atomic_write_text,
    load_model_file,
    output_error,
    read_only_fs,
    save_elsewhere,
)
from dpo_harness.gate.policy_file import PolicyFile
from dpo_harness.schema import EvalReport, GenerationSettings, SuiteIdentity
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Baseline",
    "CompatibilityKey",
    "SavedBaseline",
    "baselines_dir",
    "check_writable",
    "find_baseline",
    "key_of",
    "load_baseline",
    "replace_baseline",
    "save_baseline",
    "slug_for",
]

BASELINE_SCHEMA: Literal["1"] = "1"


class CompatibilityKey(BaseModel):
    """Two evaluations are comparable item by item only when these agree."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suites: dict[str, SuiteIdentity]
    generation: GenerationSettings
    chat_template_hash: str | None
    tokenizer_hash: str | None
    # How the runner turns a model into numbers (dpo_harness.evaluation.measure); None in
    # baselines made before it was versioned.
    measurement: str | None = None
    # The gate policy file the baseline was accepted under (None: the suites' own limits and
    # margins); candidates are gated under the same rules.
    policy: PolicyFile | None = None

    def differences(self, other: CompatibilityKey, suites: list[str] | None = None) -> list[str]:
        """What differs, one phrase each (limited to ``suites`` when given)."""
        out = []
        names = suites if suites is not None else sorted(set(self.suites) | set(other.suites))
        for name in names:
            a, b = self.suites.get(name), other.suites.get(name)
            if a is None or b is None:
                out.append(
                    f"suite {name!r} is {'missing from the baseline' if a is None else 'not in the candidate'}"
                )
            elif a.version != b.version:
                out.append(f"suite {name!r} version {a.version} (baseline) vs {b.version}")
            elif a.data_hash != b.data_hash:
                out.append(
                    f"suite {name!r} data changed ({a.data_hash[:15]}… vs {b.data_hash[:15]}…)"
                )
            elif a.declaration_hash != b.declaration_hash:
                out.append(
                    f"suite {name!r} is declared differently (fields, templates, scoring or "
                    f"the code it reuses: {a.declaration_hash or 'none'} vs "
                    f"{b.declaration_hash or 'none'})"
                )
        if self.measurement != other.measurement:
            out.append(
                f"measured by runner version {self.measurement or 'unversioned'} (baseline) vs "
                f"{other.measurement or 'unversioned'}"
            )
        if self.generation != other.generation:
            out.append(
                f"generation settings {self.generation.model_dump()} (baseline) vs {other.generation.model_dump()}"
            )
        if self.chat_template_hash != other.chat_template_hash:
            out.append("the chat template differs")
        if self.tokenizer_hash != other.tokenizer_hash:
            out.append("the tokenizer vocabulary differs")
        if _decides(self.policy) != _decides(other.policy):
            out.append(
                f"gate policy {_policy_text(self.policy)} (baseline) vs {_policy_text(other.policy)}"
            )
        return out


def _decides(policy: PolicyFile | None) -> dict[str, object]:
    return dict(policy.decides()) if policy is not None else {}


def _policy_text(policy: PolicyFile | None) -> str:
    if policy is None or not policy.metrics:
        return "(the suites' own limits)"
    return f"({policy.summary()})"


def key_of(report: EvalReport, policy: PolicyFile | None = None) -> CompatibilityKey:
    p = report.provenance
    return CompatibilityKey(
        suites=dict(p.suites),
        generation=p.generation,
        chat_template_hash=p.model.chat_template_hash,
        tokenizer_hash=p.model.tokenizer_hash,
        measurement=p.measurement_version,
        policy=policy,
    )


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["1"] = BASELINE_SCHEMA
    base_model: str
    base_fingerprint: str
    created_at: str
    reason: str = "created"
    key: CompatibilityKey
    report: EvalReport
    checksum: str = Field(
        default="", description="sha256 of this file's content without the checksum"
    )

    def content_hash(self) -> str:
        return _json_hash(self.model_dump(mode="json", exclude={"checksum"}))

    def sealed(self) -> Baseline:
        return self.model_copy(update={"checksum": self.content_hash()})

    def check_compatible(self, report: EvalReport, suites: list[str] | None = None) -> None:
        """Refuse a comparison with different suites, data or generation settings."""
        self.check_key(key_of(report), suites)

    def check_key(
        self,
        key: CompatibilityKey,
        suites: list[str] | None = None,
        *,
        with_data: Mapping[str, Path] | None = None,
    ) -> None:
        """Refuse a comparison whose key differs. ``with_data``: the user's own suite data files.

        With user data or user suites (declared in files) the fix never says to update the
        stored (perhaps shipped) baseline: the baseline of that data belongs in a directory of
        its own.
        """
        diffs = self.key.differences(key, suites)
        if not diffs:
            return
        # The user's own data and suite files: their baseline belongs in a directory of its own.
        own = [f"--suite-data {k}={v}" for k, v in sorted((with_data or {}).items())]
        own += [
            f"--suite-file {f}"
            for f in sorted({i.declared_in for i in key.suites.values() if i.declared_in})
        ]
        if own:
            fix = (
                f"create a baseline for your data in its own directory: dpo-harness baseline "
                f"create {self.base_model} {' '.join(own)} --baselines-dir baselines-mydata, "
                "then gate with --baselines-dir baselines-mydata"
            )
        elif _decides(self.key.policy) != _decides(key.policy):
            fix = (
                f"gate under the baseline's own policy (drop --policy), or re-create the baseline "
                f"under yours: dpo-harness baseline update {self.base_model} --policy FILE"
            )
        else:
            fix = f"re-create it with: dpo-harness baseline update {self.base_model}"
        raise IncompatibleBaselineError(
            f"the baseline for {self.base_model} is not comparable: " + "; ".join(diffs), fix
        )


def baselines_dir(explicit: Path | None = None) -> Path:
    """--baselines-dir, else $DPO_HARNESS_BASELINES, else ./baselines."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("DPO_HARNESS_BASELINES")
    return Path(env) if env else Path("baselines")


def slug_for(model_ref: str) -> str:
    """A readable file name for a model reference: 'SakanaAI/TinySwallow-1.5B' -> 'sakanaai--tinyswallow-1.5b'."""
    ref = model_ref.rstrip("/")
    if os.sep in ref and Path(ref).exists():
        ref = Path(ref).name
    slug = re.sub(r"[^a-z0-9._-]+", "-", ref.lower().replace("/", "--")).strip("-.")
    return slug or "model"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _json_hash(body: object) -> str:
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    # surrogatepass: a lone surrogate in model text must not make a report unstorable.
    return "sha256:" + hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def load_baseline(path: Path) -> Baseline:
    """Load and verify a baseline; a corrupt or hand-edited file is refused.

    The checksum is verified over the file's own content (not a re-serialisation), so a field
    added to the format in a later version, with a default, does not invalidate older files.
    """
    baseline = load_model_file(path, Baseline, what="baseline")
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raw = None
    stored = (
        _json_hash({k: v for k, v in raw.items() if k != "checksum"})
        if isinstance(raw, dict)
        else None
    )
    if baseline.checksum != stored:
        raise BadInputError(
            f"{path}: checksum mismatch — the baseline was edited by hand or is corrupt",
            f"restore it from baselines/history/, or re-create it with: dpo-harness baseline update {baseline.base_model}",
        )
    return baseline


class SavedBaseline(BaseModel):
    """What :func:`replace_baseline` wrote, and the baseline it replaced (read under the lock)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    baseline: Baseline
    previous_path: Path | None = None  # the replaced baseline's copy in history
    previous: Baseline | None = None


def save_baseline(baseline: Baseline, directory: Path) -> tuple[Path, Path | None]:
    """Write ``baseline`` as ``<dir>/<slug>.json``: (its path, the replaced one's copy in history)."""
    saved = _write_locked(Path(directory), slug_for(baseline.base_model), lambda _prev: baseline)
    return saved.path, saved.previous_path


def replace_baseline(
    report: EvalReport,
    directory: Path,
    *,
    reason: str | Callable[[Baseline | None], str],
    policy: PolicyFile | None = None,
) -> SavedBaseline:
    """Store ``report`` as its model's baseline; ``reason`` may be worked out from the one replaced.

    The baseline actually replaced is read under the write lock, so with two concurrent updates
    the second one's reason (and the caller's update report) compares against the first one's.
    """

    def build(previous: Baseline | None) -> Baseline:
        why = reason(previous) if callable(reason) else reason
        return new_baseline(report, reason=why, policy=policy)

    return _write_locked(Path(directory), slug_for(report.provenance.model.ref), build)


def _write_locked(
    directory: Path, slug: str, build: Callable[[Baseline | None], Baseline]
) -> SavedBaseline:
    """The one writer of baseline files.

    Order matters for a crash or a full disk at any moment: the previous baseline is first
    *copied* into history, then the new one is written to a temporary file and renamed over
    the current file. So the current file is always a complete baseline — the old one until
    the rename, the new one after. The lock serialises concurrent writers.
    """
    path = directory / f"{slug}.json"
    sealed: Baseline | None = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(directory / f".{slug}.lock"), timeout=600):
            previous = previous_path = None
            if path.exists():
                previous = load_baseline(path)
                stamp = re.sub(r"[^0-9T]", "", previous.created_at)[:15]
                short = previous.checksum.removeprefix("sha256:")[:8]
                previous_path = directory / "history" / slug / f"{stamp}-{short}.json"
            # Built before anything is written, so a write that fails can still keep it.
            sealed = build(previous).sealed()
            if previous_path is not None and not previous_path.exists():
                atomic_write_bytes(previous_path, path.read_bytes())
            atomic_write_text(path, sealed.model_dump_json(indent=1) + "\n")
    except OSError as exc:
        where = Path(exc.filename) if isinstance(exc.filename, str) else path
        raise _unwritten(where, exc, sealed, slug) from exc
    except HarnessError as exc:  # the atomic writers' own one-line error for an OSError
        cause = exc.__cause__
        if sealed is None or not isinstance(cause, OSError):
            raise
        where = Path(cause.filename) if isinstance(cause.filename, str) else path
        raise _unwritten(where, cause, sealed, slug) from exc
    return SavedBaseline(path=path, baseline=sealed, previous_path=previous_path, previous=previous)


def _unwritten(where: Path, exc: OSError, sealed: Baseline | None, slug: str) -> BadInputError:
    """The one-line error for a baseline that could not be stored; the new one is kept elsewhere
    (it is the result of a whole evaluation), the current one is untouched."""
    err = output_error(where, exc, what="the baseline")
    if sealed is None:
        return BadInputError(err.cause, err.fix)
    kept = save_elsewhere(slug, {f"{slug}.json": sealed.model_dump_json(indent=1) + "\n"})
    said = f"the new baseline is saved at {kept}" if kept else "the new baseline could not be saved"
    return BadInputError(f"{err.cause}; {said}", err.fix)


def check_writable(directory: Path, *, slug: str | None = None) -> None:
    """Refuse (exit 2) a baselines directory that cannot be written, before any evaluation.

    With ``slug``, the baseline's lock file and the file itself must be files (or absent): a
    directory in their place would otherwise fail only after the evaluation.
    """
    directory = Path(directory)
    for name in (f".{slug}.lock", f"{slug}.json") if slug else ():
        if (directory / name).exists() and not (directory / name).is_file():
            raise BadInputError(
                f"cannot write baselines to {directory}: {directory / name} is not a regular file",
                "remove it (or choose another --baselines-dir)",
            )
    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise BadInputError(
            f"cannot write baselines to {directory}: {probe} is a file", "choose another directory"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if read_only_fs(probe) else "is not writable"
        raise BadInputError(
            f"cannot write baselines to {directory}: {probe} {why}",
            "choose a writable --baselines-dir, or fix its permissions",
        )


def find_baseline(directory: Path, *, base_ref: str | None, base_fingerprint: str | None) -> Path:
    """The baseline for a base model: by fingerprint first (robust to moved paths), then by name."""
    directory = Path(directory)
    candidates = sorted(directory.glob("*.json")) if directory.is_dir() else []
    if base_fingerprint:
        for p in candidates:
            try:
                raw = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(raw, dict) and raw.get("base_fingerprint") == base_fingerprint:
                return p
    if base_ref:
        p = directory / f"{slug_for(base_ref)}.json"
        if p.is_file():
            return p
    what = base_ref or base_fingerprint or "the candidate's base model"
    raise BaselineNotFoundError(
        f"no stored baseline for {what} in {directory}",
        f"create one with: dpo-harness baseline create {base_ref or 'BASE_MODEL'} (or pass --baseline FILE)",
    )


def new_baseline(report: EvalReport, *, reason: str, policy: PolicyFile | None = None) -> Baseline:
    """The baseline of ``report``'s model; with a policy file, stored in its key."""
    return Baseline(
        base_model=report.provenance.model.ref,
        base_fingerprint=report.provenance.model.fingerprint,
        created_at=_now(),
        reason=reason,
        key=key_of(report, policy),
        report=report,
    )

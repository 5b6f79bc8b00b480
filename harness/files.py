"""Every file the harness reads or writes: atomic writes, versioned JSON, JSON Lines, configs.

Every JSON file written carries a ``schema_version``. Writes go to a temporary file in the
target directory and are renamed into place, so a reader never sees a half-written file; a
write that fails (disk full, read-only) is a one-line error and leaves the old file. Reading
turns every malformed input — invalid JSON or YAML, a byte that is not UTF-8, a field that does
not validate — into a :class:`~dpo_harness.errors.BadInputError` naming the file, the line or
the field.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from dpo_harness.errors import BadInputError, HarnessError
from pydantic import BaseModel, ValidationError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "describe_validation_error",
    "load_config_file",
    "load_model_file",
    "output_error",
    "read_jsonl",
    "validate_config",
    "write_model_file",
]

M = TypeVar("M", bound=BaseModel)


def output_error(path: Path, exc: OSError, *, what: str = "the output") -> HarnessError:
    """An OSError met while writing, as a one-line cause and a fix (exit 2)."""
    reason = exc.strerror or str(exc)
    fixes = {
        errno.ENOSPC: "free some disk space (nothing was replaced: the previous files are intact)",
        errno.EDQUOT: "free some disk quota (nothing was replaced: the previous files are intact)",
        errno.EROFS: "write somewhere else: that file system is read-only",
        errno.EACCES: "write somewhere you have permission to, or fix the permissions",
        errno.EPERM: "write somewhere you have permission to, or fix the permissions",
        errno.ENOTDIR: "a part of that path is a file, not a directory: choose another path",
        errno.EISDIR: "that path is a directory: choose a file path",
    }
    return BadInputError(
        f"cannot write {what} at {path}: {reason}",
        fixes.get(exc.errno or 0, "check the path and the file system"),
    )


# A temporary file older than this is a leftover of a killed process, never a write in flight
# (these are small JSON and Markdown files, written in well under a second).
_STALE_TMP_SECONDS = 600


def _remove_stale_tmp(path: Path) -> None:
    now = time.time()
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if now - leftover.stat().st_mtime > _STALE_TMP_SECONDS:
                leftover.unlink()
        except OSError:
            pass


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory + rename).

    An OSError (disk full, read-only, permissions) becomes a one-line error with exit 2, and
    the previous file at ``path`` is left as it was.
    """
    path = Path(path)
    try:
        _atomic_write_bytes(path, data)
    except OSError as exc:
        raise output_error(path, exc) from exc


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_model_file(path: Path, model: BaseModel) -> None:
    """Serialise a pydantic model as indented JSON, atomically."""
    atomic_write_text(path, model.model_dump_json(indent=2) + "\n")


def describe_validation_error(err: ValidationError, limit: int = 3) -> str:
    """One line naming the failing field(s): ``field.path: message``."""
    parts = []
    for e in err.errors()[:limit]:
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    more = len(err.errors()) - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)


def load_model_file(path: Path, model_type: type[M], *, what: str | None = None) -> M:
    """Load and validate a JSON file written by :func:`write_model_file`.

    Any problem (missing file, invalid JSON, wrong or missing ``schema_version``, a field that
    does not validate) becomes a :class:`BadInputError` naming the file and the field.
    """
    path = Path(path)
    what = what or model_type.__name__
    if not path.is_file():
        raise BadInputError(f"{what} file not found: {path}", "check the path")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(
            f"{path} is not valid JSON ({exc})", f"regenerate the {what} file"
        ) from None
    expected = model_type.model_fields.get("schema_version")
    if expected is not None and isinstance(raw, dict):
        want = expected.default
        got = raw.get("schema_version")
        if got != want:
            raise BadInputError(
                f"{path}: schema_version is {got!r}, this version of dpo-harness reads {want!r}",
                f"regenerate the {what} with this version of dpo-harness",
            )
    try:
        return model_type.model_validate(raw)
    except ValidationError as exc:
        raise BadInputError(
            f"{path} is not a valid {what}: {describe_validation_error(exc)}",
            f"regenerate the {what}, or fix the named field",
        ) from None


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a bad line names its number.

    The file is read as bytes and each line decoded on its own, so a byte that is not UTF-8
    is reported with its line (a binary file fails on its first line) instead of a traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"data file not found: {path}", "check the path")
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise BadInputError(
            f"cannot read {path}: {exc.strerror}", "check the permissions"
        ) from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInputError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                    f"{exc.start + 1})",
                    "save the file as UTF-8 JSON Lines (one JSON object per line)",
                ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInputError(
                    f"{path}:{lineno}: not valid JSON ({exc.msg})", "fix that line"
                ) from None
            if not isinstance(obj, dict):
                raise BadInputError(
                    f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}",
                    "each line must be one JSON object",
                )
            yield lineno, obj


# --------------------------------------------------------------------------- config files


def validate_config(data: Any, model_type: type[M], *, source: str) -> M:
    """Validate a mapping; a failure names ``source`` and each failing field (dotted path)."""
    if not isinstance(data, dict):
        raise BadInputError(
            f"{source}: expected a mapping at the top level", "see the example configs"
        )
    try:
        return model_type.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "<root>"
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise BadInputError(
            f"{source}: field '{loc}': {first['msg']}{suffix}",
            f"fix '{loc}' in {source}",
        ) from None


def load_config_file(
    path: Path, model_type: type[M], *, overrides: dict[str, Any] | None = None
) -> M:
    """Read YAML or JSON from ``path`` into ``model_type``; ``overrides`` win over the file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"config file not found: {path}", "check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
            "save the config as UTF-8 YAML or JSON",
        ) from None
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror}", "check the path") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise BadInputError(
            f"{path}: cannot parse{where}: {exc}".splitlines()[0], "fix the syntax"
        ) from None
    data = data or {}
    if overrides:
        if not isinstance(data, dict):
            raise BadInputError(
                f"{path}: expected a mapping at the top level", "see the example configs"
            )
        data = _deep_merge(data, overrides)
    return validate_config(data, model_type, source=str(path))


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` win, section by section: {"generation": {"max_new_tokens": 8}} keeps the
    file's generation.system_prompt."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out

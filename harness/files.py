"""Every file the harness reads or writes: atomic writes, versioned JSON, JSON Lines, configs.

Every JSON file written carries a ``schema_version``. Writes go to a temporary file in the
target directory and are renamed into place, so a reader never sees a half-written file; a
write that fails (disk full, read-only) is a one-line error and leaves the old file. A set of
outputs that belong together (a report's JSON, Markdown and HTML) is written all or none
(:func:`write_outputs`), and what could not be written where it was asked for is kept in the
cache directory instead of being lost. Output directories are checked before the work that
fills them (:func:`check_output_dir`). Reading turns every malformed input — invalid JSON or
YAML, a byte that is not UTF-8, a binary file, a line too long to be an item, a NaN, nesting
deeper than the parser's recursion limit, a field that does not validate — into a
:class:`~dpo_harness.errors.BadInputError` naming the file, the line or the field.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as _dt
import errno
import glob
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from dpo_harness.errors import BadInputError, HarnessError
from pydantic import BaseModel, ValidationError

__all__ = [
    "MAX_LINE_BYTES",
    "atomic_write_bytes",
    "atomic_write_group",
    "atomic_write_text",
    "cache_dir",
    "check_output_dir",
    "describe_validation_error",
    "exchange_paths",
    "load_config_file",
    "load_model_file",
    "output_error",
    "read_jsonl",
    "read_only_fs",
    "save_elsewhere",
    "validate_config",
    "write_model_file",
    "write_outputs",
    "writing",
]

M = TypeVar("M", bound=BaseModel)

# The longest JSON Lines record read by default: an evaluation item, a prompt, a held-out text.
# 64 KiB is ~20,000 Japanese characters — 60 times the longest shipped item and more than half
# of TinySwallow's 32k-token context — so no real question is refused, while a runaway record
# is: one 10 MB "question" took 118 s and 1.9 GB on the 5 MB demo model, and one of 57 KB
# still takes 17 s (docs/bad-inputs.md). Preference rows pass a larger limit.
MAX_LINE_BYTES = 64 * 1024


def cache_dir() -> Path:
    """$DPO_HARNESS_CACHE, else $XDG_CACHE_HOME/dpo_harness (~/.cache/dpo_harness)."""
    root = os.environ.get("DPO_HARNESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "dpo_harness"
    )
    return Path(root)


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


def _write_tmp(path: Path, data: bytes) -> Path:
    """``data`` in a new temporary file next to ``path``, synced; removed again on failure."""
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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = _write_tmp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_group(files: Mapping[Path, bytes]) -> None:
    """Write several files all or none: every one to a synced temporary file first, then the
    renames. A failure while writing (a full disk half-way through the HTML) replaces nothing,
    so a new report.json never sits next to the report.md of an older run. Raises OSError."""
    written: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            written.append((_write_tmp(Path(path), data), Path(path)))
        for tmp, path in written:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_model_file(path: Path, model: BaseModel) -> None:
    """Serialise a pydantic model as indented JSON, atomically."""
    atomic_write_text(path, model.model_dump_json(indent=2) + "\n")


def _encoded(files: Mapping[str, str | bytes]) -> dict[str, bytes]:
    return {n: d.encode("utf-8") if isinstance(d, str) else d for n, d in files.items()}


def save_elsewhere(label: str, files: Mapping[str, str | bytes]) -> Path | None:
    """Keep outputs that could not be written where they were asked for.

    They go to a new directory ``unsaved/<time>-<label>`` under the cache directory (else under
    the system's temporary directory); returns it, or None when neither can hold them.
    """
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    safe_label = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:60] or "output"
    data = _encoded(files)
    for root in (cache_dir() / "unsaved", Path(tempfile.gettempdir()) / "dpo_harness-unsaved"):
        target = root / f"{stamp}-{os.getpid()}-{safe_label}"
        try:
            target.mkdir(parents=True)
            atomic_write_group({target / name: blob for name, blob in data.items()})
            return target
        except OSError:
            shutil.rmtree(target, ignore_errors=True)
    return None


def write_outputs(out_dir: Path, files: Mapping[str, str | bytes], *, what: str) -> None:
    """Write ``files`` (name → content) into ``out_dir``, all or none.

    On an OSError nothing in ``out_dir`` is replaced, the files are kept elsewhere
    (:func:`save_elsewhere`) and the one-line error says where — a full disk never costs the
    result of an evaluation that took minutes.
    """
    out_dir = Path(out_dir)
    data = _encoded(files)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_group({out_dir / name: blob for name, blob in data.items()})
    except OSError as exc:
        raise _kept_elsewhere(out_dir, exc, what, data) from exc


def _kept_elsewhere(
    out_dir: Path, exc: OSError, what: str, data: Mapping[str, bytes]
) -> HarnessError:
    err = output_error(out_dir, exc, what=what)
    kept = save_elsewhere(out_dir.name, data)
    names = ", ".join(data)
    if kept is not None:
        said = f"; nothing was written there: {names} saved to {kept} instead"
    else:
        said = f"; {names} could not be saved anywhere else either"
    return BadInputError(err.cause + said, err.fix)


# Less free space than this after a failed write means the disk filled up: torch.save reports a
# full disk as "unexpected pos …" and safetensors as a serialisation error, neither with errno.
_FULL_DISK_BYTES = 1 << 20


def _disk_full(path: Path, exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(16):  # the chain of causes (bounded: a chain can loop back on itself)
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(seen) or "StorageFull" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(_nearest_existing(path)).free < _FULL_DISK_BYTES
    except OSError:
        return False


@contextlib.contextmanager
def writing(path: Path, what: str) -> Iterator[None]:
    """Turn a failed save by a library (torch, safetensors, transformers) — a full disk, a
    read-only file system, permissions — into a one-line error (exit 2) naming ``path``."""
    try:
        yield
    except HarnessError:
        raise
    except OSError as exc:
        raise output_error(path, exc, what=what) from exc
    except Exception as exc:
        if _disk_full(path, exc):
            full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            raise output_error(path, full, what=what) from exc
        raise


def _nearest_existing(path: Path) -> Path:
    probe = Path(os.path.abspath(path))
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_output_dir(path: Path, *, option: str = "--out") -> None:
    """Refuse, before any work, an output directory that cannot be filled (exit 2).

    An existing file, a path under a file, a dangling symbolic link, or a place that is not
    writable (read-only file system, permissions) is named here — not after an evaluation or a
    training run that took minutes.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise BadInputError(
            f"{option} {path} is a symbolic link that leads nowhere (dangling, or a loop)",
            f"pass a real directory as {option}",
        )
    if path.exists() and not path.is_dir():
        raise BadInputError(
            f"{option} {path} is an existing file, not a directory; nothing was written",
            f"choose a directory for {option}",
        )
    ancestor = _nearest_existing(path)
    if not ancestor.is_dir():
        raise BadInputError(
            f"cannot create {option} {path}: {ancestor} is a file, not a directory",
            f"choose an {option} directory whose parents are directories",
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        reason = "is on a read-only file system" if read_only_fs(ancestor) else "is not writable"
        raise BadInputError(
            f"cannot write {option} {path}: {ancestor} {reason}",
            f"choose a writable {option} directory",
        )


def read_only_fs(path: Path) -> bool:
    """True when ``path`` lies on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False  # file system or kernel without RENAME_EXCHANGE: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


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
    if path.is_dir():
        raise BadInputError(f"{path} is a directory, not a {what} file", f"pass the {what} file")
    if not path.is_file():
        raise BadInputError(f"{what} file not found: {path}", "check the path")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise BadInputError(
            f"{path} is not valid JSON ({reason})", f"regenerate the {what} file"
        ) from exc
    except OSError as exc:
        raise BadInputError(
            f"cannot read {what} file {path}: {exc.strerror or exc}", "check the path"
        ) from exc
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
        ) from exc


def _nonfinite_field(obj: Any, where: str = "") -> tuple[str, float] | None:
    """(path, value) of the first NaN or infinite number in a parsed JSON value (``a.b[2]``)."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "<value>", obj)
    children: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        children = [(f"{where}.{k}" if where else str(k), v) for k, v in obj.items()]
    elif isinstance(obj, list):
        children = [(f"{where}[{i}]", v) for i, v in enumerate(obj)]
    for child_where, value in children:
        found = _nonfinite_field(value, child_where)
        if found is not None:
            return found
    return None


def read_jsonl(
    path: Path, *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a bad line names its number.

    The file is read as bytes and each line decoded on its own, so a byte that is not UTF-8
    is reported with its line (a binary file fails on its first line) instead of a traceback.
    A line longer than ``max_line_bytes`` is refused without reading the rest of it, and so is
    a NaN or infinite number (Python's JSON reader accepts ``NaN``; no item means it).
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise BadInputError(f"data file {path} is {kind}", "pass a JSON Lines file")
    if not path.is_file():
        raise BadInputError(f"data file not found: {path}", "check the path")
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror}", "check the permissions") from exc
    with fh:
        lineno = 0
        while raw := fh.readline(max_line_bytes + 2):
            lineno += 1
            if len(raw.rstrip(b"\r\n")) > max_line_bytes:
                raise BadInputError(
                    f"{path}:{lineno}: line longer than {max_line_bytes // 1024} KiB; an item "
                    "this long is not a question but a runaway (it would cost minutes and "
                    "gigabytes to evaluate)",
                    f"shorten line {lineno}, or split the text into several items",
                )
            obj = _parse_line(path, lineno, raw)
            if obj is not None:
                yield lineno, obj


def _parse_line(path: Path, lineno: int, raw: bytes) -> dict[str, Any] | None:
    """One JSON Lines record (None for a blank line), or a BadInputError naming the line."""
    nul = raw.find(b"\0")
    if nul >= 0:
        raise BadInputError(
            f"{path}:{lineno}: binary data (a NUL byte at column {nul + 1}), not JSON Lines",
            "pass a UTF-8 JSON Lines file (one JSON object per line)",
        )
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
            f"{exc.start + 1})",
            "save the file as UTF-8 JSON Lines (one JSON object per line)",
        ) from exc
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"{path}:{lineno}: not valid JSON ({exc.msg})", "fix that line"
        ) from exc
    except RecursionError as exc:
        raise BadInputError(
            f"{path}:{lineno}: JSON nested too deeply to read", "flatten that line"
        ) from exc
    if not isinstance(obj, dict):
        raise BadInputError(
            f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}",
            "each line must be one JSON object",
        )
    bad = _nonfinite_field(obj)
    if bad is not None:
        where, value = bad
        name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        raise BadInputError(
            f"{path}:{lineno}: field '{where}' is {name}, not a finite number",
            f"give '{where}' a finite value on line {lineno}",
        )
    return obj


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
        ) from exc


def load_config_file(
    path: Path, model_type: type[M], *, overrides: dict[str, Any] | None = None
) -> M:
    """Read YAML or JSON from ``path`` into ``model_type``; ``overrides`` win over the file."""
    path = Path(path)
    if path.is_dir():
        raise BadInputError(f"config {path} is a directory", "pass a YAML or JSON file")
    if not path.is_file():
        raise BadInputError(f"config file not found: {path}", "check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
            "save the config as UTF-8 YAML or JSON",
        ) from exc
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror}", "check the path") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise BadInputError(
            f"{path}: cannot parse{where}: {exc}".splitlines()[0], "fix the syntax"
        ) from exc
    except RecursionError as exc:
        raise BadInputError(f"{path}: nested too deeply to read", "flatten the config") from exc
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

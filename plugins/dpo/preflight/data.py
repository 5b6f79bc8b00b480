"""Reading preference rows: local JSON / JSON Lines / Parquet files, directories and hub datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dpo_harness.errors import BadInputError
from dpo_harness.files import read_jsonl

_LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
# A preference row holds a prompt and two whole answers (up to training.max_length tokens each,
# which can be 32k), so rows get more room than evaluation items; the bound still stops one
# runaway line from being read into memory whole.
MAX_ROW_BYTES = 16 << 20


def _looks_like_path(path_or_id: str) -> bool:
    """A file name or a path, rather than a hub id such as ``owner/name``."""
    return Path(path_or_id).suffix.lower() in _LOCAL_BUILDERS or path_or_id.startswith(
        ("/", ".", "~")
    )


def _bad_json(
    path: Path, line: int, err: json.JSONDecodeError | str, *, lines: bool = True
) -> BadInputError:
    why = err.msg if isinstance(err, json.JSONDecodeError) else err
    if lines:
        return BadInputError(
            f"{path} line {line}: not a valid JSON object ({why})",
            "fix or remove that line: each line of a JSONL file must be one JSON object",
        )
    return BadInputError(
        f"{path} line {line}: not valid JSON ({why})",
        "fix the file at that line: a .json file must be one array of objects (or JSON Lines)",
    )


def _check_json_file(path: Path) -> list[dict[str, Any]]:
    """Validate a local JSON/JSONL file; return its rows (used if datasets cannot build a table)."""
    if path.suffix.lower() == ".json":
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.lstrip().startswith("["):  # one JSON array; anything else is read as JSON Lines
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise _bad_json(path, err.lineno, err, lines=False) from err
            except RecursionError as err:
                raise _bad_json(path, 1, "nested too deeply to read", lines=False) from err
            return [v for v in value if isinstance(v, dict)]
    # The shared reader: a bad line (invalid JSON, not UTF-8, not an object) names its number.
    return [row for _, row in read_jsonl(path, max_line_bytes=MAX_ROW_BYTES)]


def _select_split(
    rows: list[dict[str, Any]], field: str, split: str | None, where: str
) -> list[dict[str, Any]]:
    if split is None:
        raise BadInputError(
            f"data_files_split_field={field!r} needs a split to select",
            "pass split='train' or 'eval'",
        )
    if rows and field not in rows[0]:
        raise BadInputError(f"{where} has no {field!r} column to select the split from")
    selected = [r for r in rows if r.get(field) == split]
    if not selected:
        found = sorted({str(r.get(field)) for r in rows})
        raise BadInputError(
            f"{where} has no rows with {field} == {split!r}",
            f"use one of the values found: {', '.join(found) or 'none'}",
        )
    return selected


def _load_local(path: Path, split: str | None, field: str | None) -> list[dict[str, Any]]:
    import datasets

    builder = None if path.is_dir() else _LOCAL_BUILDERS.get(path.suffix.lower())
    if builder is None:  # a directory (or an unknown file type): let datasets find the data
        return _load_hub(str(path), split, field)
    checked = _check_json_file(path) if builder == "json" else None
    if split not in (None, "train") and field is None:
        raise BadInputError(
            f"{path} is a single file, so it has no split {split!r}",
            "pass data_files_split_field (e.g. 'split') to select rows by a column",
        )
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
        rows: list[dict[str, Any]] = ds.to_list()
    except Exception as err:  # datasets/pyarrow raise many types for one bad file
        if checked is None:
            raise BadInputError(f"{path} could not be read: {err}") from None
        # The JSON is valid but datasets cannot make one table of it (rows in different
        # formats): check the parsed rows instead, so that preflight names the odd row.
        rows = checked
    return _select_split(rows, field, split, str(path)) if field else rows


def _load_hub(name: str, split: str | None, field: str | None) -> list[dict[str, Any]]:
    import datasets

    # With a split column, load everything and select rows; otherwise ask datasets for the split.
    hub_split = "train" if field else (split or "train")
    try:
        ds = datasets.load_dataset(name, split=hub_split)
    except Exception as err:  # offline, not found, no such split: all one answer for the user
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BadInputError(
            f"could not load dataset {name!r}: {first_line}",
            "check the path or hub id (and the split), and that you are online for a hub dataset",
        ) from None
    rows: list[dict[str, Any]] = ds.to_list()
    return _select_split(rows, field, split, name) if field else rows


def load_preference_rows(
    path_or_id: str, *, split: str | None = None, data_files_split_field: str | None = None
) -> list[dict[str, Any]]:
    """Load preference rows from a local JSON/JSONL/Parquet file, a directory, or a hub id.

    JSON Lines files are validated line by line first, so a malformed file is reported with the
    line to fix. With ``data_files_split_field`` (e.g. ``"split"``), only rows whose field equals
    ``split`` are returned (the demo file keeps train and eval rows in one file).
    """
    try:
        import datasets  # noqa: F401  (an optional dependency: the ``train`` extra)
    except ImportError:
        raise BadInputError(
            "loading preference data needs the 'datasets' package",
            "pip install 'dpo-harness[train]'",
        ) from None
    path = Path(path_or_id).expanduser()
    if path.exists():
        return _load_local(path, split, data_files_split_field)
    if _looks_like_path(path_or_id):
        raise BadInputError(
            f"preference data not found: {path_or_id}", "check the path (or pass a hub dataset id)"
        )
    return _load_hub(path_or_id, split, data_files_split_field)

"""Rows for a user suite: a local JSONL, JSON or parquet file, or one split of a ``datasets`` id.

Local JSON files are read with the standard library (each row must be a JSON object); parquet
needs ``pyarrow`` and a ``datasets`` id needs the ``datasets`` library (both come with the
``train`` and ``bench`` extras), imported only when such a source is used. An lm-evaluation-
harness task reads its rows through ``datasets.load_dataset`` exactly as lm-eval does, so
both see the same documents (types included).

The data hash of a user suite is the hash of its rows as read (:func:`rows_hash`): a file that
moves or is re-encoded without changing a value is the same data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dpo_harness.errors import BadInputError
from dpo_harness.files import read_jsonl
from dpo_harness.suites.user.declaration import DataSource, LmEvalTask

__all__ = ["Rows", "load_rows", "load_task_docs", "rows_hash"]

Row = dict[str, Any]


class Rows:
    """The rows of a source, their column names, and where they came from (for messages)."""

    def __init__(self, rows: list[Row], columns: list[str], origin: str) -> None:
        self.rows = rows
        self.columns = columns
        self.origin = origin


def rows_hash(rows: list[Row]) -> str:
    """Content hash of rows (key order and file format do not count)."""
    blob = json.dumps(rows, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    digest = hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()
    return "sha256:" + digest[:16]


def _columns(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(k for row in rows for k in row))


def _read_json(path: Path) -> list[Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BadInputError(f"{path}: not UTF-8 text", "save the file as UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})", "fix the file"
        ) from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BadInputError(
            f"{path}: expected a JSON list of objects (one per row)",
            "write the rows as a list, or as JSON Lines (.jsonl)",
        )
    return data


def _read_parquet(path: Path) -> list[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BadInputError(
            f"{path}: reading parquet needs pyarrow", "pip install pyarrow (or dpo-harness[bench])"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own error types for a bad file
        raise BadInputError(
            f"{path}: not a readable parquet file ({exc})".splitlines()[0], "check the file"
        ) from None
    rows: list[Row] = table.to_pylist()
    return rows


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[Any]:
    """The datasets library, its progress bars and logging quiet while a source loads."""
    try:
        import datasets
    except ImportError:
        raise BadInputError(
            "reading a datasets id or an lm-eval task needs the datasets library",
            "pip install 'dpo-harness[bench]' (or datasets)",
        ) from None
    from datasets.utils import logging as ds_logging

    was_off = datasets.are_progress_bars_disabled()
    level = ds_logging.get_verbosity()
    datasets.disable_progress_bars()
    ds_logging.set_verbosity_error()
    try:
        yield datasets
    finally:
        ds_logging.set_verbosity(level)
        if not was_off:
            datasets.enable_progress_bars()


def _load_dataset(where: str, fix: str, **kwargs: Any) -> Any:
    """``datasets.load_dataset(**kwargs)``; a failure is one line naming ``where``."""
    with _quiet_datasets() as datasets:
        try:
            return datasets.load_dataset(**kwargs)
        except Exception as exc:  # datasets raises many types (offline, missing split, bad file)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            offline = os.environ.get("HF_DATASETS_OFFLINE") or os.environ.get("HF_HUB_OFFLINE")
            hint = " (offline: it must already be in the datasets cache)" if offline else ""
            raise BadInputError(f"{where}: cannot load the data{hint}: {first}", fix) from None


def load_rows(source: DataSource, *, where: str) -> Rows:
    """The rows of a suite's ``data:`` (``where`` names the suites file and entry in messages)."""
    if source.dataset is not None:
        origin = f"{where}: data.dataset {source.dataset!r}"
        ds = _load_dataset(
            origin,
            "check data.dataset, data.config and data.split",
            path=source.dataset,
            name=source.config,
            split=source.split,
        )
        if len(ds) == 0:
            raise BadInputError(f"{origin} has no rows", "the suite needs at least one item")
        return Rows(list(ds), list(ds.column_names), origin)
    assert source.path is not None
    path = source.path
    fmt = source.format or {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}.get(
        path.suffix.lower()
    )
    if fmt is None:
        raise BadInputError(
            f"{where}: data.path {path} has no known suffix (.jsonl, .json, .parquet)",
            "rename the file, or set data.format",
        )
    if not path.is_file():
        raise BadInputError(
            f"{where}: data file not found: {path}",
            "check data.path (relative paths start at the suites file)",
        )
    if fmt == "jsonl":
        rows = [obj for _, obj in read_jsonl(path)]
    elif fmt == "json":
        rows = _read_json(path)
    else:
        rows = _read_parquet(path)
    if not rows:
        raise BadInputError(f"{where}: {path} has no rows", "the suite needs at least one item")
    return Rows(rows, _columns(rows), str(path))


def _data_files(value: Any, folder: Path) -> Any:
    """lm-eval's ``data_files`` with relative paths found next to the task file, else here."""

    def one(name: Any) -> Any:
        if not isinstance(name, str) or Path(name).is_absolute():
            return name
        beside = folder / name
        return str(beside) if beside.exists() or not Path(name).exists() else name

    if isinstance(value, Mapping):
        return {
            k: (one(v) if not isinstance(v, list) else [one(x) for x in v])
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [one(x) for x in value]
    return one(value)


def load_task_docs(task: LmEvalTask, task_file: Path) -> Rows:
    """The documents of the split an lm-eval task evaluates, read as lm-eval reads them."""
    kwargs: dict[str, Any] = {"path": task.dataset_path, "name": task.dataset_name}
    if "data_files" in task.dataset_kwargs:
        kwargs["data_files"] = _data_files(task.dataset_kwargs["data_files"], task_file.parent)
    dd = _load_dataset(
        f"{task_file}: dataset_path {task.dataset_path!r}",
        "check dataset_path, dataset_name and dataset_kwargs.data_files (relative files are "
        "looked up beside the task file, then in the working directory)",
        **kwargs,
    )
    split = task.split
    if split not in dd:
        raise BadInputError(
            f"{task_file}: the data has no split {split!r} (it has: {', '.join(dd)})",
            "fix test_split (or validation_split), or the split names in data_files",
        )
    docs = dd[split]
    if len(docs) == 0:
        raise BadInputError(f"{task_file}: split {split!r} has no documents", "check the data")
    return Rows(list(docs), list(docs.column_names), f"{task_file} ({split})")

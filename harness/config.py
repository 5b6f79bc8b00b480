"""Loading YAML/JSON config files into pydantic models, with errors that name the file and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import BadInputError

__all__ = ["load_config_file", "validate_config"]

M = TypeVar("M", bound=BaseModel)


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
    text = path.read_text(encoding="utf-8")
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
        data = {**data, **overrides}
    return validate_config(data, model_type, source=str(path))

"""Shared fixtures. Tests run offline: no hub access, ever."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
from hypothesis import settings

# HYPOTHESIS_PROFILE=ci (set by .ci/run): a derandomised, reproducible search.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

_SLOW_DIRS = ("integration",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Unit tests first (they are fast and need no model); model/training tests after."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if any(d in parts for d in _SLOW_DIRS) and not item.get_closest_marker("train"):
            item.add_marker(pytest.mark.model)
    items.sort(key=lambda it: 0 if "unit" in Path(str(it.fspath)).parts else 1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["DPO_HARNESS_CACHE"] = str(tmp_path_factory.mktemp("dpo-cache"))

"""Fixtures that build model variants from the demo model (tiny: each takes well under a second)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    from dpo_harness.evaluation.loading import demo_model_dir

    return demo_model_dir()


@pytest.fixture(scope="session")
def demo_loaded() -> Any:
    from dpo_harness.evaluation.loading import load_checkpoint

    return load_checkpoint(None, device="cpu")


def _copy_demo(demo_dir: Path, dst: Path) -> Path:
    shutil.copytree(demo_dir, dst)
    return dst


@pytest.fixture(scope="session")
def make_variant(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """make_variant(name, edit) -> a saved copy of the demo model with ``edit(model)`` applied."""

    def make(name: str, edit: Callable[[Any], None], dtype: Any = None) -> Path:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        out = tmp_path_factory.mktemp(name)
        model = AutoModelForCausalLM.from_pretrained(str(demo_dir), dtype=torch.float32)
        with torch.no_grad():
            edit(model)
        if dtype is not None:
            model = model.to(dtype)
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(str(demo_dir)).save_pretrained(out)
        return out

    return make


@pytest.fixture(scope="session")
def demo_variant(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """demo_variant(kind) -> a broken demo model (nan, bang, english, chinese), built once per session."""
    from dpo_harness.demo.variants import make_variant as build

    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = build(kind, tmp_path_factory.mktemp(f"variant-{kind}"))
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def nan_model_dir(demo_variant: Callable[[str], Path]) -> Path:
    """The demo model with a single NaN in one MLP weight — the seed run's end state."""
    return demo_variant("nan")

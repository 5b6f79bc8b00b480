"""Old module paths keep working after the move into capability subpackages (with a warning).

Until 0.1 the core was 28 flat modules (``dpo_harness.loading``, ``dpo_harness.gating``, …).
Scripts and third-party plugins import them, so each old name is an alias of the module that
now holds the code: the same module object, found by a meta-path finder, with a
``DeprecationWarning`` naming the new path. Nothing here is used by dpo-harness itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

__all__ = ["MOVED_MODULES", "install"]

MOVED_MODULES = {
    "dpo_harness.io": "dpo_harness.files",
    "dpo_harness.config": "dpo_harness.files",
    "dpo_harness.distributed": "dpo_harness.launcher",
    "dpo_harness.loading": "dpo_harness.evaluation.loading",
    "dpo_harness.fingerprint": "dpo_harness.evaluation.fingerprint",
    "dpo_harness.weight_scan": "dpo_harness.evaluation.weight_scan",
    "dpo_harness.runner": "dpo_harness.evaluation.runner",
    "dpo_harness.suite": "dpo_harness.evaluation.suite",
    "dpo_harness.evaluate": "dpo_harness.evaluation.evaluate",
    "dpo_harness.report": "dpo_harness.evaluation.report",
    "dpo_harness.stats": "dpo_harness.gate.stats",
    "dpo_harness.baseline": "dpo_harness.gate.baseline",
    "dpo_harness.compare": "dpo_harness.gate.baseline_diff",
    "dpo_harness.promote": "dpo_harness.gate.promotion",
    "dpo_harness.gating": "dpo_harness.gate.pipeline",
    "dpo_harness.plugin": "dpo_harness.training.plugin",
    "dpo_harness.train_and_gate": "dpo_harness.training.train_and_gate",
    "dpo_harness.cli_common": "dpo_harness.cli.common",
    "dpo_harness.cli_gate": "dpo_harness.cli.gate",
    "dpo_harness.cli_baseline": "dpo_harness.cli.baseline",
    "dpo_harness.cli_train": "dpo_harness.cli.train",
    "dpo_harness.suites.calibration": "dpo_harness.tools.calibration",
    "dpo_harness.suites.versions": "dpo_harness.tools.versions",
    "dpo_harness.suites.overlap": "dpo_harness.tools.overlap",
    "dpo_harness.plugins.dpo.config": "dpo_harness.plugins.dpo.run_config",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.target}; the old name will be removed in a later release",
            DeprecationWarning,
            stacklevel=3,
        )
        module = importlib.import_module(self.target)
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED_MODULES.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())

"""The training-plugin boundary: what `train-and-gate` needs from a trainer, and nothing more.

Plugins are found through the ``dpo_harness.plugins`` entry-point group, so the harness core
never imports a training library (the DPO plugin brings TRL; another could bring anything).
A plugin owns its run config (a pydantic model extending :class:`RunConfigBase`), a data
preflight, and guarded training that returns a :class:`TrainingResult`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Literal

from dpo_harness.errors import BadInputError
from dpo_harness.gate import GatePolicy
from dpo_harness.schema import EvalSettings, Finding
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CheckpointRecord",
    "EvalSettings",
    "GateSettings",
    "GuardEvent",
    "PreflightSummary",
    "RunConfigBase",
    "TrainingPlugin",
    "TrainingResult",
    "get_plugin",
    "plugin_names",
]


class GateSettings(BaseModel):
    """How the checkpoints of a run are gated and which one is promoted."""

    model_config = ConfigDict(extra="forbid")

    policy: GatePolicy = Field(default_factory=GatePolicy)
    # A gate policy file (YAML: per-metric margins, hard limits, gating) for the run's base;
    # stored with the baseline it creates, and the same file must gate its checkpoints.
    policy_file: Path | None = None
    primary_metric: str = "adtech::mc_accuracy"
    promote_to: Path | None = None  # default: <output_dir>/promoted
    baselines_dir: Path | None = None


class RunConfigBase(BaseModel):
    """Fields every training plugin's run config has."""

    model_config = ConfigDict(extra="forbid")

    plugin: str = "dpo"
    model: str = "demo"  # any checkpoint form the loader accepts
    base: str | None = None  # the base model of an adapter ``model`` (default: its adapter_config)
    output_dir: Path
    evaluation: EvalSettings = Field(default_factory=EvalSettings)
    gate: GateSettings = Field(default_factory=GateSettings)


class GuardEvent(BaseModel):
    """Something a training guard saw, as one sentence; ``stop`` events end the run."""

    model_config = ConfigDict(extra="forbid")

    step: int
    kind: str  # nonfinite_gradient, nonfinite_log, not_learning, over_optimisation, no_trainable_params, ...
    severity: Literal["error", "warning"]
    message: str
    stopped: bool = False


class CheckpointRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path
    step: int
    final: bool = False


class PreflightSummary(BaseModel):
    """What the preflight found, as a person reads it (details live in the plugin's own report)."""

    model_config = ConfigDict(extra="forbid")

    n_rows: int
    n_usable: int
    n_skipped: int = 0
    findings: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)


class TrainingResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output_dir: Path
    checkpoints: list[CheckpointRecord]
    stopped: bool = False
    stop_reason: str | None = None
    events: list[GuardEvent] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    steps_completed: int = 0
    seconds: float = 0.0
    seconds_per_step: float | None = None
    effective_dtype: str | None = None
    log_history_path: Path | None = None
    curves: list[Path] = Field(default_factory=list)


class TrainingPlugin(ABC):
    """A trainer behind the plugin boundary."""

    name: ClassVar[str]
    config_type: ClassVar[type[RunConfigBase]]

    @abstractmethod
    def demo_config(self, output_dir: Path) -> RunConfigBase:
        """The embedded demo run (no config file needed)."""

    @abstractmethod
    def preflight(self, config: RunConfigBase, *, skip_bad_rows: bool = False) -> PreflightSummary:
        """Check the training data; raise BadInputError on rows that cannot be used."""

    @abstractmethod
    def train(
        self,
        config: RunConfigBase,
        *,
        resume: bool = False,
        skip_bad_rows: bool = False,
        progress: bool = True,
        log: Callable[[str], None] = print,
        callbacks: Sequence[Any] = (),
    ) -> TrainingResult:
        """Train with guards; never raise for a numerical failure — report it as stopped.

        ``callbacks`` are handed to the training library as they are (for the DPO plugin:
        ``transformers.TrainerCallback`` objects), e.g. to observe or interrupt training.
        """

    def load_config(self, path: Path, overrides: dict[str, Any] | None = None) -> RunConfigBase:
        from dpo_harness.files import load_config_file

        return load_config_file(path, self.config_type, overrides=overrides)


def plugin_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group="dpo_harness.plugins"))


def get_plugin(name: str) -> TrainingPlugin:
    """Load a training plugin by its entry-point name."""
    for ep in entry_points(group="dpo_harness.plugins"):
        if ep.name == name:
            try:
                cls = ep.load()
            except ImportError as exc:
                raise BadInputError(
                    f"training plugin {name!r} cannot be imported: {exc}",
                    "install the training extras: pip install 'dpo-harness[train]'",
                ) from None
            plugin = cls()
            if not isinstance(plugin, TrainingPlugin):
                raise BadInputError(
                    f"entry point {name!r} is not a TrainingPlugin", "fix the plugin package"
                )
            return plugin
    raise BadInputError(
        f"no training plugin named {name!r}",
        f"installed plugins: {', '.join(plugin_names()) or 'none'} (is dpo-harness installed with pip -e .?)",
    )

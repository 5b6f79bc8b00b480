"""The training-plugin boundary: what `train-and-gate` needs from a trainer, and nothing more.

Plugins are found through the ``dpo_harness.plugins`` entry-point group, so the harness core
never imports a training library (the DPO plugin brings TRL; another could bring anything).
A plugin owns its run config (a pydantic model extending :class:`RunConfigBase`), a data
preflight, and guarded training that returns a :class:`TrainingResult`.

Live gating (``gate.live: true``): the core builds a :class:`CheckpointGate` and hands it to
:meth:`TrainingPlugin.train`. The plugin calls it each time a checkpoint has been written, with
the model that is in memory, between training steps; the gate evaluates that model under the
saved files' fingerprint, publishes the result, and answers with a :class:`LiveVerdict` — the
metrics to send to the run's trackers and, when the run should end, the one-sentence stop event.
The plugin never imports the gate pipeline; the core never imports the training library.
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
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CheckpointGate",
    "CheckpointRecord",
    "EvalSettings",
    "GateSettings",
    "GuardEvent",
    "LiveVerdict",
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
    # Gate each checkpoint when it is saved, in the training process (docs/live-gating.md).
    live: bool = False
    # With ``live``: stop training after this many refused checkpoints in a row (a checkpoint
    # failing a hard limit stops it at once). None: only a hard-limit failure stops it.
    stop_after_refusals: int | None = Field(default=None, ge=1)
    # The promoted model's name on its card (default: the promote directory's, or the run's).
    model_name: str | None = None
    # The base model's hub id, for the card's ``base_model`` and the promoted
    # adapter_config.json (default: derived from ``model``/``base`` when that is a hub id).
    base_model_id: str | None = None

    @model_validator(mode="after")
    def _live_only(self) -> GateSettings:
        if self.stop_after_refusals is not None and not self.live:
            raise ValueError(
                "stop_after_refusals needs live: true (checkpoints are only gated during "
                "training when live gating is on)"
            )
        return self


class RunConfigBase(BaseModel):
    """Fields every training plugin's run config has."""

    model_config = ConfigDict(extra="forbid")

    plugin: str = "dpo"
    model: str = "demo"  # any checkpoint form the loader accepts
    base: str | None = None  # the base model of an adapter ``model`` (default: its adapter_config)
    # CPU threads for PyTorch, training and gating alike; None: a load-aware default
    # (dpo_harness.launcher.choose_threads). ``evaluation.threads`` overrides it for gating.
    threads: int | None = Field(default=None, ge=1, le=1024)
    output_dir: Path
    evaluation: EvalSettings = Field(default_factory=EvalSettings)
    gate: GateSettings = Field(default_factory=GateSettings)


class GuardEvent(BaseModel):
    """Something a training guard saw, as one sentence; ``stop`` events end the run."""

    model_config = ConfigDict(extra="forbid")

    step: int
    kind: str  # nonfinite_gradient, nonfinite_log, not_learning, over_optimisation, live_gate, ...
    severity: Literal["error", "warning"]
    message: str
    stopped: bool = False


class CheckpointRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path
    step: int
    final: bool = False


class LiveVerdict(BaseModel):
    """What the live gate answers for one checkpoint (already published by the core)."""

    model_config = ConfigDict(extra="forbid")

    name: str  # checkpoint-N
    step: int
    decision: Literal["promote", "refuse"]
    seconds: float  # the time the gate took, training paused
    # Numbers for the run's trackers (TensorBoard, W&B, MLflow ...), keys "gate/...".
    metrics: dict[str, float] = Field(default_factory=dict)
    # Set when training should end now: one sentence, for guard_events.jsonl and the summary.
    stop: GuardEvent | None = None


class CheckpointGate(ABC):
    """The core's gate, handed to a plugin for live gating. The plugin calls it right after a
    checkpoint directory is completely written, with the in-memory model that was saved there
    (in eval mode, without gradients); every process of a launched run calls it."""

    @abstractmethod
    def gate_checkpoint(self, model: Any, checkpoint_dir: Path, step: int) -> LiveVerdict:
        """Evaluate ``model`` as the files in ``checkpoint_dir``, decide, publish, answer."""


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
    # Training ended early because the live gate said so (the event is also in ``events``);
    # unlike a guard stop, the checkpoints gated so far can still be promoted.
    stopped_by_gate: bool = False
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
    # True when ``train`` accepts ``live_gate`` (a run config with gate.live needs it).
    supports_live_gate: ClassVar[bool] = False

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
        live_gate: CheckpointGate | None = None,
    ) -> TrainingResult:
        """Train with guards; never raise for a numerical failure — report it as stopped.

        ``callbacks`` are handed to the training library as they are (for the DPO plugin:
        ``transformers.TrainerCallback`` objects), e.g. to observe or interrupt training.
        ``live_gate`` (only passed to a plugin with ``supports_live_gate``): call it for every
        checkpoint as it is saved, log its ``metrics`` through the training library's own
        logging (so every tracker gets them), record its ``stop`` event and end training when
        it has one (``TrainingResult.stopped_by_gate``).
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

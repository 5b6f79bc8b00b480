"""The DPO run config (YAML): model, data, LoRA, training, guards — validated, errors name the field.

Precision is always explicit (TRL >= 0.19 defaults to bf16, which raises on a CPU-only machine)
and ``logging_nan_inf_filter`` is always off (the Trainer's default hid the seed run's NaNs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from dpo_harness.training.plugin import RunConfigBase
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DEMO_PREFERENCES",
    "DPO_LOSS_TYPES",
    "SET_BY_HARNESS",
    "DPORunConfig",
    "DatasetSettings",
    "GuardSettings",
    "LoraSettings",
    "TrainingSettings",
]

DEMO_PREFERENCES = Path(__file__).resolve().parent / "data" / "demo_preferences.jsonl"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSettings(_Strict):
    """Preference data through ``datasets.load_dataset``: a local JSONL/JSON/parquet file or a hub id."""

    path: str  # a file, a hub dataset id, or "demo" for the preference pairs that ship with the plugin
    split: str = "train"
    eval_path: str | None = None  # default: the same source, ``eval_split``
    eval_split: str | None = None
    split_field: str | None = (
        None  # a column that names each row's split (the demo file has "split")
    )


class LoraSettings(_Strict):
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    use_rslora: bool = False


# The loss types TRL 1.16's DPOTrainer implements (the branches of DPOTrainer.dpo_loss; its
# DPOConfig accepts any string and fails only when the first batch reaches the loss). A test
# reads them back from the installed TRL, so this list cannot drift from it.
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


def _dpo_config_fields() -> set[str]:
    """Every argument TRL's installed ``DPOConfig`` takes."""
    import dataclasses

    from trl import DPOConfig

    return {f.name for f in dataclasses.fields(DPOConfig) if f.init}


# DPOConfig arguments the run config sets itself (build_dpo_config); extra_args may not name them.
# A test checks that build_dpo_config sets nothing outside this list.
SET_BY_HARNESS: dict[str, str] = {
    "output_dir": "use output_dir",
    "report_to": "use training.report_to",
    "gradient_checkpointing": "use training.activation_checkpointing",
    "bf16": "use training.precision",
    "fp16": "use training.precision",
    "use_cpu": "set from the machine (CUDA or not)",
    # The Trainer's NaN filter turned the seed run's NaN losses into a logged 0.0.
    "logging_nan_inf_filter": "always False: the Trainer's filter hid the seed run's NaN losses",
    "save_strategy": "always steps: every checkpoint is gated (use training.save_steps)",
    "eval_strategy": "steps when there is eval data (use training.eval_steps)",
    "save_only_model": "always False: --resume needs the optimizer state",
    "disable_tqdm": "use --quiet",
    "data_seed": "use training.seed",
    "ddp_backend": "set from the machine (gloo without CUDA)",
    "dataloader_num_workers": "always 0",
}


def _integration_names() -> list[str]:
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return sorted(INTEGRATION_TO_CALLBACK)


def _scheduler_names() -> list[str]:
    from transformers.trainer_utils import SchedulerType

    return [s.value for s in SchedulerType]


def _optimizer_names() -> list[str]:
    from transformers.training_args import OptimizerNames

    return [o.value for o in OptimizerNames]


class TrainingSettings(_Strict):
    precision: Literal["fp32", "bf16", "fp16"]  # no default on purpose: say what you train in
    per_device_train_batch_size: int = Field(default=8, ge=1)
    per_device_eval_batch_size: int = Field(default=8, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    lr_scheduler_type: str = "cosine"
    optim: str = "adamw_torch"
    warmup_steps: float = Field(default=0.1, ge=0)  # < 1: a share of the steps
    beta: float = Field(default=0.1, gt=0)
    loss_type: list[str] = Field(default_factory=lambda: ["sigmoid"])
    loss_weights: list[float] | None = None
    max_length: int = Field(default=512, ge=8)
    max_steps: int | None = Field(default=None, ge=1)
    num_train_epochs: float | None = Field(default=None, gt=0)
    logging_steps: int = Field(default=10, ge=1)
    save_steps: int = Field(default=50, ge=1)
    eval_steps: int | None = Field(default=None, ge=1)
    max_grad_norm: float = Field(default=1.0, ge=0)
    activation_checkpointing: bool = False
    seed: int = 0
    # Trackers the Trainer reports to, as TrainingArguments.report_to: "tensorboard",
    # "wandb", "mlflow", ... "all", "none". The live gate's metrics go to them too.
    report_to: list[str] = Field(default_factory=list)
    # Any other DPOConfig argument, e.g. {weight_decay: 0.01, logging_dir: ...}; names are
    # checked against the installed TRL's DPOConfig when the config is read.
    extra_args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("report_to")
    @classmethod
    def _known_trackers(cls, v: list[str]) -> list[str]:
        known = _integration_names()
        unknown = [x for x in v if x not in (*known, "all", "none")]
        if unknown:
            raise ValueError(
                f"unknown tracker(s) {unknown}; transformers knows: {', '.join(known)}, all, none"
            )
        return [] if v == ["none"] else v

    @field_validator("extra_args")
    @classmethod
    def _dpo_config_arguments(cls, v: dict[str, Any]) -> dict[str, Any]:
        ours = set(cls.model_fields) - {"precision", "report_to", "extra_args"}
        for name in v:
            if name in ours:
                raise ValueError(f"{name!r} is a setting of its own: use training.{name}")
            if name in SET_BY_HARNESS:
                raise ValueError(f"{name!r} cannot be passed through: {SET_BY_HARNESS[name]}")
        unknown = sorted(set(v) - _dpo_config_fields())
        if unknown:
            from difflib import get_close_matches

            hints = [
                f"{u} (did you mean {m[0]}?)"
                if (m := get_close_matches(u, _dpo_config_fields(), 1))
                else u
                for u in unknown
            ]
            raise ValueError(f"not an argument of TRL's DPOConfig: {', '.join(hints)}")
        return v

    @field_validator("loss_type")
    @classmethod
    def _known_losses(cls, v: list[str]) -> list[str]:
        unknown = [x for x in v if x not in DPO_LOSS_TYPES]
        if unknown or not v:
            raise ValueError(
                f"unknown DPO loss type(s) {unknown or v}; TRL knows: {', '.join(DPO_LOSS_TYPES)}"
            )
        return v

    @field_validator("lr_scheduler_type")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        names = _scheduler_names()
        if v not in names:
            raise ValueError(f"unknown scheduler {v!r}; transformers knows: {', '.join(names)}")
        return v

    @field_validator("optim")
    @classmethod
    def _known_optimizer(cls, v: str) -> str:
        names = _optimizer_names()
        if v not in names:
            raise ValueError(
                f"unknown optimizer {v!r}; transformers knows e.g. adamw_torch, sgd, adafactor ({len(names)} in all)"
            )
        return v

    @model_validator(mode="after")
    def _check(self) -> TrainingSettings:
        if (self.max_steps is None) == (self.num_train_epochs is None):
            raise ValueError("set exactly one of max_steps and num_train_epochs")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(
                f"loss_weights has {len(self.loss_weights)} entries for {len(self.loss_type)} loss types"
            )
        return self


class GuardSettings(_Strict):
    """Training-time guards. Non-finite values always stop the run; the rest are configurable."""

    not_learning_after_steps: int = Field(default=20, ge=1)
    over_optimisation: Literal["stop", "warn", "off"] = "stop"
    max_margin_over_beta: float = Field(default=100.0, gt=0)  # rewards/margins / beta
    early_fraction: float = Field(default=0.5, gt=0, le=1)  # "early" = this share of the steps
    logps_drop_nats: float = Field(
        default=60.0, gt=0
    )  # logps/chosen below its first value by this much
    entropy_band: float = Field(default=2.0, gt=1)  # entropy within [first / band, first * band]


class DPORunConfig(RunConfigBase):
    plugin: Literal["dpo"] = "dpo"
    dataset: DatasetSettings
    lora: LoraSettings | None = Field(default_factory=LoraSettings)  # None: full fine-tune
    training: TrainingSettings
    guards: GuardSettings = Field(default_factory=GuardSettings)
    skip_bad_rows: bool = False

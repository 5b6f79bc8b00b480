"""The DPO training plugin: TRL ``DPOTrainer`` + PEFT LoRA behind numerical guards.

Registered as the ``dpo`` entry point of the ``dpo_harness.plugins`` group; the harness core
reaches it only through :class:`dpo_harness.training.plugin.TrainingPlugin`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dpo_harness.plugins.dpo.run_config import DatasetSettings, DPORunConfig, TrainingSettings
from dpo_harness.training.plugin import (
    CheckpointGate,
    GateSettings,
    PreflightSummary,
    RunConfigBase,
    TrainingPlugin,
    TrainingResult,
)

__all__ = ["DPOPlugin", "DPORunConfig"]


class DPOPlugin(TrainingPlugin):
    name = "dpo"
    config_type = DPORunConfig
    supports_live_gate = True

    def demo_config(self, output_dir: Path) -> DPORunConfig:
        """The embedded demo: the demo model, the demo preference pairs, a few minutes on 2 cores."""
        return DPORunConfig(
            model="demo",
            output_dir=output_dir,
            dataset=DatasetSettings(
                path="demo", split="train", eval_split="eval", split_field="split"
            ),
            training=TrainingSettings(
                precision="fp32",
                per_device_train_batch_size=8,
                learning_rate=3e-5,
                beta=0.1,
                max_steps=80,
                logging_steps=10,
                save_steps=40,
                eval_steps=40,
            ),
            # Each checkpoint is gated when it is saved; two refusals in a row end the run.
            gate=GateSettings(live=True, stop_after_refusals=2),
        )

    def _config(self, config: RunConfigBase) -> DPORunConfig:
        if not isinstance(config, DPORunConfig):
            raise TypeError(f"the dpo plugin needs a DPORunConfig, got {type(config).__name__}")
        return config

    def preflight(self, config: RunConfigBase, *, skip_bad_rows: bool = False) -> PreflightSummary:
        from dpo_harness.evaluation.loading import resolve_checkpoint
        from dpo_harness.plugins.dpo.trainer import load_data, summarise_preflight

        cfg = self._config(config)
        spec = resolve_checkpoint(cfg.model, base_override=cfg.base)
        from transformers import AutoTokenizer

        tok_dir = (
            spec.path
            if (spec.path / "tokenizer_config.json").is_file()
            else resolve_checkpoint(spec.base_ref or cfg.model).path
        )
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        _, _, train_report, eval_report = load_data(cfg, tokenizer, skip_bad_rows=skip_bad_rows)
        return summarise_preflight(train_report, eval_report)

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
        from dpo_harness.plugins.dpo.trainer import run_dpo

        return run_dpo(
            self._config(config),
            resume=resume,
            skip_bad_rows=skip_bad_rows,
            progress=progress,
            log=log,
            callbacks=callbacks,
            live_gate=live_gate,
        )

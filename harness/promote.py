"""Promotion: put a candidate that passed the gate where it will be used — atomically.

The model files (weights, config, tokenizer, adapter config; never optimizer state or pickles) are
hard-linked where the filesystem allows it, copied otherwise, into a temporary sibling of the
promote directory together with the gate decision and a Hugging Face style model card; the
temporary directory is then renamed into place. A previous promotion is kept until the new one
is in place. On refusal the promote directory is not touched; a refusal record is written next
to it instead.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from .gate import GATE_HEADERS, GateDecision, gate_rows
from .io import atomic_write_text

__all__ = ["MODEL_FILE_PATTERNS", "model_card", "promote", "record_refusal"]

MODEL_FILE_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "adapter_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "trainer_state.json",
)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)


def model_card(decision: GateDecision) -> str:
    """README.md with YAML metadata (model card) and the gate table."""
    from tabulate import tabulate

    meta = {
        "library_name": "transformers" if not decision.candidate.is_adapter else "peft",
        "base_model": decision.baseline_model,
        "tags": ["dpo-harness", "gated", "japanese"],
        "dpo_harness": {
            "decision": decision.decision,
            "candidate_fingerprint": decision.candidate.fingerprint,
            "baseline_checksum": decision.baseline_checksum,
            "gated_at": decision.created_at,
        },
    }
    table = tabulate(gate_rows(decision), headers=GATE_HEADERS, tablefmt="github")
    body = [
        f"# {Path(decision.candidate.ref).name}",
        "",
        f"Promoted by dpo-harness: every gated metric is non-inferior to the baseline of "
        f"`{decision.baseline_model}` and every hard limit holds.",
        "",
        table,
        "",
        *[f"- {r}" for r in decision.reasons],
    ]
    return (
        "---\n"
        + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
        + "---\n\n"
        + "\n".join(body)
        + "\n"
    )


def promote(candidate_dir: Path, target: Path, decision: GateDecision) -> Path:
    """Place the candidate's model files, decision.json and README.md at ``target`` atomically."""
    if decision.decision != "promote":
        raise ValueError("refusing to promote a candidate the gate refused")
    candidate_dir, target = Path(candidate_dir), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.promote-", dir=target.parent))
    try:
        files = {
            p for pattern in MODEL_FILE_PATTERNS for p in candidate_dir.glob(pattern) if p.is_file()
        }
        for src in sorted(files):
            _link_or_copy(src, tmp / src.name)
        final = decision.model_copy(update={"promoted_to": str(target)})
        atomic_write_text(tmp / "decision.json", final.model_dump_json(indent=2) + "\n")
        atomic_write_text(tmp / "README.md", model_card(final))
        old = None
        if target.exists():
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            old = target.with_name(f".{target.name}.replaced-{stamp}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def record_refusal(target: Path, decision: GateDecision) -> Path:
    """Write the refusal next to the promote directory (which stays untouched)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(target).with_name(f"{Path(target).name}.refusals") / f"{stamp}.json"
    atomic_write_text(path, decision.model_dump_json(indent=2) + "\n")
    return path

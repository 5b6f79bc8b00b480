"""Synthetic reports and baselines for testing the gate without a model; a torchrun launcher."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from dpo_harness.gate import GateDecision
from dpo_harness.gate.baseline import Baseline, new_baseline
from dpo_harness.schema import (
    CheckpointKind,
    Direction,
    EvalReport,
    GenerationSettings,
    MetricResult,
    MetricSpec,
    ModelInfo,
    Provenance,
    ReferenceSource,
    SuiteIdentity,
    SuiteResult,
)

ACC = MetricSpec(
    name="acc", description="accuracy", direction=Direction.HIGHER, margin=0.05, binary=True
)
LOSS = MetricSpec(
    name="loss",
    description="a continuous lower-is-better score",
    direction=Direction.LOWER,
    margin=0.1,
)
RUN = MetricSpec(
    name="run", description="hard-limited", direction=Direction.LOWER, hard_max=20.0, margin=2.0
)
NLL = MetricSpec(name="nll", description="band", direction=Direction.BAND, margin=0.5)


def model_info(fingerprint: str = "sha256:base") -> ModelInfo:
    return ModelInfo(
        ref="demo",
        kind=CheckpointKind.FULL,
        is_adapter=False,
        fingerprint=fingerprint,
        n_parameters=1,
        dtype="float32",
        device="cpu",
        chat_template_hash="sha256:t",
        tokenizer_hash="sha256:v",
    )


def make_report(
    values: Mapping[str, Mapping[str, float]],
    specs: Mapping[str, MetricSpec] | None = None,
    *,
    fingerprint: str = "sha256:base",
    reference_source: ReferenceSource = "self",
) -> EvalReport:
    """values: {metric name: {item id: value}} in one suite called 'toy'."""
    specs = specs or {"acc": ACC, "loss": LOSS, "run": RUN, "nll": NLL}
    metrics = []
    for name, per in values.items():
        vals = list(per.values())
        metrics.append(
            MetricResult.from_spec(specs[name], sum(vals) / len(vals) if vals else None, dict(per))
        )
    suite = SuiteResult(
        name="toy",
        version="1",
        data_hash="sha256:d",
        n_items=len(next(iter(values.values()))),
        metrics=metrics,
    )
    prov = Provenance(
        harness_version="test",
        created_at="2026-01-01T00:00:00+00:00",
        model=model_info(fingerprint),
        reference_source=reference_source,
        suites={"toy": SuiteIdentity(version="1", data_hash="sha256:d")},
        generation=GenerationSettings(),
        libraries={},
        device="cpu",
        dtype="float32",
        seed=0,
        batch_size=1,
    )
    return EvalReport(provenance=prov, suites=[suite])


def make_baseline(report: EvalReport) -> Baseline:
    return new_baseline(report, reason="test").sealed()


def torchrun(nproc: int, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dpo_harness.cli ARGS`` under torchrun with ``nproc`` CPU processes (gloo)."""
    with socket.socket() as s:  # a free port: a fixed one could be taken on a shared CI machine
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        port,
        "-m",
        "dpo_harness.cli",
        *args,
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def promotion_decision(candidate: Path) -> GateDecision:
    """A promote decision about exactly the files in ``candidate`` (for promotion tests)."""
    from dpo_harness.evaluation.loading import checkpoint_fingerprint, resolve_checkpoint
    from dpo_harness.gate import GatePolicy, gate

    report = make_report({"acc": {f"i{k}": 1.0 for k in range(12)}})
    decision = gate(report, make_baseline(report), GatePolicy(n_resamples=200))
    fp = checkpoint_fingerprint(resolve_checkpoint(str(candidate)))
    info = model_info(fp).model_copy(update={"ref": str(candidate)})
    return decision.model_copy(update={"candidate": info})

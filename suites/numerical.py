"""Numerical health: is this checkpoint numerically sound, whatever its text looks like?

Runs first in spirit: a model with one NaN weight has NaN logits, and the argmax of an all-NaN
row is index 0 — in Qwen2-style byte-level vocabularies ``"!"``, which is how the seed run's
"！！！！" came about. Signals: non-finite parameters (named), logits on fixed probe texts
(finite, max |logit|, entropy, top-1 probability, argmax-mode share), exact KL from the reference
and top-1 agreement, held-out bits per byte, LoRA sanity (all-zero B, delta norm), batched vs
one-by-one greedy parity, and training-log forensics when a ``trainer_state.json`` is present.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from dpo_harness.evaluation.responses import Responses
from dpo_harness.evaluation.suite import Suite, SuiteContext, hash_files, register_suite
from dpo_harness.schema import (
    Direction,
    Finding,
    MetricResult,
    MetricSpec,
    ParityRequest,
    ProbeRequest,
    Request,
    RollingLoglikelihoodRequest,
    SampleRecord,
    SuiteResult,
    TrainingLogRequest,
    WeightsRequest,
)
from dpo_harness.suites.common import (
    DATA_DIR,
    HeldoutText,
    OpenPrompt,
    Probe,
    load_items,
    mean,
    open_prompts_path,
    user_prompt,
)
from dpo_harness.suites.forensics import diagnose_log_history

__all__ = ["NumericalSuite"]

N_PARITY_PROMPTS = 8
# Metrics computed from the probes' logits.
_PROBE_METRICS = (
    "probe_nonfinite_share",
    "probe_max_abs_logit",
    "probe_entropy",
    "probe_top1_prob",
    "argmax_mode_share",
    "kl_from_reference",
    "top1_agreement",
)


@register_suite
class NumericalSuite(Suite):
    name = "numerical"
    # v3: states what it sees in a model that answers nothing (no scoring change)
    # v4: a served candidate plans only what its backend can answer; weight, logit, parity,
    # held-out and log metrics are skipped with the backend's reason
    version = "4"
    description = "Non-finite weights, probe logits, KL from the reference, held-out bits/byte, LoRA, parity, logs."
    scoring_modules = ("dpo_harness.suites.common", "dpo_harness.suites.forensics")
    # A model that answers nothing has learnt to put its end token first; on the probes it
    # predicts that token at (nearly) every position, which argmax_mode_share's hard limit sees.
    on_empty_answers: ClassVar[Mapping[str, str]] = {"argmax_mode_share": "hard-fail"}

    def __init__(self, data_path: Path | None = None) -> None:
        super().__init__(data_path)
        root = data_path or DATA_DIR
        self.probe_path = root / "probes.jsonl"
        self.heldout_path = root / "heldout_ja.jsonl"
        self.prompts_path = root / "open_prompts.jsonl" if data_path else open_prompts_path()
        self.probes: list[Probe] = load_items(self.probe_path, Probe, what="probe")
        self.heldout: list[HeldoutText] = load_items(
            self.heldout_path, HeldoutText, what="held-out text"
        )
        self.parity_prompts: list[OpenPrompt] = load_items(
            self.prompts_path, OpenPrompt, what="open prompt"
        )[:N_PARITY_PROMPTS]

    def data_hash(self) -> str:
        return hash_files([self.probe_path, self.heldout_path, self.prompts_path])

    def metric_specs(self) -> list[MetricSpec]:
        return [
            MetricSpec(
                name="nonfinite_parameters",
                description="parameter tensors holding NaN or inf",
                direction=Direction.LOWER,
                unit="tensors",
                hard_max=0,
            ),
            MetricSpec(
                name="probe_nonfinite_share",
                description="probe texts whose logits are not all finite",
                direction=Direction.LOWER,
                unit="share",
                hard_max=0,
                binary=True,
            ),
            MetricSpec(
                name="probe_max_abs_logit",
                description="largest |logit| on the probe texts",
                direction=Direction.LOWER,
                hard_max=1000.0,
            ),
            MetricSpec(
                name="probe_entropy",
                description="mean next-token entropy on the probe texts",
                direction=Direction.BAND,
                unit="nats",
                margin=1.0,
            ),
            MetricSpec(
                name="probe_top1_prob",
                description="mean top-1 probability on the probe texts",
                direction=Direction.INFO,
                unit="share",
            ),
            MetricSpec(
                name="argmax_mode_share",
                description="share of probe positions whose argmax is the single most common token",
                direction=Direction.LOWER,
                unit="share",
                hard_max=0.6,
                margin=0.1,
            ),
            MetricSpec(
                name="kl_from_reference",
                description="exact KL(candidate || reference) per position on the probes",
                direction=Direction.INFO,
                unit="nats",
                hard_max=10.0,
            ),
            MetricSpec(
                name="top1_agreement",
                description="share of probe positions where candidate and reference argmax agree",
                direction=Direction.INFO,
                unit="share",
            ),
            MetricSpec(
                name="heldout_bits_per_byte",
                description="bits per UTF-8 byte on held-out human Japanese",
                direction=Direction.LOWER,
                unit="bits/byte",
                hard_max=8.0,
                margin=0.05,
            ),
            MetricSpec(
                name="lora_b_zero_share",
                description="LoRA modules whose B matrix is all zero (untrained or not saved)",
                direction=Direction.LOWER,
                unit="share",
                hard_max=0.99,
            ),
            MetricSpec(
                name="lora_delta_norm",
                description="sqrt of the sum over modules of (s·||B·A||_F)^2",
                direction=Direction.INFO,
            ),
            MetricSpec(
                name="parity_mismatch_share",
                description="prompts whose batched (left-padded) and one-by-one greedy outputs differ",
                direction=Direction.LOWER,
                unit="share",
                hard_max=0.25,
            ),
            MetricSpec(
                name="training_log_errors",
                description="error findings in trainer_state.json log_history",
                direction=Direction.LOWER,
                unit="findings",
                hard_max=0,
            ),
        ]

    # ------------------------------------------------------------------ requests

    def _probe_requests(self, ctx: SuiteContext) -> list[ProbeRequest]:
        return [
            ProbeRequest(
                context=user_prompt(p.prompt),
                continuation=p.continuation,
                with_reference=ctx.has_reference,
            )
            for p in self.probes
        ]

    def _heldout_requests(self) -> list[RollingLoglikelihoodRequest]:
        return [RollingLoglikelihoodRequest(text=h.text) for h in self.heldout]

    def _parity_request(self) -> ParityRequest:
        return ParityRequest(prompts=tuple(user_prompt(p.prompt) for p in self.parity_prompts))

    def plan(self, ctx: SuiteContext) -> list[Request]:
        # A served candidate has no weights or logits to read here: only what it can answer.
        reqs: list[Request] = []
        if not ctx.cannot("weights"):
            reqs.append(WeightsRequest())
        if not ctx.cannot("probe"):
            reqs.extend(self._probe_requests(ctx))
        if not ctx.cannot("rolling"):
            reqs.extend(self._heldout_requests())
        if not ctx.cannot("parity"):
            reqs.append(self._parity_request())
        if ctx.has_trainer_state:
            reqs.append(TrainingLogRequest())
        return reqs

    # ------------------------------------------------------------------ scoring

    def score(self, ctx: SuiteContext, responses: Responses) -> SuiteResult:
        metrics: list[MetricResult] = []
        findings: list[Finding] = []
        skipped: dict[str, str] = {}
        samples: list[SampleRecord] = []

        why_weights = ctx.cannot("weights")
        weights = None if why_weights is not None else responses[WeightsRequest()]
        if weights is None:
            for name in ("nonfinite_parameters", "lora_b_zero_share", "lora_delta_norm"):
                skipped[name] = why_weights or ""
        else:
            metrics.append(self.result("nonfinite_parameters", float(len(weights.nonfinite))))
            for t in weights.nonfinite:
                findings.append(
                    Finding(
                        severity="error",
                        metric="nonfinite_parameters",
                        message=(
                            f"Parameter {t.name}"
                            + (f" (stored in {t.file})" if t.file else " (in the loaded model)")
                            + f" holds {t.n_nan} NaN and {t.n_inf} inf values (of {t.numel:,})."
                        ),
                    )
                )

        why_probe = ctx.cannot("probe")
        if why_probe is not None:
            for name in _PROBE_METRICS:
                skipped[name] = why_probe
        else:
            probes = [
                (p, responses[r])
                for p, r in zip(self.probes, self._probe_requests(ctx), strict=True)
            ]
            nonfinite = {p.id: float(not r.finite) for p, r in probes}
            metrics.append(
                self.result("probe_nonfinite_share", mean(nonfinite.values()), nonfinite)
            )
            max_abs = {p.id: r.max_abs_logit for p, r in probes}
            metrics.append(
                self.result(
                    "probe_max_abs_logit", max((v for v in max_abs.values()), default=None), max_abs
                )
            )
            entropy = {p.id: r.mean_entropy for p, r in probes}
            metrics.append(self.result("probe_entropy", mean(entropy.values()), entropy))
            top1 = {p.id: r.mean_top1_prob for p, r in probes}
            metrics.append(self.result("probe_top1_prob", mean(top1.values()), top1))
            all_ids = [i for _, r in probes for i in r.argmax_ids]
            global_mode, global_count = Counter(all_ids).most_common(1)[0] if all_ids else (0, 0)
            mode_share = {p.id: _mode_share(r.argmax_ids) for p, r in probes}
            metrics.append(
                self.result(
                    "argmax_mode_share",
                    global_count / len(all_ids) if all_ids else None,
                    mode_share,
                )
            )
            spam = _token_spam_finding(probes, global_mode, global_count / max(len(all_ids), 1))
            if spam is not None:
                findings.append(spam)
            for p, r in probes:
                samples.append(
                    SampleRecord(
                        item_id=p.id,
                        prompt=p.prompt,
                        response=None,
                        extra={
                            "finite": r.finite,
                            "entropy": r.mean_entropy,
                            "kl": r.kl_mean,
                            "mode_token": r.mode_token_text,
                        },
                    )
                )

            if ctx.has_reference and all(r.kl_mean is not None for _, r in probes):
                kl = {p.id: r.kl_mean for p, r in probes}
                agree = {p.id: r.top1_agreement for p, r in probes}
                metrics.append(self.result("kl_from_reference", mean(kl.values()), kl))
                metrics.append(self.result("top1_agreement", mean(agree.values()), agree))
            else:
                why = "no reference model (pass --base, or evaluate an adapter)"
                skipped["kl_from_reference"] = why
                skipped["top1_agreement"] = why

        why_rolling = ctx.cannot("rolling")
        if why_rolling is not None:
            skipped["heldout_bits_per_byte"] = why_rolling
        else:
            bpb: dict[str, float | None] = {}
            for h, req in zip(self.heldout, self._heldout_requests(), strict=True):
                resp = responses[req]
                bpb[h.id] = -resp.logprob / (max(resp.n_bytes, 1) * math.log(2))
            metrics.append(self.result("heldout_bits_per_byte", mean(bpb.values()), bpb))

        if weights is not None and weights.lora:
            zero = {m.name: float(m.b_all_zero) for m in weights.lora}
            metrics.append(self.result("lora_b_zero_share", mean(zero.values()), zero))
            total = math.sqrt(sum(m.delta_norm**2 for m in weights.lora))
            metrics.append(
                self.result("lora_delta_norm", total, {m.name: m.delta_norm for m in weights.lora})
            )
            n_zero = sum(m.b_all_zero for m in weights.lora)
            if n_zero:
                findings.append(
                    Finding(
                        severity="error" if n_zero == len(weights.lora) else "warning",
                        metric="lora_b_zero_share",
                        message=(
                            f"{n_zero} of {len(weights.lora)} LoRA modules have an all-zero B matrix: "
                            "B starts at zero, so those modules were never trained or not saved."
                        ),
                    )
                )
        elif weights is not None:
            skipped["lora_b_zero_share"] = skipped["lora_delta_norm"] = "not a LoRA adapter"

        why_parity = ctx.cannot("parity")
        if why_parity is not None:
            skipped["parity_mismatch_share"] = why_parity
        else:
            parity = responses[self._parity_request()]
            per_prompt = {
                p.id: float(k in parity.mismatched) for k, p in enumerate(self.parity_prompts)
            }
            metrics.append(
                self.result("parity_mismatch_share", mean(per_prompt.values()), per_prompt)
            )
            if parity.mismatched:
                k = parity.mismatched[0]
                findings.append(
                    Finding(
                        severity="warning",
                        metric="parity_mismatch_share",
                        message=(
                            f"Batched and one-by-one greedy generation differ on {len(parity.mismatched)} of "
                            f"{parity.n_prompts} prompts (first: {self.parity_prompts[k].id}); padding or masks change "
                            "the numbers."
                        ),
                    )
                )

        if ctx.has_trainer_state:
            log = responses[TrainingLogRequest()]
            log_findings = diagnose_log_history(log.log_history)
            findings.extend(log_findings)
            n_err = sum(1 for f in log_findings if f.severity == "error")
            metrics.append(self.result("training_log_errors", float(n_err), note=log.path))
        else:
            skipped["training_log_errors"] = (
                ctx.cannot("training_log") or "no trainer_state.json next to the checkpoint"
            )

        return SuiteResult(
            name=self.name,
            version=self.version,
            data_hash=self.data_hash(),
            n_items=len(self.probes) + len(self.heldout) + len(self.parity_prompts),
            metrics=metrics,
            samples=samples,
            findings=findings,
            skipped=skipped,
        )


def _mode_share(ids: list[int]) -> float | None:
    if not ids:
        return None
    return Counter(ids).most_common(1)[0][1] / len(ids)


def _token_spam_finding(
    probes: list[tuple[Probe, Any]], mode_id: int, share: float
) -> Finding | None:
    nonfinite = [p.id for p, r in probes if not r.finite]
    text = next((r.mode_token_text for _, r in probes if r.mode_token_id == mode_id), "?")
    if nonfinite:
        return Finding(
            severity="error",
            metric="probe_nonfinite_share",
            message=(
                f"Logits are NaN/inf on {len(nonfinite)} of {len(probes)} probe texts: greedy decoding would emit "
                f"token id {mode_id} ({text!r}) at every step — token-0 spam, because the argmax of a NaN row is 0 "
                "(the seed run's '！！！！')."
            ),
        )
    if share >= 0.9:
        return Finding(
            severity="error",
            metric="argmax_mode_share",
            message=(
                f"{share:.0%} of probe positions predict the same token id {mode_id} ({text!r}): the model has "
                "collapsed onto one token."
            ),
        )
    return None

"""Japanese fluency: does the model still write Japanese, and well-formed Japanese?

Scores the same greedy generations as the repetition suite (the runner generates each prompt
once). Signals: script mix (Japanese share; English answers fail), Chinese drift (sentences with
several kanji and no kana), U+FFFD and control characters (byte-level BPE can emit half a
character), sentence-ending well-formedness and the unknown-word rate from UniDic morphology
(fugashi + unidic-lite; Latin words excluded, since UniDic marks every one unknown), and the
per-token NLL of each answer under the reference (base) model — judged as a band around the
base model's own answers, never alone, because loops get *low* perplexity.

An empty answer scores nothing here: no Chinese, no broken characters and no symbols would read
as *better*, so a model that answers nothing leaves every gated metric without a value, and the
gate fails it as unscorable (it never passes by absence).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from dpo_harness.evaluation.responses import Responses
from dpo_harness.evaluation.suite import Suite, SuiteContext, hash_files, register_suite
from dpo_harness.schema import (
    Direction,
    Finding,
    GenerateRequest,
    LoglikelihoodRequest,
    MetricSpec,
    ModelRole,
    Request,
    SampleRecord,
    SuiteResult,
)
from dpo_harness.suites.common import OpenPrompt, load_items, mean, open_prompts_path, user_prompt
from dpo_harness.suites.metrics.japanese import (
    chinese_drift,
    control_char_count,
    get_tagger,
    japanese_share,
    morph_stats,
    replacement_char_count,
)

__all__ = ["FluencySuite"]


@register_suite
class FluencySuite(Suite):
    name = "fluency"
    # v2: broken_char_share margin 0.1 -> 0.2 (per-response U+FFFD flips are common)
    # v3: answer_nll_reference band 0.5 -> 0.7 = ln 2 (perplexity ratio within [0.5, 2])
    # v4: empty answers are not scored (they read as free of drift and broken characters)
    # v5: answer_nll_reference skipped with the reason when neither a reference nor the candidate
    # can score (a served model without prompt log-probabilities)
    # v6: japanese_share counts the kanji of a drifted (Chinese) sentence as another script
    version = "6"
    description = "Japanese script share, Chinese drift, broken characters, sentence endings, morphology, answer NLL."
    scoring_modules = ("dpo_harness.suites.common", "dpo_harness.suites.metrics.japanese")
    on_empty_answers: ClassVar[Mapping[str, str]] = {
        "japanese_share": "unscorable",
        "chinese_drift": "unscorable",
        "broken_char_share": "unscorable",
        "sentence_end_ok": "unscorable",
        "unknown_word_rate": "unscorable",
        "symbol_token_share": "unscorable",
        "answer_nll_reference": "unscorable",
    }

    def __init__(self, data_path: Path | None = None) -> None:
        super().__init__(data_path)
        self.path = data_path or open_prompts_path()
        self.prompts: list[OpenPrompt] = load_items(self.path, OpenPrompt, what="open prompt")

    def data_hash(self) -> str:
        return hash_files([self.path])

    def metric_specs(self) -> list[MetricSpec]:
        return [
            MetricSpec(
                name="japanese_share",
                description="mean share of Japanese letters (kana + kanji) among all letters",
                direction=Direction.HIGHER,
                unit="share",
                hard_min=0.5,
                margin=0.1,
            ),
            MetricSpec(
                name="chinese_drift",
                description="responses with a sentence of >= 4 kanji and no kana (Chinese, not Japanese)",
                direction=Direction.LOWER,
                unit="share",
                hard_max=0.3,
                margin=0.1,
                binary=True,
            ),
            MetricSpec(
                name="broken_char_share",
                description="responses containing U+FFFD or a control character",
                direction=Direction.LOWER,
                unit="share",
                hard_max=0.5,
                margin=0.2,
                binary=True,
            ),
            MetricSpec(
                name="replacement_chars",
                description="mean count of U+FFFD per response (broken multi-byte characters)",
                direction=Direction.LOWER,
                unit="chars",
                hard_max=2.0,
            ),
            MetricSpec(
                name="control_chars",
                description="mean count of control characters per response",
                direction=Direction.LOWER,
                unit="chars",
                hard_max=5.0,
            ),
            MetricSpec(
                name="sentence_end_ok",
                description="mean share of sentences ending in a verb, auxiliary, adjective, noun or final particle",
                direction=Direction.HIGHER,
                unit="share",
                hard_min=0.5,
                margin=0.15,
            ),
            MetricSpec(
                name="unknown_word_rate",
                description="mean UniDic unknown-word rate (Latin words and numbers excluded)",
                direction=Direction.LOWER,
                unit="share",
                hard_max=0.2,
                margin=0.05,
            ),
            MetricSpec(
                name="symbol_token_share",
                description="mean share of 補助記号 (symbol) morphemes",
                direction=Direction.LOWER,
                unit="share",
                hard_max=0.5,
                margin=0.05,
            ),
            MetricSpec(
                name="answer_nll_reference",
                description="mean per-token NLL of each answer under the reference model (a band around the base)",
                direction=Direction.BAND,
                unit="nats/token",
                margin=0.7,  # ln 2: the answer's perplexity under the base may halve or double
                needs_reference=True,
            ),
        ]

    def _gen_requests(self) -> list[GenerateRequest]:
        return [GenerateRequest(prompt=user_prompt(p.prompt)) for p in self.prompts]

    def plan(self, ctx: SuiteContext) -> list[Request]:
        return list(self._gen_requests())

    def _nll_unavailable(self, ctx: SuiteContext) -> str | None:
        """Why the answers cannot be scored: no reference, and a candidate without log-likelihoods."""
        return None if ctx.has_reference else ctx.cannot("loglikelihood")

    def _nll_requests(
        self, ctx: SuiteContext, responses: Responses
    ) -> list[LoglikelihoodRequest | None]:
        role: ModelRole = "reference" if ctx.has_reference else "candidate"
        out: list[LoglikelihoodRequest | None] = []
        if self._nll_unavailable(ctx) is not None:
            return [None for _ in self.prompts]
        for req in self._gen_requests():
            text = responses[req].text
            out.append(
                LoglikelihoodRequest(context=req.prompt, continuation=text, model=role)
                if text.strip()
                else None
            )
        return out

    def plan_followup(self, ctx: SuiteContext, responses: Responses) -> list[Request]:
        return [r for r in self._nll_requests(ctx, responses) if r is not None]

    def score(self, ctx: SuiteContext, responses: Responses) -> SuiteResult:
        ids = [p.id for p in self.prompts]
        texts = [responses[r].text for r in self._gen_requests()]
        tagger = get_tagger()
        morph = [morph_stats(t, tagger) for t in texts]
        drift_pairs = [chinese_drift(t) for t in texts]

        empty = [not t.strip() for t in texts]

        def col(values: list[Any]) -> dict[str, float | None]:
            """Per item; None where the answer is empty (nothing to score, never a good score)."""
            return {
                i: (None if v is None or e else float(v))
                for i, v, e in zip(ids, values, empty, strict=True)
            }

        jp = col([japanese_share(t) if t.strip() else None for t in texts])
        drift = col([float(d > 0) for d, _ in drift_pairs])
        fffd = col([replacement_char_count(t) for t in texts])
        ctrl = col([control_char_count(t) for t in texts])
        broken = col([None if fffd[i] is None else float(bool(fffd[i] or ctrl[i])) for i in ids])
        ends = col([m.sentence_end_ok_share if m.n_sentences else None for m in morph])
        unk = col([m.unknown_rate_nonlatin if m.n_tokens else None for m in morph])
        sym = col([m.symbol_token_share if m.n_tokens else None for m in morph])
        nll_reqs = self._nll_requests(ctx, responses)
        nll = col(
            [
                None
                if r is None or responses[r].n_tokens == 0
                else -responses[r].logprob / responses[r].n_tokens
                for r in nll_reqs
            ]
        )
        note = (
            None
            if ctx.has_reference
            else "no reference model: answers scored under the candidate itself"
        )
        metrics = [
            self.result("japanese_share", mean(jp.values()), jp),
            self.result("chinese_drift", mean(drift.values()), drift),
            self.result("broken_char_share", mean(broken.values()), broken),
            self.result("replacement_chars", mean(fffd.values()), fffd),
            self.result("control_chars", mean(ctrl.values()), ctrl),
            self.result("sentence_end_ok", mean(ends.values()), ends),
            self.result("unknown_word_rate", mean(unk.values()), unk),
            self.result("symbol_token_share", mean(sym.values()), sym),
        ]
        skipped: dict[str, str] = {}
        why_nll = self._nll_unavailable(ctx)
        if why_nll is None:
            metrics.append(self.result("answer_nll_reference", mean(nll.values()), nll, note=note))
        else:
            skipped["answer_nll_reference"] = why_nll
        samples = [
            SampleRecord(item_id=i, prompt=p.prompt, response=t)
            for i, p, t in zip(ids, self.prompts, texts, strict=True)
        ]
        findings = []
        n_drift = sum(d for d, _ in drift_pairs)
        if n_drift:
            findings.append(
                Finding(
                    severity="warning",
                    metric="chinese_drift",
                    message=f"{n_drift} sentence(s) have four or more kanji and no kana: Chinese, not Japanese.",
                )
            )
        n_fffd = int(sum(v or 0 for v in fffd.values()))
        if n_fffd:
            findings.append(
                Finding(
                    severity="info",
                    metric="replacement_chars",
                    message=f"{n_fffd} U+FFFD character(s) in the answers: a multi-byte character was cut in half.",
                )
            )
        return SuiteResult(
            name=self.name,
            version=self.version,
            data_hash=self.data_hash(),
            n_items=len(ids),
            metrics=metrics,
            samples=samples,
            findings=findings,
            skipped=skipped,
        )

"""Repetition and degeneration: does the model loop, collapse, or answer everything the same way?

Scores the runner's greedy generations for the open prompts (the fluency suite asks for the same
prompts, and the runner generates each once). Per response, after NFKC: longest single-character
run, looping-tail share, character 4-gram seq-rep, symbol share, a length-aware compression ratio,
EOS reached; across responses: n-gram uniqueness and character self-BLEU (one canned answer to
every prompt), and corpus distinct-2. Short answers (< 50 characters) only get the signals that
stay meaningful there (see ``dpo_harness.suites.metrics.repetition.profile``).

An empty answer is counted (``empty_answer_share``) and scores nothing else: every other signal
would read it as *better* (no run, no loop, no symbols, EOS reached, nothing shared with the
other answers), so a model that answers nothing must not pass by absence. Self-BLEU, n-gram
uniqueness and distinct-2 are taken over the answers that have text.
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
    MetricSpec,
    Request,
    SampleRecord,
    SuiteResult,
)
from dpo_harness.suites.common import OpenPrompt, load_items, mean, open_prompts_path, user_prompt
from dpo_harness.suites.metrics.repetition import distinct_n, ngram_uniqueness, profile, self_bleu

__all__ = ["DEGENERATE_RULES", "RepetitionSuite", "is_degenerate", "is_empty_answer"]

# Per-response loop signals are mostly 0 with rare spikes, so their means are gated by hard limits
# only; the paired comparison with the baseline runs on the binary per-response verdict below
# (degenerate or not), where one looping answer is one discordant pair, not an outlier that
# swamps a bootstrap interval.
# A response is degenerate when any of these holds (human Japanese: run ≤ 5, tail 0, rep-4 ≤ 0.25;
# docs/metrics.md §1.3). The cut-offs sit well inside the gap between the two populations.
DEGENERATE_RULES = {"longest_char_run": 20, "tail_loop_fraction": 0.5, "char_seq_rep4": 0.6}


def is_empty_answer(text: str) -> bool:
    """Nothing to score: no characters but whitespace (the end token came first)."""
    return not text.strip()


def is_degenerate(run: int, tail: float, rep4: float | None) -> bool:
    return (
        run >= DEGENERATE_RULES["longest_char_run"]
        or tail >= DEGENERATE_RULES["tail_loop_fraction"]
        or (rep4 is not None and rep4 >= DEGENERATE_RULES["char_seq_rep4"])
    )


@register_suite
class RepetitionSuite(Suite):
    name = "repetition"
    # v2: empty answers counted (empty_answer_share) and scored by nothing else; eos_rate has a
    #     hard limit (answers cut at max_new_tokens)
    version = "2"
    description = (
        "Loops, '！！！！' runs, looping tails, canned answers, missing EOS, empty answers."
    )
    scoring_modules = ("dpo_harness.suites.common", "dpo_harness.suites.metrics.repetition")
    on_empty_answers: ClassVar[Mapping[str, str]] = {
        "empty_answer_share": "hard-fail",
        "degenerate_share": "unscorable",
        "symbol_share": "unscorable",
        "eos_rate": "unscorable",
        "ngram_uniqueness": "unscorable",
        "self_bleu": "unscorable",
    }

    def __init__(self, data_path: Path | None = None) -> None:
        super().__init__(data_path)
        self.path = data_path or open_prompts_path()
        self.prompts: list[OpenPrompt] = load_items(self.path, OpenPrompt, what="open prompt")

    def data_hash(self) -> str:
        return hash_files([self.path])

    def metric_specs(self) -> list[MetricSpec]:
        share: dict[str, Any] = dict(unit="share")
        return [
            MetricSpec(
                name="empty_answer_share",
                description="responses with no text (the end token first)",
                direction=Direction.LOWER,
                hard_max=0.5,
                margin=0.1,
                binary=True,
                **share,
            ),
            MetricSpec(
                name="degenerate_share",
                description="responses with a run >= 20, a looping tail >= 0.5 or 4-gram rep >= 0.6",
                direction=Direction.LOWER,
                hard_max=0.5,
                margin=0.1,
                binary=True,
                **share,
            ),
            MetricSpec(
                name="longest_char_run",
                description="mean longest run of one character (NFKC; ー…・ etc. allowed)",
                direction=Direction.LOWER,
                unit="chars",
                hard_max=20.0,
            ),
            MetricSpec(
                name="tail_loop_fraction",
                description="mean share of the response covered by a periodic looping tail",
                direction=Direction.LOWER,
                hard_max=0.5,
                **share,
            ),
            MetricSpec(
                name="char_seq_rep4",
                description="mean character 4-gram seq-rep (responses >= 50 chars)",
                direction=Direction.LOWER,
                hard_max=0.5,
                **share,
            ),
            MetricSpec(
                name="symbol_share",
                description="mean share of punctuation/symbol characters",
                direction=Direction.LOWER,
                hard_max=0.3,
                margin=0.05,
                **share,
            ),
            MetricSpec(
                name="compression_excess",
                description="zlib ratio / human p99 ratio at the same length (>1: more repetitive than any human text)",
                direction=Direction.LOWER,
                hard_max=2.0,
                unit="ratio",
            ),
            MetricSpec(
                name="eos_rate",
                description="responses that ended with an end token before the length limit",
                direction=Direction.HIGHER,
                hard_min=0.5,  # most answers cut at max_new_tokens: raise it, or the model loops
                margin=0.15,
                binary=True,
                **share,
            ),
            MetricSpec(
                name="ngram_uniqueness",
                description="mean share of a response's char 4-grams found in no other response",
                direction=Direction.HIGHER,
                hard_min=0.1,
                margin=0.15,
                **share,
            ),
            MetricSpec(
                name="self_bleu",
                description="mean character BLEU of each response against all others",
                direction=Direction.LOWER,
                hard_max=90.0,
                margin=10.0,
                unit="BLEU",
            ),
            MetricSpec(
                name="distinct_2",
                description="corpus-level distinct character bigrams / all bigrams",
                direction=Direction.INFO,
                **share,
            ),
        ]

    def _requests(self) -> list[GenerateRequest]:
        return [GenerateRequest(prompt=user_prompt(p.prompt)) for p in self.prompts]

    def plan(self, ctx: SuiteContext) -> list[Request]:
        return list(self._requests())

    def score(self, ctx: SuiteContext, responses: Responses) -> SuiteResult:
        gens = [responses[r] for r in self._requests()]
        ids = [p.id for p in self.prompts]
        texts = [g.text for g in gens]
        empty = [is_empty_answer(t) for t in texts]
        profiles = [profile(t) for t in texts]
        spoken = [t for t, e in zip(texts, empty, strict=True) if not e]
        uniq_spoken = iter(ngram_uniqueness(spoken))
        bleu_spoken = iter(self_bleu(spoken))
        uniq = [None if e else next(uniq_spoken) for e in empty]
        bleu = [None if e else next(bleu_spoken) for e in empty]

        def col(values: list[Any]) -> dict[str, float | None]:
            """Per item; None where the answer is empty (it would read as better on every signal)."""
            return {
                i: (None if v is None or e else float(v))
                for i, v, e in zip(ids, values, empty, strict=True)
            }

        degenerate = col(
            [
                is_degenerate(pr.longest_char_run, pr.tail_loop_fraction, pr.char_seq_rep4)
                for pr in profiles
            ]
        )
        run = col([pr.longest_char_run for pr in profiles])
        tail = col([pr.tail_loop_fraction for pr in profiles])
        rep4 = col([pr.char_seq_rep4 for pr in profiles])
        sym = col([pr.symbol_share for pr in profiles])
        comp = col([pr.compression_ratio_excess for pr in profiles])
        eos = col([g.hit_eos for g in gens])
        uniq_d = col(uniq)
        bleu_d = col(bleu)
        empty_d = {i: float(e) for i, e in zip(ids, empty, strict=True)}
        metrics = [
            self.result("empty_answer_share", mean(empty_d.values()), empty_d),
            self.result("degenerate_share", mean(degenerate.values()), degenerate),
            self.result("longest_char_run", mean(run.values()), run),
            self.result("tail_loop_fraction", mean(tail.values()), tail),
            self.result("char_seq_rep4", mean(rep4.values()), rep4),
            self.result("symbol_share", mean(sym.values()), sym),
            self.result("compression_excess", mean(comp.values()), comp),
            self.result("eos_rate", mean(eos.values()), eos),
            self.result("ngram_uniqueness", mean(uniq_d.values()), uniq_d),
            self.result("self_bleu", mean(bleu_d.values()), bleu_d),
            self.result("distinct_2", distinct_n(spoken, 2) if spoken else None),
        ]
        samples = [
            SampleRecord(
                item_id=i,
                prompt=p.prompt,
                response=t,
                extra={"chars": pr.n_chars, "short": pr.is_short, "hit_eos": g.hit_eos},
            )
            for i, p, t, pr, g in zip(ids, self.prompts, texts, profiles, gens, strict=True)
        ]
        findings = []
        n_empty = sum(empty)
        if n_empty:
            findings.append(
                Finding(
                    severity="error" if n_empty == len(ids) else "warning",
                    metric="empty_answer_share",
                    message=(
                        f"{n_empty} of {len(ids)} answers are empty (the end token came first): "
                        "nothing to score on them."
                    ),
                )
            )
        n_deg = int(sum(v or 0 for v in degenerate.values()))
        if n_deg:
            worst = max(ids, key=lambda i: run[i] or 0)
            findings.append(
                Finding(
                    severity="warning",
                    metric="degenerate_share",
                    message=(
                        f"{n_deg} of {len(ids)} responses are degenerate (loops or runs); the longest run is "
                        f"{int(run[worst] or 0)} characters in {worst}."
                    ),
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
        )

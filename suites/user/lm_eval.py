"""lm-evaluation-harness tasks as suites: the same documents, prompts and per-item scores.

What lm-eval 0.4 does for a zero-shot task, without ``--apply_chat_template``, and what this
module reproduces:

- the prompt of a document is ``description + doc_to_text(doc)``, plain text (no chat
  template, no system prompt); ``doc_to_text``, ``doc_to_target``, ``doc_to_choice`` and
  ``description`` are a column name or a Jinja template (rendered here in a sandbox, with
  lm-eval's ``regex_replace`` filter and strict undefined variables);
- ``multiple_choice``: one log-likelihood per choice of ``target_delimiter + choice`` after the
  prompt, with the prompt's trailing whitespace moved into the continuation (as lm-eval encodes
  the pair); ``acc`` takes the argmax of the sums, ``acc_norm`` of the sums per character of the
  choice, ``acc_bytes`` per UTF-8 byte of the choice, ``exact_match`` asks whether the gold
  choice is the greedy continuation; a target is an index, a choice's text, or a list of
  indices (any of them counts);
- ``generate_until``: greedy generation of at most ``max_gen_toks`` tokens from the prompt, cut
  at the first occurrence of each ``until`` string in turn; ``exact_match`` compares it with the
  target after lm-eval's ``regexes_to_ignore``, ``ignore_case``, ``ignore_punctuation`` and
  ``ignore_numbers``.

Agreement is tested against lm-eval's ``HFLM`` on the demo model (per-item log-likelihoods
within 1e-4, identical accuracies). One difference is known: lm-eval tokenises with the
tokenizer's special tokens (a BOS for Llama-style tokenizers); dpo-harness never adds them, so
parity holds for tokenizers that add none (Qwen2 and the demo model).
"""

from __future__ import annotations

import ast
import math
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from dpo_harness.errors import BadInputError
from dpo_harness.evaluation.responses import Responses
from dpo_harness.evaluation.suite import SuiteContext
from dpo_harness.schema import (
    Direction,
    Finding,
    GenerateRequest,
    LoglikelihoodRequest,
    MetricSpec,
    Request,
    SampleRecord,
    SuiteResult,
)
from dpo_harness.suites.common import mean
from dpo_harness.suites.user.base import UserSuite
from dpo_harness.suites.user.declaration import LmEvalEntry, LmEvalMetric, LmEvalTask
from dpo_harness.suites.user.native import row_ids
from dpo_harness.suites.user.sources import Row, Rows

__all__ = ["LmEvalSuite", "argmax", "cut_at_stop", "exact_match", "render_template"]

# Fields of the task that only locate data or are bookkeeping: the rows' hash covers the data.
_NOT_DECLARATION = {
    "task",
    "metadata",
    "tag",
    "task_alias",
    "group_alias",
    "dataset_path",
    "dataset_name",
    "dataset_kwargs",
    "test_split",
    "validation_split",
    "training_split",
    "fewshot_split",
    "should_decontaminate",
    "doc_to_decontamination_query",
}

_DESCRIPTIONS = {
    "acc": "argmax of the choices' log-likelihoods (lm-eval acc)",
    "acc_norm": "argmax of log-likelihood per character of the choice (lm-eval acc_norm)",
    "acc_bytes": "argmax of log-likelihood per UTF-8 byte of the choice (lm-eval acc_bytes)",
}


# --------------------------------------------------------------------------- templates


def _regex_replace(text: str, pattern: str, repl: str, count: int = 0) -> str:
    return re.sub(pattern, repl, text, count=count)


@lru_cache(maxsize=1)
def _environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["regex_replace"] = _regex_replace
    return env


@lru_cache(maxsize=512)
def _compiled(template: str) -> Any:
    return _environment().from_string(template)


def render_template(template: str, doc: Row) -> str:
    """Render a task template over one document, in a sandbox (as lm-eval's apply_template)."""
    return str(_compiled(template).render(**doc))


# --------------------------------------------------------------------------- scoring helpers


def argmax(values: list[float]) -> int:
    """numpy's argmax: the first maximum, or the first NaN when there is one."""
    best = 0
    for k, v in enumerate(values):
        if math.isnan(v):
            return k
        if v > values[best]:
            best = k
    return best


def cut_at_stop(text: str, until: list[str]) -> str:
    """The generation before each stop string, in turn (lm-eval's postprocessing)."""
    for term in until:
        if term:
            text = text.split(term)[0]
    return text


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_NO_DIGITS = str.maketrans("", "", string.digits)


def exact_match(prediction: str, reference: str, metric: LmEvalMetric) -> bool:
    """lm-eval's exact_match with its options, for one pair."""
    for pattern in metric.regexes_to_ignore or []:
        prediction = re.sub(pattern, "", prediction)
        reference = re.sub(pattern, "", reference)
    if metric.ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    if metric.ignore_punctuation:
        prediction = prediction.translate(_NO_PUNCTUATION)
        reference = reference.translate(_NO_PUNCTUATION)
    if metric.ignore_numbers:
        prediction, reference = prediction.translate(_NO_DIGITS), reference.translate(_NO_DIGITS)
    # lm-eval compares numpy fixed-width strings, which drop trailing NUL characters.
    return prediction.rstrip("\0") == reference.rstrip("\0")


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class _ChoiceDoc:
    id: str
    context: str
    choices: tuple[str, ...]
    gold: tuple[int, ...]  # one index, or several (a list target); -100: not among the choices


@dataclass(frozen=True)
class _GenerationDoc:
    id: str
    context: str
    golds: tuple[str, ...]  # any of them counts (a list target)


class _Reader:
    """The task's doc_to_* fields applied to one document, as lm-eval applies them."""

    def __init__(self, task: LmEvalTask, task_file: Path, columns: list[str]) -> None:
        self.task = task
        self.file = task_file
        self.columns = set(columns)

    def fail(self, field: str, k: int, what: str) -> BadInputError:
        return BadInputError(f"{self.file}: {field} on document {k}: {what}", f"fix {field}")

    def render(self, field: str, template: str, doc: Row, k: int) -> str:
        from jinja2 import TemplateError, TemplateSyntaxError

        try:
            return render_template(template, doc)
        except TemplateSyntaxError as exc:
            raise BadInputError(
                f"{self.file}: {field} is not a valid Jinja template ({exc.message}, line {exc.lineno})",
                f"fix {field}",
            ) from None
        except TemplateError as exc:  # undefined variables, sandbox violations
            raise self.fail(field, k, f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:  # a template may call anything the sandbox allows
            raise self.fail(field, k, f"{type(exc).__name__}: {exc}") from None

    def text(self, doc: Row, k: int) -> str:
        t = self.task.doc_to_text
        value: Any = doc[t] if t in self.columns else self.render("doc_to_text", t, doc, k)
        # lm-eval reads a rendered number as "one context per choice" (winogrande style)
        per_choice = (
            t not in self.columns
            and isinstance(value, str)
            and value.isdigit()
            and self.task.doc_to_choice is not None
        )
        if isinstance(value, str) and not per_choice:
            return value
        raise self.fail(
            "doc_to_text",
            k,
            f"gives {value!r}, not a text (a number selects a context per choice, as in "
            "winogrande: not supported)",
        )

    def description(self, doc: Row, k: int) -> str:
        d = self.task.description
        if not d:
            return ""
        value = doc[d] if d in doc else self.render("description", d, doc, k)
        return str(value)

    def target(self, doc: Row, k: int) -> Any:
        t = self.task.doc_to_target
        if isinstance(t, int | list):
            return t
        if t in self.columns:
            return doc[t]
        value = self.render("doc_to_target", t, doc, k)
        if value.isdigit() and self.task.doc_to_choice is not None:
            try:
                return ast.literal_eval(value)
            except (SyntaxError, ValueError):
                raise self.fail("doc_to_target", k, f"renders {value!r}, not an index") from None
        if len(value) >= 2 and value[0] == "[" and value[-1] == "]":
            try:
                return ast.literal_eval(value)
            except (SyntaxError, ValueError):
                return value
        return value

    def choices(self, doc: Row, k: int) -> list[str]:
        c = self.task.doc_to_choice
        value: Any
        if isinstance(c, str):
            if c in self.columns:
                value = doc[c]
            else:
                rendered = self.render("doc_to_choice", c, doc, k)
                try:
                    value = ast.literal_eval(rendered)
                except (SyntaxError, ValueError):
                    raise self.fail(
                        "doc_to_choice", k, f"renders {rendered[:80]!r}, not a Python list"
                    ) from None
        elif isinstance(c, dict):
            value = list(c.values())
        else:
            value = c
        if (
            not isinstance(value, list | tuple)
            or not value
            or not all(isinstance(x, str) and x for x in value)
        ):
            raise self.fail("doc_to_choice", k, f"gives {value!r}, not a list of non-empty texts")
        return list(value)

    def choice_doc(self, doc: Row, k: int, item_id: str) -> _ChoiceDoc:
        choices = self.choices(doc, k)
        gold = self.target(doc, k)
        n = len(choices)
        if isinstance(gold, list):
            if not all(isinstance(g, int) and not isinstance(g, bool) for g in gold):
                raise self.fail(
                    "doc_to_target", k, f"gives {gold!r}: a list target must hold choice indices"
                )
            return _ChoiceDoc(
                item_id,
                self.context(doc, k),
                tuple(choices),
                tuple(g if g < n else -100 for g in gold),
            )
        if isinstance(gold, str):
            index = choices.index(gold) if gold in choices else -100
        elif isinstance(gold, int):
            index = int(gold) if gold < n else -100
        else:
            raise self.fail("doc_to_target", k, f"gives {gold!r}: expected a choice index or text")
        return _ChoiceDoc(item_id, self.context(doc, k), tuple(choices), (index,))

    def generation_doc(self, doc: Row, k: int, item_id: str) -> _GenerationDoc:
        gold = self.target(doc, k)
        if self.task.doc_to_choice is not None:
            choices = self.choices(doc, k)
            if not isinstance(gold, int) or not -len(choices) <= gold < len(choices):
                raise self.fail(
                    "doc_to_target", k, f"gives {gold!r}: not an index into doc_to_choice"
                )
            return _GenerationDoc(item_id, self.context(doc, k), (choices[gold],))
        if isinstance(gold, list):
            if not gold or not all(isinstance(g, str) for g in gold):
                raise self.fail(
                    "doc_to_target", k, f"gives {gold!r}: a list target must hold texts"
                )
            return _GenerationDoc(item_id, self.context(doc, k), tuple(gold))
        return _GenerationDoc(item_id, self.context(doc, k), (str(gold),))

    def context(self, doc: Row, k: int) -> str:
        return self.description(doc, k) + self.text(doc, k)


# --------------------------------------------------------------------------- the suite


class LmEvalSuite(UserSuite):
    """An lm-eval multiple_choice or generate_until task, scored per item as lm-eval scores it."""

    description = "An lm-evaluation-harness task."

    def __init__(
        self,
        entry: LmEvalEntry,
        task: LmEvalTask,
        docs: Rows,
        *,
        declared_in: Path,
        rows_hash: str,
    ) -> None:
        self.task = task
        reader = _Reader(task, entry.task, docs.columns)
        ids = row_ids(docs, entry.id_field, where=f"{declared_in}: suite {entry.name!r}")
        self.choice_docs: list[_ChoiceDoc] = []
        self.generation_docs: list[_GenerationDoc] = []
        for k, doc in enumerate(docs.rows):
            if task.output_type == "multiple_choice":
                self.choice_docs.append(reader.choice_doc(doc, k, ids[k]))
            else:
                self.generation_docs.append(reader.generation_doc(doc, k, ids[k]))
        self.generation = task.generation()
        super().__init__(
            entry,
            declared_in=declared_in,
            rows_hash=rows_hash,
            declaration={
                "id_field": entry.id_field,
                "task": task.model_dump(mode="json", exclude=_NOT_DECLARATION),
            },
        )

    def default_specs(self) -> list[MetricSpec]:
        specs = []
        for m in self.task.metrics():
            if m.metric == "exact_match":
                what = (
                    "the gold choice is the greedy continuation (lm-eval exact_match)"
                    if self.task.output_type == "multiple_choice"
                    else "the generation, cut at `until`, equals the target (lm-eval exact_match)"
                )
            else:
                what = _DESCRIPTIONS[m.metric]
            specs.append(
                MetricSpec(
                    name=m.metric,
                    description=what,
                    direction=Direction.HIGHER if m.higher_is_better else Direction.LOWER,
                    unit="share",
                    binary=True,
                    margin=0.05 if self.task.output_type == "multiple_choice" else 0.1,
                )
            )
        return specs

    # ------------------------------------------------------------------ requests

    def _choice_requests(self, doc: _ChoiceDoc) -> list[LoglikelihoodRequest]:
        # lm-eval moves the context's trailing whitespace into the continuation before encoding.
        context = doc.context.rstrip()
        moved = doc.context[len(context) :]
        delimiter = self.task.target_delimiter
        return [
            LoglikelihoodRequest(context=context, continuation=moved + delimiter + choice)
            for choice in doc.choices
        ]

    def _generation_request(self, doc: _GenerationDoc) -> GenerateRequest:
        return GenerateRequest(prompt=doc.context, max_new_tokens=self.generation.max_gen_toks)

    def plan(self, ctx: SuiteContext) -> list[Request]:
        reqs: list[Request] = []
        for doc in self.choice_docs:
            reqs.extend(self._choice_requests(doc))
        reqs.extend(self._generation_request(doc) for doc in self.generation_docs)
        return reqs

    # ------------------------------------------------------------------ scoring

    def score(self, ctx: SuiteContext, responses: Responses) -> SuiteResult:
        if self.task.output_type == "multiple_choice":
            per_metric, samples, findings = self._score_choices(responses)
        else:
            per_metric, samples, findings = self._score_generations(responses)
        metrics = [
            self.result(name, mean(values.values()), values) for name, values in per_metric.items()
        ]
        return self.adopt(
            SuiteResult(
                name=self.name,
                version=self.version,
                data_hash=self.data_hash(),
                n_items=len(self.choice_docs) + len(self.generation_docs),
                metrics=metrics,
                samples=samples,
                findings=findings,
            )
        )

    def _score_choices(
        self, responses: Responses
    ) -> tuple[dict[str, dict[str, float | None]], list[SampleRecord], list[Finding]]:
        names = [m.metric for m in self.task.metrics()]
        per: dict[str, dict[str, float | None]] = {n: {} for n in names}
        samples: list[SampleRecord] = []
        off_choices = 0
        for doc in self.choice_docs:
            answers = [responses[r] for r in self._choice_requests(doc)]
            lls = [a.logprob for a in answers]
            greedy = [a.is_greedy for a in answers]
            picks = {
                "acc": argmax(lls),
                "acc_norm": argmax(
                    [ll / float(len(c)) for ll, c in zip(lls, doc.choices, strict=True)]
                ),
                "acc_bytes": argmax(
                    [
                        ll / float(len(c.encode("utf-8")))
                        for ll, c in zip(lls, doc.choices, strict=True)
                    ]
                ),
            }
            off_choices += -100 in doc.gold
            for name in names:
                if name == "exact_match":
                    hit = any(
                        greedy[g] for g in doc.gold if g != -100 and -len(greedy) <= g < len(greedy)
                    )
                else:
                    hit = picks[name] in doc.gold
                per[name][doc.id] = float(hit)
            gold = next((g for g in doc.gold if g != -100), None)
            samples.append(
                SampleRecord(
                    item_id=doc.id,
                    prompt=doc.context,
                    response=doc.choices[picks["acc"]],
                    target=None if gold is None else doc.choices[gold],
                    extra={"logprobs": lls, "is_greedy": greedy, "gold": list(doc.gold)},
                )
            )
        findings = []
        if off_choices:
            findings.append(
                Finding(
                    severity="warning",
                    message=(
                        f"{off_choices} item(s) have a target that is not one of their choices: "
                        "they count as wrong (as in lm-eval)"
                    ),
                )
            )
        return per, samples, findings

    def _score_generations(
        self, responses: Responses
    ) -> tuple[dict[str, dict[str, float | None]], list[SampleRecord], list[Finding]]:
        metrics = self.task.metrics()
        until = list(self.generation.until or [])
        per: dict[str, dict[str, float | None]] = {m.metric: {} for m in metrics}
        samples: list[SampleRecord] = []
        for doc in self.generation_docs:
            raw = responses[self._generation_request(doc)].text
            prediction = cut_at_stop(raw, until)
            for m in metrics:
                per[m.metric][doc.id] = float(any(exact_match(prediction, g, m) for g in doc.golds))
            samples.append(
                SampleRecord(
                    item_id=doc.id,
                    prompt=doc.context,
                    response=prediction,
                    target=" | ".join(doc.golds),
                    extra={"generation": raw} if raw != prediction else {},
                )
            )
        return per, samples, []

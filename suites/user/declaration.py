"""The formats of user suites: a suites file, and an lm-evaluation-harness task YAML.

A suites file is a mapping whose one key, ``suites``, lists the suites::

    suites:
      - name: adtech-glossary          # letters, digits, '.', '_', '-'; not a built-in suite's name
        version: "1"                   # yours: bump it when you change the data or the scoring
        kind: short_answer             # multiple_choice | short_answer | numeric | open_prompts | lm_eval
        data: {path: glossary.jsonl}   # or {dataset: ID, split: test}; relative to this file
        fields: {question: q, accepted: answers}
        metrics:
          short_answer_accuracy: {margin: 0.1, hard_min: 0.2}

An lm-evaluation-harness task YAML (``output_type: multiple_choice`` or ``generate_until``) is
a suite too: given on its own (its ``task`` is the name, ``metadata.version`` the version) or
named by an entry of kind ``lm_eval``. What lm-eval runs as Python (``!function`` hooks,
``process_results``, ``process_docs``, filters) is refused with the field it is in: a suite
here is data and templates, never code.

Every error names the file and the field. The models are frozen; a suite hashes the part of
its declaration that decides numbers, with the defaults applied (``UserSuite.identity``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from dpo_harness.errors import BadInputError
from dpo_harness.evaluation.suite import USER_SUITES_DOC
from dpo_harness.files import validate_config
from dpo_harness.schema import Direction, MetricSpec
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = [
    "DataSource",
    "FunctionRef",
    "LmEvalEntry",
    "LmEvalMetric",
    "LmEvalTask",
    "MetricPolicy",
    "MultipleChoiceEntry",
    "NumericEntry",
    "OpenPromptsEntry",
    "ShortAnswerEntry",
    "SuiteEntry",
    "SuitesFile",
    "load_lm_eval_task",
    "read_declarations",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_text(value: Any) -> Any:
    """YAML reads ``version: 1`` as a number; a version is text ("1", "1.0")."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Version = Annotated[str, BeforeValidator(_as_text), Field(min_length=1)]


class MetricPolicy(_Frozen):
    """How one metric is judged; a field left out keeps the kind's default.

    ``margin: null`` reports the metric without gating it against the baseline (so does
    ``direction: info``); ``hard_min: null`` / ``hard_max: null`` drop a default hard limit.
    """

    direction: Direction | None = None
    margin: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    hard_min: float | None = Field(default=None, allow_inf_nan=False)
    hard_max: float | None = Field(default=None, allow_inf_nan=False)

    def apply(self, spec: MetricSpec) -> MetricSpec:
        return spec.model_copy(update={k: getattr(self, k) for k in self.model_fields_set})


class DataSource(_Frozen):
    """Where a suite's rows come from: one local file, or one split of a ``datasets`` id."""

    path: Path | None = (
        None  # .jsonl, .json (a list of objects) or .parquet; relative: to the suites file
    )
    dataset: str | None = None  # a datasets id (offline, it must already be in the datasets cache)
    config: str | None = None  # the dataset's configuration name
    split: str | None = None  # required with dataset
    format: Literal["jsonl", "json", "parquet"] | None = None  # default: from the file suffix
    # The field that names each row (per-item results are paired by it); without it in the
    # rows, rows are numbered from 0. null: always numbered.
    id_field: str | None = "id"

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        if (self.path is None) == (self.dataset is None):
            raise ValueError("give exactly one of path (a local file) and dataset (a datasets id)")
        if self.dataset is not None and self.split is None:
            raise ValueError("split is required with dataset, e.g. split: test")
        if self.path is not None and (self.config is not None or self.split is not None):
            raise ValueError("config and split belong to a dataset, not to a file")
        if self.dataset is not None and self.format is not None:
            raise ValueError("format belongs to a file, not to a dataset")
        return self


class MultipleChoiceFields(_Frozen):
    question: str = "question"
    choices: str = "choices"  # a list of texts
    answer: str = "answer"  # the 0-based index of the right choice, or its text
    category: str = "category"  # optional in the rows


class ShortAnswerFields(_Frozen):
    question: str = "question"
    accepted: str = "accepted"  # a text or a list of texts
    category: str = "category"


class NumericFields(_Frozen):
    question: str = "question"
    answer: str = "answer"
    unit: str = "unit"  # optional in the rows, as are the tolerances
    rel_tol: str = "rel_tol"
    abs_tol: str = "abs_tol"
    category: str = "category"


class OpenPromptFields(_Frozen):
    prompt: str = "prompt"
    category: str = "category"


class _Entry(_Frozen):
    name: str = Field(pattern=NAME_PATTERN, max_length=100)
    version: Version
    description: str = ""
    metrics: dict[str, MetricPolicy] = Field(default_factory=dict)


class MultipleChoiceEntry(_Entry):
    """Log-likelihood of each choice as the answer to the question (the adtech suite's scoring)."""

    kind: Literal["multiple_choice"]
    data: DataSource
    fields: MultipleChoiceFields = Field(default_factory=MultipleChoiceFields)


class ShortAnswerEntry(_Entry):
    """A greedy answer that must contain an accepted text (the adtech suite's scoring)."""

    kind: Literal["short_answer"]
    data: DataSource
    fields: ShortAnswerFields = Field(default_factory=ShortAnswerFields)


class NumericEntry(_Entry):
    """The last number of a greedy answer within tolerance (the adtech suite's scoring)."""

    kind: Literal["numeric"]
    data: DataSource
    fields: NumericFields = Field(default_factory=NumericFields)


class OpenPromptsEntry(_Entry):
    """Open prompts scored by the repetition and fluency suites' metrics."""

    kind: Literal["open_prompts"]
    data: DataSource
    fields: OpenPromptFields = Field(default_factory=OpenPromptFields)


class LmEvalEntry(_Entry):
    """An lm-evaluation-harness task YAML (relative: to the suites file)."""

    kind: Literal["lm_eval"]
    task: Path
    id_field: str | None = None  # a doc field naming each item; default: the doc's index


SuiteEntry = Annotated[
    MultipleChoiceEntry | ShortAnswerEntry | NumericEntry | OpenPromptsEntry | LmEvalEntry,
    Field(discriminator="kind"),
]


class SuitesFile(_Frozen):
    suites: list[SuiteEntry] = Field(min_length=1)


# --------------------------------------------------------------------------- lm-eval tasks


class FunctionRef:
    """An lm-eval ``!function module.name`` tag: Python we refuse to run, kept to name it."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __repr__(self) -> str:
        return f"!function {self.target}"


class _TaskLoader(yaml.SafeLoader):
    """Safe YAML that reads ``!function`` tags as :class:`FunctionRef` instead of failing."""


def _function_tag(loader: yaml.SafeLoader, node: yaml.Node) -> FunctionRef:
    return FunctionRef(str(loader.construct_scalar(node)))  # type: ignore[arg-type]


_TaskLoader.add_constructor("!function", _function_tag)


class LmEvalMetric(_Frozen):
    """One ``metric_list`` entry. Only the metrics dpo-harness computes as lm-eval does."""

    metric: Literal["acc", "acc_norm", "acc_bytes", "exact_match"]
    aggregation: Literal["mean"] = "mean"
    higher_is_better: bool = True
    # exact_match options (lm-eval passes them to its exact_match function)
    ignore_case: bool = False
    ignore_punctuation: bool = False
    ignore_numbers: bool = False
    regexes_to_ignore: list[str] | None = None


class LmEvalGeneration(_Frozen):
    """``generation_kwargs``: greedy only, cut at ``until``, at most ``max_gen_toks`` tokens."""

    until: list[str] | None = None
    max_gen_toks: int = Field(default=256, ge=1, le=8192)  # lm-eval HFLM's default
    do_sample: Literal[False] = False
    temperature: float = Field(default=0.0, ge=0.0, le=0.0)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if isinstance(data.get("until"), str):
                data["until"] = [data["until"]]
            # lm-eval's aliases of max_gen_toks (max_gen_toks wins, as in lm-eval)
            for alias in ("max_new_tokens", "max_tokens", "max_completion_tokens"):
                if alias in data:
                    value = data.pop(alias)
                    data.setdefault("max_gen_toks", value)
        return data


class LmEvalTask(_Frozen):
    """The fields of an lm-eval task config that dpo-harness reads (zero-shot, no task code)."""

    task: str = Field(pattern=NAME_PATTERN, max_length=100)
    output_type: Literal["multiple_choice", "generate_until"] = (
        "generate_until"  # lm-eval's default
    )
    dataset_path: str
    dataset_name: str | None = None
    dataset_kwargs: dict[str, Any] = Field(default_factory=dict)
    test_split: str | None = None
    validation_split: str | None = None
    training_split: str | None = None  # only for few-shot examples: unused
    fewshot_split: str | None = None  # unused (zero-shot)
    doc_to_text: str
    doc_to_target: str | int | list[Any]
    doc_to_choice: str | list[Any] | dict[str, Any] | None = None
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    num_fewshot: Literal[0] | None = None
    generation_kwargs: LmEvalGeneration | None = None
    metric_list: list[LmEvalMetric] | None = None
    repeats: Literal[1] = 1
    metadata: dict[str, Any] | None = None
    # Bookkeeping lm-eval keeps and dpo-harness ignores.
    tag: Any = None
    task_alias: Any = None
    group_alias: Any = None
    should_decontaminate: bool = False
    doc_to_decontamination_query: Any = None

    @model_validator(mode="after")
    def _check(self) -> LmEvalTask:
        if self.split is None:
            raise ValueError("set test_split (or validation_split): the split to evaluate")
        if self.output_type == "multiple_choice" and self.doc_to_choice is None:
            raise ValueError("a multiple_choice task needs doc_to_choice")
        unknown = set(self.dataset_kwargs) - {"data_files"}
        if unknown:
            raise ValueError(f"dataset_kwargs: only data_files is supported, not {sorted(unknown)}")
        metrics = self.metrics()
        if self.output_type == "generate_until" and any(m.metric != "exact_match" for m in metrics):
            raise ValueError("a generate_until task is scored by exact_match only")
        if len({m.metric for m in metrics}) != len(metrics):
            raise ValueError("metric_list names a metric twice")
        return self

    @property
    def split(self) -> str | None:
        """The split lm-eval evaluates: test if there is one, else validation."""
        return self.test_split if self.test_split is not None else self.validation_split

    def metrics(self) -> list[LmEvalMetric]:
        """``metric_list``, or lm-eval's default for the output type."""
        if self.metric_list is not None:
            return list(self.metric_list)
        names = ["acc", "acc_norm"] if self.output_type == "multiple_choice" else ["exact_match"]
        return [LmEvalMetric.model_validate({"metric": n}) for n in names]

    def generation(self) -> LmEvalGeneration:
        """``generation_kwargs`` as lm-eval completes them (until defaults to the fewshot delimiter)."""
        if self.generation_kwargs is None:
            return LmEvalGeneration(until=[self.fewshot_delimiter])
        if self.generation_kwargs.until is None:
            return self.generation_kwargs.model_copy(update={"until": [self.fewshot_delimiter]})
        return self.generation_kwargs

    @property
    def version(self) -> str | None:
        value = (self.metadata or {}).get("version")
        return None if value is None else str(_as_text(value))


# Fields of lm-eval tasks that run Python or need machinery dpo-harness does not have, with the
# fix a person can apply.
_UNSUPPORTED = {
    "process_results": "score with metric_list (acc, acc_norm, acc_bytes, exact_match)",
    "process_docs": "write the processed rows to a file and point dataset_path at it",
    "filter_list": "remove it: the generation is scored as cut at generation_kwargs.until",
    "use_prompt": "write the prompt as a doc_to_text template",
    "gen_prefix": "put the prefix at the end of doc_to_text",
    "fewshot_config": "remove it: tasks run zero-shot",
    "doc_to_image": "remove it: text tasks only",
    "doc_to_audio": "remove it: text tasks only",
    "custom_dataset": "point dataset_path at a file",
    "class": "declare the task in YAML",
    "group": "give each task of the group its own file",
    "task_list": "give each task of the group its own file",
    "unsafe_code": "remove it: dpo-harness runs no task code",
}


def _function_refs(value: Any, path: str) -> list[tuple[str, FunctionRef]]:
    if isinstance(value, FunctionRef):
        return [(path, value)]
    if isinstance(value, dict):
        return [r for k, v in value.items() for r in _function_refs(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [r for i, v in enumerate(value) for r in _function_refs(v, f"{path}[{i}]")]
    return []


def _read_yaml(path: Path, what: str) -> Any:
    if not path.is_file():
        raise BadInputError(f"{what} not found: {path}", "check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{path}: not UTF-8 text", f"save the {what} as UTF-8 YAML") from None
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror}", "check the path") from None
    try:
        return yaml.load(text, Loader=_TaskLoader)  # a SafeLoader subclass: no Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise BadInputError(
            f"{path}: cannot parse{where}: {exc}".splitlines()[0], "fix the YAML"
        ) from None


def _task_dict(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The task's mapping with ``include:`` files merged under it, as lm-eval merges them."""
    path = path.resolve()
    if path in seen:
        raise BadInputError(
            f"{path}: include cycle ({' -> '.join(p.name for p in (*seen, path))})",
            "remove the include that leads back to this file",
        )
    data = _read_yaml(path, "lm-eval task file")
    if not isinstance(data, dict):
        raise BadInputError(
            f"{path}: expected a mapping of task fields", "see the lm-eval task guide"
        )
    includes = data.pop("include", None)
    if includes is None:
        return data
    merged: dict[str, Any] = {}
    for inc in includes if isinstance(includes, list) else [includes]:
        if not isinstance(inc, str):
            raise BadInputError(f"{path}: include must name files, got {inc!r}", "fix 'include'")
        merged.update(_task_dict(path.parent / inc, (*seen, path)))
    merged.update(data)  # the including file's keys win
    return merged


def load_lm_eval_task(path: Path) -> LmEvalTask:
    """Read an lm-eval task YAML; anything dpo-harness cannot reproduce is refused by name."""
    data = _task_dict(Path(path))
    refs = _function_refs(data, "")
    if refs:
        where, ref = refs[0]
        field = where.lstrip(".")
        raise BadInputError(
            f"{path}: '{field}: {ref!r}' is a custom Python hook; dpo-harness runs no task code",
            f"write '{field}' as a field name or a Jinja template, or declare the suite natively ({USER_SUITES_DOC})",
        )
    for field, fix in _UNSUPPORTED.items():
        if field in data and data[field] not in (None, False):
            raise BadInputError(
                f"{path}: '{field}' is an lm-eval feature dpo-harness does not support", fix
            )
    if isinstance(data.get("task"), list):
        raise BadInputError(
            f"{path}: 'task' lists several tasks (a group)", "give each task its own file"
        )
    shots = data.get("num_fewshot")
    if isinstance(shots, int) and not isinstance(shots, bool) and shots > 0:
        raise BadInputError(
            f"{path}: 'num_fewshot: {shots}': few-shot prompts are not supported",
            "set num_fewshot: 0 (zero-shot), or put the examples in doc_to_text",
        )
    kind = data.get("output_type", "generate_until")
    if kind not in ("multiple_choice", "generate_until"):
        raise BadInputError(
            f"{path}: 'output_type: {kind}' is not supported",
            "use multiple_choice or generate_until",
        )
    repeats = data.get("repeats", 1)
    if repeats != 1:
        raise BadInputError(
            f"{path}: 'repeats: {repeats}': repeated sampling is not supported",
            "remove repeats: generation is greedy, one answer per item",
        )
    return validate_config(data, LmEvalTask, source=str(path))


# --------------------------------------------------------------------------- suites files


def read_declarations(path: Path) -> list[tuple[SuiteEntry, LmEvalTask | None]]:
    """The suites declared in ``path`` — a suites file or one lm-eval task YAML — in order.

    Relative paths in an entry (``data.path``, ``task``) are resolved against the file's folder.
    """
    path = Path(path)
    data = _read_yaml(path, "suite file")
    if isinstance(data, dict) and "suites" in data:
        declared = validate_config(data, SuitesFile, source=str(path))
        out: list[tuple[SuiteEntry, LmEvalTask | None]] = []
        seen: set[str] = set()
        for k, entry in enumerate(declared.suites):
            if entry.name in seen:
                raise BadInputError(
                    f"{path}: field 'suites.{k}.name': {entry.name!r} is declared twice",
                    "give every suite its own name",
                )
            seen.add(entry.name)
            entry = _resolved(entry, path.parent)
            task = load_lm_eval_task(entry.task) if isinstance(entry, LmEvalEntry) else None
            out.append((entry, task))
        return out
    if isinstance(data, dict) and "task" in data:
        task = load_lm_eval_task(path)
        if task.version is None:
            raise BadInputError(
                f"{path}: an lm-eval task used as a suite needs metadata.version",
                "add 'metadata: {version: 1.0}' (bump it when you change the task or its data)",
            )
        entry = LmEvalEntry(kind="lm_eval", name=task.task, version=task.version, task=path)
        return [(entry, task)]
    raise BadInputError(
        f"{path} is neither a suites file (a 'suites:' list) nor an lm-eval task (a 'task:' field)",
        f"see {USER_SUITES_DOC} for both formats",
    )


def _resolved(entry: SuiteEntry, folder: Path) -> SuiteEntry:
    """``entry`` with its relative file paths made relative to the suites file's folder."""
    if isinstance(entry, LmEvalEntry):
        if not entry.task.is_absolute():
            return entry.model_copy(update={"task": folder / entry.task})
        return entry
    source = entry.data
    if source.path is not None and not source.path.is_absolute():
        return entry.model_copy(
            update={"data": source.model_copy(update={"path": folder / source.path})}
        )
    return entry

"""dpo-harness as a pytest plugin: put a model behind the same CI gate as the code.

Registered through the ``pytest11`` entry point (``dpo_harness``); it only adds its options
unless ``--dpo-checkpoint`` or ``--dpo-endpoint`` is given (``pytest -p no:dpo_harness`` switches
it off entirely)::

    pytest --dpo-checkpoint PATH [--dpo-baseline FILE] [--dpo-suites numerical,adtech] [--dpo-base MODEL]
    pytest --dpo-endpoint URL --dpo-model NAME --dpo-base MODEL   # a served model as the candidate

Every evaluation setting of the CLI is here with ``dpo-`` in front (``--dpo-batch-size``,
``--dpo-suite-data``, ``--dpo-suite-file``, ``--dpo-max-new-tokens`` …, from
:mod:`dpo_harness.settings`), and so are the gate policy's (``--dpo-inconclusive``,
``--dpo-margin``, ``--dpo-seed``).

With the checkpoint given, a :class:`DpoGate` object is registered as a plugin; it keeps its
state in ``config.stash``. It runs the gate pipeline's *prepare* step at session start — a
missing checkpoint, no or an incompatible baseline, a bad option are pytest usage errors (exit
4) naming the pytest option — evaluates once, and turns every suite metric into a test item
named ``dpo[suite::metric]`` — so ``-k``, ``--lf``, JUnit XML and xdist see ordinary tests. A
failing item reads like a good assertion: the metric, the candidate and baseline values, the
paired interval, the margin or hard limit it broke, and the worst samples. Fixtures for your own
tests: ``dpo_report``, ``dpo_baseline``, ``dpo_decision`` and ``dpo_model`` (session-scoped).

Under pytest-xdist (``-n 2``) the controller evaluates once, before the workers start, and
publishes the result; each worker reads it (``workerinput``) instead of evaluating; the gate
table and the GitHub step summary are written once, by the controller.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from dpo_harness.settings import EVAL_OPTIONS, POLICY_OPTIONS, OptionSpec

if TYPE_CHECKING:
    from dpo_harness.evaluation.loading import LoadedModel
    from dpo_harness.gate.decision import MetricVerdict
    from dpo_harness.gate.pipeline import GatePlan, GateRun

__all__ = ["DpoGate", "GateFailure", "MetricItem"]

_KEY = pytest.StashKey["DpoGate"]()
_COLLECTOR = "dpo-harness"
_WORKER_KEY = "dpo_harness_published"  # workerinput: the controller's published gate directory
_PREFIX = "dpo_"


def _pytest_dest(spec: OptionSpec) -> str:
    return _PREFIX + spec.dest


def _add(group: Any, spec: OptionSpec) -> None:
    flag = "--dpo-" + spec.flag.lstrip("-")
    kw: dict[str, Any] = {"dest": _pytest_dest(spec), "help": spec.help, "default": None}
    if spec.metavar:
        kw["metavar"] = spec.metavar
    if spec.kind == "int":
        kw["type"] = int
    elif spec.kind == "flag":
        kw["action"] = "store_true"
        kw["default"] = False
    elif spec.kind == "choice":
        kw["choices"] = spec.choices
    elif spec.kind == "multiple":
        kw["action"] = "append"
    group.addoption(flag, **kw)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dpo-harness", "gate a model checkpoint against its stored baseline")
    group.addoption(
        "--dpo-checkpoint",
        metavar="PATH",
        help="Evaluate and gate this checkpoint (one test per metric).",
    )
    group.addoption(
        "--dpo-baseline", metavar="FILE", help="Baseline file (default: found from the base model)."
    )
    group.addoption(
        "--dpo-baselines-dir",
        metavar="DIR",
        help="Where to look for baselines (default ./baselines).",
    )
    group.addoption(
        "--dpo-policy",
        metavar="FILE",
        help="Gate policy file (YAML); must be the baseline's (default: the one stored with it).",
    )
    group.addoption(
        "--dpo-report", metavar="FILE", help="Gate this evaluation report instead of evaluating."
    )
    group.addoption(
        "--dpo-out",
        metavar="DIR",
        default=None,
        help="Where to write report.json, decision.json, gate.md (default runs/pytest-dpo).",
    )
    for spec in (*EVAL_OPTIONS, *POLICY_OPTIONS):
        _add(group, spec)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "dpo: a dpo-harness gate item (one suite metric)")
    if config.getoption("dpo_checkpoint", default=None) or config.getoption(
        "dpo_endpoint", default=None
    ):
        gate = DpoGate(config)
        config.stash[_KEY] = gate
        config.pluginmanager.register(gate, "dpo-harness-gate")


def _usage_error(exc: Exception) -> pytest.UsageError:
    from dpo_harness.errors import HarnessError

    text = exc.render() if isinstance(exc, HarnessError) else str(exc)
    # The fixes name CLI flags; under pytest the same settings are --dpo-<flag>.
    for flag in (
        "--baselines-dir",
        "--baseline ",
        "--base ",
        "--suite-data",
        "--suite-file",
        "--suites",
        "--policy",
        "--out ",
        "--endpoint",
        "--model ",
        "--no-endpoint-cache",
    ):
        text = text.replace(flag, "--dpo-" + flag.lstrip("-"))
    return pytest.UsageError(text)


class DpoGate:
    """The gate of one pytest session: prepares, evaluates once, and reports."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.checkpoint: str | None = config.getoption("dpo_checkpoint")
        self.endpoint: str | None = config.getoption("dpo_endpoint")
        self.plan: GatePlan | None = None
        self._run: GateRun | None = None
        self._loaded: LoadedModel | None = None
        self.worker_input: dict[str, Any] | None = getattr(config, "workerinput", None)

    # ------------------------------------------------------------------ settings

    def _values(self, specs: tuple[OptionSpec, ...]) -> dict[str, Any]:
        values = {}
        for spec in specs:
            value = self.config.getoption(_pytest_dest(spec))
            values[spec.dest] = tuple(value) if isinstance(value, list) else value
        return values

    def _opt_path(self, name: str) -> Path | None:
        value = self.config.getoption(name)
        return Path(value) if value else None

    @property
    def out_dir(self) -> Path:
        given = self._opt_path("dpo_out")
        return given or Path(str(self.config.rootpath)) / "runs" / "pytest-dpo"

    @property
    def is_worker(self) -> bool:
        return self.worker_input is not None and _WORKER_KEY in self.worker_input

    # ------------------------------------------------------------------ the pipeline

    def prepare(self) -> GatePlan:
        """Everything checked before a model is loaded; a problem is a usage error."""
        if self.plan is None:
            from dpo_harness.errors import HarnessError
            from dpo_harness.files import validate_config
            from dpo_harness.gate.decision import GatePolicy
            from dpo_harness.gate.pipeline import prepare
            from dpo_harness.schema import EvalConfig
            from dpo_harness.settings import eval_overrides, policy_overrides

            try:
                overrides = eval_overrides(self._values(EVAL_OPTIONS))
                if self.checkpoint is not None:
                    overrides["checkpoint"] = self.checkpoint
                config = validate_config(overrides, EvalConfig, source="--dpo options")
                policy = validate_config(
                    policy_overrides(self._values(POLICY_OPTIONS)),
                    GatePolicy,
                    source="--dpo options",
                )
                self.plan = prepare(
                    config,
                    baseline_file=self._opt_path("dpo_baseline"),
                    baselines_directory=self._opt_path("dpo_baselines_dir"),
                    policy=policy,
                    report_file=self._opt_path("dpo_report"),
                    out_dir=self.out_dir,
                    policy_file=self._opt_path("dpo_policy"),
                )
            except HarnessError as exc:
                raise _usage_error(exc) from None
        return self.plan

    @property
    def run(self) -> GateRun:
        """The evaluated gate: read from the controller on an xdist worker, else evaluated once."""
        if self._run is None:
            self._run = self._read_published() if self.is_worker else self._evaluate()
        return self._run

    def _evaluate(self, progress: bool = False) -> GateRun:
        """Load, evaluate, decide and publish; what only loading can find (weights that do not
        fit the config, a full disk under --dpo-out) is a usage error too, never INTERNALERROR."""
        from dpo_harness.errors import HarnessError
        from dpo_harness.gate.pipeline import execute, publish

        plan = self.prepare()
        try:
            in_process = plan.report_file is None and plan.served is None
            loaded = self.loaded if in_process else None
            command = (
                "pytest --dpo-endpoint" if plan.served is not None else "pytest --dpo-checkpoint"
            )
            run = execute(plan, loaded=loaded, progress=progress, command=command)
            publish(run, log=lambda _msg: None)
        except HarnessError as exc:
            raise _usage_error(exc) from exc
        return run

    def _read_published(self) -> GateRun:
        from dpo_harness.files import load_model_file
        from dpo_harness.gate.baseline import load_baseline
        from dpo_harness.gate.decision import GateDecision
        from dpo_harness.gate.pipeline import GateRun
        from dpo_harness.schema import EvalReport

        assert self.worker_input is not None
        out = Path(self.worker_input[_WORKER_KEY])
        decision = load_model_file(out / "decision.json", GateDecision, what="gate decision")
        assert decision.baseline_path is not None
        baseline_path = Path(decision.baseline_path)
        return GateRun(
            report=load_model_file(out / "report.json", EvalReport, what="evaluation report"),
            baseline=load_baseline(baseline_path),
            baseline_path=baseline_path,
            decision=decision,
            out_dir=out,
        )

    @property
    def name(self) -> str:
        """The candidate as the user named it."""
        if self.checkpoint is None and self.endpoint is not None:
            return f"{self.config.getoption('dpo_endpoint_model')} @ {self.endpoint}"
        return self.checkpoint or "demo"

    @property
    def loaded(self) -> LoadedModel:
        if self.checkpoint is None:
            pytest.skip("the candidate is a served model (--dpo-endpoint): no model object here")
        if self._loaded is None:
            from dpo_harness.evaluation.evaluate import load_from_config
            from dpo_harness.evaluation.loading import resolve_model

            if self.plan is not None and self.plan.candidate is not None:
                self._loaded = load_from_config(self.plan.config, self.plan.candidate)
            else:  # an xdist worker: the controller prepared; load the same model here
                self._loaded = load_from_config(
                    self._config_for_loading(), resolve_model(self.checkpoint)
                )
        return self._loaded

    def _config_for_loading(self) -> Any:
        from dpo_harness.schema import EvalConfig
        from dpo_harness.settings import eval_overrides

        return EvalConfig(**eval_overrides(self._values(EVAL_OPTIONS)), checkpoint=self.checkpoint)

    def metric_names(self) -> list[tuple[str, str]]:
        """(suite, metric) for every declared metric of the gated suites — no model needed."""
        if self.is_worker:
            from dpo_harness.errors import HarnessError
            from dpo_harness.evaluation.evaluate import make_suites

            assert self.worker_input is not None
            # The controller chose the suites (perhaps the baseline's); the worker has the same
            # options (data files, suite files) to build them from.
            names = list(self.worker_input["dpo_harness_suites"])
            try:
                suites = make_suites(
                    self._config_for_loading().model_copy(update={"suites": names})
                )
            except HarnessError as exc:
                raise _usage_error(exc) from None
        else:
            suites = self.prepare().suites
        return [(s.name, spec.name) for s in suites for spec in s.metric_specs()]

    # ------------------------------------------------------------------ hooks

    @pytest.hookimpl(tryfirst=True)  # before xdist starts its workers
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.is_worker:
            self.prepare()

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: evaluate once, before the first worker starts, and tell each where."""
        run = self._run if self._run is not None else self._evaluate_visibly()
        self._run = run
        plan = self.prepare()
        node.workerinput[_WORKER_KEY] = str(run.out_dir)
        node.workerinput["dpo_harness_suites"] = [s.name for s in plan.suites]

    @pytest.hookimpl(tryfirst=True)  # before -k/-m deselection, so they apply to our items too
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        parent = DpoCollector.from_parent(
            session,
            name=_COLLECTOR,
            nodeid=_COLLECTOR,
            path=Path(str(config.rootpath)) / _COLLECTOR,
        )
        new: list[pytest.Item | pytest.Collector] = [
            MetricItem.from_parent(
                parent, name=f"dpo[{suite}::{metric}]", suite=suite, metric=metric
            )
            for suite, metric in self.metric_names()
        ]
        # Report them as collected, so "collected N items" and -k/--deselect counts add up.
        config.hook.pytest_collectreport(
            report=pytest.CollectReport(parent.nodeid, "passed", None, new)
        )
        items.extend(item for item in new if isinstance(item, pytest.Item))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Evaluate before the first item, in the open (progress shown), when an item needs it."""
        if self.is_worker or self._run is not None:
            return
        if any(isinstance(item, MetricItem) for item in session.items):
            self._run = self._evaluate_visibly()

    def _evaluate_visibly(self) -> GateRun:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"dpo-harness: evaluating {self.name} for the gate …")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if capture is not None:
            with capture.global_and_fixture_disabled():
                return self._evaluate(progress=reporter is not None)
        return self._evaluate()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or self._run is None:
            return
        from dpo_harness.gate.render import LEGEND, gate_headers, gate_rows, render_gate_markdown
        from tabulate import tabulate

        decision = self._run.decision
        terminalreporter.write_sep(
            "=", f"dpo-harness gate: {decision.decision.upper()} {decision.candidate.ref}"
        )
        terminalreporter.write_line(tabulate(gate_rows(decision), headers=gate_headers(decision)))
        terminalreporter.write_line(LEGEND)
        terminalreporter.write_line(
            f"decision: {self._run.out_dir / 'decision.json'}; report: "
            f"{self._run.out_dir / 'report.html'}"
        )
        summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary_file:
            with open(summary_file, "a", encoding="utf-8") as fh:
                fh.write(render_gate_markdown(decision) + "\n")


class DpoCollector(pytest.Collector):
    """The parent of the metric items (node id prefix ``dpo-harness::``)."""

    def collect(self) -> list[pytest.Item | pytest.Collector]:  # items are made in the hook above
        return []


class MetricItem(pytest.Item):
    """One suite metric of the gate: passes when the metric is non-inferior and within its hard limits."""

    def __init__(self, *, suite: str, metric: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite = suite
        self.metric = metric
        self.add_marker("dpo")

    def runtest(self) -> None:
        from dpo_harness.gate.decision import Verdict, blocks

        decision = self.config.stash[_KEY].run.decision
        name = f"{self.suite}::{self.metric}"
        try:
            v = decision.verdict(name)
        except KeyError:
            pytest.skip(f"{name} was not computed for this checkpoint")
        if blocks(v, decision.policy):
            raise GateFailure(v)
        if v.verdict is Verdict.SKIPPED:
            pytest.skip(v.reason)

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, GateFailure):
            return excinfo.value.render()
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name


class GateFailure(AssertionError):
    def __init__(self, verdict: MetricVerdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict

    def render(self) -> str:
        from dpo_harness.evaluation.report import format_value

        v = self.verdict
        lines = [f"{v.suite}::{v.metric} {v.verdict.value}: {v.reason}"]
        lines.append(f"  candidate: {format_value(v.candidate, v.unit)}")
        lines.append(f"  baseline:  {format_value(v.baseline, v.unit)}")
        if v.ci_low is not None and v.ci_high is not None and v.diff is not None:
            lines.append(
                f"  paired Δ:  {v.diff:+.4g}, CI [{v.ci_low:+.4g}, {v.ci_high:+.4g}]"
                + (f" ({v.ci_level * 100:.3g}%)" if v.ci_level is not None else "")
                + f" over {v.n_items} items"
            )
        if v.margin is not None and v.verdict.value != "hard-fail":
            lines.append(f"  margin:    {v.margin:g} ({v.direction.value} is better)")
        for e in v.examples:
            resp = f": {e.response}" if e.response else ""
            lines.append(
                f"  worst {e.item_id}: {format_value(e.candidate)} (baseline {format_value(e.baseline)}){resp}"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------- fixtures


def _gate(request: pytest.FixtureRequest) -> DpoGate:
    gate = request.config.stash.get(_KEY, None)
    if gate is None:
        pytest.skip(
            "run pytest with --dpo-checkpoint PATH (or --dpo-endpoint URL --dpo-model NAME) "
            "to use the dpo_* fixtures"
        )
    return gate


@pytest.fixture(scope="session")
def dpo_report(request: pytest.FixtureRequest) -> Any:
    """The candidate's EvalReport (evaluated once per session)."""
    return _gate(request).run.report


@pytest.fixture(scope="session")
def dpo_baseline(request: pytest.FixtureRequest) -> Any:
    """The stored Baseline the candidate is gated against."""
    return _gate(request).run.baseline


@pytest.fixture(scope="session")
def dpo_decision(request: pytest.FixtureRequest) -> Any:
    """The GateDecision (promote or refuse, with one verdict per metric)."""
    return _gate(request).run.decision


@pytest.fixture(scope="session")
def dpo_model(request: pytest.FixtureRequest) -> Any:
    """The loaded candidate (``.model``, ``.tokenizer``), shared with the evaluation."""
    return _gate(request).loaded

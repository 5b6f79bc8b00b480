"""dpo-harness as a pytest plugin: put a model behind the same CI gate as the code.

Registered through the ``pytest11`` entry point (``dpo_harness``), inert unless its options are
used (``pytest -p no:dpo_harness`` switches it off entirely)::

    pytest --dpo-checkpoint PATH [--dpo-baseline FILE] [--dpo-suites numerical,adtech] [--dpo-base MODEL]

It evaluates the checkpoint once per session, gates it against the stored baseline, and turns
every suite metric into a test item named ``dpo[suite::metric]`` — so ``-k``, ``--lf``, JUnit XML
and xdist see ordinary tests. Item names come from the suites' declared metrics, not from the
evaluation, so collection is cheap and identical on every worker. A failing item reads like a good
assertion: the metric, the candidate and baseline values, the paired interval, the margin or hard
limit it broke, and the worst samples. Fixtures for your own tests: ``dpo_report``,
``dpo_baseline``, ``dpo_decision`` and ``dpo_model`` (session-scoped).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["DpoSession", "MetricItem"]

_KEY = pytest.StashKey["DpoSession"]()
_COLLECTOR = "dpo-harness"


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
        "--dpo-suites", metavar="A,B", help="Suites to gate (default: the baseline's suites)."
    )
    group.addoption(
        "--dpo-base", metavar="MODEL", help="The candidate's base model (for full checkpoints)."
    )
    group.addoption(
        "--dpo-report", metavar="FILE", help="Gate this evaluation report instead of evaluating."
    )
    group.addoption("--dpo-device", metavar="DEVICE", default=None, help="auto, cpu, cuda, mps.")
    group.addoption(
        "--dpo-inconclusive",
        choices=("refuse", "promote"),
        default=None,
        help="Policy for inconclusive metrics (default refuse: the item fails).",
    )
    group.addoption(
        "--dpo-out",
        metavar="DIR",
        default=None,
        help="Where to write report.json, decision.json, gate.md.",
    )


class DpoSession:
    """Evaluates once, lazily, the first time an item or fixture needs the result."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.checkpoint: str = config.getoption("dpo_checkpoint")
        self._run: Any = None
        self._loaded: Any = None
        self.error: str | None = None

    def _eval_config(self) -> Any:
        from .schema import EvalConfig

        opts: dict[str, Any] = {"checkpoint": self.checkpoint}
        if self.config.getoption("dpo_base"):
            opts["base"] = self.config.getoption("dpo_base")
        if self.config.getoption("dpo_suites"):
            opts["suites"] = [
                s.strip() for s in self.config.getoption("dpo_suites").split(",") if s.strip()
            ]
        if self.config.getoption("dpo_device"):
            opts["device"] = self.config.getoption("dpo_device")
        return EvalConfig(**opts)

    @property
    def loaded(self) -> Any:
        if self._loaded is None:
            from .evaluate import load_from_config

            cfg = self._eval_config()
            self._loaded = load_from_config(cfg, base=cfg.base)
        return self._loaded

    @property
    def run(self) -> Any:
        if self._run is None:
            from .errors import HarnessError
            from .gate import GatePolicy
            from .gating import run_gate

            opt = self.config.getoption
            out = Path(opt("dpo_out") or Path(str(self.config.rootpath)) / "runs" / "pytest-dpo")
            policy = GatePolicy(inconclusive=opt("dpo_inconclusive") or "refuse")
            report_file = Path(opt("dpo_report")) if opt("dpo_report") else None
            try:
                self._run = run_gate(
                    self._eval_config(),
                    baseline_file=Path(opt("dpo_baseline")) if opt("dpo_baseline") else None,
                    baselines_directory=Path(opt("dpo_baselines_dir"))
                    if opt("dpo_baselines_dir")
                    else None,
                    policy=policy,
                    report_file=report_file,
                    out_dir=out,
                    loaded=None if report_file else self.loaded,
                )
            except HarnessError as exc:
                self.error = exc.render()
                raise
            from .gating import finish

            finish(self._run, None, None, log=lambda _m: None)
        return self._run

    def metric_names(self) -> list[tuple[str, str]]:
        """(suite, metric) for every declared metric of the selected suites — no model needed."""
        from .baseline import load_baseline
        from .suite import create_suite

        suites = self.config.getoption("dpo_suites")
        if suites:
            names = [s.strip() for s in suites.split(",") if s.strip()]
        elif self.config.getoption("dpo_baseline"):
            names = list(load_baseline(Path(self.config.getoption("dpo_baseline"))).key.suites)
        else:
            names = ["numerical", "repetition", "fluency", "adtech"]
        return [(n, spec.name) for n in names for spec in create_suite(n).metric_specs()]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "dpo: a dpo-harness gate item (one suite metric)")
    if config.getoption("dpo_checkpoint", default=None):
        config.stash[_KEY] = DpoSession(config)


class DpoCollector(pytest.Collector):
    """The parent of the metric items (node id prefix ``dpo-harness::``)."""

    def collect(self) -> list[pytest.Item]:  # items are created up front in the hook below
        return []


class MetricItem(pytest.Item):
    """One suite metric of the gate: passes when the metric is non-inferior and within its hard limits."""

    def __init__(self, *, suite: str, metric: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite = suite
        self.metric = metric
        self.add_marker("dpo")

    def runtest(self) -> None:
        from .gate import Verdict

        session = self.config.stash[_KEY]
        decision = session.run.decision
        name = f"{self.suite}::{self.metric}"
        try:
            v = decision.verdict(name)
        except KeyError:
            pytest.skip(f"{name} was not computed for this checkpoint")
        if v.verdict is Verdict.SKIPPED:
            pytest.skip(v.reason)
        refuse_inconclusive = decision.policy.inconclusive == "refuse"
        if v.verdict in (Verdict.REGRESSED, Verdict.HARD_FAIL) or (
            v.verdict is Verdict.INCONCLUSIVE and refuse_inconclusive
        ):
            raise GateFailure(v)

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, GateFailure):
            return excinfo.value.render()
        session = self.config.stash.get(_KEY, None)
        if session is not None and session.error:
            return session.error
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name


class GateFailure(AssertionError):
    def __init__(self, verdict: Any) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict

    def render(self) -> str:
        from .report import format_value

        v = self.verdict
        lines = [f"{v.suite}::{v.metric} {v.verdict.value}: {v.reason}"]
        lines.append(f"  candidate: {format_value(v.candidate, v.unit)}")
        lines.append(f"  baseline:  {format_value(v.baseline, v.unit)}")
        if v.ci_low is not None and v.ci_high is not None:
            lines.append(
                f"  paired Δ:  {v.diff:+.4g}, CI [{v.ci_low:+.4g}, {v.ci_high:+.4g}] over {v.n_items} items"
            )
        if v.margin is not None and v.verdict.value != "hard-fail":
            lines.append(f"  margin:    {v.margin:g} ({v.direction.value} is better)")
        for e in v.examples:
            resp = f": {e.response}" if e.response else ""
            lines.append(
                f"  worst {e.item_id}: {format_value(e.candidate)} (baseline {format_value(e.baseline)}){resp}"
            )
        return "\n".join(lines)


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection, so they apply to our items too
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    dpo = config.stash.get(_KEY, None)
    if dpo is None:
        return
    from .errors import HarnessError

    try:
        metrics = dpo.metric_names()
    except HarnessError as exc:
        raise pytest.UsageError(exc.render()) from None
    parent = DpoCollector.from_parent(
        session, name=_COLLECTOR, nodeid=_COLLECTOR, path=Path(str(config.rootpath)) / _COLLECTOR
    )
    new: list[pytest.Item | pytest.Collector] = [
        MetricItem.from_parent(parent, name=f"dpo[{suite}::{metric}]", suite=suite, metric=metric)
        for suite, metric in metrics
    ]
    # Report them as collected, so "collected N items" and -k/--deselect counts add up.
    config.hook.pytest_collectreport(
        report=pytest.CollectReport(parent.nodeid, "passed", None, new)
    )
    items.extend(item for item in new if isinstance(item, pytest.Item))


def pytest_sessionstart(session: pytest.Session) -> None:
    dpo = session.config.stash.get(_KEY, None)
    if dpo is None:
        return
    from .errors import HarnessError
    from .loading import resolve_checkpoint

    if session.config.getoption("dpo_report"):
        return
    try:
        resolve_checkpoint(dpo.checkpoint)  # a missing checkpoint is a usage error, not 40 failures
    except HarnessError as exc:
        raise pytest.UsageError(exc.render()) from None


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    dpo = config.stash.get(_KEY, None)
    if dpo is None or dpo._run is None:
        return
    from tabulate import tabulate

    from .gate import GATE_HEADERS, gate_rows, render_gate_markdown

    decision = dpo._run.decision
    terminalreporter.write_sep(
        "=", f"dpo-harness gate: {decision.decision.upper()} {decision.candidate.ref}"
    )
    terminalreporter.write_line(tabulate(gate_rows(decision), headers=GATE_HEADERS))
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        with open(summary_file, "a", encoding="utf-8") as fh:
            fh.write(render_gate_markdown(decision) + "\n")


def _session(request: pytest.FixtureRequest) -> DpoSession:
    dpo = request.config.stash.get(_KEY, None)
    if dpo is None:
        pytest.skip("run pytest with --dpo-checkpoint PATH to use the dpo_* fixtures")
    return dpo


@pytest.fixture(scope="session")
def dpo_report(request: pytest.FixtureRequest) -> Any:
    """The candidate's EvalReport (evaluated once per session)."""
    return _session(request).run.report


@pytest.fixture(scope="session")
def dpo_baseline(request: pytest.FixtureRequest) -> Any:
    """The stored Baseline the candidate is gated against."""
    return _session(request).run.baseline


@pytest.fixture(scope="session")
def dpo_decision(request: pytest.FixtureRequest) -> Any:
    """The GateDecision (promote or refuse, with one verdict per metric)."""
    return _session(request).run.decision


@pytest.fixture(scope="session")
def dpo_model(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The loaded candidate (``.model``, ``.tokenizer``), shared with the evaluation."""
    yield _session(request).loaded

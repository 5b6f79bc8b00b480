"""What every user suite is: a declared identity and a declared metric policy around a scorer.

A user suite's baseline identity is its declared version, the hash of its rows and the hash of
its declaration (:meth:`UserSuite.identity`): change the data, the field mapping, a template or
the scoring code it reuses and a stored baseline is refused instead of compared. Its metric
policy (direction, margin, hard limits) is the kind's default with the declaration's
``metrics:`` applied; the policy is not part of the identity, since it changes how numbers are
judged, never the numbers.
"""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

from dpo_harness.errors import BadInputError
from dpo_harness.evaluation.suite import Suite
from dpo_harness.schema import MetricResult, MetricSpec, SuiteIdentity, SuiteResult
from dpo_harness.suites.user import CODE_VERSION
from dpo_harness.suites.user.declaration import SuiteEntry

__all__ = ["UserSuite", "declared_class", "json_hash"]

U = TypeVar("U", bound="UserSuite")


def json_hash(payload: object) -> str:
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class UserSuite(Suite):
    """A suite declared in a file. Each declaration gets its own subclass (:func:`declared_class`),
    since a suite's name and version are class attributes."""

    # The built-in suites whose scoring code this kind reuses, by name: their versions go into
    # the declaration hash, so a change in that code also refuses a user suite's baseline.
    reuses: ClassVar[tuple[type[Suite], ...]] = ()
    # User suites are versioned by their declaration, not by versions.json (see CODE_VERSION).
    scoring_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        entry: SuiteEntry,
        *,
        declared_in: Path,
        rows_hash: str,
        declaration: Mapping[str, Any],
    ) -> None:
        super().__init__(None)
        self.entry = entry
        self.declared_in = declared_in
        self._rows_hash = rows_hash
        self._declaration_hash = json_hash(
            {
                "kind": entry.kind,
                "declaration": dict(declaration),
                "code": CODE_VERSION,
                "reuses": {s.name: s.version for s in self.reuses},
            }
        )
        defaults = [spec.name for spec in self.default_specs()]
        unknown = sorted(set(entry.metrics) - set(defaults))
        if unknown:
            raise BadInputError(
                f"{declared_in}: suite {entry.name!r}: metrics.{unknown[0]} is not a metric of a "
                f"{entry.kind} suite",
                f"choose from: {', '.join(defaults)}",
            )

    @abstractmethod
    def default_specs(self) -> list[MetricSpec]:
        """The kind's metrics with their default policy."""

    def metric_specs(self) -> list[MetricSpec]:
        out = []
        for spec in self.default_specs():
            policy = self.entry.metrics.get(spec.name)
            out.append(policy.apply(spec) if policy is not None else spec)
        return out

    def data_hash(self) -> str:
        return self._rows_hash

    def identity(self) -> SuiteIdentity:
        return SuiteIdentity(
            version=self.version,
            data_hash=self._rows_hash,
            declaration_hash=self._declaration_hash,
            declared_in=str(self.declared_in),
        )

    def adopt(self, result: SuiteResult) -> SuiteResult:
        """A reused scorer's result as this suite's: its name, identity and metric policy.

        Values and per-item values are kept as they are; each metric is re-judged (hard limits)
        under this suite's policy, and metrics this suite does not declare are dropped.
        """
        specs = {spec.name: spec for spec in self.metric_specs()}
        metrics = [
            MetricResult.from_spec(
                specs[m.name], float("nan") if m.nonfinite else m.value, m.per_sample, m.note
            )
            for m in result.metrics
            if m.name in specs
        ]
        return SuiteResult(
            name=self.name,
            version=self.version,
            data_hash=self.data_hash(),
            n_items=result.n_items,
            metrics=metrics,
            samples=result.samples,
            findings=[f for f in result.findings if f.metric is None or f.metric in specs],
            skipped={k: v for k, v in result.skipped.items() if k in specs},
        )


def declared_class(kind: type[U], entry: SuiteEntry) -> type[U]:
    """A subclass of ``kind`` named and versioned as ``entry`` declares."""
    attrs = {
        "name": entry.name,
        "version": entry.version,
        "description": entry.description or kind.description,
        "__module__": kind.__module__,
    }
    return cast("type[U]", type(f"{kind.__name__}[{entry.name}]", (kind,), attrs))

"""The model runner: the one piece of code that turns the suites' requests into responses.

Suites declare requests; the runner removes duplicates (a prompt asked for by three suites is
generated once), orders the work (all of the candidate's, then the reference's, so one model is
resident at a time), keeps the batched generations for parity and later stages, shards the
requests across processes under a launcher, and hands every response back keyed by its request.
The model computations happen behind the backend seam (:mod:`~dpo_harness.evaluation.backends`):
a model loaded in this process (:class:`~dpo_harness.evaluation.backends.hf.HFBackend`, both
roles) or a served candidate (:class:`~dpo_harness.evaluation.backends.endpoint.EndpointBackend`,
whose reference, if any, is loaded here).

What each number *is* (tokenisation, where generation stops, probe statistics, thresholds) is
defined in :mod:`~dpo_harness.evaluation.measure`, which is versioned; the runner and its
backends decide only how to compute it (batches, padding, devices, caching, sharding).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dpo_harness.errors import BadInputError
from dpo_harness.evaluation import measure
from dpo_harness.evaluation.backends.base import REQUEST_KINDS, ModelBackend, RunnerStats
from dpo_harness.evaluation.backends.hf import HFBackend
from dpo_harness.evaluation.loading import LoadedModel
from dpo_harness.evaluation.responses import Responses
from dpo_harness.launcher import Distributed
from dpo_harness.schema import (
    GenerateRequest,
    GenerateResponse,
    GenerationSettings,
    LoglikelihoodRequest,
    ModelRole,
    ParityRequest,
    ParityResponse,
    ProbeRequest,
    ProbeResponse,
    Prompt,
    Request,
    RollingLoglikelihoodRequest,
    RollingLoglikelihoodResponse,
    TrainingLogRequest,
    WeightsRequest,
)

__all__ = ["ModelRunner", "Responses", "RunnerStats"]


class ModelRunner:
    """Runs every request against the candidate (and its reference), each computation once."""

    def __init__(
        self,
        loaded: LoadedModel | None = None,
        *,
        backend: ModelBackend | None = None,
        reference: LoadedModel | None = None,
        reference_loader: Callable[[], LoadedModel] | None = None,
        candidate_loader: Callable[[], LoadedModel] | None = None,
        batch_size: int = 32,
        generation: GenerationSettings | None = None,
        progress: bool = False,
        distributed: Distributed | None = None,
    ) -> None:
        """The candidate is ``loaded`` (in this process) or ``backend`` (e.g. a served model).

        The reference is always in this process: ``reference`` loaded beside the candidate, or
        ``reference_loader`` (with ``candidate_loader``) to keep one model resident at a time —
        the candidate's requests run first; before the reference's, the candidate is released
        and the reference loaded (and the other way round if a later request needs the
        candidate again), so a gate of a full model against a separate base needs one model's
        memory, not two. An adapter's reference is the adapter switched off.
        """
        self.distributed = distributed
        self.batch_size = batch_size
        self.generation = generation or GenerationSettings()
        # Under a launcher only the main process draws progress bars.
        self.progress = progress and (distributed is None or distributed.is_main)
        self.stats = RunnerStats(world_size=distributed.world_size if distributed else 1)
        self.in_process = HFBackend(
            loaded,
            reference=reference,
            reference_loader=reference_loader,
            candidate_loader=candidate_loader,
            batch_size=batch_size,
            generation=self.generation,
            stats=self.stats,
            progress=self.progress,
        )
        if backend is None:
            if loaded is None:
                raise ValueError("ModelRunner needs a loaded model or a backend")
            backend = self.in_process
        else:
            backend.stats, backend.progress = self.stats, self.progress
        self.backend: ModelBackend = backend
        # (prompt key, max new tokens) -> batched output
        self._gen_cache: dict[tuple[str, int], GenerateResponse] = {}

    # ------------------------------------------------------------------ plumbing

    @property
    def loaded(self) -> LoadedModel | None:
        """The candidate when it is loaded in this process."""
        return self.in_process.loaded

    @property
    def reference(self) -> LoadedModel | None:
        """The reference model, once loaded."""
        return self.in_process.reference

    @property
    def has_reference(self) -> bool:
        return self.in_process.has_reference

    def unavailable(self) -> dict[str, str]:
        """Request kinds the candidate's backend cannot answer, with the reason (for the suites)."""
        return {k: why for k in REQUEST_KINDS if (why := self.backend.unsupported(k)) is not None}

    def _for(self, role: ModelRole) -> ModelBackend:
        if role == "candidate":
            return self.backend
        if not self.has_reference:
            raise RuntimeError("a reference model was requested but none is loaded")
        return self.in_process

    def _bar(self, total: int, desc: str) -> Any:
        from dpo_harness.evaluation.backends.base import progress_bar

        return progress_bar(total, desc, self.progress)

    # ------------------------------------------------------------------ entry point

    def run(self, requests: Iterable[Request]) -> Responses:
        """Answer every request; duplicates (by value) are computed once."""
        reqs = list(requests)
        self.stats.requested += len(reqs)
        unique = list(dict.fromkeys(reqs))
        self.stats.unique += len(unique)
        by_kind: dict[str, list[Any]] = {}
        for r in unique:
            by_kind.setdefault(r.kind, []).append(r)
            self.stats.by_kind[r.kind] += 1
        self._check_answerable(by_kind)
        if self.distributed is None:
            return self._run_kinds(by_kind)
        return self._run_distributed(by_kind, self.distributed)

    def _check_answerable(self, by_kind: dict[str, list[Any]]) -> None:
        """A suite that asks the candidate for what its backend cannot compute is told why."""
        for kind, reqs in by_kind.items():
            if kind in ("loglikelihood", "rolling") and all(r.model != "candidate" for r in reqs):
                continue
            why = self.backend.unsupported(kind)
            if why is not None:
                raise BadInputError(
                    f"a suite asked the {self.backend.name} for {kind} requests, which it cannot "
                    f"answer: {why}",
                    "deselect that suite with --suites, or evaluate a checkpoint directory",
                )

    def _run_kinds(self, by_kind: dict[str, list[Any]]) -> Responses:
        """Every request, all of the candidate's work first, then all of the reference's.

        Order matters twice: parity reuses the batched generations, and with one model
        resident at a time the candidate is released only once, after its last request.
        """
        out = Responses()
        probes: list[ProbeRequest] = by_kind.get("probe", [])
        candidate_phase: list[tuple[str, Callable[[list[Any], Responses], None]]] = [
            ("weights", self._run_weights),
            ("training_log", self._run_training_log),
            ("generate", self._run_generate),
            ("parity", self._run_parity),
            ("loglikelihood", lambda reqs, o: self._run_loglikelihood(reqs, o, "candidate")),
            ("rolling", lambda reqs, o: self._run_rolling(reqs, o, "candidate")),
        ]
        for kind, handler in candidate_phase:
            if by_kind.get(kind):
                handler(by_kind[kind], out)

        def answer(k: int, resp: ProbeResponse) -> None:
            out.set(probes[k], resp)

        parked = self.backend.candidate_probes(probes, answer) if probes else None
        try:
            if by_kind.get("loglikelihood"):
                self._run_loglikelihood(by_kind["loglikelihood"], out, "reference")
            if by_kind.get("rolling"):
                self._run_rolling(by_kind["rolling"], out, "reference")
            if probes:
                self.backend.finish_probes(probes, parked, answer)
        finally:
            if parked is not None:
                parked.close()  # the parked logits never outlive the run, whatever happens
        return out

    def _run_distributed(self, by_kind: dict[str, list[Any]], dist: Distributed) -> Responses:
        """Each rank answers its share of every kind; all ranks end with every response."""
        generations_before = Counter(self.stats.generations)
        batches_before = self.stats.forward_batches

        def sharded(kinds: dict[str, list[Any]]) -> Responses:
            local = self._run_kinds({k: _shard(k, v, dist) for k, v in kinds.items()})
            merged = Responses()
            for part in dist.all_gather(local.items()):
                for req, resp in part:
                    merged.set(req, resp)
            return merged

        out = sharded({k: v for k, v in by_kind.items() if k != "parity"})
        # Every rank keeps all batched generations: parity compares one-by-one generation with
        # the batched output (which another rank may have produced), and a later run() asking
        # for the same prompt must not generate it again.
        for req, resp in out.items():
            if isinstance(req, GenerateRequest) and isinstance(resp, GenerateResponse):
                self._gen_cache.setdefault(self._gen_key(req), resp)
        if "parity" in by_kind:
            out.update(sharded({"parity": by_kind["parity"]}))
        # Counters become totals over all ranks, identical everywhere.
        mine = (
            self.stats.generations - generations_before,
            self.stats.forward_batches - batches_before,
        )
        generations, batches = generations_before, batches_before
        for gen, n in dist.all_gather(mine):
            generations = generations + gen
            batches += n
        self.stats.generations = generations
        self.stats.forward_batches = batches
        return out

    # ------------------------------------------------------------------ generation

    def _length(self, req: GenerateRequest) -> int:
        return req.max_new_tokens or self.generation.max_new_tokens

    def _gen_key(self, req: GenerateRequest) -> tuple[str, int]:
        return self.backend.prompt_key(req.prompt), self._length(req)

    def _ensure_generated(
        self, prompts: Sequence[Prompt | str], max_new_tokens: int, desc: str = "generate"
    ) -> None:
        todo: dict[str, Prompt | str] = {}
        for p in prompts:
            key = self.backend.prompt_key(p)
            if (key, max_new_tokens) not in self._gen_cache:
                todo.setdefault(key, p)
        if not todo:
            return
        answers = self.backend.generate(
            list(todo.values()),
            batch_size=self.batch_size,
            max_new_tokens=max_new_tokens,
            desc=desc,
        )
        for key, resp in zip(todo, answers, strict=True):
            self._gen_cache[(key, max_new_tokens)] = resp
            self.stats.generations[key] += 1

    def _run_generate(self, reqs: list[GenerateRequest], out: Responses) -> None:
        by_length: dict[int, list[GenerateRequest]] = {}
        for r in reqs:
            by_length.setdefault(self._length(r), []).append(r)
        for length, group in by_length.items():
            self._ensure_generated([r.prompt for r in group], length)
            for r in group:
                out.set(r, self._gen_cache[self._gen_key(r)])

    def _run_parity(self, reqs: list[ParityRequest], out: Responses) -> None:
        length = self.generation.max_new_tokens
        for r in reqs:
            self._ensure_generated(list(r.prompts), length)
            keys = [self.backend.prompt_key(p) for p in r.prompts]
            batched = [self._gen_cache[(k, length)] for k in keys]
            # Parity re-generation is a check of the runner, not a second evaluation of a
            # prompt: it is not counted in stats.generations.
            single = self.backend.generate(
                list(r.prompts),
                batch_size=1,
                max_new_tokens=length,
                desc="parity (one by one)",
            )
            mismatched = [
                i
                for i, (s, b) in enumerate(zip(single, batched, strict=True))
                if s.token_ids != b.token_ids
            ]
            out.set(
                r,
                ParityResponse(
                    n_prompts=len(keys),
                    mismatched=mismatched,
                    batched=[b.text for b in batched],
                    single=[s.text for s in single],
                ),
            )

    # ------------------------------------------------------------------ scores

    def _run_loglikelihood(
        self, reqs: list[LoglikelihoodRequest], out: Responses, role: ModelRole
    ) -> None:
        group = [r for r in reqs if r.model == role]
        if not group:
            return
        scored = self._for(role).loglikelihood(
            role, [(r.context, r.continuation) for r in group], f"loglikelihood ({role})"
        )
        for r, (lps, greedy) in zip(group, scored, strict=True):
            out.set(r, measure.loglikelihood_response(lps, greedy, r.continuation))

    def _run_rolling(
        self, reqs: list[RollingLoglikelihoodRequest], out: Responses, role: ModelRole
    ) -> None:
        group = [r for r in reqs if r.model == role]
        if not group:
            return
        scored = self._for(role).rolling(
            role, [r.text for r in group], f"rolling log-likelihood ({role})"
        )
        for r, (logprob, n_tokens) in zip(group, scored, strict=True):
            out.set(
                r,
                RollingLoglikelihoodResponse(
                    logprob=logprob, n_tokens=n_tokens, n_bytes=len(r.text.encode("utf-8"))
                ),
            )

    # ------------------------------------------------------------------ weights and logs

    def _run_weights(self, reqs: list[WeightsRequest], out: Responses) -> None:
        resp = self.backend.weights()
        for r in reqs:
            out.set(r, resp)

    def _run_training_log(self, reqs: list[TrainingLogRequest], out: Responses) -> None:
        resp = self.backend.training_log()
        for r in reqs:
            out.set(r, resp)


def _shard(kind: str, reqs: list[Any], dist: Distributed) -> list[Any]:
    """This process's share of one kind of request.

    Round-robin, except that the choices of one multiple-choice question (log-likelihood
    requests with the same model and context) stay on one process, or the shared-context
    scoring would compute their context once per process.
    """
    if kind != "loglikelihood":
        return dist.shard(reqs)
    groups: dict[tuple[Any, Any], list[Any]] = {}
    for r in reqs:
        groups.setdefault((r.model, r.context), []).append(r)
    return [r for group in dist.shard(list(groups.values())) for r in group]

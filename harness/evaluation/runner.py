"""The model runner: the only code that touches a model during evaluation.

Suites declare requests; the runner removes duplicates (a prompt asked for by three suites is
generated once), sorts each kind of request by length so padding is small, runs batched greedy
generation (left padding, explicit position ids), log-likelihood scoring of (context,
continuation) pairs (tokenised together, as lm-evaluation-harness does, so the boundary is
consistent), teacher-forced logit probes against a reference model, rolling log-likelihood of
plain text, and parameter scans — and hands every response back keyed by its request.

What each number *is* (tokenisation, where generation stops, probe statistics, thresholds) is
defined in :mod:`~dpo_harness.evaluation.measure`, which is versioned; this module decides only
how to compute it (batches, padding, devices, caching, sharding across processes).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dpo_harness.evaluation import measure
from dpo_harness.evaluation.loading import LoadedModel
from dpo_harness.evaluation.responses import Responses
from dpo_harness.evaluation.weight_scan import merge_findings, scan_safetensors, scan_tensor
from dpo_harness.launcher import Distributed
from dpo_harness.schema import (
    GenerateRequest,
    GenerateResponse,
    GenerationSettings,
    LoglikelihoodRequest,
    ModelRole,
    NonFiniteTensor,
    ParityRequest,
    ParityResponse,
    ProbeRequest,
    Prompt,
    Request,
    RollingLoglikelihoodRequest,
    RollingLoglikelihoodResponse,
    TrainingLogRequest,
    TrainingLogResponse,
    WeightsRequest,
    WeightsResponse,
)

__all__ = ["ModelRunner", "Responses", "RunnerStats"]

T = TypeVar("T")


@dataclass
class RunnerStats:
    """What the runner did: used by tests (no prompt generated twice) and the report."""

    requested: int = 0
    unique: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    generations: Counter[str] = field(default_factory=Counter)  # rendered prompt -> times generated
    forward_batches: int = 0
    world_size: int = 1  # processes that shared the work (counters above are totals over all)

    def as_dict(self) -> dict[str, int]:
        out = {
            "requested": self.requested,
            "unique": self.unique,
            "forward_batches": self.forward_batches,
            "world_size": self.world_size,
        }
        out["generated_prompts"] = len(self.generations)
        out["generations"] = sum(self.generations.values())
        out.update({f"kind.{k}": v for k, v in sorted(self.by_kind.items())})
        return out


def _batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class ModelRunner:
    """Runs every request against a loaded model (and its reference), each computation once."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        reference: LoadedModel | None = None,
        batch_size: int = 16,
        generation: GenerationSettings | None = None,
        progress: bool = False,
        distributed: Distributed | None = None,
    ) -> None:
        self.loaded = loaded
        self.distributed = distributed
        self.reference = reference
        self.batch_size = batch_size
        self.generation = generation or GenerationSettings()
        # Under a launcher only the main process draws progress bars.
        self.progress = progress and (distributed is None or distributed.is_main)
        self.stats = RunnerStats(world_size=distributed.world_size if distributed else 1)
        # (rendered prompt, max new tokens) -> batched output
        self._gen_cache: dict[tuple[str, int], GenerateResponse] = {}

    # ------------------------------------------------------------------ plumbing

    @property
    def has_reference(self) -> bool:
        return self.reference is not None or self.loaded.is_adapter

    @contextlib.contextmanager
    def _model(self, role: ModelRole) -> Iterator[tuple[Any, Any]]:
        """(model, tokenizer) for a role; for an adapter the reference is the adapter switched off."""
        if role == "candidate":
            yield self.loaded.model, self.loaded.tokenizer
        elif self.reference is not None:
            yield self.reference.model, self.reference.tokenizer
        elif self.loaded.is_adapter:
            with self.loaded.adapter_disabled() as base:
                yield base, self.loaded.tokenizer
        else:
            raise RuntimeError("a reference model was requested but none is loaded")

    def _device(self, model: Any) -> Any:
        return next(model.parameters()).device

    def _bar(self, total: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="req", disable=not self.progress, leave=False)

    def _max_len(self, model: Any) -> int:
        cfg = getattr(model, "config", None)
        return int(getattr(cfg, "max_position_embeddings", None) or 2048)

    def _left_pad(
        self, rows: Sequence[Sequence[int]], pad_id: int, device: Any
    ) -> tuple[Any, Any, Any]:
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r) :] = 1
        # Left padding shifts positions unless they are derived from the mask (as generate() does).
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(device), mask.to(device), pos.to(device)

    def _forward_tail(
        self, model: Any, rows: Sequence[Sequence[int]], keep: int, pad_id: int
    ) -> Any:
        """float32 logits of the last ``keep`` positions of each left-padded row: (B, keep, V)."""
        import torch

        ids, mask, pos = self._left_pad(rows, pad_id, self._device(model))
        self.stats.forward_batches += 1
        with torch.inference_mode():
            try:
                out = model(
                    input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep
                )
            except TypeError:  # a model without logits_to_keep: slice afterwards
                out = model(input_ids=ids, attention_mask=mask, position_ids=pos)
        return out.logits[:, -keep:, :].float()

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
        if self.distributed is None:
            return self._run_kinds(by_kind)
        return self._run_distributed(by_kind, self.distributed)

    def _run_kinds(self, by_kind: dict[str, list[Any]]) -> Responses:
        out = Responses()
        # Order matters: parity reuses the batched generations.
        handlers: list[tuple[str, Callable[[list[Any], Responses], None]]] = [
            ("weights", self._run_weights),
            ("training_log", self._run_training_log),
            ("generate", self._run_generate),
            ("parity", self._run_parity),
            ("loglikelihood", self._run_loglikelihood),
            ("rolling", self._run_rolling),
            ("probe", self._run_probe),
        ]
        for kind, handler in handlers:
            if by_kind.get(kind):
                handler(by_kind[kind], out)
        return out

    def _run_distributed(self, by_kind: dict[str, list[Any]], dist: Distributed) -> Responses:
        """Each rank answers its share of every kind; all ranks end with every response."""
        generations_before = Counter(self.stats.generations)
        batches_before = self.stats.forward_batches

        def sharded(kinds: dict[str, list[Any]]) -> Responses:
            local = self._run_kinds({k: dist.shard(v) for k, v in kinds.items()})
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

    def _generate_texts(
        self, texts: Sequence[str], batch_size: int, max_new_tokens: int, bar: Any = None
    ) -> dict[str, GenerateResponse]:
        """Greedy generation for rendered prompts, longest first, results keyed by text."""
        import torch

        model, tok = self.loaded.model, self.loaded.tokenizer
        eos = measure.eos_ids(model, tok)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
        gen_cfg = measure.generation_config(max_new_tokens, eos, pad_id)
        encoded = {t: measure.encode(tok, t) for t in texts}
        order = sorted(texts, key=lambda t: -len(encoded[t]))
        results: dict[str, GenerateResponse] = {}
        for batch in _batches(order, batch_size):
            ids, mask, _ = self._left_pad([encoded[t] for t in batch], pad_id, self._device(model))
            self.stats.forward_batches += 1
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg)
            new = out[:, ids.shape[1] :].tolist()
            for t, row in zip(batch, new, strict=True):
                results[t] = measure.cut_at_eos(tok, row, eos)
                self.stats.generations[t] += 1
            if bar is not None:
                bar.update(len(batch))
        return results

    def _rendered(self, prompt: Prompt | str) -> str:
        # Plain text is what the model sees as it stands (no chat template, no system prompt).
        if isinstance(prompt, str):
            return prompt
        return measure.render_prompt(self.loaded.tokenizer, prompt, self.generation.system_prompt)

    def _length(self, req: GenerateRequest) -> int:
        return req.max_new_tokens or self.generation.max_new_tokens

    def _gen_key(self, req: GenerateRequest) -> tuple[str, int]:
        return self._rendered(req.prompt), self._length(req)

    def _ensure_generated(
        self, prompts: Sequence[Prompt | str], max_new_tokens: int, desc: str = "generate"
    ) -> None:
        todo = list(
            dict.fromkeys(
                t
                for t in map(self._rendered, prompts)
                if (t, max_new_tokens) not in self._gen_cache
            )
        )
        if not todo:
            return
        with self._bar(len(todo), desc) as bar:
            done = self._generate_texts(todo, self.batch_size, max_new_tokens, bar)
        self._gen_cache.update(((t, max_new_tokens), resp) for t, resp in done.items())

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
            texts = [self._rendered(p) for p in r.prompts]
            batched = [self._gen_cache[(t, length)] for t in texts]
            before = Counter(self.stats.generations)
            with self._bar(len(texts), "parity (one by one)") as bar:
                single = self._generate_texts(texts, 1, length, bar)
            # Parity re-generation is a check of the runner, not a second evaluation of a prompt.
            self.stats.generations = before
            mismatched = [
                i
                for i, (t, b) in enumerate(zip(texts, batched, strict=True))
                if single[t].token_ids != b.token_ids
            ]
            out.set(
                r,
                ParityResponse(
                    n_prompts=len(texts),
                    mismatched=mismatched,
                    batched=[b.text for b in batched],
                    single=[single[t].text for t in texts],
                ),
            )

    # ------------------------------------------------------------------ log-likelihood

    def _context_text(self, tokenizer: Any, context: Prompt | str) -> str:
        if isinstance(context, str):
            return context
        return measure.render_prompt(tokenizer, context, self.generation.system_prompt)

    def _score_rows(
        self, model: Any, tok: Any, items: list[tuple[list[int], list[int]]], desc: str
    ) -> list[tuple[list[float], list[bool]]]:
        """Per-token log-probs and greedy flags of each continuation, in input order."""
        import torch

        max_len = self._max_len(model)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        prepared = []
        for ctx, cont in items:
            cont = cont[-max_len:]
            full = (ctx + cont)[-(max_len + 1) :]
            prepared.append((full[:-1], cont))
        order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i][0]))
        results: list[tuple[list[float], list[bool]]] = [([], [])] * len(prepared)
        with self._bar(len(prepared), desc) as bar:
            for batch in _batches(order, self.batch_size):
                keep = max(max(len(prepared[i][1]) for i in batch), 1)
                logits = self._forward_tail(model, [prepared[i][0] for i in batch], keep, pad_id)
                logp = torch.log_softmax(logits, dim=-1)
                for row, i in enumerate(batch):
                    cont = prepared[i][1]
                    if not cont:
                        results[i] = ([], [])
                        continue
                    lp = logp[row, keep - len(cont) :, :]
                    target = torch.tensor(cont, device=lp.device).unsqueeze(-1)
                    token_lp = lp.gather(-1, target).squeeze(-1)
                    greedy = lp.argmax(-1).eq(target.squeeze(-1))
                    results[i] = (token_lp.tolist(), greedy.tolist())
                bar.update(len(batch))
        return results

    def _run_loglikelihood(self, reqs: list[LoglikelihoodRequest], out: Responses) -> None:
        for role in ("candidate", "reference"):
            group = [r for r in reqs if r.model == role]
            if not group:
                continue
            with self._model(role) as (model, tok):
                pairs = [
                    measure.encode_pair(tok, self._context_text(tok, r.context), r.continuation)
                    for r in group
                ]
                scored = self._score_rows(model, tok, pairs, f"loglikelihood ({role})")
            for r, (lps, greedy) in zip(group, scored, strict=True):
                out.set(r, measure.loglikelihood_response(lps, greedy, r.continuation))

    def _run_rolling(self, reqs: list[RollingLoglikelihoodRequest], out: Responses) -> None:
        for role in ("candidate", "reference"):
            group = [r for r in reqs if r.model == role]
            if not group:
                continue
            with self._model(role) as (model, tok):
                max_len = self._max_len(model)
                items: list[tuple[list[int], list[int]]] = []
                owners: list[int] = []
                for k, r in enumerate(group):
                    tokens = [measure.prefix_id(tok), *measure.encode(tok, r.text)]
                    for window in measure.rolling_windows(tokens, max_len):
                        items.append(window)
                        owners.append(k)
                scored = self._score_rows(model, tok, items, f"rolling log-likelihood ({role})")
            totals = [0.0] * len(group)
            counts = [0] * len(group)
            for k, (lps, _) in zip(owners, scored, strict=True):
                totals[k] += float(sum(lps))
                counts[k] += len(lps)
            for k, r in enumerate(group):
                out.set(
                    r,
                    RollingLoglikelihoodResponse(
                        logprob=totals[k], n_tokens=counts[k], n_bytes=len(r.text.encode("utf-8"))
                    ),
                )

    # ------------------------------------------------------------------ probes

    def _probe_logits(self, role: ModelRole, items: list[tuple[list[int], list[int]]]) -> list[Any]:
        """Teacher-forced logits over each continuation (one (len(cont), V) tensor per item)."""
        out: list[Any] = [None] * len(items)
        with self._model(role) as (model, tok):
            pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
            order = sorted(range(len(items)), key=lambda i: -(len(items[i][0]) + len(items[i][1])))
            for batch in _batches(order, self.batch_size):
                rows = [(items[i][0] + items[i][1])[:-1] for i in batch]
                keep = max(len(items[i][1]) for i in batch)
                logits = self._forward_tail(model, rows, keep, pad_id)
                for row, i in enumerate(batch):
                    n = len(items[i][1])
                    out[i] = logits[row, keep - n :, :].cpu()
        return out

    def _run_probe(self, reqs: list[ProbeRequest], out: Responses) -> None:
        tok = self.loaded.tokenizer
        items = [
            measure.encode_pair(tok, self._context_text(tok, r.context), r.continuation)
            for r in reqs
        ]
        cand = self._probe_logits("candidate", items)
        ref: list[Any] = [None] * len(reqs)
        same_vocab = self.reference is None or (
            self.reference.info.tokenizer_hash == self.loaded.info.tokenizer_hash
        )
        if self.has_reference and same_vocab and any(r.with_reference for r in reqs):
            ref = self._probe_logits("reference", items)
        for k, r in enumerate(reqs):
            out.set(r, measure.probe_response(cand[k], ref[k] if r.with_reference else None, tok))

    # ------------------------------------------------------------------ weights and logs

    def _run_weights(self, reqs: list[WeightsRequest], out: Responses) -> None:
        import torch

        spec = self.loaded.spec
        # Stored weights first, streamed from the files (no second copy of the model), so a bad
        # tensor is named as it is saved; then the loaded parameters, which also show overflow
        # from a dtype cast and cover models that exist only in memory.
        stored: list[NonFiniteTensor] = []
        if spec.weight_files and not spec.pickle:
            _, _, stored = scan_safetensors(spec.weight_files)
        loaded: list[NonFiniteTensor] = []
        n_tensors = n_params = 0
        with torch.inference_mode():
            for name, p in self.loaded.model.named_parameters():
                n_tensors += 1
                n_params += p.numel()
                n_nan, n_inf = scan_tensor(p)
                if n_nan or n_inf:
                    loaded.append(
                        NonFiniteTensor(name=name, n_nan=n_nan, n_inf=n_inf, numel=p.numel())
                    )
        resp = WeightsResponse(
            n_tensors=n_tensors,
            n_parameters=n_params,
            nonfinite=merge_findings(stored, loaded),
            lora=measure.lora_stats(self.loaded.model),
        )
        for r in reqs:
            out.set(r, resp)

    def _run_training_log(self, reqs: list[TrainingLogRequest], out: Responses) -> None:
        path = self.loaded.spec.trainer_state
        history: list[dict[str, Any]] = []
        step = None
        if path is not None:
            try:
                history, step = measure.read_trainer_state(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                history = []
        resp = TrainingLogResponse(
            path=str(path) if path else None, log_history=history, global_step=step
        )
        for r in reqs:
            out.set(r, resp)

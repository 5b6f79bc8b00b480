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
from dpo_harness.evaluation.loading import LoadedModel, chat_template_error
from dpo_harness.evaluation.responses import Responses
from dpo_harness.evaluation.spill import TensorSpill
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
    model_loads: int = 0  # loads by the runner itself (one model resident at a time)
    world_size: int = 1  # processes that shared the work (counters above are totals over all)

    def as_dict(self) -> dict[str, int]:
        out = {
            "requested": self.requested,
            "unique": self.unique,
            "forward_batches": self.forward_batches,
            "model_loads": self.model_loads,
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
        reference_loader: Callable[[], LoadedModel] | None = None,
        candidate_loader: Callable[[], LoadedModel] | None = None,
        batch_size: int = 16,
        generation: GenerationSettings | None = None,
        progress: bool = False,
        distributed: Distributed | None = None,
    ) -> None:
        """``reference_loader`` (with ``candidate_loader``) keeps one model resident at a time.

        The candidate's requests run first; before the reference's, the candidate is released
        and the reference loaded (and the other way round if a later request needs the
        candidate again), so a gate of a full model against a separate base needs one model's
        memory, not two. A caller that passes ``reference`` keeps both loaded.
        """
        self.loaded = loaded
        self.distributed = distributed
        self.reference = reference
        self._reference_loader = reference_loader
        self._candidate_loader = candidate_loader
        self.batch_size = batch_size
        self.generation = generation or GenerationSettings()
        # Under a launcher only the main process draws progress bars.
        self.progress = progress and (distributed is None or distributed.is_main)
        self.stats = RunnerStats(world_size=distributed.world_size if distributed else 1)
        # (rendered prompt, max new tokens) -> batched output
        self._gen_cache: dict[tuple[str, int], GenerateResponse] = {}
        # model id -> the shared-context scorer checked exact for it (None: use the plain path)
        self._shared_ok: dict[int, Callable[..., Any] | None] = {}
        # model id -> (decoder, lm_head) checked to give the model's logits (None: plain path)
        self._head_ok: dict[int, tuple[Any, Any] | None] = {}

    # ------------------------------------------------------------------ plumbing

    @property
    def has_reference(self) -> bool:
        return (
            self.reference is not None
            or self._reference_loader is not None
            or self.loaded.is_adapter
        )

    def _release(self, which: LoadedModel) -> None:
        """Drop a model's weights (the tokenizer and identity stay) and give the memory back."""
        import gc

        import torch

        if which.model is not None:
            # The per-model checks hold the model's modules (the split head is its decoder):
            # left in place, they would keep the "released" weights alive beside the next model.
            self._head_ok.pop(id(which.model), None)
            self._shared_ok.pop(id(which.model), None)
        which.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _candidate(self) -> Any:
        if self.loaded.model is None:  # released for the reference: bring it back
            assert self._candidate_loader is not None
            if self.reference is not None and self._reference_loader is not None:
                self._release(self.reference)
                self.reference = None
            self.loaded.model = self._candidate_loader().model
            self.stats.model_loads += 1
        return self.loaded.model

    def _reference(self) -> LoadedModel:
        if self.reference is None or self.reference.model is None:
            assert self._reference_loader is not None
            if self._candidate_loader is not None and self.loaded.model is not None:
                self._release(self.loaded)  # one model resident at a time
            self.reference = self._reference_loader()
            self.stats.model_loads += 1
        return self.reference

    @contextlib.contextmanager
    def _model(self, role: ModelRole) -> Iterator[tuple[Any, Any]]:
        """(model, tokenizer) for a role; for an adapter the reference is the adapter switched off."""
        if role == "candidate":
            yield self._candidate(), self.loaded.tokenizer
        elif self.reference is not None or self._reference_loader is not None:
            ref = self._reference()
            yield ref.model, ref.tokenizer
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
        parked = self._candidate_probes(probes, out) if probes else None
        try:
            if by_kind.get("loglikelihood"):
                self._run_loglikelihood(by_kind["loglikelihood"], out, "reference")
            if by_kind.get("rolling"):
                self._run_rolling(by_kind["rolling"], out, "reference")
            if probes:
                self._finish_probes(probes, parked, out)
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

    def _generate_texts(
        self, texts: Sequence[str], batch_size: int, max_new_tokens: int, bar: Any = None
    ) -> dict[str, GenerateResponse]:
        """Greedy generation for rendered prompts, longest first, results keyed by text."""
        import torch

        model, tok = self._candidate(), self.loaded.tokenizer
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
        return self._render(self.loaded.tokenizer, prompt)

    def _render(self, tokenizer: Any, prompt: Prompt | str) -> str:
        """The prompt through the chat template; a template that fails on it (a system prompt it
        does not allow, a sandbox violation reached only by some messages) is bad input."""
        # Plain text is what the model sees as it stands (no chat template, no system prompt).
        if isinstance(prompt, str):
            return prompt
        try:
            return measure.render_prompt(tokenizer, prompt, self.generation.system_prompt)
        except Exception as exc:  # jinja2 errors; the template is the checkpoint's code
            from jinja2 import TemplateError

            if isinstance(exc, TemplateError):
                raise chat_template_error(self.loaded.spec.ref, exc) from exc
            raise

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
        return self._render(tokenizer, context)

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
        head = self._split_head(model, pad_id)
        with self._bar(len(prepared), desc) as bar:
            for batch in _batches(order, self.batch_size):
                if head is not None:
                    self._score_batch_chunked(head, prepared, batch, pad_id, results)
                    bar.update(len(batch))
                    continue
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

    # The LM head in chunks: a forward's logits are positions x vocabulary floats (a batch of
    # held-out text on a 151,936-row vocabulary: gigabytes, twice with a log_softmax copy).
    # The decoder's hidden states are small; the head runs on _HEAD_CHUNK positions at a time
    # and each chunk is scored in place, so memory stays one chunk of logits.
    _HEAD_CHUNK = 256

    def _split_head(self, model: Any, pad_id: int) -> tuple[Any, Any] | None:
        """(decoder, lm_head) when logits are exactly lm_head(decoder(...)), checked once."""
        import torch

        key = id(model)
        if key in self._head_ok:
            return self._head_ok[key]
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        cfg = getattr(inner, "config", None)
        split: tuple[Any, Any] | None = None
        plain_head = getattr(cfg, "final_logit_softcapping", None) is None and getattr(
            cfg, "logit_scale", None
        ) in (None, 1, 1.0)
        if plain_head and hasattr(inner, "get_decoder") and hasattr(inner, "get_output_embeddings"):
            try:
                decoder, head = inner.get_decoder(), inner.get_output_embeddings()
                rows = [[5, 6, 7, 8], [9, 10]]
                full = self._forward_tail(model, rows, 2, pad_id)
                ids, mask, pos = self._left_pad(rows, pad_id, self._device(model))
                with torch.inference_mode():
                    hs = decoder(input_ids=ids, attention_mask=mask, position_ids=pos)
                    mine = head(hs.last_hidden_state[:, -2:, :]).float()
                if (
                    decoder is not None
                    and head is not None
                    and torch.allclose(mine, full, atol=1e-4, rtol=1e-4)
                ):
                    split = (decoder, head)
            except (AttributeError, TypeError, RuntimeError, ValueError):
                split = None  # an architecture this does not understand: the plain path
        self._head_ok[key] = split
        return split

    def _score_batch_chunked(
        self,
        head: tuple[Any, Any],
        prepared: list[tuple[list[int], list[int]]],
        batch: Sequence[int],
        pad_id: int,
        results: list[tuple[list[float], list[bool]]],
    ) -> None:
        import torch

        decoder, lm_head = head
        ids, mask, pos = self._left_pad(
            [prepared[i][0] for i in batch], pad_id, self._device(lm_head)
        )
        self.stats.forward_batches += 1
        width = ids.shape[1]
        with torch.inference_mode():
            hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
            rows, cols, targets, owners = [], [], [], []
            for row, i in enumerate(batch):
                cont = prepared[i][1]
                for k, t in enumerate(cont):
                    rows.append(row)
                    cols.append(width - len(cont) + k)
                    targets.append(t)
                    owners.append(i)
            lps: list[float] = []
            greedy: list[bool] = []
            if rows:
                picked = hidden[torch.tensor(rows), torch.tensor(cols)]
                tgt = torch.tensor(targets, device=picked.device)
                for c0 in range(0, len(rows), self._HEAD_CHUNK):
                    chunk_logits = lm_head(picked[c0 : c0 + self._HEAD_CHUNK]).float()
                    chunk_targets = tgt[c0 : c0 + self._HEAD_CHUNK]
                    chosen = chunk_logits.gather(-1, chunk_targets[:, None]).squeeze(-1)
                    top, arg = chunk_logits.max(-1)
                    # log-sum-exp in place: the chunk's logits are ours to overwrite
                    lse = top + chunk_logits.sub_(top[:, None]).exp_().sum(-1).log()
                    lps.extend((chosen - lse).tolist())
                    greedy.extend(arg.eq(chunk_targets).tolist())
        per: dict[int, tuple[list[float], list[bool]]] = {i: ([], []) for i in batch}
        for i, lp, g in zip(owners, lps, greedy, strict=True):
            per[i][0].append(lp)
            per[i][1].append(g)
        for i in batch:
            results[i] = per[i]

    def _score_pairs(
        self, model: Any, tok: Any, pairs: list[tuple[list[int], list[int]]], desc: str
    ) -> list[tuple[list[float], list[bool]]]:
        """:meth:`_score_rows`, with the shared context of multiple-choice pairs computed once.

        Pairs sharing their context ids (the choices of one question) go through
        :mod:`~dpo_harness.evaluation.shared_context` — one packed row per question under a tree
        attention mask where the model honours a custom 4D mask (sdpa, eager), else a KV cache
        reused per choice — after a one-time check per model that it matches the unshared
        computation; anything else keeps the plain path.
        """
        contexts = [tuple(ctx) for ctx, cont in pairs if cont]
        if len(set(contexts)) == len(contexts):  # no two pairs share a context: nothing to share
            return self._score_rows(model, tok, pairs, desc)
        scorer = self._shared_scorer(model, tok, pairs)
        if scorer is None:
            return self._score_rows(model, tok, pairs, desc)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        with self._bar(len(pairs), desc) as bar:
            scored, stats = scorer(
                model,
                pairs,
                batch_size=self.batch_size,
                pad_id=pad_id,
                max_len=self._max_len(model),
            )
            bar.update(len(pairs))
        self.stats.forward_batches += int(stats.get("forwards", 0))
        result: list[tuple[list[float], list[bool]]] = scored
        return result

    def _shared_scorer(
        self, model: Any, tok: Any, pairs: list[tuple[list[int], list[int]]]
    ) -> Callable[..., Any] | None:
        """The shared-context scorer this model computes exactly (checked once), or None."""
        from dpo_harness.evaluation import shared_context

        key = id(model)
        if key in self._shared_ok:
            return self._shared_ok[key]
        impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
        candidates = [shared_context.score_pairs_kv]
        if impl in ("sdpa", "eager"):
            candidates.insert(0, shared_context.score_pairs_tree)
        # One question's pairs (the first context with two or more choices) as the probe.
        first_ctx = next(
            ctx
            for ctx, cont in pairs
            if cont and sum(1 for c2, k2 in pairs if k2 and c2 == ctx) > 1
        )
        probe = [(ctx, cont) for ctx, cont in pairs if ctx == first_ctx and cont][:8]
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        max_len = self._max_len(model)
        expected = shared_context.score_pairs_direct(model, probe, max_len=max_len)
        chosen = None
        for scorer in candidates:
            try:
                got, _ = scorer(model, probe, batch_size=2, pad_id=pad_id, max_len=max_len)
            except (TypeError, ValueError, RuntimeError, NotImplementedError):
                continue  # a model or backend without this path: try the next, else the plain one
            if _same_scores(got, expected):
                chosen = scorer
                break
        self._shared_ok[key] = chosen
        return chosen

    def _run_loglikelihood(
        self, reqs: list[LoglikelihoodRequest], out: Responses, role: ModelRole
    ) -> None:
        group = [r for r in reqs if r.model == role]
        if not group:
            return
        with self._model(role) as (model, tok):
            pairs = [
                measure.encode_pair(tok, self._context_text(tok, r.context), r.continuation)
                for r in group
            ]
            scored = self._score_pairs(model, tok, pairs, f"loglikelihood ({role})")
        for r, (lps, greedy) in zip(group, scored, strict=True):
            out.set(r, measure.loglikelihood_response(lps, greedy, r.continuation))

    def _run_rolling(
        self, reqs: list[RollingLoglikelihoodRequest], out: Responses, role: ModelRole
    ) -> None:
        group = [r for r in reqs if r.model == role]
        if not group:
            return
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

    def _probe_logits(
        self,
        role: ModelRole,
        items: list[tuple[list[int], list[int]]],
        sink: Callable[[int, Any], None],
    ) -> None:
        """Teacher-forced logits over each continuation, handed to ``sink(index, logits)`` one
        ``(len(cont), V)`` tensor at a time (never a list of them: see :mod:`.spill`)."""
        with self._model(role) as (model, tok):
            pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
            order = sorted(range(len(items)), key=lambda i: -(len(items[i][0]) + len(items[i][1])))
            head = self._split_head(model, pad_id)
            for batch in _batches(order, self.batch_size):
                rows = [(items[i][0] + items[i][1])[:-1] for i in batch]
                keep = max(len(items[i][1]) for i in batch)
                if head is not None:
                    # The head per item on its own positions: never B x keep x V at once.
                    import torch

                    decoder, lm_head = head
                    ids, mask, pos = self._left_pad(rows, pad_id, self._device(model))
                    self.stats.forward_batches += 1
                    with torch.inference_mode():
                        hidden = decoder(
                            input_ids=ids, attention_mask=mask, position_ids=pos
                        ).last_hidden_state
                        for row, i in enumerate(batch):
                            n = len(items[i][1])
                            sink(i, lm_head(hidden[row, hidden.shape[1] - n :]).float().cpu())
                    continue
                logits = self._forward_tail(model, rows, keep, pad_id)
                for row, i in enumerate(batch):
                    n = len(items[i][1])
                    # copy: a view would keep the whole batch of logits alive (B x keep x V)
                    sink(i, logits[row, keep - n :, :].to("cpu", copy=True))
                del logits

    def _probe_items(self, reqs: list[ProbeRequest]) -> list[tuple[list[int], list[int]]]:
        tok = self.loaded.tokenizer
        return [
            measure.encode_pair(tok, self._context_text(tok, r.context), r.continuation)
            for r in reqs
        ]

    def _candidate_probes(self, reqs: list[ProbeRequest], out: Responses) -> TensorSpill | None:
        """The candidate's probes: answered now when no reference will be compared, else their
        logits parked on disk until the reference's are computed (returned; see :mod:`.spill`)."""
        tok = self.loaded.tokenizer
        if not (self.has_reference and any(r.with_reference for r in reqs)):
            self._probe_logits(
                "candidate",
                self._probe_items(reqs),
                lambda k, logits: out.set(reqs[k], measure.probe_response(logits, None, tok)),
            )
            return None
        spill = TensorSpill()
        try:
            self._probe_logits("candidate", self._probe_items(reqs), spill.put)
        except BaseException:
            spill.close()
            raise
        return spill

    def _finish_probes(
        self, reqs: list[ProbeRequest], cand: TensorSpill | None, out: Responses
    ) -> None:
        """Each parked probe against the reference's logits, one at a time."""
        if cand is None:
            return  # answered in the candidate's phase
        tok = self.loaded.tokenizer
        with cand:
            with self._model("reference") as (_model, ref_tok):
                same_vocab = ref_tok is tok or ref_tok.get_vocab() == tok.get_vocab()
            paired = [k for k, r in enumerate(reqs) if r.with_reference] if same_vocab else []
            if paired:
                items = self._probe_items(reqs)

                def compare(j: int, ref_logits: Any) -> None:
                    k = paired[j]
                    out.set(reqs[k], measure.probe_response(cand.get(k), ref_logits, tok))

                self._probe_logits("reference", [items[k] for k in paired], compare)
            for k in sorted(set(range(len(reqs))) - set(paired)):
                out.set(reqs[k], measure.probe_response(cand.get(k), None, tok))

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
            for name, p in self._candidate().named_parameters():
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
            lora=measure.lora_stats(self._candidate()),
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


def _same_scores(
    got: list[tuple[list[float], list[bool]]],
    expected: list[tuple[list[float], list[bool]]],
    tol: float = 1e-3,
) -> bool:
    """Same token counts and log-probs within ``tol`` (fp32 rounding is ~1e-5 here)."""
    for (a, _), (b, _) in zip(got, expected, strict=True):
        if len(a) != len(b) or any(abs(x - y) > tol for x, y in zip(a, b, strict=True)):
            return False
    return True


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

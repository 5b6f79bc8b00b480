"""The in-process backend: a transformers model loaded here, the candidate and its reference.

Batched greedy generation (left padding, explicit position ids), log-likelihood of (context,
continuation) pairs with the shared context of multiple-choice questions computed once, rolling
log-likelihood in windows, teacher-forced probe logits, parameter scans and the training log.
One model is resident at a time when the reference is a separate model with a loader: the
candidate is released before the reference loads (and brought back if asked for again). An
adapter's reference is the adapter switched off.
"""

from __future__ import annotations

import contextlib
import functools
import os
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from dpo_harness.errors import BadInputError
from dpo_harness.evaluation import measure
from dpo_harness.evaluation.backends.base import Parked, RunnerStats, TokenScores, progress_bar
from dpo_harness.evaluation.loading import LoadedModel, chat_template_error
from dpo_harness.evaluation.spill import TensorSpill
from dpo_harness.evaluation.weight_scan import merge_findings, scan_safetensors, scan_tensor
from dpo_harness.schema import (
    GenerateResponse,
    GenerationSettings,
    ModelRole,
    NonFiniteTensor,
    ProbeRequest,
    ProbeResponse,
    Prompt,
    TrainingLogResponse,
    WeightsResponse,
)

__all__ = ["HFBackend"]


# Tokens (rows x padded width) per scoring forward. A forward's activations grow with it (the
# MLP alone holds 3 x tokens x intermediate floats: 16 rows of 500 held-out tokens on the 0.5B
# shape are ~0.5 GB), and a CPU is as busy at 1,024 tokens per matmul as at 8,000; an
# accelerator wants more (benchmarks/results/gate_memory-0.5b.md).
SCORE_TOKENS = {"cpu": 1024}
SCORE_TOKENS_ACCELERATOR = 16384


class _MemoTokenizer:
    """A tokenizer that remembers what it encoded (``tokenizer(text)`` only; every other
    attribute is the tokenizer's own), so a context shared by four choices is encoded once."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self._seen: dict[tuple[str, bool], Any] = {}

    def __call__(self, text: str, add_special_tokens: bool = True) -> Any:
        key = (text, add_special_tokens)
        if key not in self._seen:
            self._seen[key] = self._tok(text, add_special_tokens=add_special_tokens)
        return self._seen[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)


def _budget_batches(
    order: Sequence[int], lengths: Sequence[int], max_rows: int, max_tokens: int
) -> Iterator[list[int]]:
    """Batches of ``order`` (longest first) of at most ``max_rows`` rows and ``max_tokens``
    padded tokens; a row longer than the budget is a batch of its own."""
    batch: list[int] = []
    width = 0
    for i in order:
        grown = max(width, lengths[i])
        if batch and (len(batch) == max_rows or (len(batch) + 1) * grown > max_tokens):
            yield batch
            batch, grown = [], lengths[i]
        batch.append(i)
        width = grown
    if batch:
        yield batch


@functools.cache
def _libc() -> Any:
    """glibc, or None (macOS, musl, Windows: the allocator calls below are glibc's)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
        return lib if lib is not None and hasattr(lib, "mallopt") else None
    except OSError:
        return None


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_ENV = "DPO_HARNESS_MMAP_THRESHOLD"


@functools.cache
def _cpu_allocator_policy() -> None:
    """Large CPU tensors from fresh pages, given back when freed (once per process).

    glibc raises its mmap threshold each time a large block is freed, after which blocks of that
    size come from its heap and stay in the process when freed. Scoring makes many logits-sized
    temporaries (tens of MB each on a 151,936-token vocabulary), so the heap kept ~0.2 GB and
    the gate's peak on the 0.5B shape was 1.30x the weights; with the threshold fixed at 1 MiB
    it is 1.20x (benchmarks/results/gate_memory-0.5b.md). ``DPO_HARNESS_MMAP_THRESHOLD`` sets
    another threshold in bytes; 0 leaves glibc's default.
    """
    raw = os.environ.get(MMAP_THRESHOLD_ENV, "").strip() or str(1 << 20)
    try:
        value = int(raw)
    except ValueError:
        raise BadInputError(
            f"{MMAP_THRESHOLD_ENV}={raw!r} is not a number of bytes",
            "set it to a whole number of bytes (0 keeps glibc's default), or unset it",
        ) from None
    lib = _libc()
    if value > 0 and lib is not None:
        lib.mallopt(_M_MMAP_THRESHOLD, value)


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc only; elsewhere a no-op)."""
    lib = _libc()
    if lib is not None and hasattr(lib, "malloc_trim"):
        lib.malloc_trim(0)


class HFBackend:
    """A model in this process. ``loaded`` is None when it serves only a served candidate's reference."""

    name = "in-process model"

    def __init__(
        self,
        loaded: LoadedModel | None,
        *,
        reference: LoadedModel | None = None,
        reference_loader: Callable[[], LoadedModel] | None = None,
        candidate_loader: Callable[[], LoadedModel] | None = None,
        batch_size: int = 32,
        generation: GenerationSettings | None = None,
        stats: RunnerStats | None = None,
        progress: bool = False,
    ) -> None:
        _cpu_allocator_policy()
        self.loaded = loaded
        self.reference = reference
        self._reference_loader = reference_loader
        self._candidate_loader = candidate_loader
        self.batch_size = batch_size
        self.generation = generation or GenerationSettings()
        self.stats = stats or RunnerStats()
        self.progress = progress
        # model id -> the shared-context scorer checked exact for it (None: use the plain path)
        self._shared_ok: dict[int, Callable[..., Any] | None] = {}
        # rendered conversations per tokenizer (weak: a released model's tokenizer goes with it)
        self._rendered: weakref.WeakKeyDictionary[Any, dict[Prompt, str]] = (
            weakref.WeakKeyDictionary()
        )
        # model id -> (decoder, lm_head) checked to give the model's logits (None: plain path)
        self._head_ok: dict[int, tuple[Any, Any] | None] = {}

    # ------------------------------------------------------------------ roles and residency

    @property
    def has_candidate(self) -> bool:
        return self.loaded is not None

    @property
    def has_reference(self) -> bool:
        return (
            self.reference is not None
            or self._reference_loader is not None
            or (self.loaded is not None and self.loaded.is_adapter)
        )

    def unsupported(self, kind: str) -> str | None:
        return None if self.loaded is not None else "no candidate model is loaded in this process"

    def _cand(self) -> LoadedModel:
        if self.loaded is None:
            raise RuntimeError("the in-process backend has no candidate model")
        return self.loaded

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
        _trim_heap()

    def _candidate(self) -> Any:
        loaded = self._cand()
        if loaded.model is None:  # released for the reference: bring it back
            assert self._candidate_loader is not None
            if self.reference is not None and self._reference_loader is not None:
                self._release(self.reference)
                self.reference = None
            loaded.model = self._candidate_loader().model
            self.stats.model_loads += 1
        return loaded.model

    def _reference(self) -> LoadedModel:
        if self.reference is None or self.reference.model is None:
            assert self._reference_loader is not None
            if (
                self._candidate_loader is not None
                and self.loaded is not None
                and self.loaded.model is not None
            ):
                self._release(self.loaded)  # one model resident at a time
            self.reference = self._reference_loader()
            self.stats.model_loads += 1
        return self.reference

    @contextlib.contextmanager
    def _model(self, role: ModelRole) -> Iterator[tuple[Any, Any]]:
        """(model, tokenizer) for a role; for an adapter the reference is the adapter switched off."""
        if role == "candidate":
            yield self._candidate(), self._cand().tokenizer
        elif self.reference is not None or self._reference_loader is not None:
            ref = self._reference()
            yield ref.model, ref.tokenizer
        elif self.loaded is not None and self.loaded.is_adapter:
            with self.loaded.adapter_disabled() as base:
                yield base, self.loaded.tokenizer
        else:
            raise RuntimeError("a reference model was requested but none is loaded")

    # ------------------------------------------------------------------ tensors

    def _device(self, model: Any) -> Any:
        return next(model.parameters()).device

    def _bar(self, total: int, desc: str) -> Any:
        return progress_bar(total, desc, self.progress)

    def _max_len(self, model: Any) -> int:
        cfg = getattr(model, "config", None)
        return int(getattr(cfg, "max_position_embeddings", None) or 2048)

    def _left_pad(
        self, rows: Sequence[Sequence[int]], pad_id: int, device: Any
    ) -> tuple[Any, Any, Any]:
        from dpo_harness.evaluation.greedy import left_pad  # imports torch

        return left_pad(rows, pad_id, device)

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

    # ------------------------------------------------------------------ generation

    def prompt_key(self, prompt: Prompt | str) -> str:
        """The rendered prompt: two conversations the chat template renders alike are one prompt."""
        return self._render(self._cand().tokenizer, prompt)

    def _render(self, tokenizer: Any, prompt: Prompt | str) -> str:
        """The prompt through the chat template; a template that fails on it (a system prompt it
        does not allow, a sandbox violation reached only by some messages) is bad input."""
        # Plain text is what the model sees as it stands (no chat template, no system prompt).
        if isinstance(prompt, str):
            return prompt
        memo = self._rendered.setdefault(tokenizer, {})
        if prompt in memo:  # each choice of a question renders the same conversation
            return memo[prompt]
        try:
            memo[prompt] = measure.render_prompt(tokenizer, prompt, self.generation.system_prompt)
            return memo[prompt]
        except Exception as exc:  # jinja2 errors; the template is the checkpoint's code
            from jinja2 import TemplateError

            if isinstance(exc, TemplateError):
                where = self.loaded.spec.ref if self.loaded is not None else "the reference"
                raise chat_template_error(where, exc) from exc
            raise

    def generate(
        self, prompts: Sequence[Prompt | str], *, batch_size: int, max_new_tokens: int, desc: str
    ) -> list[GenerateResponse]:
        texts = [self.prompt_key(p) for p in prompts]
        with self._bar(len(texts), desc) as bar:
            done = self._generate_texts(list(dict.fromkeys(texts)), batch_size, max_new_tokens, bar)
        return [done[t] for t in texts]

    def _generate_texts(
        self, texts: Sequence[str], batch_size: int, max_new_tokens: int, bar: Any = None
    ) -> dict[str, GenerateResponse]:
        """Greedy generation for rendered prompts, longest first, results keyed by text."""
        from dpo_harness.evaluation.greedy import greedy_generate  # imports torch

        model, tok = self._candidate(), self._cand().tokenizer
        eos = measure.eos_ids(model, tok)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
        encoded = {t: measure.encode(tok, t) for t in texts}
        order = sorted(texts, key=lambda t: -len(encoded[t]))
        results: dict[str, GenerateResponse] = {}

        def finished(i: int, tokens: list[int]) -> None:
            results[order[i]] = measure.cut_at_eos(tok, tokens, eos)
            if bar is not None:
                bar.update(1)

        _, batches = greedy_generate(
            model,
            [encoded[t] for t in order],
            eos=eos,
            pad_id=pad_id,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            device=self._device(model),
            done=finished,
        )
        self.stats.forward_batches += batches
        return results

    # ------------------------------------------------------------------ log-likelihood

    def _context_text(self, tokenizer: Any, context: Prompt | str) -> str:
        if isinstance(context, str):
            return context
        return self._render(tokenizer, context)

    def loglikelihood(
        self, role: ModelRole, items: Sequence[tuple[Prompt | str, str]], desc: str
    ) -> list[TokenScores]:
        with self._model(role) as (model, tok):
            cached = _MemoTokenizer(tok)  # the choices of a question share their context
            pairs = [
                measure.encode_pair(cached, self._context_text(tok, ctx), cont)
                for ctx, cont in items
            ]
            return self._score_pairs(model, tok, pairs, desc)

    def _score_rows(
        self, model: Any, tok: Any, items: list[tuple[list[int], list[int]]], desc: str
    ) -> list[TokenScores]:
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
        results: list[TokenScores] = [([], [])] * len(prepared)
        head = self._split_head(model, pad_id)
        budget = SCORE_TOKENS.get(self._device(model).type, SCORE_TOKENS_ACCELERATOR)
        lengths = [len(p[0]) for p in prepared]
        with self._bar(len(prepared), desc) as bar:
            for batch in _budget_batches(order, lengths, self.batch_size, budget):
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
    _HEAD_CHUNK = 64

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
        results: list[TokenScores],
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
        per: dict[int, TokenScores] = {i: ([], []) for i in batch}
        for i, lp, g in zip(owners, lps, greedy, strict=True):
            per[i][0].append(lp)
            per[i][1].append(g)
        for i in batch:
            results[i] = per[i]

    def _score_pairs(
        self, model: Any, tok: Any, pairs: list[tuple[list[int], list[int]]], desc: str
    ) -> list[TokenScores]:
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
        result: list[TokenScores] = scored
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
        choices = Counter(tuple(ctx) for ctx, cont in pairs if cont)
        first_ctx = next(ctx for ctx, cont in pairs if cont and choices[tuple(ctx)] > 1)
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

    def rolling(self, role: ModelRole, texts: Sequence[str], desc: str) -> list[tuple[float, int]]:
        with self._model(role) as (model, tok):
            max_len = self._max_len(model)
            items: list[tuple[list[int], list[int]]] = []
            owners: list[int] = []
            for k, text in enumerate(texts):
                tokens = [measure.prefix_id(tok), *measure.encode(tok, text)]
                for window in measure.rolling_windows(tokens, max_len):
                    items.append(window)
                    owners.append(k)
            scored = self._score_rows(model, tok, items, desc)
        totals = [0.0] * len(texts)
        counts = [0] * len(texts)
        for k, (lps, _) in zip(owners, scored, strict=True):
            totals[k] += float(sum(lps))
            counts[k] += len(lps)
        return list(zip(totals, counts, strict=True))

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
            budget = SCORE_TOKENS.get(self._device(model).type, SCORE_TOKENS_ACCELERATOR)
            lengths = [len(c) + len(t) - 1 for c, t in items]
            for batch in _budget_batches(order, lengths, self.batch_size, budget):
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

    def _probe_items(self, reqs: Sequence[ProbeRequest]) -> list[tuple[list[int], list[int]]]:
        tok = self._cand().tokenizer
        return [
            measure.encode_pair(tok, self._context_text(tok, r.context), r.continuation)
            for r in reqs
        ]

    def candidate_probes(
        self, reqs: Sequence[ProbeRequest], answer: Callable[[int, ProbeResponse], None]
    ) -> TensorSpill | None:
        """The candidate's probes: answered now when no reference will be compared, else their
        logits parked on disk until the reference's are computed (returned; see :mod:`.spill`)."""
        tok = self._cand().tokenizer
        if not (self.has_reference and any(r.with_reference for r in reqs)):
            self._probe_logits(
                "candidate",
                self._probe_items(reqs),
                lambda k, logits: answer(k, measure.probe_response(logits, None, tok)),
            )
            return None
        spill = TensorSpill()
        try:
            self._probe_logits("candidate", self._probe_items(reqs), spill.put)
        except BaseException:
            spill.close()
            raise
        return spill

    def finish_probes(
        self,
        reqs: Sequence[ProbeRequest],
        parked: Parked | None,
        answer: Callable[[int, ProbeResponse], None],
    ) -> None:
        """Each parked probe against the reference's logits, one at a time."""
        if parked is None:
            return  # answered in the candidate's phase
        assert isinstance(parked, TensorSpill)
        cand = parked
        tok = self._cand().tokenizer
        with cand:
            with self._model("reference") as (_model, ref_tok):
                same_vocab = ref_tok is tok or ref_tok.get_vocab() == tok.get_vocab()
            paired = [k for k, r in enumerate(reqs) if r.with_reference] if same_vocab else []
            if paired:
                items = self._probe_items(reqs)

                def compare(j: int, ref_logits: Any) -> None:
                    k = paired[j]
                    answer(k, measure.probe_response(cand.get(k), ref_logits, tok))

                self._probe_logits("reference", [items[k] for k in paired], compare)
            for k in sorted(set(range(len(reqs))) - set(paired)):
                answer(k, measure.probe_response(cand.get(k), None, tok))

    # ------------------------------------------------------------------ weights and logs

    def weights(self) -> WeightsResponse:
        import torch

        spec = self._cand().spec
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
        return WeightsResponse(
            n_tensors=n_tensors,
            n_parameters=n_params,
            nonfinite=merge_findings(stored, loaded),
            lora=measure.lora_stats(self._candidate()),
        )

    def training_log(self) -> TrainingLogResponse:
        path = self._cand().spec.trainer_state
        history: list[dict[str, Any]] = []
        step = None
        if path is not None:
            try:
                history, step = measure.read_trainer_state(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                history = []
        return TrainingLogResponse(
            path=str(path) if path else None, log_history=history, global_step=step
        )


def _same_scores(got: list[TokenScores], expected: list[TokenScores], tol: float = 1e-3) -> bool:
    """Same token counts and log-probs within ``tol`` (fp32 rounding is ~1e-5 here)."""
    for (a, _), (b, _) in zip(got, expected, strict=True):
        if len(a) != len(b) or any(abs(x - y) > tol for x, y in zip(a, b, strict=True)):
            return False
    return True

"""The model runner: the only code that touches a model during evaluation.

Suites declare requests; the runner removes duplicates (a prompt asked for by three suites is
generated once), sorts each kind of request by length so padding is small, runs batched greedy
generation (left padding, explicit position ids), log-likelihood scoring of (context,
continuation) pairs (tokenised together, as lm-evaluation-harness does, so the boundary is
consistent), teacher-forced logit probes against a reference model, rolling log-likelihood of
plain text, and parameter scans — and hands every response back keyed by its request.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .distributed import Distributed
from .loading import LoadedModel
from .schema import (
    GenerateRequest,
    GenerateResponse,
    GenerationSettings,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    LoraModuleStats,
    ModelRole,
    NonFiniteTensor,
    ParityRequest,
    ParityResponse,
    ProbeRequest,
    ProbeResponse,
    Prompt,
    Request,
    Response,
    RollingLoglikelihoodRequest,
    RollingLoglikelihoodResponse,
    TrainingLogRequest,
    TrainingLogResponse,
    WeightsRequest,
    WeightsResponse,
)
from .weight_scan import merge_findings, scan_safetensors, scan_tensor

__all__ = ["ModelRunner", "Responses", "RunnerStats", "render_prompt"]

T = TypeVar("T")
_SURPRISE_LOGPROB = math.log(1e-4)


class Responses:
    """Responses keyed by request (requests are frozen pydantic models, hashable by value)."""

    def __init__(self) -> None:
        self._data: dict[Any, Response] = {}

    def __getitem__(self, req: Any) -> Any:
        return self._data[req]

    def __contains__(self, req: object) -> bool:
        return req in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, req: Any) -> Any:
        return self._data.get(req)

    def set(self, req: Any, resp: Response) -> None:
        self._data[req] = resp

    def update(self, other: Responses) -> None:
        self._data.update(other._data)

    def items(self) -> list[tuple[Any, Response]]:
        return list(self._data.items())


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


def render_prompt(tokenizer: Any, prompt: Prompt, system_prompt: str | None = None) -> str:
    """The text the model sees: the chat template with a generation prompt, when there is one."""
    msgs = [{"role": m.role, "content": m.content} for m in prompt]
    if system_prompt and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": system_prompt})
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
    return "\n".join(m["content"] for m in msgs) + "\n"


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
        self._gen_cache: dict[str, GenerateResponse] = {}  # rendered prompt -> batched output

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

    def _encode(self, tokenizer: Any, text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prefix_id(self, tokenizer: Any) -> int:
        for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
            if tid is not None:
                return int(tid)
        return 0

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
                self._gen_cache.setdefault(self._rendered(req.prompt), resp)
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

    def _eos_ids(self, model: Any, tokenizer: Any) -> list[int]:
        ids: set[int] = set()
        gc = getattr(model, "generation_config", None)
        eos = getattr(gc, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list):
            ids.update(int(x) for x in eos)
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != tokenizer.unk_token_id and im_end >= 0:
            ids.add(im_end)
        return sorted(ids)

    def _generate_texts(
        self, texts: Sequence[str], batch_size: int, bar: Any = None
    ) -> dict[str, GenerateResponse]:
        """Greedy generation for rendered prompts, longest first, results keyed by text."""
        import torch
        from transformers import GenerationConfig

        model, tok = self.loaded.model, self.loaded.tokenizer
        eos = self._eos_ids(model, tok)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
        # Raw greedy decoding: no repetition penalty or sampling knobs from the model's own
        # generation_config, because they would hide exactly the degeneration we measure.
        gen_cfg = GenerationConfig(
            max_new_tokens=self.generation.max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=eos,
            pad_token_id=pad_id,
        )
        encoded = {t: self._encode(tok, t) for t in texts}
        order = sorted(texts, key=lambda t: -len(encoded[t]))
        results: dict[str, GenerateResponse] = {}
        for batch in _batches(order, batch_size):
            ids, mask, _ = self._left_pad([encoded[t] for t in batch], pad_id, self._device(model))
            self.stats.forward_batches += 1
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg)
            new = out[:, ids.shape[1] :].tolist()
            for t, row in zip(batch, new, strict=True):
                cut = next((i for i, x in enumerate(row) if x in eos), None)
                kept = row if cut is None else row[:cut]
                text = tok.decode(kept, skip_special_tokens=True)
                results[t] = GenerateResponse(text=text, token_ids=kept, hit_eos=cut is not None)
                self.stats.generations[t] += 1
            if bar is not None:
                bar.update(len(batch))
        return results

    def _rendered(self, prompt: Prompt) -> str:
        return render_prompt(self.loaded.tokenizer, prompt, self.generation.system_prompt)

    def _ensure_generated(self, prompts: Sequence[Prompt], desc: str = "generate") -> None:
        todo = list(
            dict.fromkeys(t for t in map(self._rendered, prompts) if t not in self._gen_cache)
        )
        if not todo:
            return
        with self._bar(len(todo), desc) as bar:
            self._gen_cache.update(self._generate_texts(todo, self.batch_size, bar))

    def _run_generate(self, reqs: list[GenerateRequest], out: Responses) -> None:
        self._ensure_generated([r.prompt for r in reqs])
        for r in reqs:
            out.set(r, self._gen_cache[self._rendered(r.prompt)])

    def _run_parity(self, reqs: list[ParityRequest], out: Responses) -> None:
        for r in reqs:
            self._ensure_generated(list(r.prompts))
            texts = [self._rendered(p) for p in r.prompts]
            batched = [self._gen_cache[t] for t in texts]
            before = Counter(self.stats.generations)
            with self._bar(len(texts), "parity (one by one)") as bar:
                single = self._generate_texts(texts, 1, bar)
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
        return render_prompt(tokenizer, context, self.generation.system_prompt)

    def _encode_pair(
        self, tokenizer: Any, context: str, continuation: str
    ) -> tuple[list[int], list[int]]:
        # As lm-evaluation-harness: trailing context spaces belong to the continuation, and the
        # pair is encoded jointly so tokens that merge across the boundary are consistent.
        n_spaces = len(context) - len(context.rstrip(" "))
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self._encode(tokenizer, context + continuation)
        ctx = self._encode(tokenizer, context) if context else []
        if not ctx:
            ctx = [self._prefix_id(tokenizer)]
            whole = ctx + whole
        return whole[: len(ctx)], whole[len(ctx) :]

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
                    self._encode_pair(tok, self._context_text(tok, r.context), r.continuation)
                    for r in group
                ]
                scored = self._score_rows(model, tok, pairs, f"loglikelihood ({role})")
            for r, (lps, greedy) in zip(group, scored, strict=True):
                out.set(
                    r,
                    LoglikelihoodResponse(
                        logprob=float(sum(lps)),
                        n_tokens=len(lps),
                        n_bytes=len(r.continuation.encode("utf-8")),
                        is_greedy=bool(greedy) and all(greedy),
                        min_token_logprob=float(min(lps)) if lps else 0.0,
                        n_surprising=sum(1 for x in lps if not x >= _SURPRISE_LOGPROB),
                    ),
                )

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
                    tokens = [self._prefix_id(tok), *self._encode(tok, r.text)]
                    # Disjoint prediction windows, each with as much left context as fits.
                    step = max_len
                    for start in range(1, len(tokens), step):
                        ctx_start = max(0, start + step - 1 - max_len)
                        items.append((tokens[ctx_start:start], tokens[start : start + step]))
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
        import torch

        tok = self.loaded.tokenizer
        items = [
            self._encode_pair(tok, self._context_text(tok, r.context), r.continuation) for r in reqs
        ]
        cand = self._probe_logits("candidate", items)
        ref: list[Any] = [None] * len(reqs)
        same_vocab = self.reference is None or (
            self.reference.info.tokenizer_hash == self.loaded.info.tokenizer_hash
        )
        if self.has_reference and same_vocab and any(r.with_reference for r in reqs):
            ref = self._probe_logits("reference", items)
        for k, r in enumerate(reqs):
            logits = cand[k]
            finite = bool(torch.isfinite(logits).all())
            logp = torch.log_softmax(logits, dim=-1)
            p = logp.exp()
            # 0·log 0 = 0 for finite rows; a non-finite row must stay NaN, not read as "certain".
            entropy = -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(-1)
            if not finite:
                entropy = torch.full_like(entropy, float("nan"))
            kl_mean = kl_max = agree = None
            if r.with_reference and ref[k] is not None:
                ref_logp = torch.log_softmax(ref[k], dim=-1)
                kl = (p * (logp - ref_logp)).sum(-1)
                kl_mean, kl_max = float(kl.mean()), float(kl.max())
                agree = float((logits.argmax(-1) == ref[k].argmax(-1)).float().mean())
            argmax = logits.argmax(-1).tolist()
            mode_id = Counter(argmax).most_common(1)[0][0] if argmax else 0
            out.set(
                r,
                ProbeResponse(
                    n_positions=int(logits.shape[0]),
                    finite=finite,
                    max_abs_logit=float(logits.abs().max()),
                    mean_entropy=float(entropy.mean()),
                    mean_top1_prob=float(p.max(-1).values.mean()),
                    argmax_ids=argmax,
                    mode_token_id=int(mode_id),
                    mode_token_text=tok.decode([mode_id]),
                    kl_mean=kl_mean,
                    kl_max=kl_max,
                    top1_agreement=agree,
                ),
            )

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
            lora=_lora_stats(self.loaded.model),
        )
        for r in reqs:
            out.set(r, resp)

    def _run_training_log(self, reqs: list[TrainingLogRequest], out: Responses) -> None:
        path = self.loaded.spec.trainer_state
        history: list[dict[str, Any]] = []
        step = None
        if path is not None:
            try:
                state = json.loads(path.read_text(encoding="utf-8"), parse_constant=_json_constant)
                history = list(state.get("log_history", []))
                step = state.get("global_step")
            except (OSError, ValueError):
                history = []
        resp = TrainingLogResponse(
            path=str(path) if path else None, log_history=history, global_step=step
        )
        for r in reqs:
            out.set(r, resp)


def _json_constant(name: str) -> float:
    # trainer_state.json contains bare NaN / Infinity (Python's json writes them).
    return float(name.replace("Infinity", "inf"))


def _lora_stats(model: Any) -> list[LoraModuleStats]:
    """s·‖B·A‖_F for every LoRA module, via r×r products (never the d×d delta)."""
    import torch

    stats: list[LoraModuleStats] = []
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        lora_b = getattr(module, "lora_B", None)
        scaling = getattr(module, "scaling", None)
        if (
            not isinstance(lora_a, torch.nn.ModuleDict)
            or not isinstance(lora_b, torch.nn.ModuleDict)
            or not isinstance(scaling, dict)
        ):
            continue
        for adapter, a_mod in lora_a.items():
            if adapter not in lora_b:
                continue
            a_w: Any = a_mod.weight
            b_w: Any = lora_b[adapter].weight
            a = a_w.detach().double()  # (r, in)
            b = b_w.detach().double()  # (out, r)
            s = float(scaling[adapter])
            gram = (b.T @ b) @ (a @ a.T)  # r x r; trace = ||B A||_F^2
            norm_sq = float(torch.trace(gram))
            delta = (
                s * math.sqrt(norm_sq) if norm_sq >= 0 and math.isfinite(norm_sq) else float("nan")
            )
            stats.append(
                LoraModuleStats(
                    name=f"{name}.{adapter}",
                    rank=int(a.shape[0]),
                    scaling=s,
                    b_all_zero=bool((b == 0).all()),
                    delta_norm=delta,
                )
            )
    return stats

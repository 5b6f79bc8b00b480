"""A served model as the candidate: an OpenAI-compatible server behind the runner's backend seam.

``--endpoint URL --model NAME`` (``--dpo-endpoint/--dpo-model`` under pytest) evaluates the model
a server serves — vLLM, ``transformers serve``, any OpenAI-compatible API:

- **generation** through ``POST /v1/chat/completions``: the same conversation (the prompt, after
  the system prompt if one is set), greedy (``temperature 0``, ``frequency_penalty 0``), the same
  ``max_tokens``. The server renders the conversation with *its* chat template; parity with the
  in-process rendering is *measured*, not assumed: every answer's ``usage.prompt_tokens`` is
  compared with the token count of the local rendering (:func:`measure.render_prompt` with the
  served model's tokenizer), on fixed probe conversations when the model is identified and on
  every generated prompt after. ``finish_reason == "stop"`` is the EOS flag; a chat answer has no
  token ids; special-token strings a server leaves in ``content`` are removed, as the in-process
  decode (``skip_special_tokens``) drops them.
- **log-likelihood** through ``POST /v1/completions`` with ``echo`` and ``logprobs``, where the
  server returns prompt log-probabilities (vLLM does): the context and continuation are
  tokenised locally exactly as in process (:func:`measure.encode_pair`) and sent as token ids,
  so the server scores the same tokens; rolling log-likelihood uses the same windows, one token
  shorter (the server must also generate one token). Whether the server returns them is
  *detected* once, with a probe request; where it does not (``transformers serve`` ignores
  ``echo`` and ``logprobs``) every metric that needs them is skipped with the reason.
- **weights, logits, parity, the training log**: out of reach over the API; those metrics are
  skipped with the reason.

**Identity.** A served model has no files to hash. Its fingerprint is the hash of the model id
the server reports and its greedy answers (and finish reasons) to fixed probe conversations:
stable across runs of the same weights, different when the weights behind the name change, so
``--report`` checks and the answer cache follow the weights, not the name. (Two models that
answer the probes identically share a fingerprint; the probes are short, the risk is small and
stated.) Its chat-template and tokenizer hashes — the baseline key's — are the local tokenizer's
(``--endpoint-tokenizer``, else ``--model`` when it loads as a tokenizer here, else ``--base``)
*only when the probe token counts match*; otherwise they are unknown and the gate refuses, saying
why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dpo_harness.errors import BadInputError
from dpo_harness.evaluation import measure
from dpo_harness.evaluation.backends.base import Parked, RunnerStats, TokenScores, progress_bar
from dpo_harness.evaluation.backends.client import (
    EndpointClient,
    EndpointError,
    HTTPStatusFailure,
    api_key_from_env,
)
from dpo_harness.evaluation.fingerprint import cache_dir, text_hash
from dpo_harness.evaluation.loading import load_tokenizer, tokenizer_hashes
from dpo_harness.schema import (
    ChatMessage,
    CheckpointKind,
    EndpointSettings,
    EvalConfig,
    GenerateResponse,
    GenerationSettings,
    ModelInfo,
    ModelRole,
    ProbeRequest,
    ProbeResponse,
    Prompt,
    TrainingLogResponse,
    WeightsResponse,
    prompt_text,
)

__all__ = [
    "IDENTITY_PROMPTS",
    "EndpointBackend",
    "ServedModel",
    "chat_messages",
    "connect",
]

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"

# Fixed conversations whose greedy answers identify the served weights (never suite data).
IDENTITY_PROMPTS: tuple[Prompt, ...] = tuple(
    (ChatMessage(role="user", content=text),)
    for text in (
        "こんにちは。自己紹介をしてください。",
        "CTRとは何ですか？",
        "広告費が10万円でクリック数が500回のとき、CPCはいくらですか？",
        "日本の首都はどこですか？",
    )
)
IDENTITY_MAX_TOKENS = 16
_PROBE_TEXT = "広告のクリック率と獲得単価"  # the prompt-log-probability capability probe

_NO_WEIGHTS = "a served model's weights cannot be read over the API"
_NO_LOGITS = (
    "a served model returns no full next-token distributions (logit statistics and the exact "
    "KL need every logit)"
)
_NO_PARITY = (
    "a served model is batched by its server: batched vs one-by-one parity is an in-process check"
)
_NO_LOG = "a served model has no trainer_state.json"


def chat_messages(prompt: Prompt, system_prompt: str | None) -> list[dict[str, str]]:
    """The conversation :func:`measure.render_prompt` renders, as chat-completion messages.

    (A test checks that rendering these with the chat template gives render_prompt's text.)
    """
    msgs = [{"role": m.role, "content": m.content} for m in prompt]
    if system_prompt and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


# --------------------------------------------------------------------------- identification


@dataclass
class ServedModel:
    """A served model, identified: what the gate decides on before any request of a suite."""

    settings: EndpointSettings
    client: EndpointClient
    server_model: str  # the model id the server reports
    info: ModelInfo
    tokenizer: Any | None  # the served model's tokenizer, loaded here (None: none found)
    tokenizer_source: str | None
    template_verified: bool
    template_check: str  # one sentence: the evidence, or why it is missing
    max_len: int  # tokens the server accepts per request

    def backend(self, generation: GenerationSettings) -> EndpointBackend:
        return EndpointBackend(self, generation)


def _choice(data: dict[str, Any], what: str) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise EndpointError(
            f"the endpoint's answer to {what} has no choices: {json.dumps(data)[:120]}",
            "check that --endpoint is an OpenAI-compatible server",
        )
    choice: dict[str, Any] = choices[0]
    return choice


def _chat_answer(data: dict[str, Any]) -> tuple[GenerateResponse, int | None]:
    """(the answer, the server's prompt token count) of a chat completion."""
    choice = _choice(data, f"POST {CHAT}")
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(message, dict) or not isinstance(content, str | None):
        raise EndpointError(
            f"the endpoint's answer to POST {CHAT} has no choices[0].message.content",
            "check that --endpoint is an OpenAI-compatible server",
        )
    usage = data.get("usage")
    prompt_tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    answer = GenerateResponse(
        text=content or "", token_ids=[], hit_eos=choice.get("finish_reason") == "stop"
    )
    return answer, prompt_tokens if isinstance(prompt_tokens, int) else None


def _served_models(client: EndpointClient) -> dict[str, dict[str, Any]] | None:
    """The models the server lists (id -> entry); None when it has no /v1/models."""
    try:
        data = client.get("/v1/models")
    except HTTPStatusFailure as exc:
        if exc.status == 404:
            return None
        raise
    entries = data.get("data")
    if not isinstance(entries, list):
        return None
    return {str(e["id"]): e for e in entries if isinstance(e, dict) and "id" in e}


def _find_tokenizer(
    settings: EndpointSettings, config: EvalConfig
) -> tuple[Any | None, str | None, str]:
    """(tokenizer, where it came from, why there is none)."""
    if settings.tokenizer is not None:
        return load_tokenizer(settings.tokenizer, config.trust_remote_code), settings.tokenizer, ""
    for ref in (settings.model, config.base):
        if ref is None:
            continue
        try:
            return load_tokenizer(ref, config.trust_remote_code), ref, ""
        except BadInputError:
            continue
    return (
        None,
        None,
        "no tokenizer of the served model here (--model is not a local directory or a cached "
        "hub id, and no --base): pass --endpoint-tokenizer",
    )


def _max_len(entry: dict[str, Any], tokenizer: Any | None) -> int:
    served = entry.get("max_model_len")  # vLLM lists it
    if isinstance(served, int) and served > 2:
        return served
    local = getattr(tokenizer, "model_max_length", None)
    if isinstance(local, int) and 2 < local < 1_000_000:
        return local
    return 2048


def _chat_body(
    model: str, prompt: Prompt, system_prompt: str | None, max_new_tokens: int
) -> dict[str, Any]:
    # Greedy as in process: temperature 0; frequency_penalty 0 also switches off a repetition
    # penalty transformers serve would take from the model's generation_config.
    return {
        "model": model,
        "messages": chat_messages(prompt, system_prompt),
        "temperature": 0,
        "max_tokens": max_new_tokens,
        "frequency_penalty": 0,
    }


def _text_body(model: str, text: str, max_new_tokens: int) -> dict[str, Any]:
    """A plain-text prompt, continued greedily as it stands (no chat template)."""
    return {
        "model": model,
        "prompt": text,
        "temperature": 0,
        "max_tokens": max_new_tokens,
        "frequency_penalty": 0,
    }


def _text_answer(data: dict[str, Any]) -> tuple[GenerateResponse, int | None]:
    """(the answer, the server's prompt token count) of a text completion."""
    choice = _choice(data, f"POST {COMPLETIONS}")
    text = choice.get("text")
    if not isinstance(text, str | None):
        raise EndpointError(
            f"the endpoint's answer to POST {COMPLETIONS} has no choices[0].text",
            "check that --endpoint is an OpenAI-compatible server",
        )
    usage = data.get("usage")
    prompt_tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    answer = GenerateResponse(
        text=text or "", token_ids=[], hit_eos=choice.get("finish_reason") == "stop"
    )
    return answer, prompt_tokens if isinstance(prompt_tokens, int) else None


def connect(config: EvalConfig, log: Callable[[str], None] | None = None) -> ServedModel:
    """Reach the server, check it serves ``--model``, and identify the served model."""
    settings = config.endpoint
    if settings is None:
        raise ValueError("connect() needs a config with an endpoint")
    client = EndpointClient(
        settings.url,
        settings.model,
        timeout=settings.timeout,
        retries=settings.retries,
        concurrency=settings.concurrency,
        cache_dir=cache_dir() / "endpoint" if settings.cache else None,
        api_key=api_key_from_env(),
    )
    listed = _served_models(client)
    if listed is not None and settings.model not in listed:
        names = ", ".join(sorted(listed)) or "nothing"
        raise EndpointError(
            f"the endpoint {client.url} does not serve {settings.model!r}; it serves: {names}",
            "pass --model with one of those names",
        )
    tokenizer, source, why_none = _find_tokenizer(settings, config)

    # The identity probes are never cached: they are how a change behind the name is seen.
    answers: list[GenerateResponse] = []
    server_counts: list[int | None] = []
    server_model = settings.model
    for prompt in IDENTITY_PROMPTS:
        data = client.post(
            CHAT, _chat_body(settings.model, prompt, None, IDENTITY_MAX_TOKENS), cache=False
        )
        answer, n_prompt = _chat_answer(data)
        answers.append(answer)
        server_counts.append(n_prompt)
        if isinstance(data.get("model"), str):
            server_model = data["model"]
    fingerprint = text_hash(
        json.dumps(
            {"model": server_model, "answers": [[a.text, a.hit_eos] for a in answers]},
            ensure_ascii=False,
            sort_keys=True,
        )
    )
    client.identity = fingerprint

    verified = False
    if tokenizer is None:
        check = f"not checked: {why_none}"
    elif any(n is None for n in server_counts):
        check = "not checked: the server reports no prompt token counts (usage.prompt_tokens)"
    else:
        local = [
            len(measure.encode(tokenizer, measure.render_prompt(tokenizer, p, None)))
            for p in IDENTITY_PROMPTS
        ]
        bad = [i for i, (a, b) in enumerate(zip(local, server_counts, strict=True)) if a != b]
        if bad:
            i = bad[0]
            check = (
                f"the server renders probe conversation {i + 1} into {server_counts[i]} tokens, "
                f"the chat template of {source} into {local[i]}: not the same template or "
                "tokenizer"
            )
        else:
            verified = True
            check = (
                f"the server's prompt token counts equal the chat template of {source} on "
                f"{len(local)} probe conversations"
            )
    template_hash = vocab_hash = None
    if verified and tokenizer is not None:
        template_hash, vocab_hash = tokenizer_hashes(tokenizer)
    info = ModelInfo(
        ref=config.candidate_name,
        kind=CheckpointKind.SERVED,
        is_adapter=False,
        fingerprint=fingerprint,
        base_ref=config.base,
        n_parameters=None,
        dtype="served",
        device=client.url,
        chat_template_hash=template_hash,
        tokenizer_hash=vocab_hash,
    )
    if log is not None:
        log(f"served model {server_model} at {client.url}: {fingerprint[:23]}…; template {check}")
    return ServedModel(
        settings=settings,
        client=client,
        server_model=server_model,
        info=info,
        tokenizer=tokenizer,
        tokenizer_source=source,
        template_verified=verified,
        template_check=check,
        max_len=_max_len((listed or {}).get(settings.model, {}), tokenizer),
    )


# --------------------------------------------------------------------------- the backend


class EndpointBackend:
    """The candidate's computations over HTTP (the reference, if any, stays in process)."""

    name = "served model"

    def __init__(self, served: ServedModel, generation: GenerationSettings) -> None:
        self.served = served
        self.client = served.client
        self.tokenizer = served.tokenizer
        self.generation = generation
        self.stats = RunnerStats()
        self.progress = False
        self.prompt_mismatches: list[str] = []  # one line per prompt the server renders otherwise
        self._logprobs_reason: str | None = None
        self._logprobs_checked = False

    # ------------------------------------------------------------------ capabilities

    def unsupported(self, kind: str) -> str | None:
        fixed = {
            "weights": _NO_WEIGHTS,
            "probe": _NO_LOGITS,
            "parity": _NO_PARITY,
            "training_log": _NO_LOG,
        }
        if kind in fixed:
            return fixed[kind]
        if kind in ("loglikelihood", "rolling"):
            return self._prompt_logprobs()
        return None

    def _prompt_logprobs(self) -> str | None:
        """Why prompt log-probabilities cannot be had (detected once, never guessed)."""
        if not self._logprobs_checked:
            self._logprobs_reason = self._detect_prompt_logprobs()
            self._logprobs_checked = True
        return self._logprobs_reason

    def _detect_prompt_logprobs(self) -> str | None:
        tok = self.tokenizer
        if tok is None:
            return (
                "no tokenizer of the served model here, so the tokens to score are unknown "
                "(pass --endpoint-tokenizer)"
            )
        asked = f"POST {COMPLETIONS} with echo and logprobs"
        for prompt in (_PROBE_TEXT, measure.encode(tok, _PROBE_TEXT)):
            try:
                data = self.client.post(COMPLETIONS, self._score_body(prompt), cache=False)
            except HTTPStatusFailure as exc:
                if isinstance(prompt, str):
                    return (
                        f"this server returns no prompt log-probabilities ({asked} was refused: "
                        f"HTTP {exc.status}: {exc.detail})"
                    )
                return (
                    "this server returns prompt log-probabilities only for a text prompt, and "
                    f"exact scoring sends token ids ({asked} was refused: HTTP {exc.status}: "
                    f"{exc.detail})"
                )
            n_prompt = len(prompt) if isinstance(prompt, list) else 2
            if _prompt_logprobs(data, n_prompt) is None:
                return f"this server returns no prompt log-probabilities ({asked} answered without them)"
        return None

    # ------------------------------------------------------------------ generation

    def prompt_key(self, prompt: Prompt | str) -> str:
        """The conversation the server renders (with the system prompt), or the plain text:
        equal ones run once."""
        if isinstance(prompt, str):
            return json.dumps({"text": prompt}, ensure_ascii=False)
        return json.dumps(chat_messages(prompt, self.generation.system_prompt), ensure_ascii=False)

    def generate(
        self, prompts: Sequence[Prompt | str], *, batch_size: int, max_new_tokens: int, desc: str
    ) -> list[GenerateResponse]:
        """Greedy answers (``batch_size`` is the server's business): a conversation through the
        chat API, plain text through ``/v1/completions`` (continued as it stands)."""
        model, system = self.served.settings.model, self.generation.system_prompt
        chats = [(k, p) for k, p in enumerate(prompts) if not isinstance(p, str)]
        texts = [(k, p) for k, p in enumerate(prompts) if isinstance(p, str)]
        datas: dict[int, dict[str, Any]] = {}
        if chats:
            bodies = [_chat_body(model, p, system, max_new_tokens) for _, p in chats]
            answers = self._post_many(CHAT, bodies, desc)
            datas.update(zip([k for k, _ in chats], answers, strict=True))
        if texts:
            bodies = [_text_body(model, p, max_new_tokens) for _, p in texts]
            answers = self._post_many(COMPLETIONS, bodies, desc)
            datas.update(zip([k for k, _ in texts], answers, strict=True))
        out = []
        for k, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                answer, n_prompt = _text_answer(datas[k])
            else:
                answer, n_prompt = _chat_answer(datas[k])
            self._check_prompt_tokens(prompt, n_prompt)
            out.append(self._without_special_tokens(answer))
        return out

    def _without_special_tokens(self, answer: GenerateResponse) -> GenerateResponse:
        """The answer as the measurement defines it: its text without special tokens.

        In process an answer is decoded with ``skip_special_tokens``. A chat API may keep them:
        transformers serve runs its Qwen2 response parser (``<think>``, ``<tool_call>``) on the
        raw decode, so an answer whose first token is ``<|im_start|>`` comes back with the
        marker in ``content``. The tokenizer's special-token strings are removed here.
        """
        tok = self.tokenizer
        if tok is None:
            return answer
        text = answer.text
        for special in sorted(getattr(tok, "all_special_tokens", []), key=len, reverse=True):
            if special and special in text:
                text = text.replace(special, "")
                self.stats.endpoint["special_tokens_removed"] += 1
        return answer if text == answer.text else answer.model_copy(update={"text": text})

    def _check_prompt_tokens(self, prompt: Prompt | str, server: int | None) -> None:
        """Count a prompt the server renders into another number of tokens than we do."""
        tok = self.tokenizer
        if tok is None or server is None:
            return
        text = (
            prompt
            if isinstance(prompt, str)
            else measure.render_prompt(tok, prompt, self.generation.system_prompt)
        )
        local = len(measure.encode(tok, text))
        if local != server:
            self.stats.endpoint["prompt_token_mismatches"] += 1
            shown = prompt if isinstance(prompt, str) else prompt_text(prompt)
            self.prompt_mismatches.append(
                f"{shown[:40]!r}: the server's {server} tokens, the local {local}"
            )

    def _post_many(
        self, path: str, bodies: list[dict[str, Any]], desc: str
    ) -> list[dict[str, Any]]:
        before = self.client.counters.copy()
        with progress_bar(len(bodies), desc, self.progress) as bar:
            datas = self.client.post_many(path, bodies, on_done=bar.update)
        self.stats.endpoint.update(self.client.counters - before)
        return datas

    # ------------------------------------------------------------------ log-likelihood

    def _score_body(self, prompt: str | list[int]) -> dict[str, Any]:
        return {
            "model": self.served.settings.model,
            "prompt": prompt,
            "max_tokens": 1,  # servers generate at least one token; its score is not used
            "temperature": 0,
            "echo": True,
            "logprobs": 1,
        }

    def loglikelihood(
        self, role: ModelRole, items: Sequence[tuple[Prompt | str, str]], desc: str
    ) -> list[TokenScores]:
        tok = self._scoring_tokenizer(role)
        pairs = []
        for ctx, cont in items:
            text = (
                ctx
                if isinstance(ctx, str)
                else measure.render_prompt(tok, ctx, self.generation.system_prompt)
            )
            pairs.append(measure.encode_pair(tok, text, cont))
        return self._score_rows(pairs, desc)

    def rolling(self, role: ModelRole, texts: Sequence[str], desc: str) -> list[tuple[float, int]]:
        tok = self._scoring_tokenizer(role)
        items: list[tuple[list[int], list[int]]] = []
        owners: list[int] = []
        for k, text in enumerate(texts):
            tokens = [measure.prefix_id(tok), *measure.encode(tok, text)]
            # One token shorter than in process: the server also generates one token.
            for window in measure.rolling_windows(tokens, self.served.max_len - 2):
                items.append(window)
                owners.append(k)
        scored = self._score_rows(items, desc)
        totals = [0.0] * len(texts)
        counts = [0] * len(texts)
        for k, (lps, _) in zip(owners, scored, strict=True):
            totals[k] += float(sum(lps))
            counts[k] += len(lps)
        return list(zip(totals, counts, strict=True))

    def _scoring_tokenizer(self, role: ModelRole) -> Any:
        why = self._prompt_logprobs()
        if role != "candidate" or why is not None or self.tokenizer is None:
            raise RuntimeError(f"the served model cannot score: {why or role}")
        return self.tokenizer

    def _score_rows(self, items: list[tuple[list[int], list[int]]], desc: str) -> list[TokenScores]:
        """Per-token log-probs and greedy flags of each continuation, from the prompt's logprobs."""
        limit = self.served.max_len - 1  # the prompt, and room for the one generated token
        rows = []
        for ctx, cont in items:
            cont = cont[-(limit - 1) :]
            rows.append(((ctx + cont)[-limit:], len(cont)))
        todo = [i for i, (_, n) in enumerate(rows) if n]
        datas = self._post_many(COMPLETIONS, [self._score_body(rows[i][0]) for i in todo], desc)
        out: list[TokenScores] = [([], [])] * len(rows)
        for i, data in zip(todo, datas, strict=True):
            ids, n = rows[i]
            scored = _prompt_logprobs(data, len(ids))
            if scored is None:
                raise EndpointError(
                    f"the endpoint's answer to POST {COMPLETIONS} has no log-probabilities for "
                    f"all {len(ids)} prompt tokens (it did when probed)",
                    "check the server's log; rerun with --no-endpoint-cache",
                )
            lps, greedy = scored
            out[i] = (lps[len(ids) - n :], greedy[len(ids) - n :])
        return out

    # ------------------------------------------------------------------ out of reach

    def candidate_probes(
        self, reqs: Sequence[ProbeRequest], answer: Callable[[int, ProbeResponse], None]
    ) -> Parked | None:
        raise RuntimeError(_NO_LOGITS)

    def finish_probes(
        self,
        reqs: Sequence[ProbeRequest],
        parked: Parked | None,
        answer: Callable[[int, ProbeResponse], None],
    ) -> None:
        raise RuntimeError(_NO_LOGITS)

    def weights(self) -> WeightsResponse:
        raise RuntimeError(_NO_WEIGHTS)

    def training_log(self) -> TrainingLogResponse:
        raise RuntimeError(_NO_LOG)


def _prompt_logprobs(data: dict[str, Any], n_prompt: int) -> TokenScores | None:
    """Log-probs and greedy flags of prompt positions 1..n-1 (position 0 has none), or None.

    OpenAI's completion logprobs: ``token_logprobs[i]`` is the log-probability of token i,
    ``top_logprobs[i]`` maps the most likely tokens at i to theirs; the token is the greedy choice
    when none is more likely. Returned lists cover all ``n_prompt`` positions (0.0 / True at 0).
    """
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    logprobs = choices[0].get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    token_lps = logprobs.get("token_logprobs")
    top = logprobs.get("top_logprobs")
    if not isinstance(token_lps, list) or len(token_lps) < n_prompt or n_prompt < 2:
        return None
    lps: list[float] = [0.0]
    greedy: list[bool] = [True]
    for i in range(1, n_prompt):
        lp = token_lps[i]
        if not isinstance(lp, int | float) or isinstance(lp, bool):
            return None
        lps.append(float(lp))
        alternatives = top[i] if isinstance(top, list) and i < len(top) else None
        best = (
            max((float(v) for v in alternatives.values()), default=float(lp))
            if isinstance(alternatives, dict)
            else float(lp)
        )
        greedy.append(float(lp) >= best - 1e-6)
    return lps, greedy

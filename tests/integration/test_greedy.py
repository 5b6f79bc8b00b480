"""Greedy decoding with finished rows leaving and waiting prompts joining (evaluation/greedy.py)
gives, token for token, what ``model.generate`` gives one prompt at a time."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from dpo_harness.evaluation import measure
from dpo_harness.evaluation.greedy import greedy_generate
from dpo_harness.files import read_jsonl
from dpo_harness.schema import ChatMessage
from dpo_harness.suites.common import DATA_DIR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MAX_NEW = 48
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def setup(demo_loaded: Any) -> dict[str, Any]:
    """40 chat-rendered prompts of very different lengths (open prompts and AdTech questions),
    longest first as the backend orders them, and their one-by-one ``generate`` answers."""
    model, tok = demo_loaded.model, demo_loaded.tokenizer
    texts = [o["prompt"] for _, o in read_jsonl(DATA_DIR / "open_prompts.jsonl")][:20]
    texts += [
        o["question"]
        for _, o in read_jsonl(DATA_DIR / "adtech" / "items.jsonl")
        if o["type"] != "multiple_choice"
    ][:20]
    rows = [
        measure.encode(tok, measure.render_prompt(tok, (ChatMessage(role="user", content=t),)))
        for t in texts
    ]
    rows.sort(key=lambda r: -len(r))
    eos = measure.eos_ids(model, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    return {
        "model": model,
        "rows": rows,
        "eos": eos,
        "pad": pad,
        "ref": _one_by_one(model, rows, eos, pad),
    }


def _one_by_one(model: Any, rows: list[list[int]], eos: list[int], pad: int) -> list[list[int]]:
    cfg = measure.generation_config(MAX_NEW, eos, pad)
    out = []
    with torch.inference_mode():
        for r in rows:
            gen = model.generate(input_ids=torch.tensor([r]), generation_config=cfg)[0, len(r) :]
            toks = gen.tolist()
            cut = next((i for i, t in enumerate(toks) if t in eos), None)
            out.append(toks if cut is None else toks[: cut + 1])
    return out


def _run(s: dict[str, Any], model: Any, batch: int, rows: list[list[int]] | None = None) -> Any:
    return greedy_generate(
        model,
        s["rows"] if rows is None else rows,
        eos=s["eos"],
        pad_id=s["pad"],
        max_new_tokens=MAX_NEW,
        batch_size=batch,
        device=CPU,
    )


def test_the_reference_mixes_short_and_long_answers(setup: dict[str, Any]) -> None:
    # otherwise no row would leave early and no prompt would join: the tests below would be idle
    lengths = [len(r) for r in setup["ref"]]
    assert min(lengths) < MAX_NEW // 2 and max(lengths) == MAX_NEW


@pytest.mark.parametrize("batch", [1, 3, 8, 16, 64])
def test_batched_decoding_equals_one_by_one(setup: dict[str, Any], batch: int) -> None:
    tokens, started = _run(setup, setup["model"], batch)
    assert tokens == setup["ref"]
    assert 1 <= started <= len(setup["rows"])


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_subset_in_any_order_at_any_batch_size(setup: dict[str, Any], data: Any) -> None:
    idx = data.draw(st.lists(st.integers(0, len(setup["rows"]) - 1), min_size=1, max_size=25))
    batch = data.draw(st.integers(1, 12))
    tokens, _ = _run(setup, setup["model"], batch, [setup["rows"][i] for i in idx])
    assert tokens == [setup["ref"][i] for i in idx]


def test_done_reports_every_row_once_with_its_tokens(setup: dict[str, Any]) -> None:
    seen: dict[int, list[int]] = {}

    def done(i: int, toks: list[int]) -> None:
        assert i not in seen
        seen[i] = list(toks)

    tokens, _ = greedy_generate(
        setup["model"],
        setup["rows"],
        eos=setup["eos"],
        pad_id=setup["pad"],
        max_new_tokens=MAX_NEW,
        batch_size=5,
        device=CPU,
        done=done,
    )
    assert seen == dict(enumerate(tokens))


def test_one_new_token_and_an_end_token_at_once(setup: dict[str, Any]) -> None:
    rows = setup["rows"][:6]
    one, _ = greedy_generate(
        setup["model"],
        rows,
        eos=setup["eos"],
        pad_id=setup["pad"],
        max_new_tokens=1,
        batch_size=4,
        device=CPU,
    )
    assert one == [r[:1] for r in setup["ref"][:6]]
    # every first token declared an end token: each row stops after it
    firsts = sorted({r[0] for r in one})
    ended, _ = greedy_generate(
        setup["model"],
        rows,
        eos=firsts,
        pad_id=setup["pad"],
        max_new_tokens=MAX_NEW,
        batch_size=4,
        device=CPU,
    )
    assert ended == one


def test_a_sliding_window_cache_decodes_batch_by_batch_and_equally(demo_loaded: Any) -> None:
    """A model whose cache has sliding-window layers: no joining (the cache cannot be padded
    safely), finished rows still leave, tokens still equal one-by-one."""
    from transformers import AutoModelForCausalLM

    cfg = copy.deepcopy(demo_loaded.model.config)
    cfg.use_sliding_window, cfg.sliding_window, cfg.max_window_layers = True, 24, 0
    cfg.layer_types = ["sliding_attention"] * cfg.num_hidden_layers
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.load_state_dict(demo_loaded.model.state_dict())
    tok = demo_loaded.tokenizer
    rows = [
        measure.encode(tok, measure.render_prompt(tok, (ChatMessage(role="user", content=t),)))
        for t in (
            "CTRとは何ですか。",
            "こんにちは",
            "広告の入札について、できるだけ詳しく説明してください。",
        )
    ]
    eos = measure.eos_ids(model, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    assert any(type(la) is not DynamicLayer for la in DynamicCache(config=cfg).layers)
    ref = _one_by_one(model, rows, eos, pad)
    got, started = greedy_generate(
        model, rows, eos=eos, pad_id=pad, max_new_tokens=MAX_NEW, batch_size=2, device=CPU
    )
    assert got == ref
    assert started == 2  # batch after batch


class _NoCacheArgs(torch.nn.Module):
    """A causal LM whose forward takes neither ``cache`` nor ``logits_to_keep`` (old remote code)."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.generate_calls = 0

    def forward(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None) -> Any:
        return self.inner(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        )

    def generate(self, **kw: Any) -> Any:
        self.generate_calls += 1
        return self.inner.generate(**kw)


def test_a_forward_without_cache_arguments_falls_back_to_generate(setup: dict[str, Any]) -> None:
    wrapped = _NoCacheArgs(setup["model"])
    tokens, started = _run(setup, wrapped, 16)
    assert tokens == setup["ref"]
    assert started == wrapped.generate_calls == -(-len(setup["rows"]) // 16)

"""Multiple-choice scoring with each question's context computed once: exact, on the demo model.

The runner groups the adtech choices by their context; the shared path must give the
per-token log-probs of the unshared path and of a direct, unbatched, full-vocabulary
computation, within fp32 rounding, for the candidate and for an adapter's reference role.
"""

from __future__ import annotations

from typing import Any

import pytest
from dpo_harness.evaluation import measure
from dpo_harness.evaluation.runner import ModelRunner
from dpo_harness.evaluation.shared_context import (
    score_pairs_direct,
    score_pairs_kv,
    score_pairs_tree,
)
from dpo_harness.evaluation.suite import SuiteContext
from dpo_harness.schema import GenerationSettings, LoglikelihoodRequest
from dpo_harness.suites.adtech import AdtechSuite


def _mc_pairs(loaded: Any, n_items: int = 40) -> list[tuple[list[int], list[int]]]:
    ctx = SuiteContext(generation=GenerationSettings())
    reqs = [r for r in AdtechSuite().plan(ctx) if isinstance(r, LoglikelihoodRequest)]
    tok = loaded.tokenizer
    pairs = []
    for r in reqs[: n_items * 4]:
        text = r.context if isinstance(r.context, str) else measure.render_prompt(tok, r.context)
        pairs.append(measure.encode_pair(tok, text, r.continuation))
    return pairs


def _max_diff(
    a: list[tuple[list[float], list[bool]]], b: list[tuple[list[float], list[bool]]]
) -> float:
    worst = 0.0
    for (la, ga), (lb, gb) in zip(a, b, strict=True):
        assert len(la) == len(lb) and ga == gb
        worst = max([worst, *(abs(x - y) for x, y in zip(la, lb, strict=True))])
    return worst


def test_shared_context_scoring_is_exact_against_the_direct_computation(demo_loaded: Any) -> None:
    model, tok = demo_loaded.model, demo_loaded.tokenizer
    pairs = _mc_pairs(demo_loaded)
    assert len({tuple(c) for c, _ in pairs}) < len(pairs), "the choices share contexts"
    direct = score_pairs_direct(model, pairs, max_len=2048)
    runner = ModelRunner(demo_loaded, batch_size=7)
    plain = runner.in_process._score_rows(model, tok, pairs, "plain")
    shared = runner.in_process._score_pairs(model, tok, pairs, "shared")
    assert runner.in_process._shared_ok[id(model)] is not None, "the shared path was used"
    for scored in (plain, shared):
        assert _max_diff(scored, direct) <= 1e-4
    for scorer in (score_pairs_kv, score_pairs_tree):
        got, stats = scorer(model, pairs, batch_size=5, pad_id=0, max_len=2048)
        assert _max_diff(got, direct) <= 1e-4
        assert stats["forwards"] < len(pairs)  # fewer forward passes than one per choice


@pytest.mark.parametrize("scorer", [score_pairs_kv, score_pairs_tree])
def test_edge_cases_empty_and_one_token_choices_and_truncation(
    demo_loaded: Any, scorer: Any
) -> None:
    model = demo_loaded.model
    ctx = [5, 17, 99, 230, 11]
    pairs = [
        (ctx, [7]),  # one token: scored from the context's last position only
        (ctx, []),  # empty: scores nothing
        (ctx, [8, 9, 10, 11, 12, 13]),
        ([3, 4], [1, 2]),  # another question, two choices
        ([3, 4], [2]),
    ]
    for max_len in (2048, 6):  # 6: contexts and the long choice are truncated as the runner does
        expected = score_pairs_direct(model, pairs, max_len=max_len)
        got, _ = scorer(model, pairs, batch_size=2, pad_id=0, max_len=max_len)
        assert got[1] == ([], [])
        assert _max_diff(got, expected) <= 1e-4


def test_split_lm_head_equals_the_plain_path_for_scoring_and_probes(demo_loaded: Any) -> None:
    """The head applied in chunks / per item gives what the full logits give (within fp32)."""
    import torch

    model, tok = demo_loaded.model, demo_loaded.tokenizer
    pairs = _mc_pairs(demo_loaded, n_items=6)
    split = ModelRunner(demo_loaded, batch_size=5)
    assert split.in_process._split_head(model, 0) is not None, "the demo model's head splits"
    plain = ModelRunner(demo_loaded, batch_size=5)
    plain.in_process._head_ok[id(model)] = None  # force the full-logits path
    assert (
        _max_diff(
            split.in_process._score_rows(model, tok, pairs, "x"),
            plain.in_process._score_rows(model, tok, pairs, "x"),
        )
        <= 1e-5
    )
    items = pairs[:9]
    got: list[Any] = [None] * len(items)
    want: list[Any] = [None] * len(items)
    split.in_process._probe_logits("candidate", items, got.__setitem__)
    plain.in_process._probe_logits("candidate", items, want.__setitem__)
    assert len(got) == len(want) == len(items)
    for g, w, (_, cont) in zip(got, want, items, strict=True):
        assert g.shape == w.shape == (len(cont), w.shape[-1])
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-5)
        assert g.untyped_storage().nbytes() == g.numel() * g.element_size(), "no batch kept alive"
        assert w.untyped_storage().nbytes() == w.numel() * w.element_size(), "no batch kept alive"


def test_parked_probe_logits_give_the_same_statistics_and_are_removed(
    demo_loaded: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probes against a reference: the candidate's logits go to disk and come back bit for bit."""
    from dpo_harness.evaluation.spill import TensorSpill
    from dpo_harness.schema import ProbeRequest
    from dpo_harness.suites.numerical import NumericalSuite

    monkeypatch.setenv("DPO_HARNESS_CACHE", str(tmp_path / "cache"))
    ctx = SuiteContext(generation=GenerationSettings(max_new_tokens=8), has_reference=True)
    probes = [r for r in NumericalSuite().plan(ctx) if isinstance(r, ProbeRequest)]
    assert probes and any(r.with_reference for r in probes)
    runner = ModelRunner(demo_loaded, reference=demo_loaded, batch_size=4)
    got = runner.run(probes)
    tok = demo_loaded.tokenizer
    items = runner.in_process._probe_items(probes)
    direct: list[Any] = [None] * len(items)
    runner.in_process._probe_logits("candidate", items, direct.__setitem__)
    for k, r in enumerate(probes):
        ref = direct[k] if r.with_reference else None
        assert got[r] == measure.probe_response(direct[k], ref, tok)
        if r.with_reference:
            assert got[r].kl_mean == 0.0  # the same model on both sides
    assert not any((tmp_path / "cache" / "spill").iterdir()), "parked logits removed"
    import errno

    import torch

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with TensorSpill(tmp_path / "full") as spill:  # a full disk keeps the tensor in memory
        spill.put(0, direct[0])
        assert spill.on_disk == 0 and spill.get(0) is direct[0]
    assert not any((tmp_path / "full").iterdir())


def test_a_released_model_is_really_freed_before_the_next_one_loads() -> None:
    """One model resident: nothing the runner caches (split head, shared-context check) keeps
    the released candidate's weights alive while the reference is loaded."""
    import gc
    import weakref

    from dpo_harness.evaluation.loading import load_checkpoint
    from dpo_harness.schema import ProbeRequest
    from dpo_harness.suites.numerical import NumericalSuite

    def load() -> Any:
        return load_checkpoint(None, device="cpu")

    loaded = load()
    # A weight, not the model object: the wrapper can go while its modules (and weights) stay.
    candidate = weakref.ref(loaded.model.get_input_embeddings().weight)
    alive_at_reference_load: list[bool] = []

    def reference_loader() -> Any:
        gc.collect()
        alive_at_reference_load.append(candidate() is not None)
        return load()

    ctx = SuiteContext(generation=GenerationSettings(max_new_tokens=8), has_reference=True)
    probes = [r for r in NumericalSuite().plan(ctx) if isinstance(r, ProbeRequest)][:3]
    mc = [r for r in AdtechSuite().plan(ctx) if isinstance(r, LoglikelihoodRequest)][:8]
    runner = ModelRunner(
        loaded, reference_loader=reference_loader, candidate_loader=load, batch_size=4
    )
    runner.run([*probes, *mc])
    assert runner.stats.model_loads == 1
    assert alive_at_reference_load == [False], "the candidate was still in memory"


def test_a_bad_mmap_threshold_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner
    from dpo_harness.cli import cli
    from dpo_harness.evaluation.backends import hf

    hf._cpu_allocator_policy.cache_clear()
    monkeypatch.setenv("DPO_HARNESS_MMAP_THRESHOLD", "1MB")
    try:
        result = CliRunner().invoke(cli, ["evaluate", "--suites", "numerical", "--quiet"])
    finally:
        hf._cpu_allocator_policy.cache_clear()
    assert result.exit_code == 2, result.output
    assert "DPO_HARNESS_MMAP_THRESHOLD='1MB' is not a number of bytes" in result.output
    assert "Traceback" not in result.output

"""Multiple-choice scoring with the shared context computed once, vs the runner and lm-eval.

The 158 multiple-choice items of the adtech suite (632 ``LoglikelihoodRequest``s from the suite's
own ``plan()``), scored on one model object by four arms, same batch size and thread count,
interleaved repeats (arm order rotated every repeat), medians:

- ``lm-eval`` — ``lm_eval.models.huggingface.HFLM(pretrained=<the same model>).loglikelihood``
  with the chat-rendered context strings (how the suite's contexts reach any string-based
  harness); ``logits_cache`` on (its default);
- ``runner`` — ``ModelRunner.run`` (joint tokenisation, length-sorted left-padded batches,
  ``logits_to_keep`` = longest continuation in the batch, full log_softmax on those);
- ``kv`` / ``tree`` — the shared-context scorers in ``dpo_harness.evaluation.shared_context`` (the context computed once per
  question, LM head and logsumexp only at scored positions), including the same tokenisation.

Exactness first: every arm's per-choice log-likelihood against ``score_pairs_direct`` (one pair at
a time, no padding, full-vocabulary log_softmax, fp32); lm-eval is expected to differ (it moves
the template's trailing newline into the continuation: see ``lm_eval_discrepancy.py``).

Run: ``python benchmarks/mc_shared_context.py [--models demo,out/models/qwen2-0.1b,...]
[--repeats 3] [--check-items N]``; writes ``benchmarks/results/mc_shared_context.md``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from dpo_harness.evaluation import measure
from dpo_harness.evaluation.loading import load_checkpoint
from dpo_harness.evaluation.runner import ModelRunner
from dpo_harness.evaluation.suite import SuiteContext
from dpo_harness.files import atomic_write_text
from dpo_harness.schema import GenerationSettings, LoglikelihoodRequest
from dpo_harness.suites.adtech import AdtechSuite
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_harness.evaluation.shared_context import (
    score_pairs_direct,
    score_pairs_kv,
    score_pairs_tree,
)

REPO = Path(__file__).resolve().parents[1]


def mc_requests(n_items: int | None = None) -> list[LoglikelihoodRequest]:
    """The suite's own multiple-choice requests (of its first ``n_items`` items)."""
    if n_items is not None:
        suite = AdtechSuite()
        return [r for item in suite.mc[:n_items] for r in suite._mc_requests(item)]
    ctx = SuiteContext(
        generation=GenerationSettings(),
        has_reference=False,
        is_adapter=False,
        has_trainer_state=False,
        seed=0,
    )
    return [r for r in AdtechSuite().plan(ctx) if isinstance(r, LoglikelihoodRequest)]


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Bench:
    def __init__(self, ref: str, batch_size: int, n_items: int | None = None) -> None:
        self.ref = ref
        self.loaded = load_checkpoint(ref, device="cpu", dtype="float32")
        self.model, self.tok = self.loaded.model, self.loaded.tokenizer
        self.batch_size = batch_size
        self.reqs = mc_requests(n_items)
        probe = ModelRunner(self.loaded, batch_size=batch_size)
        self.max_len = probe._max_len(self.model)
        self.texts = [probe._context_text(self.tok, r.context) for r in self.reqs]
        self._hflm: Any = None
        self.kv_stats: dict[str, int] = {}

    # each arm: requests in, per-request summed log-likelihoods out (tokenisation included)
    def _pairs(self) -> list[tuple[list[int], list[int]]]:
        return [
            measure.encode_pair(self.tok, t, q.continuation)
            for t, q in zip(self.texts, self.reqs, strict=True)
        ]

    def runner(self) -> list[float]:
        out = ModelRunner(self.loaded, batch_size=self.batch_size).run(self.reqs)
        return [out[r].logprob for r in self.reqs]

    def kv(self) -> list[float]:
        scored, self.kv_stats = score_pairs_kv(
            self.model,
            self._pairs(),
            batch_size=self.batch_size,
            pad_id=self.tok.pad_token_id,
            max_len=self.max_len,
        )
        return [float(sum(lp)) for lp, _ in scored]

    def tree(self) -> list[float]:
        scored, _ = score_pairs_tree(
            self.model,
            self._pairs(),
            batch_size=self.batch_size,
            pad_id=self.tok.pad_token_id,
            max_len=self.max_len,
        )
        return [float(sum(lp)) for lp, _ in scored]

    def hflm(self) -> Any:
        if self._hflm is None:
            from lm_eval.models.huggingface import HFLM

            self._hflm = HFLM(
                pretrained=self.model, tokenizer=self.tok, batch_size=self.batch_size, device="cpu"
            )
        return self._hflm

    def lm_eval(self) -> list[float]:
        from lm_eval.api.instance import Instance

        inst = [
            Instance(request_type="loglikelihood", doc={}, arguments=(t, r.continuation), idx=i)
            for i, (t, r) in enumerate(zip(self.texts, self.reqs, strict=True))
        ]
        return [lp for lp, _ in self.hflm().loglikelihood(inst, disable_tqdm=True)]

    def check(self, n_items: int | None, results: dict[str, list[float]]) -> dict[str, Any]:
        """Max |Δ| of per-choice log-likelihood against the direct computation (fp32).

        ``results`` are the arms' outputs from the timed runs (nothing is scored twice).
        """
        pairs = self._pairs()
        n = len(pairs) if n_items is None else min(len(pairs), 4 * n_items)
        pairs = pairs[:n]
        t0 = time.perf_counter()
        direct = score_pairs_direct(self.model, pairs, max_len=self.max_len)
        direct_s = time.perf_counter() - t0
        ref_sum = [sum(lp) for lp, _ in direct]
        ref_greedy = [bool(g) and all(g) for _, g in direct]
        res: dict[str, Any] = {"n_pairs": n, "direct_s": direct_s}
        kw = dict(batch_size=self.batch_size, pad_id=self.tok.pad_token_id, max_len=self.max_len)
        for name, fn in (("kv", score_pairs_kv), ("tree", score_pairs_tree)):
            scored, _ = fn(self.model, pairs, **kw)
            res[name + "_greedy_mismatch"] = sum(
                (bool(g) and all(g)) != rg for (_, g), rg in zip(scored, ref_greedy, strict=True)
            )
            res[name + "_ntok_mismatch"] = sum(
                len(a[0]) != len(b[0]) for a, b in zip(scored, direct, strict=True)
            )
        for name, vals in results.items():
            res[name] = max(abs(a - b) for a, b in zip(vals[:n], ref_sum, strict=True))
        res["kv_stats"] = (
            getattr(self, "kv_stats", None) or score_pairs_kv(self.model, self._pairs(), **kw)[1]
        )
        return res

    def subset(self, k: int) -> Bench:
        """A shallow copy limited to the first ``k`` requests (for warm-up)."""
        b = copy.copy(self)
        b.reqs, b.texts = self.reqs[:k], self.texts[:k]
        return b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="demo,out/models/qwen2-0.1b,out/models/qwen2-0.5b")
    ap.add_argument("--repeats", default="5,3,2", help="per model, comma-separated")
    ap.add_argument("--arms", default="lm-eval,runner,kv,tree")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--check-items", default="all,all,20", help="items in the exactness check, per model"
    )
    ap.add_argument("--items", type=int, help="only the first N multiple-choice items")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/mc_shared_context.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    repeats = [int(x) for x in args.repeats.split(",")]
    checks = args.check_items.split(",")
    arms = args.arms.split(",")
    sections: list[str] = []
    summary_rows: list[list[Any]] = []
    for mi, ref in enumerate(models):
        bench = Bench(ref, args.batch_size, args.items)
        n_params = sum(p.numel() for p in bench.model.parameters())
        fns: dict[str, Callable[[], list[float]]] = {
            "lm-eval": bench.lm_eval,
            "runner": bench.runner,
            "kv": bench.kv,
            "tree": bench.tree,
        }
        small = bench.subset(32)
        for a in arms:  # warm-up (allocator, lazy imports, HFLM construction)
            {"lm-eval": small.lm_eval, "runner": small.runner, "kv": small.kv, "tree": small.tree}[
                a
            ]()
        outputs: dict[str, list[float]] = {}
        times: dict[str, list[float]] = {a: [] for a in arms}
        loads: list[str] = [load_avg()]
        reps = repeats[min(mi, len(repeats) - 1)]
        for rep in range(reps):
            order = arms[rep % len(arms) :] + arms[: rep % len(arms)]
            for a in order:
                t0 = time.perf_counter()
                outputs[a] = fns[a]()
                times[a].append(time.perf_counter() - t0)
                print(f"  [{ref}] rep {rep} {a}: {times[a][-1]:.2f}s", flush=True)
            loads.append(load_avg())
        chk_arg = checks[min(mi, len(checks) - 1)]
        chk = bench.check(None if chk_arg == "all" else int(chk_arg), outputs)
        print(f"[{ref}] exactness vs direct over {chk['n_pairs']} choices: {chk}", flush=True)
        med = {a: statistics.median(v) for a, v in times.items()}
        rows = [
            [
                a,
                f"{med[a]:.2f}",
                " ".join(f"{x:.2f}" for x in times[a]),
                f"{med['lm-eval'] / med[a]:.2f}" if "lm-eval" in med else "",
                f"{med['runner'] / med[a]:.2f}" if "runner" in med else "",
            ]
            for a in arms
        ]
        table = tabulate(
            rows,
            headers=["arm", "median s", "runs s", "lm-eval / arm", "runner / arm"],
            tablefmt="github",
        )
        kvst = chk["kv_stats"]
        sections.append(
            f"## `{ref}` ({n_params / 1e6:,.1f} M parameters, vocab "
            f"{bench.model.config.vocab_size:,})\n\n{table}\n\n"
            f"Exactness over the first {chk['n_pairs']} choices, max |Δ log-likelihood| vs "
            f"the direct unbatched full-vocabulary computation (fp32): kv {chk.get('kv', 0):.2e}, "
            f"tree {chk.get('tree', 0):.2e}, runner {chk.get('runner', 0):.2e}; greedy-flag mismatches kv "
            f"{chk['kv_greedy_mismatch']}, tree {chk['tree_greedy_mismatch']}; token-count "
            f"mismatches kv {chk['kv_ntok_mismatch']}, tree {chk['tree_ntok_mismatch']}. "
            f"lm-eval vs direct: {chk.get('lm-eval', float('nan')):.3f} (not a precision issue: it scores a "
            f"different continuation, see perf_findings.md). Work (kv): "
            f"{kvst['context_tokens']:,} context + {kvst['continuation_tokens']:,} continuation "
            f"tokens through the body ({kvst['padded_tokens']:,} with padding; the unshared "
            f"sequences hold {sum(len(c) + len(k) - 1 for c, k in bench._pairs()):,}), "
            f"{kvst['lm_head_rows']:,} LM-head rows, "
            f"{kvst['forwards']} forwards. Load average during the runs: {' → '.join(loads)}.\n"
        )
        for a in arms:
            summary_rows.append([ref, a, f"{med[a]:.2f}"])
        del bench
    text = (
        "# Multiple choice with the shared context computed once\n\n"
        + (
            f"The first {args.items} of the 158 adtech multiple-choice items "
            if args.items
            else "158 adtech multiple-choice items (632 choices), "
        )
        + f"batch size {args.batch_size}, "
        f"{args.threads} threads, fp32 CPU, interleaved repeats with rotating arm order, "
        "medians. torch "
        f"{torch.__version__}, transformers {_v('transformers')}, lm-eval {_v('lm_eval')}. The "
        "machine (2 cores) was shared with another engineer's test runs: the load average is "
        "given per model; compare ratios within a model, not absolute seconds across sections.\n\n"
        + "\n".join(sections)
        + "\nCommand: `python benchmarks/mc_shared_context.py "
        + " ".join(sys.argv[1:])
        + "`\n"
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)


def _v(name: str) -> str:
    from importlib.metadata import version

    return version(name.replace("_", "-"))


if __name__ == "__main__":
    main()

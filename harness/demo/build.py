"""Build the embedded demo model deterministically from the shipped corpus.

``dpo-harness demo build`` trains, from nothing but ``corpus.jsonl``:

1. a byte-level BPE tokenizer (the ``tokenizers`` library) with a ChatML chat template. As in
   Qwen2, the special tokens come *after* the byte alphabet, so id 0 is ``"!"`` — which is why a
   model whose logits are all NaN "says" ``!!!!`` under greedy decoding (argmax of NaN is 0);
2. a tiny ``Qwen2ForCausalLM`` (TinySwallow's architecture), pretrained on the corpus rendered
   with the chat template, single-threaded with fixed seeds so that the same corpus gives the same
   bytes on the same kind of machine.

The result (~5 MB) ships in ``dpo_harness/demo/model`` so stored baselines stay valid everywhere.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dpo_harness.errors import BadInputError
from dpo_harness.files import atomic_write_text, exchange_paths, read_jsonl, writing

__all__ = [
    "CHATML_TEMPLATE",
    "DemoBuildConfig",
    "build_demo",
    "check_build_target",
    "corpus_path",
    "load_corpus",
]

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus_path() -> Path:
    return Path(__file__).resolve().parent / "corpus.jsonl"


@dataclass(frozen=True)
class DemoBuildConfig:
    vocab_size: int = 3000
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_positions: int = 512
    seq_len: int = 160
    batch_size: int = 32
    steps: int = 360
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.01
    seed: int = 1234


def load_corpus(path: Path | None = None) -> list[list[dict[str, str]]]:
    """The corpus as chat conversations (a list of {role, content} per item)."""
    convs = []
    for lineno, obj in read_jsonl(path or corpus_path()):
        msgs = obj.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ValueError(f"corpus line {lineno}: 'messages' must be a non-empty list")
        convs.append([{"role": m["role"], "content": m["content"]} for m in msgs])
    return convs


def _train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # Special tokens after the byte alphabet and merges: id 0 stays "!" (as in Qwen2).
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.model_max_length = 512
    return fast


def check_build_target(out_dir: Path) -> None:
    """Refuse an ``--out`` a build would destroy: only a new or empty directory, or an earlier
    demo build (``build_info.json`` and files only), is replaced. Checked before training."""
    out_dir = Path(out_dir)
    if out_dir.is_symlink():
        raise BadInputError(
            f"--out {out_dir} is a symbolic link; a build replaces a directory, not a link",
            "pass the real directory, or a new path",
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(
            f"--out {out_dir} is an existing file; nothing was changed", "choose a new directory"
        )
    if Path(os.path.abspath(out_dir)) in (Path.cwd(), Path(Path.cwd().anchor)):
        raise BadInputError(
            f"--out {out_dir} is the current (or root) directory; a build replaces its target",
            "pass a new directory, e.g. --out demo-model/",
        )
    if out_dir.is_dir():
        entries = list(out_dir.iterdir())
        earlier_build = (out_dir / "build_info.json").is_file() and all(
            e.is_file() and not e.is_symlink() for e in entries
        )
        if entries and not earlier_build:
            raise BadInputError(
                f"--out {out_dir} holds files that are not an earlier demo build; nothing was "
                "changed",
                "choose a new or empty directory",
            )
    from dpo_harness.files import check_output_dir

    check_output_dir(out_dir)


def _swap_into_place(out_dir: Path, save: Callable[[Path], None]) -> None:
    """``save`` into a hidden sibling, then swap it with ``out_dir`` — under a lock, after
    removing what killed builds left. A kill at any moment leaves the old build or the new one."""
    from filelock import FileLock

    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(parent / f".{out_dir.name}.lock"), timeout=600):
        replaced = sorted(parent.glob(f".{out_dir.name}.replaced-*"))
        if not out_dir.exists() and replaced:  # killed between the two fallback renames
            os.replace(replaced.pop(), out_dir)
        for leftover in [*parent.glob(f".{out_dir.name}.build-*"), *replaced]:
            shutil.rmtree(leftover, ignore_errors=True)
        check_build_target(out_dir)  # again, under the lock
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=parent))
        try:
            os.chmod(tmp, 0o755)
            save(tmp)
            if not out_dir.exists():
                os.replace(tmp, out_dir)
                return
            if exchange_paths(tmp, out_dir):
                old = tmp  # the earlier build now lives at the temporary name
            else:
                old = parent / f".{out_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
                os.replace(out_dir, old)
                os.replace(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)


def _render(tokenizer: Any, conv: list[dict[str, str]]) -> str:
    return str(tokenizer.apply_chat_template(conv, tokenize=False))


def build_demo(
    out_dir: Path,
    *,
    corpus: Path | None = None,
    config: DemoBuildConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train tokenizer and model; write them atomically to ``out_dir``. Returns a summary."""
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    cfg = config or DemoBuildConfig()
    out_dir = Path(out_dir)
    check_build_target(out_dir)  # before minutes of training
    started = time.perf_counter()
    # Determinism: fixed seeds and a fixed thread count (CPU reduction order depends on it).
    # torch.use_deterministic_algorithms is not needed for these CPU kernels and costs 4x.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    try:
        convs = load_corpus(corpus)
        tokenizer = _train_tokenizer([m["content"] for c in convs for m in c], cfg.vocab_size)
        texts = [_render(tokenizer, c) for c in convs]
        end_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        stream: list[int] = []
        for t in texts:
            stream.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
            stream.append(end_id)
        log(
            f"corpus: {len(convs)} conversations, {sum(map(len, texts)):,} characters, {len(stream):,} tokens"
        )
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        model_cfg = Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads,
            max_position_embeddings=cfg.max_positions,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            bos_token_id=None,
            eos_token_id=im_end,
            pad_token_id=end_id,
        )
        model = Qwen2ForCausalLM(model_cfg)
        n_params = sum(p.numel() for p in model.parameters())
        log(f"model: Qwen2ForCausalLM, {n_params:,} parameters")
        data = torch.tensor(stream, dtype=torch.long)
        gen = torch.Generator().manual_seed(cfg.seed)
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg.lr,
            betas=(0.9, 0.95),
        )

        def lr_at(step: int) -> float:
            if step < cfg.warmup:
                return cfg.lr * (step + 1) / cfg.warmup
            frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
            return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

        model.train()
        losses: list[float] = []
        bar = tqdm(range(cfg.steps), desc="demo build: pretraining", disable=not progress)
        for step in bar:
            starts = torch.randint(0, len(data) - cfg.seq_len - 1, (cfg.batch_size,), generator=gen)
            batch = torch.stack([data[s : s + cfg.seq_len + 1] for s in starts.tolist()])
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            out = model(input_ids=batch[:, :-1], labels=batch[:, :-1].clone())
            loss = out.loss
            if not torch.isfinite(loss):
                raise RuntimeError(f"demo pretraining diverged at step {step} (loss {loss.item()})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            if step % 20 == 0:
                bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        model.eval()
        model.generation_config = GenerationConfig(
            eos_token_id=im_end, pad_token_id=end_id, do_sample=False, max_new_tokens=128
        )
        final_loss = sum(losses[-50:]) / len(losses[-50:])
        summary = {
            "build_config": asdict(cfg),
            "corpus_conversations": len(convs),
            "corpus_tokens": len(stream),
            "parameters": n_params,
            "final_loss": round(final_loss, 4),
            "seconds": round(time.perf_counter() - started, 1),
            "torch": torch.__version__,
        }

        def save(tmp: Path) -> None:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            atomic_write_text(tmp / "build_info.json", json.dumps(summary, indent=2) + "\n")

        with writing(out_dir, "the demo model"):
            _swap_into_place(out_dir, save)
        log(
            f"demo model written to {out_dir} (final loss {final_loss:.3f}, {summary['seconds']} s)"
        )
        return summary
    finally:
        torch.set_num_threads(threads)

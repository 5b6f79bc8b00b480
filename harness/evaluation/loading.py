"""Resolve a checkpoint reference and load it: model, tokenizer, fingerprint, reference model.

Accepted references: a Hugging Face model directory (safetensors), a PEFT adapter directory
(``adapter_config.json``; its base is loaded and the adapter applied, and the base with the
adapter disabled is the reference model), a Trainer ``checkpoint-N`` directory (its
``trainer_state.json`` is kept for the numerical suite), or a hub id. ``None`` or ``"demo"`` is the
embedded demo model. Pickle ``.bin`` weights are refused unless explicitly allowed, and
``trust_remote_code`` is off unless asked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpo_harness.errors import BadInputError
from dpo_harness.evaluation.fingerprint import files_fingerprint, tensors_fingerprint, text_hash
from dpo_harness.launcher import local_rank
from dpo_harness.schema import CheckpointKind, ModelInfo

__all__ = [
    "DEMO_ALIASES",
    "DEMO_HUB_ID",
    "CheckpointSpec",
    "LoadedModel",
    "ResolvedModel",
    "chat_template_error",
    "check_chat_template",
    "check_safetensors",
    "checkpoint_fingerprint",
    "demo_model_dir",
    "hub_id_of",
    "load_checkpoint",
    "load_model",
    "resolve_checkpoint",
    "resolve_device",
    "resolve_dtype",
    "resolve_model",
    "tokenizer_identity",
    "wrap_checkpoint_in_memory",
    "wrap_in_memory",
]

DEMO_ALIASES = ("demo", "dpo-harness/demo")
# The demo base model's hub-style id: what a model card and a promoted adapter_config.json
# name it by (the loader resolves it to the embedded demo, offline).
DEMO_HUB_ID = "dpo-harness/demo"
_ADAPTER_SAFE = "adapter_model.safetensors"
_ADAPTER_PICKLE = "adapter_model.bin"
_LOCALISH = re.compile(r"^(\.{1,2}/|/|~)|[\\]|/.*/|/$")
_HUB_CACHE = re.compile(r"(?:^|/)models--([^/]+?)--([^/]+)/snapshots/[^/]+/?$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def demo_model_dir() -> Path:
    """The embedded demo model that ships inside the package."""
    return Path(__file__).resolve().parents[1] / "demo" / "model"


def hub_id_of(ref: str | None) -> str | None:
    """The hub id a model reference stands for, or None when it is only a local directory.

    ``demo`` (and the embedded demo's directory) → :data:`DEMO_HUB_ID`; a Hugging Face cache
    snapshot ``…/models--ORG--NAME/snapshots/REV`` → ``ORG/NAME``; ``ORG/NAME`` that is not a
    local path → itself.
    """
    if not ref:
        return None
    if ref in DEMO_ALIASES:
        return DEMO_HUB_ID
    path = Path(os.path.expanduser(ref))
    if path.is_dir() and path.resolve() == demo_model_dir():
        return DEMO_HUB_ID
    cached = _HUB_CACHE.search(ref.replace("\\", "/"))
    if cached:
        return f"{cached.group(1)}/{cached.group(2)}"
    if _HUB_ID.match(ref) and not path.exists():
        return ref
    return None


@dataclass(frozen=True)
class CheckpointSpec:
    """A resolved reference: where it is and what kind of checkpoint it is."""

    ref: str
    path: Path
    kind: CheckpointKind
    is_adapter: bool
    base_ref: str | None = None
    trainer_state: Path | None = None
    weight_files: tuple[Path, ...] = ()
    pickle: bool = False  # weights are pickle .bin (only loaded with allow_pickle)


@dataclass
class LoadedModel:
    """A model ready for the runner. ``reference()`` yields the model to compare against."""

    spec: CheckpointSpec
    model: Any  # transformers PreTrainedModel or peft PeftModel
    tokenizer: Any
    info: ModelInfo
    device: Any
    dtype: Any
    base_info: ModelInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_adapter(self) -> bool:
        return self.spec.is_adapter

    @contextlib.contextmanager
    def adapter_disabled(self) -> Iterator[Any]:
        """The base model, i.e. this PEFT model with its adapter switched off."""
        if not self.is_adapter:
            raise RuntimeError("not an adapter model")
        with self.model.disable_adapter():
            yield self.model


# --------------------------------------------------------------------------- devices


def resolve_device(requested: str = "auto") -> Any:
    import torch

    if requested != "auto":
        try:
            dev = torch.device(requested)
        except (RuntimeError, ValueError):
            raise BadInputError(
                f"unknown device {requested!r}", "use auto, cpu, cuda, cuda:N or mps"
            ) from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BadInputError(
                "device cuda was asked for but CUDA is not available", "use --device cpu"
            )
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise BadInputError(
                "device mps was asked for but MPS is not available", "use --device cpu"
            )
        return dev
    if torch.cuda.is_available():
        # Under torchrun/accelerate each process takes its own GPU.
        rank = local_rank()
        if rank is not None and rank < torch.cuda.device_count():
            return torch.device(f"cuda:{rank}")
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(requested: str, device: Any) -> Any:
    """auto: bf16 on CUDA where supported, fp32 elsewhere (MPS fp16 is where the seed run's NaNs lived)."""
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if requested != "auto":
        return table[requested]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


# --------------------------------------------------------------------------- resolution


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise BadInputError(
            f"cannot read {path}: {reason}", "check that the file is valid JSON"
        ) from exc
    if not isinstance(data, dict):
        raise BadInputError(f"{path} is not a JSON object", "check the file")
    return data


def _download_from_hub(repo_id: str, allow_pickle: bool) -> Path:
    """Fetch the files we need from the hub (honours HF_HUB_OFFLINE and the local cache)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            HFValidationError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError as exc:  # pragma: no cover - huggingface_hub ships with transformers
        raise BadInputError(
            f"cannot load hub id {repo_id!r}: {exc}", "pip install huggingface_hub"
        ) from None
    patterns = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]
    if allow_pickle:
        patterns.append("*.bin")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except HFValidationError:
        raise BadInputError(
            f"checkpoint not found: {repo_id!r} is neither a local directory nor a valid hub id",
            "check the path",
        ) from None
    except LocalEntryNotFoundError:
        raise BadInputError(
            f"{repo_id!r} is not a local directory and is not in the hub cache (offline)",
            "check the path, or download it with network access (unset HF_HUB_OFFLINE)",
        ) from None
    except RepositoryNotFoundError:
        raise BadInputError(
            f"{repo_id!r} is not a local directory and no such hub repository is visible",
            "check the path or the repository id (and HF_TOKEN for private repos)",
        ) from None
    except OSError as exc:
        raise BadInputError(f"could not download {repo_id!r}: {exc}", "check the network") from None


def _locate(ref: str, allow_pickle: bool) -> tuple[Path, str]:
    if ref in DEMO_ALIASES:
        return demo_model_dir(), ref
    path = Path(os.path.expanduser(ref))
    if path.is_symlink() and not path.exists():
        raise BadInputError(
            f"checkpoint {ref} is a symbolic link that leads nowhere (dangling, or a loop)",
            "pass the directory the link should point to",
        )
    if path.exists():
        if not path.is_dir():
            raise BadInputError(
                f"checkpoint must be a directory, got a file: {path}",
                "pass the directory that holds config.json or adapter_config.json",
            )
        return path.resolve(), ref
    if _LOCALISH.search(ref) or ref.count("/") != 1:
        raise BadInputError(f"checkpoint not found: {ref}", "check the path")
    return _download_from_hub(ref, allow_pickle), ref


def resolve_checkpoint(
    ref: str | None, *, base_override: str | None = None, allow_pickle: bool = False
) -> CheckpointSpec:
    """Find out what ``ref`` is, without loading any weights."""
    ref = ref or "demo"
    path, ref = _locate(ref, allow_pickle)
    trainer_state = path / "trainer_state.json"
    is_trainer = trainer_state.is_file() or re.fullmatch(r"checkpoint-\d+", path.name) is not None
    kind_if_not_trainer: CheckpointKind
    weights: tuple[Path, ...]
    is_pickle: bool

    if (path / "adapter_config.json").is_file():
        cfg = _read_json(path / "adapter_config.json")
        base = base_override or cfg.get("base_model_name_or_path")
        if not base:
            raise BadInputError(
                f"{path / 'adapter_config.json'}: base_model_name_or_path is empty",
                "pass the base model with --base",
            )
        safe = path / _ADAPTER_SAFE
        pickle_file = path / _ADAPTER_PICKLE
        if safe.exists() and not safe.is_file():
            raise BadInputError(
                f"{safe} is not a regular file", "save the adapter with PeftModel.save_pretrained"
            )
        if safe.is_file():
            weights, is_pickle = (safe,), False
        elif pickle_file.is_file():
            weights, is_pickle = (pickle_file,), True
        else:
            raise BadInputError(
                f"adapter directory {path} has no {_ADAPTER_SAFE}",
                "save the adapter with PeftModel.save_pretrained (safetensors)",
            )
        kind_if_not_trainer = CheckpointKind.PEFT_ADAPTER
        is_adapter = True
    elif (path / "config.json").is_file():
        base = base_override
        safe_files = sorted(path.glob("*.safetensors"))
        pickle_files = sorted(p for p in path.glob("*.bin") if p.is_file())
        odd = [p for p in safe_files if not p.is_file()]
        if odd:
            raise BadInputError(
                f"{odd[0]} is not a regular file (a directory, or a link that leads nowhere)",
                "save the model with save_pretrained, or remove that entry",
            )
        if safe_files:
            weights, is_pickle = tuple(safe_files), False
        elif pickle_files:
            weights, is_pickle = tuple(pickle_files), True
        else:
            raise BadInputError(
                f"model directory {path} has config.json but no weight files",
                "save the model with save_pretrained (safetensors)",
            )
        kind_if_not_trainer = CheckpointKind.FULL
        is_adapter = False
    else:
        raise BadInputError(
            f"{path} is not a model directory (no config.json or adapter_config.json)",
            "pass a directory written by save_pretrained, a checkpoint-N directory, or a hub id",
        )
    if is_pickle and not allow_pickle:
        raise BadInputError(
            f"{path} holds only pickle weights ({weights[0].name}); loading pickle can run arbitrary code",
            "convert it to safetensors, or pass --allow-pickle if you trust its source",
        )
    if not is_pickle:
        for weight_file in weights:
            check_safetensors(weight_file)
    return CheckpointSpec(
        ref=ref,
        path=path,
        kind=CheckpointKind.TRAINER_CHECKPOINT if is_trainer else kind_if_not_trainer,
        is_adapter=is_adapter,
        base_ref=base,
        trainer_state=trainer_state if trainer_state.is_file() else None,
        weight_files=weights,
        pickle=is_pickle,
    )


def check_safetensors(path: Path) -> None:
    """Refuse a weight file whose safetensors header cannot be read (exit 2, naming the file).

    A truncated copy, a zero-byte file, or bytes that are not safetensors at all are found here
    by reading the header only (the tensors are memory-mapped, not read), before any
    evaluation, training or gate work — not as a ``SafetensorError`` from deep inside
    ``from_pretrained``.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as exc:
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        empty = path.is_file() and path.stat().st_size == 0
        what = "empty (0 bytes)" if empty else "not a readable safetensors file"
        raise BadInputError(
            f"{path} is {what}: {detail} (a truncated copy or an interrupted save?)",
            "copy or save the weights again (save_pretrained writes safetensors)",
        ) from exc


# --------------------------------------------------------------------------- loading


def checkpoint_fingerprint(spec: CheckpointSpec) -> str:
    """The fingerprint of a resolved checkpoint's own files, without loading it."""
    return _fingerprint_dir(spec.path, spec.weight_files)


def _fingerprint_dir(path: Path, weight_files: tuple[Path, ...]) -> str:
    files = [(p.name, p) for p in weight_files]
    for extra in ("config.json", "adapter_config.json"):
        if (path / extra).is_file():
            files.append((extra, path / extra))
    return files_fingerprint(files)


@dataclass(frozen=True)
class ResolvedModel:
    """A checkpoint found and fingerprinted, not loaded: everything a gate decides before loading.

    For an adapter, ``base`` is its resolved base and ``fingerprint`` covers both (the same
    adapter on another base is another model).
    """

    spec: CheckpointSpec
    fingerprint: str
    own_fingerprint: str
    base: ResolvedModel | None = None

    @property
    def ref(self) -> str:
        return self.spec.ref


def resolve_model(
    ref: str | None, *, base_override: str | None = None, allow_pickle: bool = False
) -> ResolvedModel:
    """Resolve ``ref`` (and an adapter's base) and fingerprint the files, once."""
    spec = resolve_checkpoint(ref, base_override=base_override, allow_pickle=allow_pickle)
    own = checkpoint_fingerprint(spec)
    if not spec.is_adapter:
        return ResolvedModel(spec=spec, fingerprint=own, own_fingerprint=own)
    assert spec.base_ref is not None
    try:
        base_spec = resolve_checkpoint(spec.base_ref, allow_pickle=allow_pickle)
    except BadInputError as exc:
        raise BadInputError(
            f"the base model of adapter {spec.ref} cannot be found: {exc.cause}",
            "pass the adapter's base model with --base (adapter_config.json names "
            f"{spec.base_ref!r})",
        ) from None
    if base_spec.is_adapter:
        raise BadInputError(
            f"the base of adapter {spec.ref} is itself an adapter ({spec.base_ref})",
            "pass the full base model with --base",
        )
    base_fp = checkpoint_fingerprint(base_spec)
    base = ResolvedModel(spec=base_spec, fingerprint=base_fp, own_fingerprint=base_fp)
    return ResolvedModel(
        spec=spec, fingerprint=text_hash(base_fp + "+" + own), own_fingerprint=own, base=base
    )


def tokenizer_identity(
    model: ResolvedModel, trust_remote_code: bool = False
) -> tuple[str | None, str | None]:
    """(chat template hash, vocabulary hash) of a resolved model, loading only its tokenizer."""
    base_path = model.base.spec.path if model.base is not None else None
    return _tokenizer_hashes(_load_tokenizer(model.spec.path, base_path, trust_remote_code))


def _tokenizer_hashes(tokenizer: Any) -> tuple[str | None, str | None]:
    template = getattr(tokenizer, "chat_template", None)
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return (text_hash(template) if isinstance(template, str) else None, text_hash(vocab))


def _load_tokenizer(path: Path, fallback: Path | None, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    has_own = any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    src = path if has_own or fallback is None else fallback
    try:
        tok = AutoTokenizer.from_pretrained(str(src), trust_remote_code=trust_remote_code)
        probe = tok("広告 CTR 1.5%", add_special_tokens=False)["input_ids"]
    except Exception as exc:  # tokenizers raise anything from OSError to JSON and Rust errors
        raise BadInputError(
            f"cannot load the tokenizer in {src}: {type(exc).__name__}: "
            f"{(str(exc).splitlines() or [''])[0][:160]}",
            "save the tokenizer next to the model with tokenizer.save_pretrained",
        ) from exc
    check_chat_template(tok, src)
    if not tok.get_vocab() or not probe:
        raise BadInputError(
            f"the tokenizer in {src} has an empty vocabulary (tokenizer files missing?)",
            "save the tokenizer next to the model with tokenizer.save_pretrained",
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def check_chat_template(tokenizer: Any, where: Path | str) -> None:
    """Render a one-message conversation with the tokenizer's chat template, or refuse it.

    A template is code from the checkpoint, run in Jinja's sandbox: one that reaches for
    Python internals (``''.__class__.__mro__``), raises, or does not parse is refused here, when
    the tokenizer is loaded, with exit 2 — not as a ``SecurityError`` at the first prompt.
    """
    if not getattr(tokenizer, "chat_template", None):
        return
    try:
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "広告"}], tokenize=False, add_generation_prompt=True
        )
    except Exception as exc:  # jinja2 SecurityError, TemplateError, UndefinedError, …
        raise chat_template_error(where, exc) from exc


def chat_template_error(where: Path | str, exc: BaseException) -> BadInputError:
    """The one-line error for a chat template that fails to render (see check_chat_template)."""
    detail = (str(exc).splitlines() or [""])[0][:160]
    sandbox = type(exc).__name__ == "SecurityError"
    return BadInputError(
        f"the chat template of {where} cannot render a conversation: {type(exc).__name__}: "
        f"{detail}" + (" (the sandbox blocked it)" if sandbox else ""),
        "fix chat_template.jinja (or chat_template in tokenizer_config.json), or use the "
        "base model's template",
    )


def load_model(
    model: CheckpointSpec | ResolvedModel,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    base_override: str | None = None,
) -> LoadedModel:
    """Load a resolved checkpoint (adapter checkpoints load their base first)."""
    from transformers import AutoModelForCausalLM

    if isinstance(model, CheckpointSpec):
        # Kept for callers that resolved a spec themselves: identify it here.
        resolved = resolve_model(
            model.ref, base_override=base_override or model.base_ref, allow_pickle=allow_pickle
        )
    else:
        resolved = model
    spec = resolved.spec
    base_spec = resolved.base.spec if resolved.base is not None else None
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    base_info: ModelInfo | None = None
    model_dir = base_spec.path if base_spec is not None else spec.path
    net: Any = _from_pretrained(
        AutoModelForCausalLM,
        model_dir,
        spec.ref,
        dtype=dt,
        trust=trust_remote_code,
        allow_pickle=allow_pickle,
        pickle_weights=(base_spec or spec).pickle,
    )
    if spec.is_adapter:
        net = _apply_adapter(net, spec)
    net.to(dev)
    net.eval()
    tokenizer = _load_tokenizer(spec.path, base_spec.path if base_spec else None, trust_remote_code)
    tokenizer.padding_side = "left"
    info, base_info = _model_infos(resolved, tokenizer, net, dev, dt)
    return LoadedModel(
        spec=spec,
        model=net,
        tokenizer=tokenizer,
        info=info,
        device=dev,
        dtype=dt,
        base_info=base_info,
    )


def _model_infos(
    resolved: ResolvedModel, tokenizer: Any, net: Any, dev: Any, dt: Any
) -> tuple[ModelInfo, ModelInfo | None]:
    """(the model's info, its base's info) as a report records them."""
    spec = resolved.spec
    base_spec = resolved.base.spec if resolved.base is not None else None
    template_hash, vocab_hash = _tokenizer_hashes(tokenizer)
    n_params = sum(p.numel() for p in net.parameters())
    base_info: ModelInfo | None = None
    if base_spec is not None and resolved.base is not None:
        base_info = ModelInfo(
            ref=base_spec.ref,
            kind=base_spec.kind,
            is_adapter=False,
            fingerprint=resolved.base.fingerprint,
            n_parameters=n_params,
            dtype=str(dt).removeprefix("torch."),
            device=str(dev),
            chat_template_hash=template_hash,
            tokenizer_hash=vocab_hash,
        )
    info = ModelInfo(
        ref=spec.ref,
        kind=spec.kind,
        is_adapter=spec.is_adapter,
        fingerprint=resolved.fingerprint,
        base_ref=spec.base_ref,
        base_fingerprint=base_info.fingerprint if base_info else None,
        trainer_state=str(spec.trainer_state) if spec.trainer_state else None,
        n_parameters=n_params,
        dtype=str(dt).removeprefix("torch."),
        device=str(dev),
        chat_template_hash=template_hash,
        tokenizer_hash=vocab_hash,
    )
    return info, base_info


def _from_pretrained(
    auto_cls: Any,
    model_dir: Path,
    ref: str,
    *,
    dtype: Any,
    trust: bool,
    allow_pickle: bool,
    pickle_weights: bool = False,
) -> Any:
    """Build the model from the checkpoint's files; whatever they make fail is exit 2.

    The config is read first, on its own: every error there (not JSON, a field of the wrong
    type, an unknown architecture) is about config.json. Then the weights: every error there is
    about the checkpoint's files (the exception is chained, so ``--debug`` shows where).
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust)
    except Exception as exc:  # transformers and huggingface_hub raise many types for one bad file
        raise BadInputError(
            f"could not load {ref}: config.json is not a valid model config: "
            f"{type(exc).__name__}: {_first_line(exc, 240)}",
            "fix config.json, or save the model again with save_pretrained",
        ) from exc
    try:
        return auto_cls.from_pretrained(
            str(model_dir),
            config=config,
            dtype=dtype,
            trust_remote_code=trust,
            use_safetensors=None if allow_pickle else True,
        )
    except Exception as exc:
        raise _load_error(exc, ref, model_dir, pickle_weights=pickle_weights) from exc


def _load_error(
    exc: Exception, ref: str, model_dir: Path, *, pickle_weights: bool
) -> BadInputError:
    """What ``from_pretrained`` failing on the files of ``model_dir`` means, in one line."""
    import pickle

    from safetensors import SafetensorError

    if isinstance(exc, pickle.UnpicklingError):
        return BadInputError(
            f"could not load {ref}: torch's safe loader (weights_only=True) refused the pickle "
            f"weights in {model_dir}: {_unpickler_reason(exc)}",
            "the file holds more than tensors (possibly code) and is never unpickled in full; "
            "convert it to safetensors where you trust its source",
        )
    if pickle_weights:  # hostile or broken pickle bytes fail in many ways (IndexError, EOFError…)
        return BadInputError(
            f"could not load {ref}: the pickle weights in {model_dir} cannot be read: "
            f"{type(exc).__name__}: {_first_line(exc, 160)}",
            "convert the weights to safetensors where you trust their source",
        )
    if isinstance(exc, (SafetensorError, OSError, ValueError, KeyError)):
        return BadInputError(
            f"could not load {ref}: {_first_line(exc)}",
            "check that the directory was written by save_pretrained and is complete",
        )
    if isinstance(exc, RuntimeError):  # a state dict that does not fit the architecture
        return BadInputError(
            f"could not load {ref}: the weights do not fit its config.json: {_mismatch(exc)}",
            "config.json and the weights come from different models; save both with "
            "save_pretrained",
        )
    return BadInputError(  # e.g. ZeroDivisionError from num_attention_heads: 0
        f"could not build {ref} from its config.json: {type(exc).__name__}: {_first_line(exc)}",
        "config.json does not describe a model transformers can build; save the model again "
        "with save_pretrained",
    )


def _unpickler_reason(exc: BaseException) -> str:
    """What torch's weights-only unpickler objected to ("Unsupported global: …"), not its advice
    to retry with weights_only=False."""
    lines = [line.strip() for line in str(exc).splitlines()]
    for i, line in enumerate(lines):
        if line.endswith("WeightsUnpickler error:"):
            return next((rest[:160] for rest in lines[i + 1 :] if rest), "not a weights file")
    return _first_line(exc, 160)


def _first_line(exc: BaseException, limit: int = 200) -> str:
    return ((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:limit]


def _mismatch(exc: BaseException) -> str:
    """The first "size mismatch for NAME: …" line of a load_state_dict error, else its first line."""
    text = str(exc)
    for line in text.splitlines():
        if "size mismatch" in line.lower() and ":" in line:
            return line.strip()[:300]
    if "ignore_mismatched_sizes" in text:  # transformers logs the table, raises this summary
        return "tensor shapes in the weight files differ from the sizes config.json declares"
    return _first_line(exc)


def _apply_adapter(base_model: Any, spec: CheckpointSpec) -> Any:
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(base_model, str(spec.path), is_trainable=False)
    except RuntimeError as exc:  # tensors whose shapes do not fit the base model
        raise BadInputError(
            f"adapter {spec.ref} does not fit its base model {spec.base_ref}: {_mismatch(exc)}",
            "pass the base model the adapter was trained on with --base, or save the adapter "
            "again with PeftModel.save_pretrained",
        ) from exc
    except Exception as exc:  # adapter_config.json values peft cannot use, unreadable weights
        raise BadInputError(
            f"could not load adapter {spec.ref}: {type(exc).__name__}: {_first_line(exc)}",
            "check that the adapter was saved by PeftModel.save_pretrained and is complete",
        ) from exc


def load_checkpoint(
    ref: str | None,
    *,
    base: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> LoadedModel:
    """Resolve and load in one call."""
    return load_model(
        resolve_model(ref, base_override=base, allow_pickle=allow_pickle),
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )


def wrap_in_memory(
    model: Any, tokenizer: Any, *, ref: str, is_adapter: bool = False
) -> LoadedModel:
    """Wrap a model that lives in memory (e.g. inside a training loop) for the runner."""
    params = list(model.named_parameters())
    fp = tensors_fingerprint(params)
    dev = next(model.parameters()).device
    dt = next(model.parameters()).dtype
    template_hash, vocab_hash = _tokenizer_hashes(tokenizer)
    spec = CheckpointSpec(ref=ref, path=Path("."), kind=CheckpointKind.FULL, is_adapter=is_adapter)
    info = ModelInfo(
        ref=ref,
        kind=CheckpointKind.FULL,
        is_adapter=is_adapter,
        fingerprint=fp,
        n_parameters=sum(p.numel() for _, p in params),
        dtype=str(dt).removeprefix("torch."),
        device=str(dev),
        chat_template_hash=template_hash,
        tokenizer_hash=vocab_hash,
    )
    tokenizer.padding_side = "left"
    return LoadedModel(spec=spec, model=model, tokenizer=tokenizer, info=info, device=dev, dtype=dt)


def _saved_tensors_match(model: Any, spec: CheckpointSpec) -> bool:
    """True when every tensor in the checkpoint's weight files equals the in-memory one."""
    import torch
    from safetensors import safe_open

    if spec.pickle:
        return False
    if spec.is_adapter:
        from peft import get_peft_model_state_dict

        memory = get_peft_model_state_dict(model)
    else:
        memory = model.state_dict()
    seen = 0
    for path in spec.weight_files:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                held = memory.get(key)
                saved = fh.get_tensor(key)
                if held is None or held.shape != saved.shape or held.dtype != saved.dtype:
                    return False
                if not torch.equal(held.detach().to("cpu"), saved):
                    return False
                seen += 1
    return seen > 0


def wrap_checkpoint_in_memory(
    model: Any, resolved: ResolvedModel, *, trust_remote_code: bool = False
) -> LoadedModel | None:
    """The in-memory ``model`` as the checkpoint ``resolved`` (e.g. inside a training loop).

    Used only when every tensor in the checkpoint's weight files equals the model's own, so
    the evaluation is of exactly the files' content and carries their fingerprint (promotion
    re-checks that fingerprint on the copied files). None when they differ — sharded weights
    (ZeRO-3, FSDP) or anything else: load the checkpoint from its files instead. The tokenizer
    is read from the checkpoint's files, as a loaded checkpoint's would be.
    """
    net = getattr(model, "module", model)  # DistributedDataParallel holds the model as .module
    spec = resolved.spec
    if spec.is_adapter != hasattr(net, "peft_config") or not _saved_tensors_match(net, spec):
        return None
    first = next(net.parameters())
    dev, dt = first.device, first.dtype
    base_spec = resolved.base.spec if resolved.base is not None else None
    tokenizer = _load_tokenizer(spec.path, base_spec.path if base_spec else None, trust_remote_code)
    tokenizer.padding_side = "left"
    info, base_info = _model_infos(resolved, tokenizer, net, dev, dt)
    return LoadedModel(
        spec=spec,
        model=net,
        tokenizer=tokenizer,
        info=info,
        device=dev,
        dtype=dt,
        base_info=base_info,
    )

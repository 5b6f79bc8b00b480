"""Every checkpoint form the loader accepts, and the ones it must refuse."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from dpo_harness.errors import BadInputError
from dpo_harness.evaluation.loading import load_checkpoint, resolve_checkpoint
from dpo_harness.schema import CheckpointKind


def _greedy(loaded: Any, text: str = "CTRとは何ですか。") -> list[int]:
    tok = loaded.tokenizer
    s = tok.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(s, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = loaded.model.generate(**ids, max_new_tokens=12, do_sample=False)
    new_ids: list[int] = out[0, ids.input_ids.shape[1] :].tolist()
    return new_ids


def test_demo_model_directory(demo_loaded: Any) -> None:
    info = demo_loaded.info
    assert info.kind is CheckpointKind.FULL
    assert not info.is_adapter
    assert info.fingerprint.startswith("sha256:")
    assert info.dtype == "float32" and info.device == "cpu"
    assert info.chat_template_hash is not None
    # Qwen2-style vocabulary: id 0 is "!" (why NaN logits read as "!!!!").
    assert demo_loaded.tokenizer.convert_ids_to_tokens(0) == "!"
    assert len(_greedy(demo_loaded)) > 0


def test_demo_alias_and_default_resolve_to_the_same_directory(demo_dir: Path) -> None:
    assert resolve_checkpoint(None).path == resolve_checkpoint("demo").path == demo_dir.resolve()


@pytest.fixture(scope="module")
def adapter_dir(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("adapter")
    base = AutoModelForCausalLM.from_pretrained(str(demo_dir))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a "trained" adapter: B is no longer zero
    model.save_pretrained(str(out))
    return out


def test_peft_adapter_directory(adapter_dir: Path, demo_dir: Path) -> None:
    spec = resolve_checkpoint(str(adapter_dir))
    assert spec.kind is CheckpointKind.PEFT_ADAPTER and spec.is_adapter
    assert spec.base_ref is not None and Path(spec.base_ref).resolve() == demo_dir.resolve()
    loaded = load_checkpoint(str(adapter_dir), device="cpu")
    assert loaded.info.base_fingerprint is not None
    assert loaded.base_info is not None
    # The reference model is the same object with the adapter switched off.
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        adapted = loaded.model(input_ids=ids).logits
        with loaded.adapter_disabled() as base:
            plain = base(input_ids=ids).logits
    demo = load_checkpoint(None, device="cpu")
    with torch.inference_mode():
        reference = demo.model(input_ids=ids).logits
    assert torch.allclose(plain, reference, atol=1e-5)
    assert not torch.allclose(adapted, reference, atol=1e-4)


def test_adapter_base_can_be_overridden(adapter_dir: Path, tmp_path: Path, demo_dir: Path) -> None:
    moved = tmp_path / "adapter"
    shutil.copytree(adapter_dir, moved)
    cfg = json.loads((moved / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "/nowhere/base"
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(BadInputError, match="not found"):
        load_checkpoint(str(moved), device="cpu")
    loaded = load_checkpoint(str(moved), base=str(demo_dir), device="cpu")
    assert loaded.spec.base_ref == str(demo_dir)


@pytest.fixture(scope="module")
def trainer_checkpoint(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    out = tmp_path_factory.mktemp("trainer-run")
    tok = AutoTokenizer.from_pretrained(str(demo_dir))
    model = AutoModelForCausalLM.from_pretrained(str(demo_dir))
    enc = tok(["広告のクリック率を計算します。"] * 8, add_special_tokens=False)
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "labels": enc["input_ids"]})
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=2,
        save_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_only_model=True,
    )
    Trainer(model=model, args=args, train_dataset=ds).train()
    ckpt = out / "checkpoint-2"
    tok.save_pretrained(ckpt)
    return ckpt


def test_trainer_checkpoint_directory(trainer_checkpoint: Path) -> None:
    spec = resolve_checkpoint(str(trainer_checkpoint))
    assert spec.kind is CheckpointKind.TRAINER_CHECKPOINT
    assert spec.trainer_state == trainer_checkpoint.resolve() / "trainer_state.json"
    loaded = load_checkpoint(str(trainer_checkpoint), device="cpu")
    assert loaded.info.trainer_state is not None
    assert len(_greedy(loaded)) > 0


def test_bf16_saved_model_loads_and_can_be_upcast(make_variant: Any) -> None:
    path = make_variant("bf16", lambda m: None, dtype=torch.bfloat16)
    assert json.loads((path / "config.json").read_text()).get("dtype") == "bfloat16"
    loaded = load_checkpoint(str(path), device="cpu", dtype="float32")
    assert next(loaded.model.parameters()).dtype == torch.float32
    native = load_checkpoint(str(path), device="cpu", dtype="bfloat16")
    assert next(native.model.parameters()).dtype == torch.bfloat16
    assert len(_greedy(loaded)) > 0


@pytest.fixture(scope="module")
def pickle_only_dir(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import load_file

    # transformers 5 always writes safetensors, so write the legacy pickle file by hand.
    out = tmp_path_factory.mktemp("pickle-only")
    torch.save(load_file(str(demo_dir / "model.safetensors")), out / "pytorch_model.bin")
    for f in [
        *demo_dir.glob("tokenizer*"),
        demo_dir / "config.json",
        demo_dir / "chat_template.jinja",
    ]:
        shutil.copy(f, out / f.name)
    return out


def test_pickle_only_directory_is_refused_without_opt_in(pickle_only_dir: Path) -> None:
    assert not list(pickle_only_dir.glob("*.safetensors")), "fixture must hold only pickle weights"
    with pytest.raises(BadInputError) as err:
        load_checkpoint(str(pickle_only_dir), device="cpu")
    assert "pickle" in err.value.cause and "--allow-pickle" in (err.value.fix or "")


def test_pickle_only_directory_loads_with_opt_in(pickle_only_dir: Path) -> None:
    loaded = load_checkpoint(str(pickle_only_dir), device="cpu", allow_pickle=True)
    assert loaded.spec.pickle


@pytest.mark.parametrize(
    ("ref", "match"),
    [
        ("./does/not/exist", "checkpoint not found"),
        ("/abs/missing/dir", "checkpoint not found"),
        ("someorg/somemodel-that-is-not-cached", "not in the hub cache"),
    ],
)
def test_missing_checkpoints_are_bad_input(ref: str, match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        resolve_checkpoint(ref)


def test_a_directory_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BadInputError, match="not a model directory"):
        resolve_checkpoint(str(tmp_path))


def test_fingerprint_changes_with_weights_and_is_stable(make_variant: Any, demo_dir: Path) -> None:
    same = load_checkpoint(str(demo_dir), device="cpu").info.fingerprint
    again = load_checkpoint(str(demo_dir), device="cpu").info.fingerprint
    assert same == again

    def nudge(model: Any) -> None:
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 1e-3

    changed = load_checkpoint(str(make_variant("nudged", nudge)), device="cpu").info.fingerprint
    assert changed != same


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_delta_norm_matches_the_materialised_product(demo_dir: Path, rslora: bool) -> None:
    from dpo_harness.evaluation.measure import lora_stats as _lora_stats
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(demo_dir)),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], use_rslora=rslora),
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name and "layers.0." not in name:
                p.normal_(0, 0.1)  # layer 0 keeps its zero B: "never trained"
    stats = {s.name: s for s in _lora_stats(model)}
    scale = 8 / (4**0.5 if rslora else 4)
    for name, module in model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in getattr(module, "lora_A", {}):
            continue
        a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
        expected = scale * float((b.detach().double() @ a.detach().double()).norm())
        got = stats[f"{name}.default"]
        assert got.scaling == pytest.approx(scale)
        assert got.delta_norm == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert got.b_all_zero == ("layers.0." in name)


def _weights(loaded: Any) -> Any:
    from dpo_harness.evaluation.runner import ModelRunner
    from dpo_harness.schema import WeightsRequest

    return ModelRunner(loaded).run([WeightsRequest()])[WeightsRequest()]


def test_nan_in_a_saved_adapter_is_named_once_as_stored(
    demo_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("nan_adapter")
    base = AutoModelForCausalLM.from_pretrained(str(demo_dir))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    target = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"
    with torch.no_grad():
        dict(model.named_parameters())[target][3, 1] = float("nan")
    model.save_pretrained(str(out))
    weights = _weights(load_checkpoint(str(out), device="cpu"))
    # Found in the file and again in the loaded PeftModel: reported once, named as saved.
    assert [(t.name, t.file, t.n_nan) for t in weights.nonfinite] == [
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
            "adapter_model.safetensors",
            1,
        )
    ]


def test_overflow_from_a_dtype_cast_is_found_in_the_loaded_model(make_variant: Any) -> None:
    def big(model: Any) -> None:
        model.model.layers[0].mlp.up_proj.weight[0, 0] = 1e6  # finite in fp32, inf in fp16

    path = make_variant("overflow", big)
    assert _weights(load_checkpoint(str(path), device="cpu", dtype="float32")).nonfinite == []
    fp16 = _weights(load_checkpoint(str(path), device="cpu", dtype="float16")).nonfinite
    assert [(t.name, t.file, t.n_inf) for t in fp16] == [
        ("model.layers.0.mlp.up_proj.weight", None, 1)
    ]

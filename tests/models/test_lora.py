"""LoRA target sets, seeded fresh adapters, adapter loading and merging (hikari.models.lora) on the tiny model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from hikari.demo.tiny import build_tiny_qwen3vl
from hikari.models import lora as lora_module
from hikari.models.load import load_model, stored_dtype
from hikari.models.lora import (
    LANGUAGE_PATTERN,
    VISION_PATTERN,
    add_lora,
    describe_adapter,
    load_adapter,
    lora_targets,
    merge_adapter_into_base,
)

N_TEXT_LAYERS, N_VISION_BLOCKS = 2, 2  # the tiny model's depth (TinyDims)
TEXT_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                "mlp.up_proj", "mlp.down_proj")
VISION_LINEARS = ("attn.qkv", "attn.proj", "mlp.linear_fc1", "mlp.linear_fc2")


def _adapted(model: torch.nn.Module) -> set[str]:
    """Names (without PEFT's prefix) of the modules that carry a LoRA adapter."""
    return {n.removeprefix("base_model.model.").removesuffix(".lora_A")
            for n, _ in model.named_modules() if n.endswith(".lora_A")}


LANGUAGE_MODULES = {f"model.language_model.layers.{i}.{m}" for i in range(N_TEXT_LAYERS) for m in TEXT_LINEARS}
VISION_MODULES = {f"model.visual.blocks.{i}.{m}" for i in range(N_VISION_BLOCKS) for m in VISION_LINEARS}


@pytest.fixture()
def model(tiny_model_dir: Path) -> torch.nn.Module:
    return load_model(tiny_model_dir, dtype="fp32")


def text_batch(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    ids = torch.arange(3, 40).reshape(1, -1) % (model.config.text_config.vocab_size - 64)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def logits_of(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch, use_cache=False).logits


def test_lora_targets_resolve_named_sets_and_reject_unknown_ones() -> None:
    assert lora_targets("language") == LANGUAGE_PATTERN
    assert re.fullmatch(lora_targets("both"), "model.visual.blocks.3.attn.qkv")
    assert re.fullmatch(lora_targets("both"), "model.language_model.layers.11.mlp.down_proj")
    for never in ("model.visual.merger.linear_fc1", "model.visual.deepstack_merger_list.0.linear_fc2", "lm_head"):
        assert not re.fullmatch(lora_targets("both"), never)
    assert not re.fullmatch(VISION_PATTERN, "model.language_model.layers.0.self_attn.q_proj")
    assert lora_targets(["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match="valid: language, vision, both"):
        lora_targets("all")
    with pytest.raises(ValueError, match="empty"):
        lora_targets([])


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("both", LANGUAGE_MODULES | VISION_MODULES),
        ("language", LANGUAGE_MODULES),
        ("vision", VISION_MODULES),
        (["q_proj", "v_proj"], {m for m in LANGUAGE_MODULES if m.endswith(("q_proj", "v_proj"))}),
    ],
)
def test_add_lora_adapts_exactly_the_target_modules(model: torch.nn.Module, target, expected: set[str]) -> None:
    peft_model = add_lora(model, r=4, alpha=8, dropout=0.0, target=target)
    assert _adapted(peft_model) == expected
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    info = describe_adapter(peft_model)
    assert info["lora_modules"] == len(expected)
    assert info["trainable_params"] == sum(peft_model.get_parameter(n).numel() for n in trainable)


def test_add_lora_rejects_a_target_that_matches_nothing(model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="nonexistent_proj"):
        add_lora(model, r=4, alpha=8, dropout=0.0, target=["nonexistent_proj"])


def test_fresh_adapter_is_seeded_and_a_noop(tiny_model_dir: Path) -> None:
    batch_model = load_model(tiny_model_dir, dtype="fp32")
    batch = text_batch(batch_model)
    before = logits_of(batch_model, batch)
    rng_state = torch.get_rng_state()
    first = add_lora(batch_model, r=4, alpha=8, dropout=0.0, target="both", seed=7)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the caller's generator is left alone
    assert torch.equal(logits_of(first, batch), before)  # B = 0: exactly the base model
    params = {n: p.detach().clone() for n, p in first.named_parameters() if p.requires_grad}
    assert all(not p.any() for n, p in params.items() if ".lora_B." in n)
    same = dict(add_lora(load_model(tiny_model_dir, dtype="fp32"), r=4, alpha=8, dropout=0.0, target="both",
                         seed=7).named_parameters())
    other = dict(add_lora(load_model(tiny_model_dir, dtype="fp32"), r=4, alpha=8, dropout=0.0, target="both",
                          seed=8).named_parameters())
    a_names = [n for n in params if ".lora_A." in n]
    assert all(torch.equal(params[n], same[n]) for n in a_names)
    assert not any(torch.equal(params[n], other[n]) for n in a_names)


def trained_adapter(tiny_model_dir: Path, out: Path) -> Path:
    """An adapter with non-zero B (as after training), saved like a run saves it."""
    peft_model = add_lora(load_model(tiny_model_dir, dtype="fp32"), r=4, alpha=8, dropout=0.0, target="both")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if ".lora_B." in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))
    peft_model.save_pretrained(out)
    return out


@pytest.mark.parametrize("trainable", [True, False])
def test_load_adapter_restores_the_saved_tensors(tiny_model_dir: Path, tmp_path: Path, trainable: bool) -> None:
    adapter = trained_adapter(tiny_model_dir, tmp_path / "adapter")
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    loaded = load_adapter(load_model(tiny_model_dir, dtype="fp32"), adapter, trainable=trainable)
    params = dict(loaded.named_parameters())
    assert all(torch.equal(params[k.replace(".weight", ".default.weight")], v) for k, v in saved.items())
    grad = {n for n, p in params.items() if p.requires_grad}
    assert grad == ({k.replace(".weight", ".default.weight") for k in saved} if trainable else set())


def test_merge_equals_base_plus_adapter_and_loads_without_peft(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = trained_adapter(tiny_model_dir, tmp_path / "adapter")
    base = load_model(tiny_model_dir, dtype="fp32")
    batch = text_batch(base)
    with_adapter = logits_of(load_adapter(base, adapter, trainable=False), batch)
    out = tmp_path / "merged"
    out.mkdir()
    (out / "stale.txt").write_text("an older merge", encoding="utf-8")  # replaced, not mixed in

    assert merge_adapter_into_base(str(tiny_model_dir), adapter, out, save_dtype="fp32") == out
    assert not (out / "stale.txt").exists() and not (tmp_path / "merged.partial").exists()
    tensors = load_file(str(next(out.glob("*.safetensors"))))
    assert not [k for k in tensors if "lora_" in k or "base_layer" in k]
    for name in ("config.json", "generation_config.json", "README.md", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    merged = logits_of(load_model(out, dtype="fp32"), batch)
    assert (merged - with_adapter).abs().max().item() <= 1e-4
    assert (with_adapter - logits_of(load_model(tiny_model_dir, dtype="fp32"), batch)).abs().max().item() > 1e-2


def test_merge_saves_in_the_requested_dtype(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = trained_adapter(tiny_model_dir, tmp_path / "adapter")
    out = merge_adapter_into_base(str(tiny_model_dir), adapter, tmp_path / "merged", save_dtype="bf16")
    tensors = load_file(str(next(out.glob("*.safetensors"))))
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="valid: bf16, fp16, fp32"):
        merge_adapter_into_base(str(tiny_model_dir), adapter, tmp_path / "bad", save_dtype="int4")


def test_a_bf16_base_merged_in_bf16_gives_the_bits_of_an_fp32_merge(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A base stored in bf16 (as Qwen3-VL-8B) is merged without an fp32 copy of the model — half the memory — and
    the saved weights are bit for bit those of loading it in fp32, adding the update and rounding once."""
    bf16_base = build_tiny_qwen3vl(tmp_path / "base", seed=0, dtype=torch.bfloat16)
    assert stored_dtype(bf16_base) == torch.bfloat16
    adapter = trained_adapter(bf16_base, tmp_path / "adapter")
    loaded: list[str] = []
    real_load = lora_module.load_model
    monkeypatch.setattr(lora_module, "load_model", lambda *a, **k: loaded.append(k["dtype"]) or real_load(*a, **k))
    merged = load_file(str(merge_adapter_into_base(str(bf16_base), adapter, tmp_path / "m", save_dtype="bf16")
                           / "model.safetensors"))  # fmt: skip
    assert loaded == ["bf16"]

    model = PeftModel.from_pretrained(load_model(bf16_base, dtype="fp32"), str(adapter)).merge_and_unload()
    reference = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    assert set(merged) == set(reference)
    differ = [k for k in merged if not torch.equal(merged[k], reference[k])]
    assert not differ, differ[:3]
    assert any(not torch.equal(merged[k], v) for k, v in load_file(str(bf16_base / "model.safetensors")).items()
               if k in merged)  # fmt: skip  # the update is really in there

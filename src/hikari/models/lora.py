"""LoRA on Qwen3-VL through PEFT: target sets, the three stage-chaining modes, and merging.

Qwen3-VL module names (transformers >= 4.57):
- language: `model.language_model.layers.N.self_attn.{q,k,v,o}_proj`, `….mlp.{gate,up,down}_proj`
- vision:   `model.visual.blocks.N.attn.{qkv,proj}`, `….mlp.linear_fc{1,2}`
The original HIKARI adapted every attention and MLP linear layer of both towers ("both"). Targets are regular
expressions matched against full module names (PEFT's `target_modules` string form), so the patch mergers and
`lm_head` are never adapted by accident.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from hikari.models.load import load_model, load_processor, stored_dtype

logger = logging.getLogger(__name__)

LANGUAGE_PATTERN = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
VISION_PATTERN = r".*visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc(1|2))"
TARGET_SETS = {
    "language": LANGUAGE_PATTERN,
    "vision": VISION_PATTERN,
    "both": f"({LANGUAGE_PATTERN})|({VISION_PATTERN})",
}


def lora_targets(target: str | Sequence[str]) -> str | list[str]:
    """PEFT `target_modules` for a named set ('language', 'vision', 'both') or explicit module names."""
    if isinstance(target, str):
        try:
            return TARGET_SETS[target]
        except KeyError:
            raise ValueError(f"unknown LoRA target set {target!r}; valid: {', '.join(TARGET_SETS)}") from None
    names = list(target)
    if not names:
        raise ValueError("explicit LoRA target list is empty")
    return names


def add_lora(
    model: torch.nn.Module,
    *,
    r: int,
    alpha: float,
    dropout: float,
    target: str | Sequence[str],
    seed: int = 42,
) -> PeftModel:
    """A fresh LoRA adapter (A random, B zero: an exact no-op until trained)."""
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_targets(target),
        bias="none",
        task_type="CAUSAL_LM",
    )
    # LoRA A init is random: make it reproducible per run seed, without reseeding the caller's generators.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    n_adapted = sum(1 for n, _ in peft_model.named_modules() if n.endswith("lora_A"))
    if n_adapted == 0:
        raise ValueError(f"LoRA target {target!r} matched no module of {type(model).__name__}")
    return peft_model


def load_adapter(model: torch.nn.Module, adapter_dir: str | Path, *, trainable: bool) -> PeftModel:
    """Attach a saved adapter; `trainable=True` continues training the same tensors (checkpoint-init)."""
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def merge_adapter_into_base(
    base: str,
    adapter_dir: str | Path,
    out: str | Path,
    *,
    save_dtype: str = "bf16",
    trust_remote_code: bool = False,
    max_shard_size: str = "5GB",
    extra_readme: str = "",
) -> Path:
    """Merge an adapter into its base in fp32, save in `save_dtype` as sharded safetensors + processor.

    The base is loaded un-quantised even when the adapter was trained with QLoRA: merging into 4-bit weights
    would round the update away. The result loads with plain transformers/vLLM, no PEFT needed.

    The update W + scale·B·A is computed in fp32 and rounded to `save_dtype` once, whatever the base is loaded
    in: the adapter's tensors are fp32 and PyTorch adds a fp32 tensor into a bf16 one in fp32, rounding the sum.
    So a base *stored* in `save_dtype` (Qwen3-VL-8B: bf16) is loaded in it — the same bits as an fp32 merge, in
    half the memory (≈17.5 GB instead of ≈35 GB for the 8B); any other base is loaded in fp32.
    """
    out = Path(out)
    target = _torch_dtype(save_dtype)
    exact = target != torch.float32 and stored_dtype(base, trust_remote_code=trust_remote_code) == target
    model = load_model(base, dtype=save_dtype if exact else "fp32", trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged = merged.to(_torch_dtype(save_dtype))
    tmp = out.with_name(out.name + ".partial")
    merged.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
    processor = load_processor(base, trust_remote_code=trust_remote_code)
    processor.save_pretrained(tmp)
    if merged.generation_config is not None:
        merged.generation_config.save_pretrained(tmp)
    (tmp / "README.md").write_text(_model_card(base, adapter_dir, save_dtype, extra_readme), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)  # a half-written merge never looks like a finished one
    return out


def _torch_dtype(name: str) -> torch.dtype:
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "auto": torch.float32}
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(table)}") from None


def _model_card(base: str, adapter_dir: str | Path, dtype: str, extra: str) -> str:
    return (
        "---\nlibrary_name: transformers\npipeline_tag: image-text-to-text\ntags: [hikari, dermatology, qwen3-vl]\n"
        f"base_model: {base}\n---\n\n# HIKARI merged model\n\n"
        f"- base: `{base}`\n- adapter merged: `{adapter_dir}` (merged in fp32, saved as {dtype})\n\n"
        "Research use only: not a medical device. Trained on SkinCAP (CC BY-NC-SA 4.0) or synthetic data.\n\n"
        f"{extra}\n"
    )


def describe_adapter(model: Any) -> dict[str, int]:
    """Counts of adapted modules and trainable/total parameters (for logs and run_info)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    modules = sum(1 for n, _ in model.named_modules() if n.endswith("lora_A"))
    return {"lora_modules": modules, "trainable_params": trainable, "total_params": total}

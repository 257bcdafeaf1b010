"""The GPU check of the 8B recipes, in one command: Qwen3-VL-8B built from its published configuration
(`hikari.models.qwen3vl_8b`) with random weights — created on the GPU in seconds, no hub — measured arm by arm.

    python benchmarks/gpu_8b.py --markdown docs/gpu.md      # on a CUDA machine (~8 minutes on one H100)
    python benchmarks/gpu_8b.py --tiny                      # the same matrix at tiny size on the CPU (CI)

Every arm trains `--steps` optimizer steps of one micro-batch configuration the way `HikariTrainer` does (fused
weighted CE through the LM head, the LoRA penalty's closed-form gradient, clipping, 8-bit AdamW) and reports the
peak memory (`torch.cuda.max_memory_allocated`, reset between arms; on the CPU the process's peak RSS), the
median milliseconds per optimizer step after a warm-up step, the sequence length and token counts. The baseline
is Stage 3 captions as shipped: NF4 4-bit base, LoRA r=16 on both towers, gradient checkpointing, micro-batch 1,
our fused cross-entropy, no STS; each other arm changes one thing:

  stage2_k0/k1/k3    Stage 2 with 0, 1 or 3 reference images per sample (K = 3 ran out of memory on 16 GB)
  stage3_sts_ibr_delta  STS weights + the ibr_delta penalty (what sts_safe trains with)
  lora_language      LoRA on the language tower only
  bf16_base          no 4-bit quantisation
  no_checkpointing   gradient checkpointing off
  micro_batch_4      4 samples per micro-batch
  loss_transformers  transformers' default loss (full logits, `labels=`), no per-token weights
  loss_liger         Liger-Kernel's fused linear cross-entropy (>= 0.8.2) with our per-token weights

The loss arms also report how far their LoRA gradients are from our fused loss's on the same batch (largest
absolute difference / largest gradient, and cosine). Then the `gpu`-marked tests run (`pytest -m gpu`). One
JSON line per arm on stdout; `--markdown PATH` writes the table (with the GPU's name) for docs/gpu.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hikari.config import LossConfig, STSConfig
from hikari.data import prompts as P
from hikari.demo.captions import synth_caption
from hikari.demo.tiny import (
    TinyDims,
    build_tiny_processor,
    tiny_qwen3vl_config,
    tokenizer_training_texts,
    train_tiny_tokenizer,
)
from hikari.models import qwen3vl_8b as Q8B
from hikari.models.batching import VLMCollator, supervised_positions
from hikari.models.lora import add_lora
from hikari.training.cross_entropy import choose_backend
from hikari.training.data import STSCollator
from hikari.training.penalties import lora_factors, lora_trainable_tensors
from hikari.training.trainer import answer_token_loss, finish_step_gradients

GIB = 1024**3
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Arm:
    name: str
    task: str = "caption"  # "disease" (Stage 2) or "caption" (Stage 3)
    k: int = 0  # reference images per Stage 2 sample
    sts: bool = False
    penalty: str = "none"
    target: str = "both"
    four_bit: bool = True
    checkpointing: bool = True
    micro_batch: int = 1
    loss_path: str = "fused"  # fused | transformers | liger


BASE = Arm("stage3_plain")
ARMS = (
    replace(BASE, name="stage2_k0", task="disease"),
    replace(BASE, name="stage2_k1", task="disease", k=1),
    replace(BASE, name="stage2_k3", task="disease", k=3),
    BASE,
    replace(BASE, name="stage3_sts_ibr_delta", sts=True, penalty="ibr_delta"),
    replace(BASE, name="lora_language", target="language"),
    replace(BASE, name="no_checkpointing", checkpointing=False),
    replace(BASE, name="micro_batch_4", micro_batch=4),
    replace(BASE, name="loss_transformers", loss_path="transformers"),
    replace(BASE, name="loss_liger", loss_path="liger"),
    replace(BASE, name="bf16_base", four_bit=False),  # last: the bf16 base replaces the 4-bit one
)


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------
def quantize_nf4(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Every `nn.Linear` but the LM head replaced by bitsandbytes' NF4 `Linear4bit` (double quantisation, bf16
    compute) — what `from_pretrained(quantization_config=nf4_quantization_config())` does while loading."""
    import bitsandbytes as bnb  # optional extra: hikari[quant]

    head = model.get_output_embeddings()
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or child is head:
                continue
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=torch.bfloat16, quant_type="nf4", device="meta")  # fmt: skip
            q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4",
                                         compress_statistics=True).to(device)  # quantises  # fmt: skip
            if child.bias is not None:
                q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, child_name, q)
    model.is_loaded_in_4bit = True  # what from_pretrained records; PEFT then wraps the 4-bit layers
    return model


def build_model(config: Any, device: torch.device, four_bit: bool) -> torch.nn.Module:
    from transformers import Qwen3VLForConditionalGeneration

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = Qwen3VLForConditionalGeneration(config)  # random init, on the device
    finally:
        torch.set_default_dtype(previous)
    if four_bit:
        model = quantize_nf4(model, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------
def pictures(n: int, side: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (side * 3 // 4, side, 3), dtype=np.uint8)) for _ in range(n)]


def make_batch(arm: Arm, processor: Any, side: int, step: int) -> dict[str, torch.Tensor]:
    rng = random.Random(step)
    items = []
    for i in range(arm.micro_batch):
        image, *refs = pictures(1 + arm.k, side, seed=1000 * step + i)
        if arm.task == "disease":
            target = P.stage2_target("psoriasis")
            messages = (P.rag_messages(image, P.STAGE2_TRAIN_PROMPTS[0], [(r, "psoriasis", None) for r in refs])
                        if arm.k else P.user_message(image, P.STAGE2_TRAIN_PROMPTS[0]))  # fmt: skip
        else:
            target = synth_caption(rng, "psoriasis")
            messages = P.user_message(image, P.STAGE3_PROMPTS[0])
        items.append({"messages": messages, "target": target})
    collator = STSCollator(processor, sts=STSConfig()) if arm.sts else VLMCollator(processor)
    return collator(items)


# ---------------------------------------------------------------------------------------------------------------
# One arm
# ---------------------------------------------------------------------------------------------------------------
def _loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], arm: Arm) -> torch.Tensor:
    if arm.loss_path == "transformers":  # full (N, V) logits, mean over answer tokens, no per-token weights
        return model(**{k: v for k, v in batch.items() if k != "loss_weights"}, use_cache=False).loss
    backend = "liger" if arm.loss_path == "liger" else "torch"
    loss, _ = answer_token_loss(model, batch, None, backend=backend)
    return loss


def lora_gradients(model: torch.nn.Module, batch: dict[str, torch.Tensor], arm: Arm) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    _loss(model, batch, arm).backward()
    grads = [p.grad.detach().float().clone() for p in lora_trainable_tensors(lora_factors(model))]
    model.zero_grad(set_to_none=True)
    return grads


def run_arm(arm: Arm, base: torch.nn.Module, processor: Any, device: torch.device, steps: int,
            side: int) -> dict[str, Any]:  # fmt: skip
    import bitsandbytes as bnb  # optional extra: hikari[quant] (the recipes' adamw_8bit)

    model = add_lora(base, r=16, alpha=16, dropout=0.0, target=arm.target, seed=0)
    if arm.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    row: dict[str, Any] = {"arm": arm.name, **{k: v for k, v in asdict(arm).items() if k != "name"}}
    loss_config = LossConfig(sts=arm.sts, penalty=arm.penalty)  # type: ignore[arg-type]
    try:
        if arm.loss_path == "liger":
            choose_backend("liger", device)  # ValueError when it cannot run here: reported as skipped
        batch = {k: v.to(device) for k, v in make_batch(arm, processor, side, step=0).items()}
        row["seq_len"] = int(batch["input_ids"].shape[1])
        row["image_tokens"] = int((batch["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
                                  .sum())  # fmt: skip
        row["supervised_tokens"] = int(supervised_positions(batch["labels"])[1].numel())
        if arm.loss_path != "fused":
            reference = lora_gradients(model, batch, replace(arm, loss_path="fused"))
            other = lora_gradients(model, batch, arm)
            diff = max(float((a - b).abs().max()) for a, b in zip(reference, other, strict=True))
            scale = max(float(a.abs().max()) for a in reference)
            flat_a, flat_b = torch.cat([a.flatten() for a in reference]), torch.cat([b.flatten() for b in other])
            row["grad_rel_diff_vs_fused"] = diff / scale if scale else None
            row["grad_cosine_vs_fused"] = float(torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=0))
        factors = lora_factors(model)
        optimizer = bnb.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, optim_bits=8)
        times, losses = [], []
        _reset_peak(device)
        for step in range(steps + 1):  # step 0 is the warm-up (allocator, kernels, optimizer state)
            batch = {k: v.to(device) for k, v in make_batch(arm, processor, side, step=step).items()}
            _sync(device)
            start = time.perf_counter()
            loss = _loss(model, batch, arm)
            loss.backward()
            finish_step_gradients(factors, loss_config.penalty, loss_config.beta, loss_config.sigma2)
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync(device)
            if step:
                times.append(time.perf_counter() - start)
            losses.append(float(loss))
        row.update({"peak_gib": round(_peak(device) / GIB, 2), "memory": _memory_kind(device),
                    "ms_per_step": round(1000 * statistics.median(times), 1) if times else None,
                    "loss": losses[-1], "loss_finite": all(math.isfinite(x) for x in losses)})  # fmt: skip
    except (ValueError, ImportError) as err:
        row["skipped"] = str(err)
    except torch.OutOfMemoryError as err:
        row["out_of_memory"] = str(err).splitlines()[0]
    finally:
        if arm.checkpointing:
            model.gradient_checkpointing_disable()
        model.unload()  # the base without LoRA layers, for the next arm
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")


def _peak(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _memory_kind(device: torch.device) -> str:
    return "cuda_max_allocated" if device.type == "cuda" else "process_peak_rss"


def gpu_tests() -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
    tail = (result.stdout + result.stderr).strip().splitlines()
    return {"arm": "gpu_tests", "returncode": result.returncode, "summary": tail[-1] if tail else ""}


def markdown(rows: list[dict[str, Any]], device_name: str) -> str:
    lines = [f"Measured on: {device_name} — `python benchmarks/gpu_8b.py`", "",
             "| arm | peak GiB | ms/step | seq | image tokens | answer tokens | grad vs fused (rel. diff / cos) | "
             "loss |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if r["arm"] == "gpu_tests":
            continue
        if "skipped" in r or "out_of_memory" in r:
            lines.append(f"| {r['arm']} | {'OOM' if 'out_of_memory' in r else 'skipped: ' + r['skipped']} |||||||")
            continue
        grad = (f"{r['grad_rel_diff_vs_fused']:.1e} / {r['grad_cosine_vs_fused']:.5f}"
                if "grad_rel_diff_vs_fused" in r else "–")  # fmt: skip
        lines.append(f"| {r['arm']} | {r['peak_gib']} | {r['ms_per_step']} | {r['seq_len']} | {r['image_tokens']} | "
                     f"{r['supervised_tokens']} | {grad} | {r['loss']:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny model on the CPU, 1 step per arm (CI)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per arm (default 3; --tiny: 1)")
    ap.add_argument("--arms", default=None, help="comma-separated subset of the arms")
    ap.add_argument("--markdown", type=Path, default=None, help="write the table here")
    ap.add_argument("--no-tests", action="store_true", help="do not run the gpu-marked tests")
    args = ap.parse_args()
    steps = args.steps if args.steps is not None else (1 if args.tiny else 3)
    arms = [a for a in ARMS if args.arms is None or a.name in args.arms.split(",")]
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if not args.tiny and device.type != "cuda":
        ap.error("no CUDA device: run with --tiny for the CPU version")
    if device.type == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 1))

    tokenizer = train_tiny_tokenizer(tokenizer_training_texts())
    if args.tiny:
        config, side = tiny_qwen3vl_config(tokenizer, TinyDims()), 96
        processor = build_tiny_processor(tokenizer)
    else:
        ids = {key: tokenizer.convert_tokens_to_ids(token) for key, token in (
            ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
            ("bos_token_id", "<|endoftext|>"), ("eos_token_id", "<|im_end|>"), ("pad_token_id", "<|endoftext|>"))}
        config, side = Q8B.qwen3vl_8b_config(token_ids=ids), 672  # the full 8B: 36 layers, 27 blocks
        pixels = Q8B.IMAGE_PROCESSOR
        processor = build_tiny_processor(tokenizer, min_pixels=pixels["min_pixels"], max_pixels=pixels["max_pixels"])
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (--tiny)"

    rows: list[dict[str, Any]] = []
    base, base_four_bit = None, None
    with contextlib.redirect_stdout(sys.stderr):
        for arm in arms:
            if base is None or base_four_bit != arm.four_bit:
                base = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                try:
                    base, base_four_bit = build_model(config, device, arm.four_bit), arm.four_bit
                except ImportError as err:  # no bitsandbytes
                    print(json.dumps({"arm": arm.name, "skipped": str(err)}), file=sys.__stdout__, flush=True)
                    continue
            row = {**run_arm(arm, base, processor, device, steps, side), "device": device_name}
            rows.append(row)
            print(json.dumps(row), file=sys.__stdout__, flush=True)
        if device.type == "cuda" and not args.no_tests:
            row = gpu_tests()
            rows.append(row)
            print(json.dumps(row), file=sys.__stdout__, flush=True)
    if args.markdown is not None:
        args.markdown.write_text(markdown(rows, device_name), encoding="utf-8")


if __name__ == "__main__":
    main()

"""The real-size path on a CPU: every shipped recipe family at Qwen3-VL-8B *width*, with its shipped settings.

The model is `Qwen3VLForConditionalGeneration` built from the published Qwen3-VL-8B configuration
(`hikari.models.qwen3vl_8b`) with random weights and only the depth reduced (`--text-layers` decoder layers,
`--vision-blocks` vision blocks, DeepStack mapped onto them): hidden size 4,096, 32/8 heads of 128, MLP 12,288,
vocabulary 151,936, vision width 1,152, the real image processor settings (16-px patches merged 2 × 2, 256²–4,096²
pixels). It is saved as bf16 safetensors and every arm loads it through `hikari.models.load`, as a run on the 8B
does. Images are the synthetic SkinCAP's, enlarged so that `load_rgb` thumbnails them to 672 px as it does
SkinCAP's pictures.

Arms, one after another in this process, each one optimizer step of the *built-in recipe* through `run_training`
with its shipped settings — `load_in_4bit` (NF4 via bitsandbytes' CPU backend), `adamw_8bit`, gradient
checkpointing, bf16 (autocast where the CPU supports it), LoRA r=16 on both towers, batch 2 × accumulation 4,
max_length 2048:

  subaru (Stage 1) → deneb (Stage 2, merged-init: subaru's adapter merged first) → sirius (K = 3 reference
  images per sample, tiny offline encoders) → vega (Stage 3, merged-init from deneb) → antares (STS + ibr_ab)
  → merge vega → one greedy generation through `hikari predict`'s transformers engine.

What differs from a real run, and why: `train.max_steps=1` (one step is the point), `train.warmup_steps=0` (the
recipes' linear warm-up gives the first step a learning rate of 0, so no weight would move), `eval.enabled=false`, the
collapse guard probes 2 images for 16 tokens instead of 8 for 256 (a probe at true width costs minutes on two
cores; its gradient measurement runs as shipped), and the tokenizer is the offline tiny one (ids < 2,100 of the
151,936-row vocabulary).

Prints one JSON line per arm on stdout (everything else goes to stderr): peak RSS, seconds per optimizer step,
supervised tokens, image tokens per sample, loss, whether it is finite, LoRA tensors changed and frozen tensors
unchanged (checksums of every frozen tensor before and after), the cross-entropy backend, precision. Then one
`activations` line: what autograd saves per decoder layer and vision block for a batch of 2 Stage 3 samples,
with and without gradient checkpointing, and the 8-bit AdamW state per LoRA parameter — the figures
`benchmarks/memory_8b.py` is checked against.

Run: `python benchmarks/real_shape.py [--work DIR] [--arms subaru,deneb,...] [--grad-accum N]` (about 25 minutes
and 10 GB of RAM on 2 cores; ~20 GB of disk under --work for the merged checkpoints).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import TrainerCallback

from hikari.config import load_config, resolve_recipe
from hikari.data.split import read_split_records, split_dataset
from hikari.demo.encoders import build_tiny_encoders
from hikari.demo.synth import write_synthetic_skincap
from hikari.demo.tiny import build_tiny_qwen3vl, width_true_dims
from hikari.inference.predict import run_predict
from hikari.models import qwen3vl_8b as Q8B
from hikari.models.batching import VLMCollator
from hikari.models.load import load_processor
from hikari.models.lora import merge_adapter_into_base
from hikari.training.data import SupervisedVLMDataset, build_examples
from hikari.training.stages import prepare_model, read_run_info, run_training

GIB = 1024**3
ARMS = ("subaru", "deneb", "sirius", "vega", "antares")
PREVIOUS = {"deneb": "subaru", "sirius": "subaru", "vega": "deneb", "antares": "deneb"}
IMAGE_SIDE = 900  # enlarged synthetic pictures; load_rgb thumbnails them to 672 px, as SkinCAP's


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------
def release_memory() -> None:
    """Collect the previous arm's objects (the Trainer, model and optimizer sit in reference cycles) and hand the
    freed heap back to the system (glibc keeps freed chunks of up to 32 MB in its arenas otherwise), so that each
    arm's RSS starts from what is really still in use."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_rss() -> None:
    """Reset the kernel's high-water mark of this process's RSS (Linux: write 5 to /proc/self/clear_refs)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    """The process's peak RSS since the last `reset_peak_rss` (Linux VmHWM)."""
    return _status_bytes("VmHWM:")


def current_rss_bytes() -> int:
    return _status_bytes("VmRSS:")


def _digest(t: torch.Tensor) -> str:
    """A checksum of a tensor's values: of its fp32 values for a float tensor (bitsandbytes' 4-bit layers cast a
    frozen fp32 bias back to the bf16 it was loaded as, in place, on the first forward: the same values in
    another dtype), of its bytes otherwise (packed 4-bit weights)."""
    data = t.detach().cpu()
    data = (data.float() if data.is_floating_point() else data).contiguous().reshape(-1)
    return hashlib.blake2b(data.view(torch.uint8).numpy(), digest_size=16).hexdigest()


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__name__}"


class StepProbe(TrainerCallback):
    """Snapshots LoRA tensors and checksums of every frozen tensor before training, times the optimizer step,
    compares after training, and reads the optimizer's state size."""

    def __init__(self) -> None:
        self.result: dict[str, Any] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        self.lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.frozen = {n: _digest(p) for n, p in model.named_parameters() if not p.requires_grad}
        return control

    def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.start = time.perf_counter()
        return control

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.result["seconds_per_step"] = round(time.perf_counter() - self.start, 1)
        return control

    def on_train_end(self, args, state, control, model=None, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
        params = dict(model.named_parameters())
        changed = [n for n, before in self.lora.items() if not torch.equal(params[n].detach(), before)]
        unchanged = [n for n, digest in self.frozen.items() if _digest(params[n]) == digest]
        lora_elements = sum(t.numel() for t in self.lora.values())
        state_bytes = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                          if torch.is_tensor(v)) if optimizer is not None else 0  # fmt: skip
        self.result.update({
            "lora_tensors": len(self.lora), "lora_changed": len(changed), "lora_elements": lora_elements,
            "frozen_tensors": len(self.frozen), "frozen_unchanged": len(unchanged),
            "optimizer": _qualname(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer),
            "optimizer_state_bytes_per_lora_element": round(state_bytes / max(1, lora_elements), 3),
        })  # fmt: skip
        return control


def image_tokens_per_sample(config: Any, processor: Any, records: list) -> int:
    """<|image_pad|> tokens in one collated training sample of `config` (all its images, references included)."""
    refs = None
    if config.rag is not None:  # K reference pictures from the train part (which ones does not change the count)
        refs = {r.file_name: [(str(o.image_path), o.disease, None) for o in records[1 : 1 + config.rag.k_train]]
                for r in records[:1]}  # fmt: skip
    examples = build_examples(records[:1], config.task, seed=0, references=refs)
    item = SupervisedVLMDataset(examples, seed=0, max_image_size=config.data.max_image_size)[0]
    batch = VLMCollator(processor, max_length=config.train.max_length)([item])
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return int((batch["input_ids"][0] == pad).sum())


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------
def synthetic_inputs(work: Path) -> tuple[Path, Path]:
    """A small synthetic SkinCAP whose pictures are enlarged to IMAGE_SIDE px, and its split."""
    data = work / "data"
    if not (data / "complete").is_file():
        shutil.rmtree(data, ignore_errors=True)
        write_synthetic_skincap(data, n=120, seed=0)
        for path in (data / "skincap").glob("*.png"):
            with Image.open(path) as im:
                w, h = im.size
                scale = IMAGE_SIDE / max(w, h)
                big = im.convert("RGB").resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
            big.save(path)
        split, _ = split_dataset(data, seed=42, progress=False)
        split.save(work / "split.json")
        (data / "complete").touch()
    return data, work / "split.json"


def width_true_model(work: Path, text_layers: int, vision_blocks: int) -> Path:
    out = work / f"qwen3vl8b-width-{text_layers}L{vision_blocks}V"
    if not (out / "config.json").is_file():
        pixels = Q8B.IMAGE_PROCESSOR
        build_tiny_qwen3vl(out, seed=0, dims=width_true_dims(text_layers=text_layers, vision_blocks=vision_blocks),
                           dtype=torch.bfloat16, min_pixels=pixels["min_pixels"], max_pixels=pixels["max_pixels"],
                           overwrite=True)  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------------------
# Arms
# ---------------------------------------------------------------------------------------------------------------
def run_arm(recipe: str, work: Path, data: Path, split: Path, base: Path, encoders: Path,
            grad_accum: int | None) -> dict[str, Any]:  # fmt: skip
    overrides = [
        f"data.dir={data}", f"data.split={split}", f"output_dir={work / recipe}", f"model.base={base}",
        "train.max_steps=1", "train.warmup_steps=0", "train.logging_steps=1", "train.save_steps=100000",
        "eval.enabled=false",
        "guard.n_probe=2", "guard.max_new_tokens=16",
    ]  # fmt: skip
    if recipe in PREVIOUS:
        overrides.append(f"model.previous_run={work / PREVIOUS[recipe]}")
    if recipe == "sirius":
        overrides += [f"rag.encoder={encoders}", "rag.k_train=3"]
    if grad_accum is not None:
        overrides.append(f"train.grad_accum={grad_accum}")
    config = load_config(resolve_recipe(recipe), overrides)
    probe = StepProbe()
    release_memory()
    rss_at_start = current_rss_bytes()
    reset_peak_rss()
    start = time.perf_counter()
    result = run_training(config, callbacks=[probe])
    wall = time.perf_counter() - start
    info = read_run_info(config.output_dir)
    history = result.train_metrics["log_history"]
    step_log = next(h for h in history if "loss" in h and "step" in h)
    processor = load_processor(info["base_model"])
    records = read_split_records(data, split, ["train"]).parts["train"]
    return {
        "arm": recipe, "task": config.task, "init": config.model.init,
        "peak_rss_gib": round(peak_rss_bytes() / GIB, 2), "rss_at_start_gib": round(rss_at_start / GIB, 2),
        "arm_seconds": round(wall, 1),
        **probe.result,
        "micro_batches_per_step": config.train.grad_accum, "batch_size": config.train.batch_size,
        "supervised_tokens": int(step_log.get("sts/supervised_tokens", 0)),
        "image_tokens_per_sample": image_tokens_per_sample(config, processor, records),
        "loss": step_log["loss"], "loss_finite": math.isfinite(step_log["loss"]),
        "ce_backend": info["cross_entropy"]["name"], "precision": info["precision"],
        "optim": config.train.optim, "gradient_checkpointing": config.model.gradient_checkpointing,
        "sts": config.loss.sts, "penalty": config.loss.penalty,
        "rag_k_train": config.rag.k_train if config.rag else 0,
    }  # fmt: skip


def merge_and_generate(work: Path, data: Path, split: Path) -> dict[str, Any]:
    info = read_run_info(work / "vega")
    release_memory()
    reset_peak_rss()
    start = time.perf_counter()
    merged = merge_adapter_into_base(info["base_model"], work / "vega" / info["adapter"], work / "vega-merged")
    merge_s = time.perf_counter() - start
    out = work / "vega-merged.val.jsonl"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    summary = run_predict(str(merged), data, split, "caption", out, limit=1, batch_size=1, max_new_tokens=8,
                          progress=False)  # fmt: skip
    line = json.loads(out.read_text().splitlines()[0])
    return {"arm": "merge+generate", "peak_rss_gib": round(peak_rss_bytes() / GIB, 2),
            "merge_seconds": round(merge_s, 1), "generate_seconds": round(time.perf_counter() - start, 1),
            "generated": summary.n_written, "status": line.get("status", "success"),
            "raw_output_chars": len(line["raw_output"])}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Activation memory: what autograd keeps for backward, per layer
# ---------------------------------------------------------------------------------------------------------------
def saved_bytes_by_module(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, int]:
    """Bytes of the distinct storages autograd saves for backward during one forward, by the decoder layer /
    vision block running when they were saved ("other": embeddings, mergers, the loss's inputs)."""
    current: list[str] = ["other"]
    seen: dict[int, tuple[str, int]] = {}
    # A saved parameter costs nothing extra: it is in memory anyway.
    params = {p.untyped_storage().data_ptr() for p in model.parameters() if p.device.type != "meta"}
    hooks = []
    for name, module in model.named_modules():
        short = name.split("base_model.model.")[-1]
        if short.startswith(("model.language_model.layers.", "model.visual.blocks.")) and short.count(".") == 3:
            kind = "text_layer" if "language_model" in short else "vision_block"
            hooks.append(module.register_forward_pre_hook(lambda m, a, k=kind: current.append(k)))
            hooks.append(module.register_forward_hook(lambda m, a, o: current.pop() and None))  # returns None

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen.setdefault(storage.data_ptr(), (current[-1], storage.nbytes()))
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(**inputs, logits_to_keep=1, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    del out
    totals: dict[str, int] = defaultdict(int)
    for kind, nbytes in seen.values():
        totals[kind] += nbytes
    return dict(totals)


def measure_activations(base: Path, data: Path, split: Path, text_layers: int, vision_blocks: int) -> dict[str, Any]:
    """Saved-for-backward bytes of a batch of 2 Stage 3 samples on the 4-bit, LoRA-adapted width-true model,
    prepared as `hikari.training.stages.prepare_model` prepares it: with and without gradient checkpointing, and
    with PEFT's fp32 upcast of the frozen weights (`model.upcast_frozen_fp32=true`)."""
    records = read_split_records(data, split, ["train"]).parts["train"][:2]
    processor = load_processor(base)
    items = [SupervisedVLMDataset(build_examples(records, "caption", seed=0), seed=0, max_image_size=672)[i]
             for i in range(2)]  # fmt: skip
    batch = VLMCollator(processor)(items)
    out: dict[str, Any] = {"arm": "activations", "batch": 2, "seq_len": int(batch["input_ids"].shape[1]),
                           "image_patches": int(batch["image_grid_thw"].prod(-1).sum())}  # fmt: skip
    for key, checkpointing, upcast in (("no_checkpointing", False, False), ("checkpointing", True, False),
                                       ("checkpointing_upcast_fp32", True, True)):  # fmt: skip
        config = load_config(resolve_recipe("vega"), [
            f"data.dir={data}", f"data.split={split}", f"output_dir={base.parent / 'unused'}", f"model.base={base}",
            "model.init=base", "model.previous_run=null", f"model.gradient_checkpointing={checkpointing}",
            f"model.upcast_frozen_fp32={upcast}"])  # fmt: skip
        model, _, _ = prepare_model(config, base.parent / "unused")
        model.train()
        totals = saved_bytes_by_module(model, batch)
        out[key] = {
            "per_text_layer_mib": round(totals.get("text_layer", 0) / text_layers / 2**20, 1),
            "per_vision_block_mib": round(totals.get("vision_block", 0) / vision_blocks / 2**20, 1),
            "other_mib": round(totals.get("other", 0) / 2**20, 1),
            "hidden_state_dtype": str(next(p for n, p in model.named_parameters() if "embed_tokens" in n).dtype),
        }  # fmt: skip
        del model
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of " + ",".join(ARMS))
    ap.add_argument("--text-layers", type=int, default=2)
    ap.add_argument("--vision-blocks", type=int, default=3)
    ap.add_argument("--grad-accum", type=int, default=None, help="override the recipes' accumulation (4)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-merge", action="store_true", help="skip the final merge + generation")
    ap.add_argument("--no-activations", action="store_true", help="skip the activation measurement")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    arms = [a for a in args.arms.split(",") if a]
    unknown = set(arms) - set(ARMS)
    if unknown:
        ap.error(f"unknown arms {sorted(unknown)}; valid: {', '.join(ARMS)}")

    stdout = sys.stdout
    temporary = args.work is None
    work = Path(tempfile.mkdtemp(prefix="hikari-real-shape-")) if temporary else args.work
    work.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout carries the JSON only
            data, split = synthetic_inputs(work)
            base = width_true_model(work, args.text_layers, args.vision_blocks)
            encoders = work / "tiny-encoders"
            if not (encoders / "hikari_encoder.json").is_file():
                build_tiny_encoders(encoders, seed=0, overwrite=True)
            shape = {"hidden_size": Q8B.TEXT["hidden_size"], "vocab_size": Q8B.TEXT["vocab_size"],
                     "vision_hidden_size": Q8B.VISION["hidden_size"], "text_layers": args.text_layers,
                     "vision_blocks": args.vision_blocks, "threads": args.threads}  # fmt: skip
            for recipe in arms:
                row = {**run_arm(recipe, work, data, split, base, encoders, args.grad_accum), **shape}
                print(json.dumps(row), file=stdout, flush=True)
            if not args.no_merge and "vega" in arms:
                print(json.dumps({**merge_and_generate(work, data, split), **shape}), file=stdout, flush=True)
            if not args.no_activations:
                row = measure_activations(base, data, split, args.text_layers, args.vision_blocks)
                print(json.dumps({**row, **shape}), file=stdout, flush=True)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""GPU memory estimate of the HIKARI recipes on Qwen3-VL-8B (QLoRA r=16 on both towers), checked against what
`benchmarks/real_shape.py` measures at the 8B's width.

No weights are needed: the 8B is instantiated on the `meta` device from its published configuration
(`hikari.models.qwen3vl_8b`), PEFT attaches the recipe's LoRA adapters, and parameter counts are read off exactly.
The rest is per-token arithmetic whose constants were *measured* on the width-true model (hidden 4,096, MLP
12,288, vocabulary 151,936; `benchmarks/real_shape.py`, `activations` line: what autograd saves for backward, per
decoder layer, for a batch of 2 Stage 3 samples):

- with gradient checkpointing each decoder layer keeps its input, tokens × 4,096 × 2 bytes (bf16 hidden states;
  4 bytes with `model.upcast_frozen_fp32`, which also makes the residual stream fp32) — measured 8.0 MiB per layer
  for 1,022 tokens, exactly that;
- one layer recomputed in backward saves 237.6 kB per token (58 bytes per hidden unit; the previous estimate's
  (4·h + 3·MLP)·2 bytes gave 213 kB, 11 % low); its gradients come on top, counted as as much again;
- the rest of the forward (embeddings, DeepStack features, mergers, final norm) kept 64 MiB for that batch,
  scaled here per token; with `upcast_frozen_fp32` bf16 autocast also keeps a bf16 copy of the fp32 LM head
  (1.19 GiB, measured 1,251 MiB in all);
- 8-bit AdamW keeps 2.064 bytes per LoRA element (two 8-bit states + block-wise absmax), measured.

The CUDA context, allocator fragmentation and bitsandbytes workspaces are not measurable on a CPU: they stay an
assumption (1.5 GiB), printed with the others. Prints one JSON object: the estimate for the given shape, and a
table of the 16 GB-class configurations (Stage 1/2/3, K = 0/1/3 references, micro-batch 1/2, checkpointing,
fp32 upcast) with whether each fits. Run: `python benchmarks/memory_8b.py [--batch 2 --image-tokens 336]`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from transformers import Qwen3VLForConditionalGeneration

from hikari.models import qwen3vl_8b as Q8B
from hikari.models.lora import add_lora

GIB = 1024**3
MIB = 1024**2
H = Q8B.TEXT["hidden_size"]
# Measured at the 8B's width (benchmarks/real_shape.py, 2 × 511 tokens of which 2 × 399 image tokens):
LAYER_SAVED_PER_TOKEN = 231.6 * MIB / 1022  # bytes autograd saves per token in one un-checkpointed decoder layer
OTHER_SAVED_PER_TOKEN = 63.8 * MIB / 1022  # embeddings, DeepStack, mergers, final norm: the rest of the forward
LM_HEAD_BF16_COPY = Q8B.TEXT["vocab_size"] * H * 2  # autocast's copy of an fp32 LM head (upcast_frozen_fp32)
ADAM8_BYTES = 2.064  # per LoRA element: 2 × uint8 state + block-wise absmax (bitsandbytes AdamW, optim_bits=8)
VISION_SAVED_PER_PATCH = 1152 * 2  # per vision block and 16-px patch with checkpointing (its bf16 input)
OVERHEAD = 1.5 * GIB  # CUDA context, fragmentation, bitsandbytes workspaces: an assumption, not measured
NF4_BYTES = 0.5 + 0.127 / 8  # per quantised weight: 4 bits + double-quantised absmax (bitsandbytes NF4)
TEXT_TOKENS = {"group": 110, "disease": 70, "caption": 150}  # prompt + answer + template, per sample (no image)
REF_TEXT_TOKENS = 12  # "Reference i: {label}" per reference


def model_counts(rank: int) -> dict[str, int]:
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(Q8B.qwen3vl_8b_config())
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    embed = model.get_input_embeddings().weight.numel() + model.lm_head.weight.numel()
    linear = sum(m.weight.numel() for m in model.modules() if type(m) is torch.nn.Linear) - model.lm_head.weight.numel()
    peft_model = add_lora(model, r=rank, alpha=16, dropout=0.0, target="both")
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    return {"total": total, "vision": vision, "embed_and_head": embed, "quantised": linear, "lora": lora}


def estimate(counts: dict[str, int], *, batch: int, tokens: int, patches: int, supervised: int,
             checkpointing: bool = True, upcast: bool = False, four_bit: bool = True) -> dict[str, float]:  # fmt: skip
    """GiB per component for `batch` samples of `tokens` tokens (`patches` 16-px patches per sample)."""
    n_layers, depth = Q8B.TEXT["num_hidden_layers"], Q8B.VISION["depth"]
    bl = batch * tokens
    other = counts["total"] - counts["quantised"] - counts["embed_and_head"]  # norms, patch embed, position grid
    if four_bit:
        weights = counts["quantised"] * NF4_BYTES + counts["embed_and_head"] * (4 if upcast else 2) + other * 2
    else:
        weights = counts["total"] * 2
    lora = counts["lora"] * (4 + 4 + ADAM8_BYTES)  # fp32 parameters + fp32 gradients + 8-bit AdamW
    hidden_bytes = 4 if (four_bit and upcast) else 2
    if checkpointing:
        layers = n_layers * bl * H * hidden_bytes + 2 * bl * LAYER_SAVED_PER_TOKEN  # inputs + one layer recomputed
        vision = depth * batch * patches * VISION_SAVED_PER_PATCH
    else:
        layers = n_layers * bl * LAYER_SAVED_PER_TOKEN * hidden_bytes / 2
        vision = depth * batch * patches * 1152 * 36  # measured 121 MiB per block for 3,108 patches: ~36 B/unit
    rest = bl * OTHER_SAVED_PER_TOKEN + (LM_HEAD_BF16_COPY if (four_bit and upcast) else 0)
    # The fused CE keeps no (N, V) logits: one vocabulary chunk of fp32 logits + exponentials (≤ 64 MiB each) and
    # the (N, H) fp32 gradient accumulator for the `supervised` answer tokens.
    loss = 2 * 64 * MIB + batch * supervised * H * 4
    parts = {"weights": weights, "lora_params_grads_adam8bit": lora, "activations_text": layers,
             "activations_vision": vision, "activations_other": rest, "fused_cross_entropy": loss,
             "overhead_assumed": OVERHEAD}  # fmt: skip
    parts["total"] = sum(parts.values())
    return {k: round(v / GIB, 2) for k, v in parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2, help="per-device batch (the recipes use 2)")
    ap.add_argument("--image-tokens", type=int, default=336,
                    help="merged image tokens per image (a 672 × 504 SkinCAP picture: 21 × 16 = 336)")
    ap.add_argument("--task", choices=sorted(TEXT_TOKENS), default="caption")
    ap.add_argument("--k", type=int, default=0, help="reference images per Stage 2 sample")
    ap.add_argument("--supervised", type=int, default=90, help="answer tokens per sample (Stage 3 ≈ 80–100)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--budget-gib", type=float, default=16.0, help="the GPU's memory (a 16 GB card: 15.9 usable)")
    args = ap.parse_args()

    counts = model_counts(args.rank)

    def shape(task: str, k: int, batch: int) -> dict[str, int]:
        images = 1 + k
        tokens = images * args.image_tokens + TEXT_TOKENS[task] + k * REF_TEXT_TOKENS
        return {"batch": batch, "tokens": tokens, "patches": images * args.image_tokens * 4,
                "supervised": args.supervised if task == "caption" else 8}  # fmt: skip

    main_estimate = estimate(counts, **shape(args.task, args.k, args.batch))
    configurations = []
    for task, k in (("group", 0), ("disease", 0), ("disease", 1), ("disease", 3), ("caption", 0)):
        for batch in (1, 2):
            for checkpointing in (True, False):
                for upcast in (False, True):
                    est = estimate(counts, **shape(task, k, batch), checkpointing=checkpointing, upcast=upcast)
                    configurations.append({"task": task, "k": k, "batch": batch, "checkpointing": checkpointing,
                                           "upcast_frozen_fp32": upcast, "gib": est["total"],
                                           "fits": est["total"] <= args.budget_gib * 0.99})  # fmt: skip
    out: dict[str, Any] = {
        "params_total": counts["total"], "params_vision": counts["vision"], "params_lora": counts["lora"],
        "lora_share_percent": round(100 * counts["lora"] / counts["total"], 3),
        "shape": {"task": args.task, "k": args.k, **shape(args.task, args.k, args.batch)},
        "gib": main_estimate, "fits": main_estimate["total"] <= args.budget_gib * 0.99, "budget_gib": args.budget_gib,
        "assumptions": {
            "layer_saved_bytes_per_token": round(LAYER_SAVED_PER_TOKEN), "other_saved_bytes_per_token":
            round(OTHER_SAVED_PER_TOKEN), "adam8bit_bytes_per_lora_element": ADAM8_BYTES, "nf4_bytes_per_weight":
            NF4_BYTES, "overhead_gib": OVERHEAD / GIB, "text_tokens_per_sample": TEXT_TOKENS,
            "measured_by": "benchmarks/real_shape.py (width-true Qwen3-VL-8B on CPU: saved-for-backward bytes)",
            "not_measured": "CUDA context, allocator fragmentation, bitsandbytes workspaces, kernel scratch",
        },
        "configurations_16gb": configurations,
    }  # fmt: skip
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

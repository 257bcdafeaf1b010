"""Memory estimate for the real HIKARI recipe (Qwen3-VL-8B, QLoRA r=16 on both towers) on a 16 GB GPU.

No weights are needed: the 8B architecture is instantiated on the `meta` device from its published config
values, PEFT attaches the recipe's LoRA adapters, and parameter counts are read off exactly. Activation memory is
an analytic estimate for gradient checkpointing (one saved hidden state per decoder layer + one layer's
recomputation peak). Prints one JSON object. Run: `python benchmarks/memory_8b.py [--seq 700 --batch 2]`.
"""

from __future__ import annotations

import argparse
import json

import torch
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

from hikari.models.lora import add_lora

# Qwen/Qwen3-VL-8B-{Instruct,Thinking} config.json values (the two share the architecture).
TEXT = dict(
    hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=262144,
    rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                     "mrope_interleaved": True},
)  # fmt: skip
VISION = dict(
    depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, patch_size=16, spatial_merge_size=2,
    temporal_patch_size=2, out_hidden_size=4096, num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24],
)  # fmt: skip
GIB = 1024**3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=2, help="per-device batch (the recipes use 2)")
    ap.add_argument("--seq", type=int, default=700, help="tokens per sample (672px image ≈ 441 + text)")
    ap.add_argument("--supervised", type=int, default=90, help="answer tokens per sample (Stage 3 ≈ 80–100)")
    ap.add_argument("--rank", type=int, default=16)
    args = ap.parse_args()

    config = Qwen3VLConfig(text_config=TEXT, vision_config=VISION, tie_word_embeddings=False)
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(config)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    embed = model.get_input_embeddings().weight.numel() + model.lm_head.weight.numel()
    peft_model = add_lora(model, r=args.rank, alpha=16, dropout=0.0, target="both")
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)

    # QLoRA: linear weights in NF4 (0.5 B/param + double-quantised absmax ≈ 0.127 bit/param); embeddings,
    # lm_head and norms stay bf16 (bitsandbytes does not quantise them).
    quantised = total - embed
    weights = quantised * (0.5 + 0.127 / 8) + embed * 2
    lora_train = lora * (4 + 4 + 2)  # fp32 params + fp32 grads + 8-bit AdamW (2 states × 1 B)
    h, n_layers, inter = TEXT["hidden_size"], TEXT["num_hidden_layers"], TEXT["intermediate_size"]
    bl = args.batch * args.seq
    saved = n_layers * bl * h * 2  # checkpointed layer inputs, bf16
    layer_peak = bl * (4 * h + 3 * inter) * 2 * 2  # one layer's recompute: attn/MLP intermediates + their grads
    logits_ours = args.batch * args.supervised * TEXT["vocab_size"] * 4 * 2  # supervised positions only, fp32 + grad
    logits_full = bl * TEXT["vocab_size"] * 4 * 2  # what a full-logits loss would hold
    vision_act = args.batch * 1764 * VISION["hidden_size"] * 2 * VISION["depth"]  # checkpointed ViT inputs
    overhead = 1.5 * GIB  # CUDA context, allocator fragmentation, bitsandbytes workspaces
    estimate = weights + lora_train + saved + layer_peak + logits_ours + vision_act + overhead
    print(json.dumps({
        "params_total": total, "params_vision": vision, "params_lora": lora,
        "lora_share_percent": round(100 * lora / total, 3),
        "gib": {
            "weights_nf4": round(weights / GIB, 2), "lora_params_grads_adam8bit": round(lora_train / GIB, 2),
            "activations_checkpointed": round((saved + layer_peak + vision_act) / GIB, 2),
            "logits_supervised_only": round(logits_ours / GIB, 2), "logits_if_full": round(logits_full / GIB, 2),
            "overhead": round(overhead / GIB, 2), "estimate_total": round(estimate / GIB, 2),
        },
        "fits_16gb": estimate < 16 * GIB, "batch": args.batch, "seq": args.seq,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

"""The published Qwen3-VL-8B architecture (`Qwen/Qwen3-VL-8B-Thinking` and `-Instruct` share it), in one place.

These are the values of the hub's `config.json` and `preprocessor_config.json` that decide every shape HIKARI's
memory and speed depend on: hidden size 4,096 × 36 decoder layers, vocabulary 151,936, a 27-block vision tower
1,152 wide whose blocks 8, 16 and 24 feed DeepStack, 16-px patches merged 2 × 2. A run on the real model reads
them from the hub; `qwen3vl_8b_config` rebuilds them offline — the whole model (on the `meta` device, for memory
estimates, or materialised with random weights on a GPU) or a *width-true, depth-shrunk* one (fewer layers and
blocks, every width as published) that a CPU can train a step of.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import Qwen3VLConfig

TEXT: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "vocab_size": 151936,
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "attention_bias": False,
    "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                        "mrope_interleaved": True},
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}  # fmt: skip
VISION: dict[str, Any] = {
    "depth": 27,
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_heads": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "in_channels": 3,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": 4096,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [8, 16, 24],
}
TOKEN_IDS: dict[str, int] = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}
# preprocessor_config.json: every image is resized to between 256² and 4,096² pixels, multiples of 32 per side.
IMAGE_PROCESSOR: dict[str, Any] = {
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "min_pixels": 256 * 256,
    "max_pixels": 4096 * 4096,
}


def shrunk_deepstack(indexes: list[int], depth: int, blocks: int) -> list[int]:
    """DeepStack's vision-block indexes mapped onto `blocks` kept blocks of `depth`: block i → ⌊i·blocks/depth⌋,
    duplicates merged ([8, 16, 24] of 27 → [0, 1, 2] of 3, [0, 1] of 2)."""
    return sorted({min(blocks - 1, i * blocks // depth) for i in indexes})


def qwen3vl_8b_config(
    *,
    text_layers: int | None = None,
    vision_blocks: int | None = None,
    token_ids: Mapping[str, int] | None = None,
    vocab_size: int | None = None,
) -> Qwen3VLConfig:
    """Qwen3-VL-8B's `Qwen3VLConfig`: as published, or with only the depth reduced.

    Args:
        text_layers: decoder layers to keep (None: all 36).
        vision_blocks: vision blocks to keep (None: all 27); DeepStack's indexes are mapped onto them
            (`shrunk_deepstack`), so the model keeps its DeepStack mergers and injection into the first layers.
        token_ids: special-token ids (image/video pad, vision start/end, bos/eos/pad) of the tokenizer the model
            will be used with, when it is not Qwen's own (e.g. the offline tiny tokenizer).
        vocab_size: embedding rows (None: 151,936 as published).
    """
    text = {**TEXT, **({"num_hidden_layers": text_layers} if text_layers is not None else {})}
    vision = dict(VISION)
    if vision_blocks is not None:
        vision["deepstack_visual_indexes"] = shrunk_deepstack(VISION["deepstack_visual_indexes"], VISION["depth"],
                                                              vision_blocks)  # fmt: skip
        vision["depth"] = vision_blocks
    ids = {**TOKEN_IDS, "bos_token_id": TEXT["bos_token_id"], "eos_token_id": TEXT["eos_token_id"],
           "pad_token_id": TEXT["bos_token_id"], **(token_ids or {})}  # fmt: skip
    text.update({k: ids[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")})
    if vocab_size is not None:
        text["vocab_size"] = vocab_size
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                         **{k: ids[k] for k in TOKEN_IDS})  # fmt: skip

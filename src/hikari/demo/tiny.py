"""A tiny, offline, randomly initialised Qwen3-VL with a tokenizer trained on HIKARI text.

Every test, demo config and CPU smoke run needs a model that *is* a Qwen3-VL, so that the same loading,
prompting, LoRA, training, merging and generation code runs on it and on `Qwen/Qwen3-VL-8B-Thinking`, but
that builds in seconds without a network. This module makes one:

- the architecture is `transformers.Qwen3VLForConditionalGeneration` with the 8B model's structure scaled down:
  GQA attention with an explicit `head_dim`, interleaved multimodal RoPE with `mrope_section` scaled in the 8B
  proportions (24:20:20 of 64 rotary frequencies -> 6:5:5 of 16), a vision tower with 16-px patches, 2x2 spatial
  merge, 2-frame temporal patches, a learned position grid and DeepStack mergers feeding the first text layers,
  untied input/output embeddings (as in the 8B model), vocabulary padded to a multiple of 64 (as Qwen pads to
  151,936);
- the tokenizer is a byte-level BPE (Qwen2's exact pre-tokenizer, normaliser and decoder) trained on HIKARI's
  prompts, labels, answer templates and synthetic captions, with Qwen's control tokens appended after the learned
  vocabulary in Qwen's order; `<think>`/`</think>` (and the tool tags) are added tokens that are *not* special,
  exactly as Qwen3 marks them, so `skip_special_tokens=True` keeps the reasoning markers visible;
- the processor is `Qwen3VLProcessor` with `Qwen2VLImageProcessor` and `Qwen3VLVideoProcessor`, the 8B
  model's normalisation (mean = std = 0.5), a pixel budget for 64-128 px images and the real Qwen3-VL-Thinking
  chat template;
- the generation config stops at `<|im_end|>` or `<|endoftext|>` and decodes greedily.

Class names are transformers v5's: `Qwen2Tokenizer` and `Qwen2VLImageProcessor` are what v4 called
`Qwen2TokenizerFast` and `Qwen2VLImageProcessorFast` (v5 keeps the old names as aliases); v5 is required.
Everything is written with `save_pretrained` (safetensors), so `hikari.models.load` reads it like any Hub model.
Weights depend only on `seed`; the tokenizer depends only on its training text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import (
    GenerationConfig,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from hikari.data.labels import ALIASES, DISEASES, GROUPS
from hikari.data.prompts import all_prompt_texts, stage2_target
from hikari.demo.captions import caption_corpus
from hikari.demo.chat_template import QWEN3_VL_THINKING_CHAT_TEMPLATE
from hikari.models import qwen3vl_8b as Q8B
from hikari.utils.io import atomic_directory

# Qwen's control tokens, in the order Qwen's vocabulary lists them (the tokens Qwen3-VL never uses in
# HIKARI — box/quad/object-ref/FIM — are left out). `special` follows Qwen3's tokenizer_config: the chat and
# vision markers are special (dropped by `skip_special_tokens`), the tool and think tags are not.
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
# Special tokens other than eos/pad, listed the way Qwen3-VL's tokenizer_config lists them.
_EXTRA_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                         "<|video_pad|>")

BPE_VOCAB_SIZE = 2400  # learned entries, including the 256-symbol byte alphabet
VOCAB_MULTIPLE = 64  # the embedding matrix is padded to a multiple of this, as Qwen pads 151,669 -> 151,936
CAPTION_CORPUS_SIZE = 2000
CAPTION_CORPUS_SEED = 0  # fixed: the vocabulary must not change with the weight seed
# Chat-template role names: repeated so BPE (min_frequency=2) learns each as one token, as Qwen's vocab has them.
_ROLE_TEXTS = tuple(f"{role}\n" for role in ("system", "user", "assistant", "tool") for _ in range(4))

# Image budget: a 64x64 image is 4x4 patches of 16 px -> 2x2 = 4 merged tokens; 128x128 -> 16 tokens.
# (Qwen3-VL-8B uses 256^2 .. 4096^2 pixels; HIKARI's 8B runs thumbnail to <= 672 px.)
PATCH_SIZE = 16
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MIN_PIXELS = 64 * 64
MAX_PIXELS = 128 * 128
VIDEO_MIN_PIXELS = 64 * 64
VIDEO_MAX_PIXELS = 128 * 128 * 8  # summed over frames, as Qwen3VLVideoProcessor counts it
IMAGE_MEAN = (0.5, 0.5, 0.5)  # Qwen3-VL's preprocessor_config values
IMAGE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class TinyDims:
    """Sizes of the tiny model; the defaults give 835,776 parameters (3.35 MB of float32 safetensors)."""

    text_hidden: int = 64
    text_intermediate: int = 192
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2  # grouped-query attention, 2 query heads per KV head
    head_dim: int = 32  # 16 rotary frequencies per head
    mrope_section: tuple[int, int, int] = (6, 5, 5)  # (t, h, w) frequencies; sums to head_dim // 2
    rope_theta: float = 5_000_000.0  # Qwen3-VL-8B's value
    max_position_embeddings: int = 262_144
    vision_hidden: int = 64
    vision_intermediate: int = 256
    vision_depth: int = 2
    vision_heads: int = 2
    vision_position_grid: int = 8  # learned 8x8 position grid (8B: 48x48), bilinearly resampled per image
    deepstack_visual_indexes: tuple[int, ...] = (0, 1)  # vision blocks whose features DeepStack injects
    vocab_size: int | None = None  # embedding rows; None: the tokenizer's size rounded up to VOCAB_MULTIPLE


def width_true_dims(*, text_layers: int = 2, vision_blocks: int = 3) -> TinyDims:
    """Qwen3-VL-8B's sizes (`hikari.models.qwen3vl_8b`) with only the depth reduced: hidden 4,096, 32 query and 8
    KV heads of 128, MLP 12,288, vocabulary 151,936; vision 1,152 wide with a 48 × 48 position grid; DeepStack's
    blocks mapped onto the kept ones. With the tiny tokenizer, every id is below 2,100 and the other rows of the
    embedding and LM head are never a target, but the loss still runs over all 151,936 logits."""
    text, vision = Q8B.TEXT, Q8B.VISION
    grid = round(vision["num_position_embeddings"] ** 0.5)
    return TinyDims(
        text_hidden=text["hidden_size"], text_intermediate=text["intermediate_size"], text_layers=text_layers,
        text_heads=text["num_attention_heads"], text_kv_heads=text["num_key_value_heads"], head_dim=text["head_dim"],
        mrope_section=tuple(text["rope_parameters"]["mrope_section"]),
        rope_theta=text["rope_parameters"]["rope_theta"], max_position_embeddings=text["max_position_embeddings"],
        vision_hidden=vision["hidden_size"], vision_intermediate=vision["intermediate_size"],
        vision_depth=vision_blocks, vision_heads=vision["num_heads"], vision_position_grid=grid,
        deepstack_visual_indexes=tuple(Q8B.shrunk_deepstack(vision["deepstack_visual_indexes"], vision["depth"],
                                                            vision_blocks)),
        vocab_size=text["vocab_size"],
    )  # fmt: skip


def tokenizer_training_texts(corpus: Sequence[str] | None = None) -> list[str]:
    """The text the tiny BPE learns from: prompts, labels, aliases, answer templates, role names and captions.

    `corpus` replaces the default synthetic caption corpus (`caption_corpus(2000, seed=0)`).
    """
    captions = list(corpus) if corpus is not None else caption_corpus(CAPTION_CORPUS_SIZE, CAPTION_CORPUS_SEED)
    texts = [*all_prompt_texts(), *GROUPS, *DISEASES]
    texts += [alias for aliases in ALIASES.values() for alias in aliases]
    texts += [stage2_target(disease) for disease in DISEASES]
    return [*texts, *_ROLE_TEXTS, *captions]


def train_tiny_tokenizer(texts: Sequence[str], *, vocab_size: int = BPE_VOCAB_SIZE,
                         padding_side: str = "right") -> Qwen2Tokenizer:
    """Train a byte-level BPE on `texts` and wrap it as Qwen3-VL's tokenizer class with Qwen's added tokens.

    The BPE uses the very normaliser, pre-tokeniser (Qwen2 split regex + byte-level) and decoder that
    `Qwen2Tokenizer` rebuilds when it loads a `tokenizer.json`, so the saved tokenizer reloads identically.
    Training is deterministic for a given list of texts.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    bpe = Tokenizer(BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    bpe.train_from_iterator(list(texts), trainer=trainer)
    model_json = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(model_json["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_json["merges"]]
    # Control tokens go after the learned vocabulary, in Qwen's order.
    for offset, (token, _) in enumerate(QWEN_ADDED_TOKENS):
        vocab[token] = len(model_json["vocab"]) + offset
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,  # byte-level BPE never needs one (Qwen3-VL: "unk_token": null)
        bos_token=None,
        eos_token="<|im_end|>",  # Qwen3-VL's chat eos; the generation config also stops at <|endoftext|>
        pad_token="<|endoftext|>",
        extra_special_tokens=list(_EXTRA_SPECIAL_TOKENS),
        padding_side=padding_side,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=TinyDims.max_position_embeddings,
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t, special in QWEN_ADDED_TOKENS
                          if not special])
    for token, _ in QWEN_ADDED_TOKENS:  # the ids must be where we put them, or the model config would lie
        if tokenizer.convert_tokens_to_ids(token) != vocab[token]:
            raise RuntimeError(f"added token {token!r} got id {tokenizer.convert_tokens_to_ids(token)}, "
                               f"expected {vocab[token]}")
    tokenizer.chat_template = QWEN3_VL_THINKING_CHAT_TEMPLATE
    return tokenizer


def build_tiny_processor(
    tokenizer: Qwen2Tokenizer, *, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> Qwen3VLProcessor:
    """Qwen3-VL's processor around `tokenizer`, with a pixel budget for 64-128 px images (or the one given;
    Qwen3-VL-8B's own is `hikari.models.qwen3vl_8b.IMAGE_PROCESSOR`)."""
    common = dict(
        patch_size=PATCH_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        merge_size=MERGE_SIZE,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, **common)
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": VIDEO_MIN_PIXELS, "longest_edge": VIDEO_MAX_PIXELS},
        cap_pixels_per_frame=True,  # qwen-vl-utils' per-frame budget; also the library default from v5.22 on
        **common,
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN3_VL_THINKING_CHAT_TEMPLATE,
    )


def tiny_qwen3vl_config(tokenizer: Qwen2Tokenizer, dims: TinyDims = TinyDims()) -> Qwen3VLConfig:
    """A `Qwen3VLConfig` shaped like Qwen3-VL-8B's, scaled to `dims`, with token ids taken from `tokenizer`."""
    if sum(dims.mrope_section) != dims.head_dim // 2:
        raise ValueError(f"mrope_section {dims.mrope_section} must sum to head_dim // 2 = {dims.head_dim // 2}")
    if max(dims.deepstack_visual_indexes, default=-1) >= dims.vision_depth:
        raise ValueError(f"deepstack_visual_indexes {dims.deepstack_visual_indexes} must be < vision_depth "
                         f"{dims.vision_depth}")
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token, _ in QWEN_ADDED_TOKENS}
    vocab_size = dims.vocab_size or -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    text_config = dict(
        vocab_size=vocab_size,
        hidden_size=dims.text_hidden,
        intermediate_size=dims.text_intermediate,
        num_hidden_layers=dims.text_layers,
        num_attention_heads=dims.text_heads,
        num_key_value_heads=dims.text_kv_heads,
        head_dim=dims.head_dim,
        hidden_act="silu",
        max_position_embeddings=dims.max_position_embeddings,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        use_cache=True,
        attention_bias=False,
        attention_dropout=0.0,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": dims.rope_theta,
            "mrope_section": list(dims.mrope_section),
            "mrope_interleaved": True,
        },
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision_config = dict(
        depth=dims.vision_depth,
        hidden_size=dims.vision_hidden,
        hidden_act="gelu_pytorch_tanh",
        intermediate_size=dims.vision_intermediate,
        num_heads=dims.vision_heads,
        in_channels=3,
        patch_size=PATCH_SIZE,
        spatial_merge_size=MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        out_hidden_size=dims.text_hidden,  # merged vision tokens replace text embeddings one for one
        num_position_embeddings=dims.vision_position_grid**2,
        deepstack_visual_indexes=list(dims.deepstack_visual_indexes),
        initializer_range=0.02,
    )
    return Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def tiny_generation_config(tokenizer: Qwen2Tokenizer) -> GenerationConfig:
    """Stop at `<|im_end|>` (end of turn) or `<|endoftext|>`, pad with `<|endoftext|>`, decode greedily."""
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return GenerationConfig(
        bos_token_id=endoftext,
        eos_token_id=[im_end, endoftext],
        pad_token_id=endoftext,
        do_sample=False,
    )


def build_tiny_qwen3vl(
    out: Path,
    *,
    seed: int = 0,
    corpus: Sequence[str] | None = None,
    dims: TinyDims = TinyDims(),
    overwrite: bool = False,
    dtype: torch.dtype = torch.float32,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> Path:
    """Build the tiny Qwen3-VL (model, tokenizer, processor, generation config) and save it to `out`.

    Args:
        out: directory to create. It must not exist or be empty unless `overwrite` is true. The directory is
            written in a sibling temporary folder and renamed into place, so it is never left half-written.
        seed: seeds the weight initialisation; the same seed gives bit-identical weights.
        corpus: captions for tokenizer training instead of the default synthetic corpus (prompts and labels
            are always included).
        dims: model sizes (the defaults keep the saved folder under 5 MB; `width_true_dims()` gives Qwen3-VL-8B's
            widths at a reduced depth).
        overwrite: replace an existing non-empty `out`.
        dtype: the saved weights' dtype (Qwen3-VL-8B ships bf16).
        min_pixels, max_pixels: the image processor's pixel budget.

    Returns:
        `out`, holding `config.json`, `generation_config.json`, `model.safetensors`, tokenizer, image/video
        processor and chat template files.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose another directory or pass overwrite=True")

    tokenizer = train_tiny_tokenizer(tokenizer_training_texts(corpus))
    processor = build_tiny_processor(tokenizer, min_pixels=min_pixels, max_pixels=max_pixels)
    config = tiny_qwen3vl_config(tokenizer, dims)
    # A private generator would be nicer, but transformers initialises from the global RNG; fork it so the
    # caller's RNG state is untouched by the build. Parameters are created in `dtype` (a width-true model in fp32
    # would need twice the memory for a moment).
    previous = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)
        try:
            model = Qwen3VLForConditionalGeneration(config).to(dtype).eval()
        finally:
            torch.set_default_dtype(previous)
    model.generation_config = tiny_generation_config(tokenizer)

    with atomic_directory(out) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
    return out


def directory_size(path: Path) -> int:
    """Total bytes of the regular files under `path`."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())

"""Tiny offline retrieval encoders for the embedded default: a CLIP- or SigLIP-style image tower and a small BERT
text encoder with random weights, saved as a `hikari_encoder.json` directory that
`hikari.retrieval.encoders.load_encoders` loads through the same `from_pretrained` path as the R0–R4 hub models.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import (
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from hikari.demo.tiny import tokenizer_training_texts, train_tiny_tokenizer
from hikari.retrieval.encoders import ENCODER_FILE, EncoderSpec
from hikari.utils.io import atomic_directory

TINY_IMAGE_ARCHS: tuple[str, ...] = ("clip", "siglip")
TINY_IMAGE_SIZE = 64


def build_tiny_encoders(
    out: Path, *, seed: int = 0, image_arch: str = "clip", overwrite: bool = False
) -> Path:
    """Random-initialised tiny image encoder (CLIP or SigLIP) + tiny BERT text encoder, saved like the tiny VLM.

    Writes `out/image` (model + image processor), `out/text` (model + HIKARI BPE tokenizer) and
    `out/hikari_encoder.json`; `load_encoders(out)` then loads them through `from_pretrained`. Weights depend
    only on `seed`. The directory is written in a sibling temporary folder and renamed into place.
    """
    if image_arch not in TINY_IMAGE_ARCHS:
        raise ValueError(f"unknown tiny image architecture {image_arch!r}; valid: {', '.join(TINY_IMAGE_ARCHS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose another directory or pass overwrite=True")

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=TINY_IMAGE_SIZE, patch_size=16)  # fmt: skip
    text = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=64, bos_token_id=0, eos_token_id=1, pad_token_id=1)  # fmt: skip
    tokenizer = train_tiny_tokenizer(tokenizer_training_texts())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if image_arch == "clip":
            image_model: Any = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=32))
            processor: Any = CLIPImageProcessor(size={"shortest_edge": TINY_IMAGE_SIZE},
                                                crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
        else:
            image_model = SiglipModel(SiglipConfig(vision_config=vision, text_config=text))
            processor = SiglipImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
        text_model = BertModel(BertConfig(
            vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        ))  # fmt: skip
    spec = EncoderSpec(
        name=f"tiny-{image_arch}", image_model="image", image_kind="projected", text_model="text",
        text_kind="mean", text_max_length=256, description=f"tiny random {image_arch} + tiny BERT (offline)",
    )  # fmt: skip

    with atomic_directory(out) as staging:
        image_model.eval().save_pretrained(staging / "image")
        processor.save_pretrained(staging / "image")
        text_model.eval().save_pretrained(staging / "text")
        tokenizer.save_pretrained(staging / "text")
        (staging / ENCODER_FILE).write_text(json.dumps(asdict(spec), indent=2) + "\n", encoding="utf-8")
    return out


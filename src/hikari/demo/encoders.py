"""Tiny offline retrieval encoders for the embedded default: a CLIP- or SigLIP-style image tower and a small BERT
text encoder with random weights, saved as a `hikari_encoder.json` directory that
`hikari.retrieval.encoders.load_encoders` loads through the same `from_pretrained` path as the R0–R4 hub models.
"""

from __future__ import annotations

import json
import time
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

from hikari.data.images import load_rgb
from hikari.data.split import read_split_records
from hikari.demo.tiny import tokenizer_training_texts, train_tiny_tokenizer
from hikari.retrieval.encoders import ENCODER_FILE, EncoderSpec, projected_features
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

    return _save_encoders(out, spec, image_model, processor, text_model, tokenizer)


def _save_encoders(out: Path, spec: EncoderSpec, image_model: Any, processor: Any, text_model: Any, tokenizer: Any,
                   extra: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write an encoder directory atomically: `image/` (model + processor), `text/` (model + tokenizer), the spec
    (`ENCODER_FILE`) and, when given, `extra` as training.json."""
    with atomic_directory(out) as staging:
        image_model.eval().save_pretrained(staging / "image")
        processor.save_pretrained(staging / "image")
        text_model.eval().save_pretrained(staging / "text")
        tokenizer.save_pretrained(staging / "text")
        (staging / ENCODER_FILE).write_text(json.dumps(asdict(spec), indent=2) + "\n", encoding="utf-8")
        if extra is not None:
            (staging / "training.json").write_text(json.dumps(extra, indent=2) + "\n", encoding="utf-8")
    return out



# Trained tiny encoders (`train_tiny_encoders`): sizes and schedule. Measured on the demo's data (864 train / 97 val
# images, 2 cores): see `docs/retrieval.md` ("Encoders that retrieve") for precision@1 and the time.
TRAINED_IMAGE_SIZE = 64
TRAINED_PATCH = 8
TRAINED_WIDTH = 64
TRAINED_STEPS = 240
TRAINED_BATCH = 64
TRAINED_TEMPERATURE = 0.1
TRAINED_NAME = "tiny-clip-trained"


def _train_images(paths: list[Path], processor: Any, max_size: int) -> torch.Tensor:
    pixels = [processor(images=[load_rgb(p, max_size=max_size)], return_tensors="pt")["pixel_values"][0]
              for p in paths]  # fmt: skip
    return torch.stack(pixels)


def _soft_targets(labels: torch.Tensor) -> torch.Tensor:
    """Row-normalised same-label matrix: every item of the batch with the query's disease is a positive."""
    same = (labels[:, None] == labels[None, :]).float()
    return same / same.sum(1, keepdim=True)


def train_tiny_encoders(
    out: Path,
    data_dir: Path,
    split_path: Path,
    *,
    steps: int = TRAINED_STEPS,
    batch_size: int = TRAINED_BATCH,
    learning_rate: float = 2e-3,
    seed: int = 0,
    max_image_size: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a tiny CLIP image tower and a tiny BERT text encoder on the *train part* of `split_path` and save them
    as an encoder directory (`hikari_encoder.json`, loaded by `load_encoders(out)` like any other).

    Objective (label-aware contrastive, as UniCL): image↔caption InfoNCE in both directions plus image↔image, in
    which every pair of the batch with the same disease counts as a positive (soft targets), temperature
    `TRAINED_TEMPERATURE`. The images and captions are the train part's only; validation images are never read.
    Images get random flips (the lesions' facts are flip-invariant). Deterministic for a given `seed` on one
    thread count (torch's CPU kernels may differ in the last bits across thread counts).

    Returns ``{"path", "steps", "losses" (first/last 10-step means), "train_images", "seconds"}``.
    """
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose another directory or pass overwrite=True")
    if steps < 1 or batch_size < 2:
        raise ValueError(f"need steps >= 1 and batch_size >= 2, got {steps} and {batch_size}")
    started = time.perf_counter()
    train = read_split_records(data_dir, split_path, ["train"]).parts["train"]
    if len(train) < batch_size:
        raise ValueError(f"{split_path}: the train part has {len(train)} images, fewer than one batch ({batch_size})")
    diseases = sorted({r.disease for r in train})
    labels = torch.tensor([diseases.index(r.disease) for r in train])
    tokenizer = train_tiny_tokenizer(tokenizer_training_texts())
    processor = CLIPImageProcessor(size={"shortest_edge": TRAINED_IMAGE_SIZE},
                                   crop_size={"height": TRAINED_IMAGE_SIZE, "width": TRAINED_IMAGE_SIZE})
    pixels = _train_images([r.image_path for r in train], processor, max_image_size or 4 * TRAINED_IMAGE_SIZE)
    tokens = tokenizer([r.caption for r in train], padding=True, truncation=True, max_length=160, return_tensors="pt")
    vision = dict(hidden_size=TRAINED_WIDTH, intermediate_size=2 * TRAINED_WIDTH, num_hidden_layers=2,
                  num_attention_heads=4, image_size=TRAINED_IMAGE_SIZE, patch_size=TRAINED_PATCH)
    text = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=64, bos_token_id=0, eos_token_id=1, pad_token_id=1)  # unused CLIP text tower
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image_model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=TRAINED_WIDTH))
        text_model = BertModel(BertConfig(
            vocab_size=len(tokenizer), hidden_size=TRAINED_WIDTH, intermediate_size=2 * TRAINED_WIDTH,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
        ))  # fmt: skip
        params = [*image_model.vision_model.parameters(), *image_model.visual_projection.parameters(),
                  *text_model.parameters()]  # fmt: skip
        optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps,
                                                       pct_start=0.1)  # fmt: skip
        image_model.train()
        text_model.train()
        for _ in range(steps):
            idx = torch.randperm(len(train), generator=generator)[:batch_size]
            batch = pixels[idx]
            flip = torch.rand(len(idx), generator=generator)
            batch = torch.where((flip < 0.5)[:, None, None, None], batch.flip(-1), batch)
            batch = torch.where((flip % 0.5 < 0.25)[:, None, None, None], batch.flip(-2), batch)
            img = projected_features(image_model.get_image_features(pixel_values=batch))
            img = torch.nn.functional.normalize(img, dim=-1)
            mask = tokens["attention_mask"][idx]
            hidden = text_model(input_ids=tokens["input_ids"][idx], attention_mask=mask).last_hidden_state
            txt = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            txt = torch.nn.functional.normalize(txt, dim=-1)
            targets = _soft_targets(labels[idx])
            i2t = img @ txt.T / TRAINED_TEMPERATURE
            i2i = (img @ img.T / TRAINED_TEMPERATURE).masked_fill(torch.eye(len(idx), dtype=torch.bool), -1e4)
            off_diag = targets.masked_fill(torch.eye(len(idx), dtype=torch.bool), 0)
            off_diag = off_diag / off_diag.sum(1, keepdim=True).clamp(min=1e-9)
            has_pair = off_diag.sum(1) > 0
            loss = (torch.nn.functional.cross_entropy(i2t, targets) + torch.nn.functional.cross_entropy(i2t.T, targets)
                    + torch.nn.functional.cross_entropy(i2i[has_pair], off_diag[has_pair])) / 3  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
    spec = EncoderSpec(
        name=TRAINED_NAME, image_model="image", image_kind="projected", text_model="text", text_kind="mean",
        text_max_length=256, aligned=True,
        description=f"tiny CLIP image tower + tiny BERT, trained contrastively on {split_path} (train part)",
    )  # fmt: skip
    meta = {**asdict(spec), "training": {"split": str(split_path), "part": "train", "images": len(train),
                                         "steps": steps, "batch_size": batch_size, "seed": seed}}  # fmt: skip
    _save_encoders(out, spec, image_model, processor, text_model, tokenizer, meta)
    first, last = losses[: min(10, steps)], losses[-min(10, steps):]
    return {"path": str(out), "steps": steps, "train_images": len(train),
            "loss_first": sum(first) / len(first), "loss_last": sum(last) / len(last),
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip

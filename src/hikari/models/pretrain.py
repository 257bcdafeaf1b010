"""Brief full-parameter pre-training of the tiny Qwen3-VL on generic image descriptions (demo/tests only).

A randomly initialised tiny model knows nothing, while the real base (Qwen3-VL-8B) already reads and writes
medical English and describes colours and shapes in pictures. To make the tiny default behave like a *base*
VLM it is pre-trained on a mix of two generic tasks:

- vision: describe a synthetic lesion picture in generic visual words (colour, shape, surface), never naming
  the disease;
- language: text-only, write a clinical sentence (from the synthetic caption generator, with no image), so
  the output layer knows every medical word. Without this a LoRA run cannot learn to emit a disease name: the
  frozen, randomly initialised lm_head rows of words never seen in pre-training are too small to win a softmax.

No sample ties an image to its disease, so Stage 1/2/3 still have to learn their tasks. The result is saved
with `save_pretrained` and loaded by the same code path as any base model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch

from hikari.data.records import SkinCapRecord

PRETRAIN_PROMPT = "Describe the image."
LANGUAGE_PROMPT = "Write a clinical sentence about a skin condition."

# Colour words for the synthetic lesion palette (nearest by RGB distance).
_COLOURS = {
    "red": (0.86, 0.38, 0.36),
    "violet": (0.50, 0.25, 0.42),
    "pale ivory": (0.94, 0.89, 0.80),
    "brown": (0.42, 0.28, 0.18),
    "pink": (0.92, 0.66, 0.64),
    "white": (0.98, 0.95, 0.92),
    "reddish-brown": (0.66, 0.40, 0.30),
}
_SHAPES = {
    "round": "a round spot",
    "oval": "an oval spot",
    "irregular": "an irregular patch",
    "annular": "a ring-shaped patch",
    "papules": "a cluster of small bumps",
    "scatter": "many small scattered dots",
    "diffuse": "a large blurred area",
}
_TEXTURES = {
    "scale": "flaky white flecks",
    "crust": "a yellow-brown crust",
    "shine": "a shiny surface",
    "vessels": "fine red lines",
    "pustules": "pale yellow heads",
    "pale_centre": "a lighter centre",
    "dark_centre": "a darker centre",
    "rim": "a coloured rim",
    "warty": "a rough surface",
    "papules_overlay": "small bumps",
}


def _colour_name(rgb: Sequence[float]) -> str:
    return min(_COLOURS, key=lambda k: sum((a - b) ** 2 for a, b in zip(_COLOURS[k], rgb)))


def generic_description(disease: str, rng: random.Random) -> str:
    """A disease-free visual description of a synthetic lesion picture of `disease` (synthetic data only)."""
    from hikari.data.synth_images import STYLES

    style = STYLES[disease]
    colour = _colour_name(style.colour)
    parts = [f"The picture shows {_SHAPES[style.shape]} of {colour} colour on skin"]
    textures = [_TEXTURES[t] for t in style.textures if t in _TEXTURES]
    if textures:
        rng.shuffle(textures)
        parts.append(" with " + " and ".join(textures))
    return "".join(parts) + "."


def pretrain_tiny_vlm(
    model_dir: str | Path,
    records: Sequence[SkinCapRecord],
    out: str | Path,
    *,
    steps: int = 150,
    batch_size: int = 8,
    learning_rate: float = 3e-3,
    max_image_size: int = 96,
    seed: int = 0,
) -> Path:
    """Train every parameter of the model in `model_dir` on the two generic tasks (half a batch each); save to `out`.

    Returns `out`. Losses are logged into `out/pretrain_losses.json` so the effect can be inspected.
    """
    from hikari.data import prompts as P
    from hikari.data.images import load_rgb
    from hikari.models.load import load_model, load_processor
    from hikari.training.data import VLMCollator
    from hikari.training.trainer import answer_token_loss
    from hikari.utils.io import atomic_write_json

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = load_model(str(model_dir), dtype="fp32")
    processor = load_processor(str(model_dir))
    collator = VLMCollator(processor)
    from hikari.data.captions import caption_corpus

    vision = [
        {"messages": P.user_message(load_rgb(r.image_path, max_size=max_image_size), PRETRAIN_PROMPT),
         "target": generic_description(r.disease, rng)}
        for r in records
    ]  # fmt: skip
    sentences = [s for c in caption_corpus(n=400, seed=seed + 1) for s in c.split(". ") if s]
    language = [
        {"messages": [{"role": "user", "content": [{"type": "text", "text": LANGUAGE_PROMPT}]}],
         "target": s.rstrip(".") + "."}
        for s in sentences
    ]  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10) * (1 - s / steps))
    model.train()
    losses: list[float] = []
    for _step in range(steps):
        half = batch_size // 2
        chosen = rng.sample(vision, k=min(half, len(vision))) + rng.sample(language, k=batch_size - half)
        batch = collator(chosen)
        loss, _ = answer_token_loss(model, batch, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    atomic_write_json(out / "pretrain_losses.json", {"steps": steps, "losses": losses})
    return out

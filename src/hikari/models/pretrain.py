"""Brief full-parameter pre-training of the tiny Qwen3-VL on generic image descriptions (demo/tests only).

A randomly initialised tiny model knows nothing about images, while the real base (Qwen3-VL-8B) already
describes colours and shapes. To make the tiny default behave like a *base* VLM, it first learns to describe
synthetic lesion pictures in generic visual words — colour, shape, count, surface — never the disease name
and never a SkinCAP caption, so every HIKARI stage still has to learn its own task. The result is saved
with `save_pretrained` and loaded by the same code path as any base model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch

from hikari.data.records import SkinCapRecord

PRETRAIN_PROMPT = "Describe the image."

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
    from hikari.data.synth import STYLES

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
    """Train every parameter of the model in `model_dir` on (image → generic description); save to `out`.

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
    items = [
        (load_rgb(r.image_path, max_size=max_image_size), generic_description(r.disease, rng)) for r in records
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10) * (1 - s / steps))
    model.train()
    losses: list[float] = []
    for _step in range(steps):
        chosen = rng.sample(items, k=min(batch_size, len(items)))
        batch = collator([{"messages": P.user_message(img, PRETRAIN_PROMPT), "target": text} for img, text in chosen])
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

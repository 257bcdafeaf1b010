"""Brief full-parameter pre-training of the tiny Qwen3-VL on generic tasks (the embedded default only).

A randomly initialised tiny model knows nothing, while the real base (Qwen3-VL-8B) already sees colours and
shapes in pictures and reads and writes medical English. To make the tiny default behave like a *base* VLM it is
pre-trained in two phases, mirroring how real VLMs are built (a vision encoder pre-trained first, then the
whole model trained on image-text and text data):

1. vision warm-up: the vision tower alone, with a throw-away linear head on its pooled output tokens, learns
   to tell the lesion's colour, shape and surface marks, the skin type, the lesions' size and number (1-20) and
   the largest one's diameter apart (`LesionAttributes`, `LesionFacts`). Without it the language
   model learns the *marginal* description long before it learns to read the 9 image tokens: after 150
   image-text steps greedy decoding gave the same description for every image, and even after 2,000 steps
   only 60 % of validation descriptions were right (with the warm-up: 65 % after 800);
2. image-text + text: every parameter trains on a mix of
   - vision: "Describe the image." → a disease-free visual description (colour, shape, surface), then the
     picture's facts in the very words of a caption's facts sentence (number, size, diameter, skin);
   - language (text only, no image): clinical sentences and whole notes from the synthetic caption generator
     (its own seed, no dataset row; half the text samples are whole notes, from 2,000 of them, so the language
     model learns how a note's later words follow its stated facts), the four group
     names and the Stage 2 answer sentence for each disease, so that the output layer and the language model
     know every word the stages must write. Without this a LoRA run cannot learn to emit a group or disease
     name: the frozen, randomly initialised lm_head rows of words never seen in pre-training are too small
     to win a softmax.

No image-conditioned target names a disease and no sample ties an image to its disease or group, so Stage 1/2/3
still have to learn their tasks (the descriptions are, by construction of the synthetic data, as informative as
the picture: the stages must learn to map what the model sees to the names). The result is saved with
`save_pretrained` and loaded by the same code path as any base model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import trange

from hikari.data import prompts as P
from hikari.data.labels import ALIASES, DISEASES, GROUPS
from hikari.demo.captions import SKIN_WORDS, caption_corpus, facts_clause
from hikari.demo.synth_images import (
    FIELD_MM,
    SIZE_WORDS,
    SKIN_TONES,
    STYLES,
    LesionFacts,
    crop,
    render_picture,
    to_image,
)
from hikari.models.batching import VLMCollator
from hikari.models.load import load_model, load_processor
from hikari.training.trainer import answer_token_loss
from hikari.utils.io import atomic_write_json

PRETRAIN_PROMPT = "Describe the image."
LANGUAGE_PROMPT = "Write a clinical sentence about a skin condition."
NOTE_PROMPT = "Write a clinical note about a skin condition."
GROUP_PROMPT = "Write skin condition group number {number}."
DIAGNOSIS_PROMPT = "Write a diagnosis sentence about {name}."
# Descriptions open like the Stage 2 answer ("This image shows {disease}."), as a base VLM's captions often do:
# the position where a stage must name the disease is then one where the base model already looks at the image.
DESCRIPTION_START = "This image shows"
# Share of the text-only samples drawn from each source (the rest are caption sentences).
GROUP_SHARE = 0.15
DIAGNOSIS_SHARE = 0.2
NOTE_SHARE = 0.5  # whole multi-sentence notes: the base knows how a clinical note flows, as a real LLM does

# Seed offset of the pre-training pictures: the synthetic SkinCAP renders from seed, seed + 1e6 and seed + 2e6.
PRETRAIN_SEED_BASE = 10_000_000

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


@dataclass(frozen=True)
class LesionAttributes:
    """What a synthetic lesion looks like, in the generic vocabulary above (keys of the three word tables)."""

    colour: str
    shape: str
    textures: tuple[str, ...]


def _colour_name(rgb: Sequence[float]) -> str:
    return min(_COLOURS, key=lambda k: sum((a - b) ** 2 for a, b in zip(_COLOURS[k], rgb)))


def lesion_attributes(disease: str) -> LesionAttributes:
    """The generic visual attributes of the synthetic lesion style of `disease` (synthetic data only)."""
    style = STYLES[disease]
    return LesionAttributes(_colour_name(style.colour), style.shape, tuple(t for t in style.textures if t in _TEXTURES))


# Lesion counts the vision warm-up tells apart (a picture with more is counted as MAX_COUNT).
MAX_COUNT = 20


def generic_description(disease: str, rng: random.Random, facts: LesionFacts | None = None,
                        skin: int | None = None) -> str:  # fmt: skip
    """A disease-free visual description of a synthetic lesion picture of `disease` (synthetic data only); with
    the picture's `facts` and Fitzpatrick `skin` type it also says how many lesions, how large, on which skin."""
    attrs = lesion_attributes(disease)
    seen = f"{DESCRIPTION_START} {_SHAPES[attrs.shape]} of {attrs.colour} colour"
    textures = [_TEXTURES[t] for t in attrs.textures]
    if textures:
        rng.shuffle(textures)
        seen += " with " + " and ".join(textures)
    if facts is not None and skin is not None:
        return f"{seen}: {facts_clause(facts, skin)}"  # in the very words of a caption's facts
    return f"{seen} on {SKIN_WORDS[skin - 1]} skin." if skin is not None else f"{seen}."


def caption_sentences(notes: Sequence[str]) -> list[str]:
    """The sentences of `notes` (the clinical-sentence pool of the text-only task)."""
    return [s.rstrip(".") + "." for c in notes for s in c.split(". ") if s]


def clinical_notes(seed: int, n_captions: int = 2000) -> list[str]:
    """`n_captions` whole synthetic captions from the caption generator's own seed space (text only: no
    picture and no dataset row goes with them)."""
    return list(caption_corpus(n=n_captions, seed=seed))


def language_samples(
    rng: random.Random, n: int, sentences: Sequence[str], notes: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """`n` text-only training samples: caption sentences, whole notes, group names and Stage 2 answer sentences.

    None has an image, so none can teach what a picture of a disease looks like; they teach the words.
    """
    out = []
    for _ in range(n):
        u = rng.random()
        if u < GROUP_SHARE:
            number = rng.randrange(len(GROUPS))
            prompt, target = GROUP_PROMPT.format(number=number + 1), GROUPS[number]
        elif u < GROUP_SHARE + DIAGNOSIS_SHARE:
            disease = rng.choice(DISEASES)
            prompt = DIAGNOSIS_PROMPT.format(name=rng.choice(ALIASES.get(disease, (disease,))))
            target = P.stage2_target(disease)
        elif notes and u < GROUP_SHARE + DIAGNOSIS_SHARE + NOTE_SHARE:
            prompt, target = NOTE_PROMPT, rng.choice(notes)
        else:
            prompt, target = LANGUAGE_PROMPT, rng.choice(sentences)
        out.append({"messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}], "target": target})
    return out


def _flip(image: Image.Image, rng: random.Random) -> Image.Image:
    """A random one of the 8 flips/right-angle rotations (what a description states does not depend on
    orientation: the captions state no place, as the stages' mirror augmentation would contradict it)."""
    k = rng.randrange(8)
    if k == 0:
        return image
    return image.transpose(list(Image.Transpose)[k - 1])


def warm_up_vision(
    model: torch.nn.Module,
    processor: Any,
    corpus: PictureCorpus,
    *,
    steps: int,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    rng: random.Random,
    progress: bool = True,
) -> list[float]:
    """Train the vision tower to predict lesion attributes from its pooled output tokens; return the losses.

    A linear head reads the mean of each image's merged tokens (the ones the language model receives) and of
    its DeepStack features, concatenated: (N_images, (1 + n_deepstack) x text_hidden). Loss: cross-entropy for
    colour, shape, skin type, size and lesion count, binary cross-entropy for each surface mark, squared error for
    the largest lesion's diameter (as a fraction of FIELD_MM). The head is discarded afterwards.
    """
    colours, shapes, textures = list(_COLOURS), list(_SHAPES), list(_TEXTURES)
    # Class heads: colour, shape, skin type, size, lesion count (1..MAX_COUNT, more counted as MAX_COUNT); then one
    # logit per surface mark and one for the diameter (regression, in units of FIELD_MM).
    classes = [len(colours), len(shapes), len(SKIN_TONES), len(SIZE_WORDS), MAX_COUNT]
    visual = model.model.visual
    n_features = 1 + len(visual.deepstack_merger_list)
    head = torch.nn.Linear(n_features * model.config.text_config.hidden_size, sum(classes) + len(textures) + 1)
    params = [*visual.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10) * (1 - s / steps))
    styles = {d: lesion_attributes(d) for d in corpus.diseases}
    losses: list[float] = []
    visual.train()
    for _step in trange(steps, desc="vision warm-up", disable=not progress):
        idx = [rng.randrange(len(corpus)) for _ in range(batch_size)]
        attrs = [styles[corpus.disease(k)] for k in idx]
        enc = processor.image_processor(images=[_flip(corpus.picture(k), rng) for k in idx], return_tensors="pt")
        out = model.model.get_image_features(pixel_values=enc["pixel_values"], image_grid_thw=enc["image_grid_thw"])
        pooled = [torch.stack([t.mean(0) for t in out.pooler_output])]
        pooled += [torch.stack([t.mean(0) for t in feats]) for feats in out.deepstack_features]
        logits = head(torch.cat(pooled, dim=-1))
        facts = [corpus.facts(k) for k in idx]
        targets = [
            [colours.index(a.colour) for a in attrs],
            [shapes.index(a.shape) for a in attrs],
            [corpus.skin(k) - 1 for k in idx],
            [SIZE_WORDS.index(f.size) for f in facts],
            [min(f.count, MAX_COUNT) - 1 for f in facts],
        ]
        loss = torch.zeros(())
        start = 0
        for n_classes, target in zip(classes, targets, strict=True):
            loss = loss + F.cross_entropy(logits[:, start : start + n_classes], torch.tensor(target))
            start += n_classes
        loss = loss + F.binary_cross_entropy_with_logits(
            logits[:, start:-1], torch.tensor([[float(t in a.textures) for t in textures] for a in attrs])
        )
        loss = loss + F.mse_loss(logits[:, -1], torch.tensor([f.diameter_mm / FIELD_MM for f in facts]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


class PictureCorpus:
    """Freshly rendered synthetic lesion pictures for pre-training, drawn lazily and cached by index.

    Picture k shows a lesion in the style of `diseases[k % len(diseases)]` on skin tone `(k // len(diseases)) % 6`
    (every style on every tone, evenly), rendered by
    the synthetic SkinCAP's own painter from a seed space no synthetic dataset uses (`PRETRAIN_SEED_BASE +
    seed`), so no pre-training picture is a crop or copy of a dataset picture, whatever the dataset's seed.
    Only pictures that are actually sampled are rendered (a few ms each).
    """

    def __init__(self, n: int, *, seed: int, max_size: int, diseases: Sequence[str] | None = None) -> None:
        if n < 1:
            raise ValueError(f"the picture corpus needs n >= 1, got {n}")
        self.n = n
        self.seed = seed
        self.max_size = max_size
        self.diseases = tuple(diseases) if diseases is not None else tuple(STYLES)
        unknown = [d for d in self.diseases if d not in STYLES]
        if unknown:
            raise ValueError(f"no synthetic lesion style for {unknown}; valid: {', '.join(STYLES)}")
        self._cache: dict[int, Image.Image] = {}
        self._facts: dict[int, LesionFacts] = {}

    def __len__(self) -> int:
        return self.n

    def disease(self, k: int) -> str:
        """The lesion style of picture k (used only to write its description and attributes)."""
        return self.diseases[k % len(self.diseases)]

    def skin(self, k: int) -> int:
        """The Fitzpatrick type (1-6) of picture k's skin."""
        return (k // len(self.diseases)) % len(SKIN_TONES) + 1

    def facts(self, k: int) -> LesionFacts:
        """What picture k shows (lesion count, size, diameter, place)."""
        self.picture(k)
        return self._facts[k]

    def picture(self, k: int) -> Image.Image:
        """Picture k as 8-bit RGB, thumbnailed to `max_size` (LANCZOS) as `load_rgb` does for the stages."""
        if k not in self._cache:
            tone = SKIN_TONES[self.skin(k) - 1]
            canvas, h, w, self._facts[k] = render_picture(PRETRAIN_SEED_BASE + self.seed, k, self.disease(k), tone)
            image = to_image(crop(canvas, h, w, np.random.default_rng([PRETRAIN_SEED_BASE + self.seed, k, 11])))
            image.thumbnail((self.max_size, self.max_size), Image.Resampling.LANCZOS)
            self._cache[k] = image
        return self._cache[k]


def pretrain_tiny_vlm(
    model_dir: str | Path,
    out: str | Path,
    *,
    steps: int = 800,
    vision_warmup_steps: int = 600,
    n_pictures: int = 3000,
    batch_size: int = 8,
    vision_share: float = 0.75,
    learning_rate: float = 1e-3,
    vision_learning_rate: float = 5e-3,
    max_image_size: int = 96,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Pre-train the model in `model_dir` (vision warm-up, then image-text + text) and save it to `out`.

    Args:
        model_dir: the randomly initialised tiny model (`build_tiny_qwen3vl`).
        out: directory to write the pre-trained model to.
        steps: image-text + text optimizer steps of `batch_size` samples, `vision_share` of them with a picture.
        vision_warmup_steps: vision-tower-only steps before that (32 pictures each; 0 skips the phase).
        n_pictures: size of the rendered picture corpus (`PictureCorpus`); no dataset picture is used, so the
            base model is the same whatever the split.
        learning_rate, vision_learning_rate: peak learning rates of the two phases (linear warm-up over 10
            steps, then linear decay to 0).
        max_image_size: pictures are thumbnailed to this side, as the demo's stages thumbnail theirs.
        seed: seeds the pictures, sampling, flips and the warm-up head; the same seed gives the same model.
        progress: show progress bars.

    Returns `out`. Losses of both phases are logged into `out/pretrain_losses.json`.
    """
    if not 0.0 <= vision_share <= 1.0:
        raise ValueError(f"vision_share must be in [0, 1], got {vision_share}")
    if steps < 1 or vision_warmup_steps < 0:
        raise ValueError(f"need steps >= 1 and vision_warmup_steps >= 0, got {steps} and {vision_warmup_steps}")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = load_model(str(model_dir), dtype="fp32")
    processor = load_processor(str(model_dir))
    collator = VLMCollator(processor)
    corpus = PictureCorpus(n_pictures, seed=seed, max_size=max_image_size)
    notes = clinical_notes(seed + 1)
    sentences = caption_sentences(notes)

    warmup_losses: list[float] = []
    if vision_warmup_steps > 0:
        warmup_losses = warm_up_vision(
            model, processor, corpus, steps=vision_warmup_steps, learning_rate=vision_learning_rate, rng=rng,
            progress=progress,
        )

    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10) * (1 - s / steps))
    n_vision = round(batch_size * vision_share)
    model.train()
    losses: list[float] = []
    for _step in trange(steps, desc="image-text + text pre-training", disable=not progress):
        chosen = []
        for k in (rng.randrange(len(corpus)) for _ in range(n_vision)):
            image = _flip(corpus.picture(k), rng)
            target = generic_description(corpus.disease(k), rng, corpus.facts(k), corpus.skin(k))
            chosen.append({"messages": P.user_message(image, PRETRAIN_PROMPT), "target": target})
        chosen += language_samples(rng, batch_size - n_vision, sentences, notes)
        loss, _ = answer_token_loss(model, collator(chosen), None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    atomic_write_json(
        out / "pretrain_losses.json",
        {"vision_warmup_steps": vision_warmup_steps, "vision_warmup_losses": warmup_losses, "steps": steps,
         "losses": losses, "n_pictures": n_pictures},
    )  # fmt: skip
    return out

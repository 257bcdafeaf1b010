"""Training-set utilities from the original HIKARI recipe: square-root oversampling and light image augmentation.

Both are deterministic given a seed, so a training run can be replayed exactly: oversampling draws its extra
copies from a per-class seeded generator, and `Augmenter` derives a fresh generator from (seed, epoch, index) for
every image it touches, independent of data-loader order or worker count.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence

from PIL import Image, ImageEnhance, ImageOps

# The original recipe's augmentation: each transform applied independently with this probability.
AUGMENT_P = 0.5
MAX_ROTATION_DEG = 15.0
COLOUR_RANGE = (0.75, 1.25)  # brightness, contrast and saturation factors are drawn from U(0.75, 1.25)


def sqrt_oversample_counts(counts: Mapping[str, int], cap: float = 3.0) -> dict[str, int]:
    """Target rows per class after square-root oversampling (the original HIKARI balancing).

    target(n) = int(max · sqrt(n / max)) — i.e. the geometric mean of the class size and the largest class —
    never below n and never above int(cap · n). The largest class keeps its size.

    >>> sqrt_oversample_counts({"a": 100, "b": 25, "c": 4})
    {'a': 100, 'b': 50, 'c': 12}
    """
    if cap < 1.0:
        raise ValueError(f"cap must be >= 1 (a class is never shrunk), got {cap}")
    negative = {k: n for k, n in counts.items() if n < 0}
    if negative:
        raise ValueError(f"class counts must be >= 0, got {negative}")
    if not counts:
        return {}
    largest = max(counts.values())
    targets: dict[str, int] = {}
    for label, n in counts.items():
        target = int(largest * math.sqrt(n / largest)) if n else 0
        targets[label] = min(max(target, n), int(cap * n))
    return targets


def oversample_indices(labels: Sequence[str], seed: int, cap: float = 3.0, enabled: bool = True) -> list[int]:
    """Row indices of the oversampled training set, sorted: every original index once plus seeded extra copies.

    A class of n rows with target t gets t − n extra copies: each of its rows is repeated ⌊(t − n)/n⌋ more
    times and the remainder is drawn without replacement, so copies spread as evenly as possible. Each class has
    its own generator (seeded by seed and class name): adding a class does not change another class's draw.
    `enabled=False` returns ``list(range(len(labels)))``.
    """
    indices = list(range(len(labels)))
    if not enabled:
        return indices
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    targets = sqrt_oversample_counts(Counter(labels), cap=cap)
    for label in sorted(by_class):
        rows = by_class[label]
        extra = targets[label] - len(rows)
        full, remainder = divmod(extra, len(rows))
        indices.extend(rows * full)
        indices.extend(random.Random(f"{seed}:{label}").sample(rows, remainder))
    return sorted(indices)


def augment_image(img: Image.Image, rng: random.Random) -> Image.Image:
    """Randomly rotate (±15°), mirror, and scale brightness, contrast and saturation (×U(0.75, 1.25)), each p=0.5.

    Rotation keeps the canvas size and fills uncovered corners with black, as torchvision's RandomRotation does.
    Every random number is drawn from `rng`, in a fixed order, so the same generator state gives the same image.
    """
    out = img.convert("RGB")
    if rng.random() < AUGMENT_P:
        angle = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)
        out = out.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    if rng.random() < AUGMENT_P:
        out = ImageOps.mirror(out)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        if rng.random() < AUGMENT_P:
            out = enhancer(out).enhance(rng.uniform(*COLOUR_RANGE))
    return out


class Augmenter:
    """`augment_image` with a generator derived from (seed, epoch, index): reproducible per image and epoch.

    A different epoch gives the same image a different augmentation; `enabled=False` returns images unchanged.
    """

    def __init__(self, seed: int, enabled: bool = True) -> None:
        self.seed = seed
        self.enabled = enabled

    def __call__(self, img: Image.Image, index: int, epoch: int = 0) -> Image.Image:
        if not self.enabled:
            return img
        return augment_image(img, random.Random(f"{self.seed}:{epoch}:{index}"))

    def __repr__(self) -> str:
        return f"Augmenter(seed={self.seed}, enabled={self.enabled})"

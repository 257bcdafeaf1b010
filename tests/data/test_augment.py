"""Square-root oversampling (hand-computed counts) and seeded, deterministic augmentation."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from hikari.data.augment import Augmenter, augment_image, oversample_indices, sqrt_oversample_counts


def test_sqrt_oversample_counts_hand_computed() -> None:
    # max = 100: b → int(100·√0.25) = 50 (cap 75); c → int(100·√0.04) = 20, capped at 3·4 = 12;
    # d → int(100·√0.3) = int(54.77) = 54 (cap 90); the largest class keeps its size; empty stays empty.
    counts = {"a": 100, "b": 25, "c": 4, "d": 30, "e": 0}
    assert sqrt_oversample_counts(counts) == {"a": 100, "b": 50, "c": 12, "d": 54, "e": 0}
    assert sqrt_oversample_counts(counts, cap=10.0)["c"] == 20
    assert sqrt_oversample_counts(counts, cap=1.0) == counts
    assert sqrt_oversample_counts({}) == {}


def test_sqrt_oversample_counts_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="cap"):
        sqrt_oversample_counts({"a": 3}, cap=0.5)
    with pytest.raises(ValueError, match=">= 0"):
        sqrt_oversample_counts({"a": -1})


def test_oversample_indices_keeps_every_row_and_reaches_the_targets() -> None:
    labels = ["a"] * 100 + ["b"] * 25 + ["c"] * 4 + ["d"] * 30
    indices = oversample_indices(labels, seed=0)
    per_class = Counter(labels[i] for i in indices)
    assert per_class == {"a": 100, "b": 50, "c": 12, "d": 54}
    assert set(indices) == set(range(len(labels)))
    copies = Counter(indices)
    # Copies spread evenly: b doubles exactly, c triples exactly, d's 24 extras go to 24 different rows.
    assert {copies[i] for i in range(100, 125)} == {2}
    assert {copies[i] for i in range(125, 129)} == {3}
    assert sorted(Counter(copies[i] for i in range(129, 159)).items()) == [(1, 6), (2, 24)]
    assert indices == sorted(indices)


def test_oversample_indices_is_seeded_and_per_class() -> None:
    labels = ["a"] * 100 + ["d"] * 30
    first, again, other = (oversample_indices(labels, seed=s) for s in (1, 1, 2))
    assert first == again and first != other
    # Adding a class leaves the draw of another class unchanged.
    labels_c = labels + ["c"] * 4
    with_c = oversample_indices(labels_c, seed=1)
    assert [i for i in with_c if labels_c[i] == "d"] == [i for i in first if labels[i] == "d"]
    assert oversample_indices(labels, seed=1, enabled=False) == list(range(len(labels)))


def photo(seed: int = 0, size: int = 48) -> Image.Image:
    grid = np.random.default_rng(seed).integers(0, 256, size=(5, 5, 3), dtype=np.uint8)
    return Image.fromarray(grid).resize((size, size + 8), Image.Resampling.BICUBIC)


def test_augmenter_is_deterministic_per_seed_epoch_and_index() -> None:
    img = photo()
    aug = Augmenter(seed=3)
    out = aug(img, index=5, epoch=1)
    assert out.tobytes() == Augmenter(seed=3)(img, index=5, epoch=1).tobytes()
    assert out.size == img.size and out.mode == "RGB"
    variants = {aug(img, index=i, epoch=e).tobytes() for i in range(6) for e in range(2)}
    assert len(variants) > 6  # different (index, epoch) pairs give different augmentations
    assert any(Augmenter(seed=4)(img, index=i).tobytes() != aug(img, index=i).tobytes() for i in range(5))
    assert Augmenter(seed=3, enabled=False)(img, index=5) is img


def test_augment_image_changes_the_image_and_uses_only_rng() -> None:
    img = photo(1)
    changed = sum(augment_image(img, random.Random(k)).tobytes() != img.tobytes() for k in range(20))
    assert changed >= 18  # P(no transform at all) = 0.5⁵ ≈ 3 %
    assert augment_image(img, random.Random(7)).tobytes() == augment_image(img, random.Random(7)).tobytes()


class _Always(random.Random):
    """Every coin flip succeeds; uniform() returns the upper bound."""

    def random(self) -> float:
        return 0.0

    def uniform(self, a: float, b: float) -> float:
        return b


def test_augment_image_applies_the_documented_transforms() -> None:
    img = Image.new("RGB", (40, 40), (100, 100, 100))
    img.paste((200, 50, 50), (0, 0, 10, 40))  # a red stripe on the left
    out = np.asarray(augment_image(img, _Always()), dtype=np.int64)
    # Mirrored: the stripe is now on the right; rotation by 15° blackens the corners.
    assert out[20, 35, 0] > out[20, 35, 1] and out[20, 2, 0] == out[20, 2, 1]
    assert out[0, 0].tolist() == [0, 0, 0]
    # Brightness ×1.25, then contrast and saturation ×1.25: the grey centre ends brighter than 100.
    assert out[20, 20, 0] > 100


def test_augment_image_accepts_non_rgb_input() -> None:
    grey = Image.new("L", (16, 16), 128)
    assert augment_image(grey, random.Random(0)).mode == "RGB"

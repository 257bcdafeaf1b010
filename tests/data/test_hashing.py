"""Perceptual and pixel hashes: copies match, distinct pictures don't, the vectorised pair finder equals brute force."""

from __future__ import annotations

import io
import itertools
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from hikari.config import DEFAULT_HASH_THRESHOLD
from hikari.data import hashing
from hikari.data.hashing import (
    HASH_BITS,
    hamming,
    hash_image,
    hash_images,
    image_hash,
    near_duplicate_matches,
    near_duplicate_pairs,
    pairwise_distance_summary,
    phash,
    pixel_sha256,
)


def smooth_image(seed: int, size: int = 96) -> Image.Image:
    """A photo-like test image: a random 6×6 colour grid, bicubically upsampled (low-frequency structure)."""
    grid = np.random.default_rng(seed).integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    return Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)


def jpeg(img: Image.Image, quality: int = 90) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def reencodings(img: Image.Image) -> dict[str, Image.Image]:
    w, h = img.size
    return {
        "jpeg90": jpeg(img),
        "brighter2%": ImageEnhance.Brightness(img).enhance(1.02),
        "darker2%": ImageEnhance.Brightness(img).enhance(0.98),
        "resize90%": img.resize((int(w * 0.9), int(h * 0.9)), Image.Resampling.LANCZOS),
        "resize-roundtrip": img.resize((int(w * 0.9), int(h * 0.9))).resize((w, h), Image.Resampling.BICUBIC),
        "all": jpeg(ImageEnhance.Brightness(img.resize((int(w * 0.9), int(h * 0.9)))).enhance(1.02)),
    }


def test_hash_is_64_bit_and_deterministic() -> None:
    img = smooth_image(0)
    h = phash(img)
    assert 0 <= h < 2**HASH_BITS
    assert h.bit_count() == HASH_BITS // 2 - 1  # bits above the median of the HASH_BITS − 1 AC terms; DC bit is 0
    assert phash(smooth_image(0)) == h
    assert image_hash(img) == h
    assert 0 <= phash(img, hash_size=8) < 2**64


def test_file_and_image_give_the_same_hashes(tmp_path) -> None:
    img = smooth_image(1)
    img.save(tmp_path / "a.png")
    assert phash(tmp_path / "a.png") == phash(img)
    assert pixel_sha256(tmp_path / "a.png") == pixel_sha256(img)
    assert hash_images([tmp_path / "a.png"]) == [hash_image(img)]


def test_pixel_hash_ignores_container_but_sees_one_pixel(tmp_path) -> None:
    img = smooth_image(2)
    img.save(tmp_path / "fast.png", compress_level=1)
    img.save(tmp_path / "small.png", compress_level=9, optimize=True)
    assert (tmp_path / "fast.png").read_bytes() != (tmp_path / "small.png").read_bytes()
    assert pixel_sha256(tmp_path / "fast.png") == pixel_sha256(tmp_path / "small.png")
    changed = img.copy()
    changed.putpixel((0, 0), (0, 0, 0) if img.getpixel((0, 0)) != (0, 0, 0) else (1, 1, 1))
    assert pixel_sha256(changed) != pixel_sha256(img)
    assert phash(changed) == phash(img)  # one pixel is below the perceptual hash's resolution


@pytest.mark.parametrize("seed", range(6))
def test_reencoded_copies_match(seed: int) -> None:
    img = smooth_image(seed, size=160)
    for name, copy in reencodings(img).items():
        distance = hamming(phash(img), phash(copy))
        assert distance <= DEFAULT_HASH_THRESHOLD, f"{name}: distance {distance}"


def test_distinct_images_do_not_match() -> None:
    hashes = [phash(smooth_image(seed)) for seed in range(60)]
    summary = pairwise_distance_summary(hashes)
    assert summary["min"] > DEFAULT_HASH_THRESHOLD
    assert near_duplicate_pairs(hashes, DEFAULT_HASH_THRESHOLD) == []


def test_hamming() -> None:
    assert hamming(0, 0) == 0
    assert hamming(0, 2**64 - 1) == 64
    assert hamming(0b1011, 0b0110) == 3


def brute_pairs(hashes: list[int], threshold: int) -> list[tuple[int, int]]:
    return [
        (i, j) for i, j in itertools.combinations(range(len(hashes)), 2) if hamming(hashes[i], hashes[j]) <= threshold
    ]


@pytest.mark.parametrize("chunk_bytes", [8, 8 * 37, 1 << 25])
def test_near_duplicate_pairs_equals_brute_force(chunk_bytes: int) -> None:
    rng = random.Random(0)
    base = [rng.getrandbits(64) for _ in range(40)]
    # Plant near copies (a few flipped bits, including the top bit that needs the full uint64 range).
    hashes = base + [b ^ (1 << 63) ^ (1 << rng.randrange(63)) for b in base[:10]] + [base[3]]
    for threshold in (0, 2, 5, 28):
        expected = brute_pairs(hashes, threshold)
        assert near_duplicate_pairs(hashes, threshold, chunk_bytes=chunk_bytes) == expected
    assert (3, len(hashes) - 1) in near_duplicate_pairs(hashes, 0)
    assert len(near_duplicate_pairs(hashes, 2)) >= 10


def test_near_duplicate_matches_equals_brute_force() -> None:
    rng = random.Random(1)
    left = [rng.getrandbits(64) for _ in range(30)]
    right = [rng.getrandbits(64) for _ in range(20)] + [left[5] ^ 0b111, left[0]]
    expected = sorted(
        (i, j, hamming(a, b)) for (i, a), (j, b) in itertools.product(enumerate(left), enumerate(right))
        if hamming(a, b) <= 24
    )  # fmt: skip
    assert near_duplicate_matches(left, right, 24, chunk_bytes=16) == expected
    assert (5, 20, 3) in expected and (0, 21, 0) in expected
    assert near_duplicate_matches([], right, 5) == []


def test_popcount_fallback_without_numpy_bitwise_count(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(2)
    values = [rng.getrandbits(64) for _ in range(50)] + [0, 2**64 - 1]
    arr = np.asarray(values, dtype=np.uint64)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert hashing.popcount(arr).tolist() == [v.bit_count() for v in values]


def test_multi_word_hashes_equal_brute_force() -> None:
    rng = random.Random(3)
    hashes = [rng.getrandbits(256) for _ in range(25)]
    hashes += [hashes[0] ^ (1 << 255) ^ 1, hashes[1] >> 200]  # a near copy; a short hash that needs zero padding
    for threshold in (2, 110, 128):
        assert near_duplicate_pairs(hashes, threshold, chunk_bytes=64) == brute_pairs(hashes, threshold)
    assert (0, 25) in near_duplicate_pairs(hashes, 2)
    with pytest.raises(ValueError, match="non-negative"):
        near_duplicate_pairs([1, -1], 3)


def test_pairwise_distance_summary_needs_two() -> None:
    with pytest.raises(ValueError, match="at least two"):
        pairwise_distance_summary([1])
    assert pairwise_distance_summary([0, 0b111, 2**64 - 1])["min"] == 3.0


def test_threshold_separates_copies_from_distinct_synthetic_skincap_images(synth_dir: Path, synth_summary) -> None:
    """The evidence behind DEFAULT_HASH_THRESHOLD, re-checked on the session's synthetic SkinCAP."""
    paths = {p.stem: p for p in sorted((synth_dir / "skincap").glob("*.png"))}
    hashes = dict(zip(paths, (h.phash for h in hash_images(list(paths.values()))), strict=True))
    copies = {tuple(p) for p in synth_summary.identical_pairs} | {(a, b) for a, b, _ in synth_summary.reencoded_pairs}
    crops = {tuple(p) for p in synth_summary.same_source_pairs}  # shifted crops: grouped by source path instead
    assert copies
    for a, b in copies:
        assert hamming(hashes[a], hashes[b]) <= DEFAULT_HASH_THRESHOLD, (a, b)
    ids = list(hashes)
    found = {(ids[i], ids[j]) for i, j in near_duplicate_pairs([hashes[k] for k in ids], DEFAULT_HASH_THRESHOLD)}
    found = {tuple(sorted(p, key=int)) for p in found} - crops
    assert found == copies  # every planted copy, and no two distinct pictures
    for stem in ids[:15]:
        with Image.open(paths[stem]) as im:
            img = im.convert("RGB")
        for name, copy in reencodings(img).items():
            assert hamming(hashes[stem], phash(copy)) <= DEFAULT_HASH_THRESHOLD, (stem, name)

"""The tiny offline retrieval encoders (hikari.demo.encoders): both image architectures build, the seed decides the
weights, and an occupied directory is not overwritten."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hikari.demo.encoders import build_tiny_encoders
from hikari.retrieval.encoders import load_encoders


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, size=(70 + i, 90, 3), dtype=np.uint8)) for i in range(n)]


def test_tiny_siglip_encoder_builds_and_seed_changes_weights(tmp_path: Path) -> None:
    images = _images(3)
    s0 = load_encoders(build_tiny_encoders(tmp_path / "s0", image_arch="siglip", seed=0)).encode_images(images)
    s1 = load_encoders(build_tiny_encoders(tmp_path / "s1", image_arch="siglip", seed=1)).encode_images(images)
    assert s0.shape == s1.shape and not np.allclose(s0, s1)
    with pytest.raises(ValueError, match="clip, siglip"):
        build_tiny_encoders(tmp_path / "bad", image_arch="vit")
    with pytest.raises(FileExistsError):
        build_tiny_encoders(tmp_path / "s0")

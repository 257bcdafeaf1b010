"""Fixtures for the model tests: images, single-threaded torch, a processor loaded from the tiny model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture()
def make_image() -> Callable[[int, int, int], Image.Image]:
    """`make_image(height, width, seed)`: a deterministic RGB noise image."""

    def make(height: int, width: int, seed: int = 0) -> Image.Image:
        pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        return Image.fromarray(pixels, mode="RGB")

    return make


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """Run torch on one thread in these modules: the tiny model's ops are too small to gain from more, and on a
    shared 2-core machine extra threads only contend (measured: ~30 ms vs ~600 ms per training step under load).
    Module-scoped and autouse, so it is in force before the module-scoped model fixtures run."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture()
def tiny_processor(tiny_model_dir: Path):
    """A fresh processor from the session's tiny model (fresh, because tests change its padding side)."""
    from hikari.models.load import load_processor

    return load_processor(tiny_model_dir)

"""Fixtures for the inference tests: one transformers engine on the tiny Qwen3-VL, shared by the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path) -> Iterator:
    """A `TransformersEngine` on the tiny model (fp32, CPU, batch 4); loading once keeps the tests fast."""
    from hikari.inference.engines import TransformersEngine

    engine = TransformersEngine(tiny_model_dir, dtype="fp32", device="cpu", batch_size=4)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def skincap(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 100-row synthetic SkinCAP and a split of it saved in our format: (data folder, split file)."""
    from hikari.data.split import split_dataset
    from hikari.demo.synth import write_synthetic_skincap

    root = tmp_path_factory.mktemp("predict") / "skincap"
    write_synthetic_skincap(root, n=100, seed=3)
    split, _ = split_dataset(root, progress=False)
    return root, split.save(root.parent / "split.json")

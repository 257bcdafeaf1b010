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

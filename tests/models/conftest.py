"""Fixtures for the model tests: single-threaded torch (images and the tiny processor come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


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

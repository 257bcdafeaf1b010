"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image

if TYPE_CHECKING:
    from hikari.demo.synth import SynthSummary

# The third-party reference files live in the `shared` folder beside the repository root (never in the repo).
REFERENCE_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "hikari"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The original HIKARI reference files; skips the test when they are absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference files not found under {REFERENCE_DIR}")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny offline Qwen3-VL (seed 0) built once per test session; treat it as read-only.

    Load it with `hikari.models.load.load_model` / `load_processor`, exactly like the 8B model.
    """
    from hikari.demo.tiny import build_tiny_qwen3vl  # lazy: only sessions that need the model import transformers

    return build_tiny_qwen3vl(tmp_path_factory.mktemp("tiny_qwen3vl") / "model", seed=0)


# Synthetic SkinCAP fixtures: built once per session (≈2-4 s each); treat the folders as read-only.
SYNTH_N = 200
SYNTH_SEED = 0


@pytest.fixture(scope="session")
def synth_summary(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    """The `SynthSummary` of `synth_dir` (planted duplicate id pairs, flagged ids, per-disease counts)."""
    from hikari.demo.synth import write_synthetic_skincap

    return write_synthetic_skincap(tmp_path_factory.mktemp("synth") / "skincap", n=SYNTH_N, seed=SYNTH_SEED)


@pytest.fixture(scope="session")
def synth_dir(synth_summary: SynthSummary) -> Path:
    """A clean synthetic SkinCAP folder (n=200, seed 0): CSV + XLSX + skincap/<id>.png + skincap/not_include/."""
    return synth_summary.out


@pytest.fixture(scope="session")
def synth_corrupt_summary(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    """The `SynthSummary` of `synth_corrupt_dir`; `.corrupt` maps each bad-row kind to its ids."""
    from hikari.demo.synth import write_synthetic_skincap

    out = tmp_path_factory.mktemp("synth_corrupt") / "skincap"
    return write_synthetic_skincap(out, n=SYNTH_N, seed=SYNTH_SEED, corrupt=True)


@pytest.fixture(scope="session")
def synth_corrupt_dir(synth_corrupt_summary: SynthSummary) -> Path:
    """`synth_dir`'s rows and images plus appended bad rows (missing/truncated image, empty caption, unknown
    disease, path traversal) and valid-but-unusual images (RGBA, greyscale, 16-bit)."""
    return synth_corrupt_summary.out


@pytest.fixture(scope="session")
def synth_split(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The leak-free split JSON of `synth_dir` (`split_dataset(seed=42)`, 90/10 train/val), saved once per session."""
    from hikari.data.split import split_dataset

    split, _ = split_dataset(synth_dir, seed=42, progress=False)
    return split.save(tmp_path_factory.mktemp("synth_split") / "split.json")


@pytest.fixture(scope="session")
def tiny_encoders_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random CLIP image + BERT text encoders (seed 0), loadable with `hikari.retrieval.encoders.load_encoders`."""
    from hikari.demo.encoders import build_tiny_encoders

    return build_tiny_encoders(tmp_path_factory.mktemp("tiny_encoders") / "clip", seed=0)


@pytest.fixture(scope="session")
def rag_index_dir(tmp_path_factory: pytest.TempPathFactory, synth_dir: Path, synth_split: Path,
                  tiny_encoders_dir: Path) -> Path:
    """A hybrid index (α=0.9, tiny encoders) of the train part of `synth_split`; read-only."""
    from hikari.retrieval.references import build_reference_index

    out = tmp_path_factory.mktemp("rag_index") / "index"
    build_reference_index(synth_dir, synth_split, tiny_encoders_dir, out=out, alpha=0.9, image_max_size=96)
    return out


@pytest.fixture(scope="session")
def train_records(synth_dir: Path, synth_split: Path) -> list:
    """The train part of the synthetic split, as `SkinCapRecord`s in split order."""
    from hikari.data.split import read_split_records

    return read_split_records(synth_dir, synth_split, ["train"], reader_options={}, check_images=True).parts["train"]


def make_items(records: Sequence[Any], task: str, *, max_image_size: int = 96) -> list[dict[str, Any]]:
    """Dataset items (messages with a real image, target, file name) for `records`, one per record."""
    from hikari.training.data import SupervisedVLMDataset, build_examples

    dataset = SupervisedVLMDataset(build_examples(records, task, seed=0), seed=0, max_image_size=max_image_size)
    return [dataset[i] for i in range(len(dataset))]


@pytest.fixture()
def make_image() -> Callable[[int, int, int], Image.Image]:
    """`make_image(height, width, seed)`: a deterministic RGB noise image."""

    def make(height: int, width: int, seed: int = 0) -> Image.Image:
        pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        return Image.fromarray(pixels, mode="RGB")

    return make


@pytest.fixture()
def tiny_processor(tiny_model_dir: Path):
    """A fresh processor from the session's tiny model (fresh, because tests change its padding side)."""
    from hikari.models.load import load_processor

    return load_processor(tiny_model_dir)

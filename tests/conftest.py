"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from hikari.data.synth import SynthSummary

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
    from hikari.models.tiny import build_tiny_qwen3vl  # lazy: only sessions that need the model import transformers

    return build_tiny_qwen3vl(tmp_path_factory.mktemp("tiny_qwen3vl") / "model", seed=0)


# Synthetic SkinCAP fixtures: built once per session (≈2-4 s each); treat the folders as read-only.
SYNTH_N = 200
SYNTH_SEED = 0


@pytest.fixture(scope="session")
def synth_summary(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    """The `SynthSummary` of `synth_dir` (planted duplicate id pairs, flagged ids, per-disease counts)."""
    from hikari.data.synth import write_synthetic_skincap

    return write_synthetic_skincap(tmp_path_factory.mktemp("synth") / "skincap", n=SYNTH_N, seed=SYNTH_SEED)


@pytest.fixture(scope="session")
def synth_dir(synth_summary: SynthSummary) -> Path:
    """A clean synthetic SkinCAP folder (n=200, seed 0): CSV + XLSX + skincap/<id>.png + skincap/not_include/."""
    return synth_summary.out


@pytest.fixture(scope="session")
def synth_corrupt_summary(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    """The `SynthSummary` of `synth_corrupt_dir`; `.corrupt` maps each bad-row kind to its ids."""
    from hikari.data.synth import write_synthetic_skincap

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
    from hikari.retrieval.encoders import build_tiny_encoders

    return build_tiny_encoders(tmp_path_factory.mktemp("tiny_encoders") / "clip", seed=0)


@pytest.fixture(scope="session")
def rag_index_dir(tmp_path_factory: pytest.TempPathFactory, synth_dir: Path, synth_split: Path,
                  tiny_encoders_dir: Path) -> Path:
    """A hybrid index (α=0.9, tiny encoders) of the train part of `synth_split`; read-only."""
    from hikari.retrieval.references import build_reference_index

    out = tmp_path_factory.mktemp("rag_index") / "index"
    build_reference_index(synth_dir, synth_split, tiny_encoders_dir, out=out, alpha=0.9, image_max_size=96)
    return out

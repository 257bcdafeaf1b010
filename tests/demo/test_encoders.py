"""The tiny offline retrieval encoders (hikari.demo.encoders): both image architectures build, the seed decides the
weights, and an occupied directory is not overwritten."""

from __future__ import annotations

import json
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


def test_trained_encoders_are_deterministic_under_a_seed_and_learn(synth_dir: Path, synth_split: Path,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    import torch

    from hikari.data.split import read_split_records
    from hikari.demo.encoders import TRAINED_NAME, train_tiny_encoders

    torch.set_num_threads(1)
    runs = {name: train_tiny_encoders(tmp_path / name, synth_dir, synth_split, steps=12, batch_size=16, seed=seed)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))}  # fmt: skip
    assert runs["a"]["loss_last"] < runs["a"]["loss_first"]  # the contrastive loss goes down in 12 steps
    images = [r.image_path for r in read_split_records(synth_dir, synth_split, ["val"]).parts["val"][:4]]
    emb = {name: load_encoders(tmp_path / name).encode_images(images) for name in runs}
    assert np.array_equal(emb["a"], emb["b"]) and not np.allclose(emb["a"], emb["c"])
    enc = load_encoders(tmp_path / "a")
    assert enc.spec.name == TRAINED_NAME and enc.spec.aligned and enc.has_text
    meta = json.loads((tmp_path / "a" / "training.json").read_text())
    assert meta["training"]["part"] == "train" and meta["training"]["steps"] == 12
    with pytest.raises(FileExistsError):
        train_tiny_encoders(tmp_path / "a", synth_dir, synth_split, steps=1)

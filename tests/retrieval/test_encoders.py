"""Encoder registry (names, errors, no fallback) and loading an encoder directory (the tiny offline encoders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hikari.retrieval.encoders import ENCODERS, load_encoders, resolve_encoder


def test_registry_holds_r0_to_r4_with_the_published_models() -> None:
    assert list(ENCODERS) == ["R0", "R1", "R2", "R3", "R4"]
    assert ENCODERS["R0"].text_model is None
    assert (ENCODERS["R2"].image_model, ENCODERS["R2"].text_model) == ("google/siglip-base-patch16-512", "BAAI/bge-m3")
    assert ENCODERS["R2"].text_max_length == 256
    assert ENCODERS["R4"].aligned and ENCODERS["R3"].needs_remote_code and ENCODERS["R4"].needs_remote_code


@pytest.mark.parametrize("name", ["R5", "r2", "clip", "siglip-R2", "R2 "])
def test_unknown_names_raise_with_the_valid_list(name: str) -> None:
    with pytest.raises(ValueError) as err:
        resolve_encoder(name)
    message = str(err.value)
    assert repr(name) in message and all(k in message for k in ENCODERS)


def test_a_directory_without_spec_is_not_silently_accepted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hikari_encoder.json"):
        resolve_encoder(tmp_path)


@pytest.mark.parametrize("name", ["R3", "R4"])
def test_remote_code_encoders_need_explicit_trust(name: str) -> None:
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_encoders(name)  # raises before any download


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, size=(70 + i, 90, 3), dtype=np.uint8)) for i in range(n)]


def test_tiny_encoders_give_unit_deterministic_batch_invariant_embeddings(tiny_encoders_dir: Path) -> None:
    spec = json.loads((tiny_encoders_dir / "hikari_encoder.json").read_text())
    assert spec["image_model"] == "image" and spec["text_model"] == "text"
    enc = load_encoders(tiny_encoders_dir)
    assert enc.ref == str(tiny_encoders_dir.resolve()) and enc.has_text
    images = _images(5)
    a = enc.encode_images(images, batch_size=2)
    b = enc.encode_images(images, batch_size=5)
    assert a.shape == (5, 32) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)
    texts = ["psoriasis plaque on the elbow", "acne vulgaris with comedones", "psoriasis plaque on the elbow"]
    t = enc.encode_texts(texts, batch_size=2)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(t[0], t[2], atol=1e-5)  # padding in a mixed batch does not change the mean pool
    assert not np.allclose(t[0], t[1])
    again = load_encoders(tiny_encoders_dir)
    np.testing.assert_allclose(again.encode_images(images[:2]), a[:2], atol=1e-6)

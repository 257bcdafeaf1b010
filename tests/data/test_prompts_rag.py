"""The RAG prompt with K references: K+1 images in order (references, then the query) and one label per reference,
through the real chat template of the tiny Qwen3-VL processor."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from hikari.data import prompts as P


def _image(value: int) -> Image.Image:
    return Image.new("RGB", (64, 64), (value, value, value))


@pytest.mark.parametrize("k", [0, 1, 3])
def test_rag_messages_render_k_reference_images_and_labels(tiny_model_dir: Path, k: int) -> None:
    from hikari.models.load import load_processor

    refs = [(_image(10 * i), f"disease {i}", None) for i in range(k)]
    query = _image(200)
    messages = P.rag_messages(query, P.STAGE2_TRAIN_PROMPTS[0], refs)
    content = messages[0]["content"]
    images = [c["image"] for c in content if c["type"] == "image"]
    assert images == [r[0] for r in refs] + [query]  # the query image comes last
    text = "".join(c["text"] for c in content if c["type"] == "text")
    for i in range(1, k + 1):
        assert f"Reference {i}: disease {i - 1}" in text
    assert f"Reference {k + 1}:" not in text and "Description" not in text
    assert text.startswith(P.RAG_INTRO) and text.endswith(P.RAG_OUTRO + P.STAGE2_TRAIN_PROMPTS[0])

    processor = load_processor(tiny_model_dir)
    rendered = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered.count("<|vision_start|>") == k + 1
    assert rendered.index(P.RAG_OUTRO.strip()) < rendered.rindex("<|vision_start|>")  # query image after the outro
    batch = processor(text=[rendered], images=images, return_tensors="pt")
    assert batch["image_grid_thw"].shape[0] == k + 1


def test_rag_messages_with_descriptions() -> None:
    refs = [(_image(1), "psoriasis", "Red plaque."), (_image(2), "acne vulgaris", "")]
    content = P.rag_messages(_image(3), "Q?", refs)[0]["content"]
    texts = [c["text"] for c in content if c["type"] == "text"]
    assert texts[1] == "Reference 1: psoriasis\nDescription: Red plaque."
    assert texts[2] == "Reference 2: acne vulgaris"  # an empty caption adds no description line

"""The collator and the supervised positions (hikari.models.batching) on the tiny Qwen3-VL's processor.

The collator must feed the model, for every example, exactly the prompt that inference feeds it, and supervise
exactly the answer through `<|im_end|>`; these tests decode what it produces and compare it with the processor's
own inference encoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from hikari.data import prompts as P
from hikari.data.labels import GROUPS
from hikari.models.batching import IGNORE_INDEX, VLMCollator, supervised_positions
from hikari.models.load import load_processor
from tests.conftest import make_items

# What the Qwen3-VL-Thinking template renders between the generation prompt (which ends in "<think>\n") and the
# answer: an empty reasoning block. It is part of what the model must produce, so it is supervised too.
THINK_CLOSE = "\n</think>\n\n"


@pytest.fixture(scope="module")
def processor(tiny_model_dir: Path) -> Any:
    return load_processor(tiny_model_dir)


def _image(height: int, width: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def _item(image: Image.Image, prompt: str, target: str, name: str) -> dict[str, Any]:
    return {"messages": P.user_message(image, prompt), "target": target, "file_name": name}


def _inference_encoding(processor: Any, messages: list[dict[str, Any]]) -> Any:
    return processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


def _answer_span(labels: torch.Tensor) -> tuple[int, int]:
    """(start, end) of the supervised positions of one row; asserts they are one contiguous block."""
    positions = (labels != IGNORE_INDEX).nonzero().flatten()
    start, end = int(positions[0]), int(positions[-1]) + 1
    assert positions.tolist() == list(range(start, end)), "supervised tokens are not one contiguous block"
    return start, end


def test_supervised_positions_are_the_positions_before_each_label() -> None:
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, -100, -100, -100]])
    mask, targets = supervised_positions(labels)
    assert mask.tolist() == [[False, True, True, False, False], [True, False, False, False, False]]
    assert targets.tolist() == [5, 6, 7]


def test_labels_are_exactly_the_answer_through_im_end(processor: Any, train_records: list) -> None:
    items = make_items(train_records[:2], "caption") + make_items(train_records[2:4], "group")
    batch = VLMCollator(processor)(items)
    tokenizer = processor.tokenizer
    for b, item in enumerate(items):
        start, end = _answer_span(batch["labels"][b])
        expected_text = THINK_CLOSE + item["target"] + "<|im_end|>"
        assert tokenizer.decode(batch["labels"][b, start:end]) == expected_text
        expected_ids = tokenizer(expected_text, add_special_tokens=False)["input_ids"]
        assert batch["labels"][b, start:end].tolist() == expected_ids
        assert batch["input_ids"][b, start:end].tolist() == expected_ids  # labels are the inputs, not shifted
        assert int(batch["attention_mask"][b].sum()) == end  # the answer ends the row; nothing after <|im_end|>


def test_prompt_tokens_are_exactly_what_inference_feeds_the_model(processor: Any, train_records: list) -> None:
    items = make_items(train_records[:3], "disease") + [_item(_image(64, 128), P.STAGE1_PROMPTS[1], GROUPS[0], "x")]
    batch = VLMCollator(processor)(items)
    patches = 0
    for b, item in enumerate(items):
        inference = _inference_encoding(processor, item["messages"])
        n_prompt = inference["input_ids"].shape[1]
        start, _ = _answer_span(batch["labels"][b])
        assert start == n_prompt
        assert torch.equal(batch["input_ids"][b, :n_prompt], inference["input_ids"][0])
        assert torch.equal(batch["mm_token_type_ids"][b, :n_prompt], inference["mm_token_type_ids"][0])
        assert torch.equal(batch["image_grid_thw"][b], inference["image_grid_thw"][0])
        n = inference["pixel_values"].shape[0]
        assert torch.equal(batch["pixel_values"][patches : patches + n], inference["pixel_values"])
        patches += n
    assert patches == batch["pixel_values"].shape[0]


def test_padding_is_masked_and_images_of_different_sizes_batch(processor: Any) -> None:
    sizes = [(64, 64), (128, 96), (96, 128)]
    diseases = ["psoriasis", "acne vulgaris", "basal cell carcinoma"]
    items = [_item(_image(h, w, i), P.STAGE2_TRAIN_PROMPTS[0], P.stage2_target(d), f"{i}.png")
             for i, ((h, w), d) in enumerate(zip(sizes, diseases, strict=True))]
    items.append(_item(_image(64, 64, 9), P.STAGE3_PROMPTS[0], "A long caption " * 12, "long.png"))
    batch = VLMCollator(processor)(items)
    grids = batch["image_grid_thw"]
    assert len({tuple(g) for g in grids.tolist()}) == 3  # three different image token grids in one batch
    assert batch["pixel_values"].shape[0] == int(grids.prod(-1).sum())
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    merge = processor.image_processor.merge_size
    for b in range(len(items)):
        assert int((batch["input_ids"][b] == image_pad).sum()) == int(grids[b].prod()) // merge**2
    pad = batch["attention_mask"] == 0
    assert pad.any()  # the rows really differ in length
    assert (batch["labels"][pad] == IGNORE_INDEX).all()
    assert (batch["input_ids"][pad] == processor.tokenizer.pad_token_id).all()
    assert (batch["mm_token_type_ids"][pad] == 0).all()
    lengths = batch["attention_mask"].sum(-1)
    assert all(batch["attention_mask"][b, : lengths[b]].all() for b in range(len(items)))  # right padding


def test_prompt_longer_than_max_length_is_a_clear_error(processor: Any) -> None:
    item = _item(_image(128, 128), P.STAGE2_TRAIN_PROMPTS[0], "This image shows psoriasis.", "big.png")
    n_prompt = _inference_encoding(processor, item["messages"])["input_ids"].shape[1]
    with pytest.raises(ValueError, match=rf"big\.png: the prompt is {n_prompt} tokens.*max_length={n_prompt}"):
        VLMCollator(processor, max_length=n_prompt)([item])


def test_answer_tails_are_truncated_and_counted(processor: Any) -> None:
    target = "This image shows basal cell carcinoma."
    item = _item(_image(64, 64), P.STAGE2_TRAIN_PROMPTS[0], target, "a.png")
    n_prompt = _inference_encoding(processor, item["messages"])["input_ids"].shape[1]
    collator = VLMCollator(processor, max_length=n_prompt + 3)
    batch = collator([item])
    assert batch["input_ids"].shape[1] == n_prompt + 3
    answer = processor.tokenizer(THINK_CLOSE + target + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert batch["labels"][0, n_prompt:].tolist() == answer[:3]
    assert collator.n_truncated == 1
    exact = VLMCollator(processor, max_length=n_prompt + len(answer))  # the answer fits exactly: nothing is cut
    assert exact([item])["labels"][0, n_prompt:].tolist() == answer
    assert exact.n_truncated == 0


def test_truncation_count_includes_dataloader_workers(processor: Any, train_records: list) -> None:
    """With train.num_workers > 0 the collator runs in worker processes; the run's report must still see it."""
    items = make_items(train_records[:4], "caption")
    longest_prompt = max(_inference_encoding(processor, it["messages"])["input_ids"].shape[1] for it in items)
    collator = VLMCollator(processor, max_length=longest_prompt + 2)
    loader = torch.utils.data.DataLoader(items, batch_size=2, num_workers=1, collate_fn=collator)
    assert sum(batch["input_ids"].shape[0] for batch in loader) == 4
    assert collator.n_truncated == 4

"""Training examples per stage and the dataset that serves them (hikari.training.data) on the synthetic SkinCAP."""

from __future__ import annotations

import dataclasses

import pytest

from hikari.data import prompts as P
from hikari.data.labels import GROUPS
from hikari.training.data import SupervisedVLMDataset, build_examples


def test_stage1_examples_answer_the_group(train_records: list) -> None:
    examples = build_examples(train_records, "group", seed=3)
    assert [ex.record for ex in examples] == train_records
    assert all(ex.target == ex.record.group and ex.target in GROUPS for ex in examples)
    assert {ex.prompt for ex in examples} == set(P.STAGE1_PROMPTS)  # one of three, sampled per image
    assert [ex.prompt for ex in build_examples(train_records, "group", seed=3)] == [ex.prompt for ex in examples]
    assert [ex.prompt for ex in build_examples(train_records, "group", seed=4)] != [ex.prompt for ex in examples]


def test_stage2_examples_one_per_training_prompt(train_records: list) -> None:
    records = train_records[:4]
    examples = build_examples(records, "disease", seed=0, samples_per_image=3)
    assert [ex.record for ex in examples] == [r for r in records for _ in range(3)]
    assert [ex.prompt for ex in examples] == list(P.STAGE2_TRAIN_PROMPTS) * 4
    assert all(ex.target == f"This image shows {ex.record.disease}." for ex in examples)


def test_stage2_group_context_from_truth_or_stage1(train_records: list) -> None:
    records = train_records[:4]
    truth = build_examples(records, "disease", seed=0, group_context="ground_truth")
    assert [ex.prompt for ex in truth] == [P.GROUP_CONTEXT_PROMPT.format(group=r.group) for r in records]
    predicted = {r.file_name: GROUPS[3] for r in records}
    stage1 = build_examples(records, "disease", seed=0, group_context="stage1", stage1_groups=predicted)
    assert {ex.prompt for ex in stage1} == {P.GROUP_CONTEXT_PROMPT.format(group=GROUPS[3])}
    del predicted[records[2].file_name]
    with pytest.raises(ValueError, match=records[2].file_name):
        build_examples(records, "disease", seed=0, group_context="stage1", stage1_groups=predicted)


def test_stage3_examples_answer_the_caption_and_reject_empty_ones(train_records: list) -> None:
    examples = build_examples(train_records[:3], "caption", seed=0)
    assert [ex.target for ex in examples] == [r.caption for r in train_records[:3]]
    assert {ex.prompt for ex in examples} <= set(P.STAGE3_PROMPTS)
    empty = dataclasses.replace(train_records[0], caption="  ")
    with pytest.raises(ValueError, match=f"{empty.file_name}: empty caption"):
        build_examples([empty], "caption", seed=0)
    with pytest.raises(ValueError, match="valid: group, disease, caption"):
        build_examples(train_records[:1], "captions", seed=0)


def test_dataset_oversamples_and_thumbnails(train_records: list) -> None:
    examples = build_examples(train_records, "disease", seed=0)
    plain = SupervisedVLMDataset(examples, seed=0, max_image_size=64)
    balanced = SupervisedVLMDataset(examples, seed=0, max_image_size=64, oversample=True)
    assert len(plain) == len(examples) < len(balanced) <= 3 * len(examples)
    item = plain[5]
    image = item["messages"][0]["content"][0]["image"]
    assert max(image.size) <= 64
    assert item["target"] == examples[5].target and item["file_name"] == examples[5].record.file_name

"""Exact answer probabilities (M4 soft group context) against a plain per-choice forward with `labels=`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from hikari.data import prompts as P
from hikari.data.labels import GROUPS
from hikari.inference.scoring import choice_probabilities, soft_group_text


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _sequence_logp(model, processor, messages, choice: str) -> float:
    from hikari.models.batching import VLMCollator

    batch = VLMCollator(processor)([{"messages": messages, "target": choice}])
    n_tokens = int((batch["labels"][:, 1:] != -100).sum())
    with torch.no_grad():
        loss = model(**batch).loss  # mean CE over the answer tokens
    return -float(loss) * n_tokens


def test_choice_probabilities_match_per_choice_likelihoods(tiny_model_dir: Path) -> None:
    from hikari.models.load import load_model, load_processor

    model = load_model(str(tiny_model_dir), dtype="fp32")
    processor = load_processor(str(tiny_model_dir))
    images = [Image.new("RGB", (96, 80), (190, 90, 80)), Image.new("RGB", (64, 112), (90, 60, 40))]
    batch = [P.stage1_messages(img, 0) for img in images]

    probs = choice_probabilities(model, processor, batch, GROUPS)

    assert probs.shape == (2, len(GROUPS))
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    for row, messages in enumerate(batch):
        logps = torch.tensor([_sequence_logp(model, processor, messages, g) for g in GROUPS])
        torch.testing.assert_close(probs[row], torch.softmax(logps, 0), atol=1e-5, rtol=1e-4)


def test_soft_group_text_orders_by_probability() -> None:
    probs = {GROUPS[0]: 0.1, GROUPS[1]: 0.6, GROUPS[2]: 0.25, GROUPS[3]: 0.05}
    text = soft_group_text(probs)
    assert text == f"Primary: {GROUPS[1]} (60.0%), Alternative: {GROUPS[2]} (25.0%)"
    assert math.isclose(sum(probs.values()), 1.0)

"""Exact answer probabilities over a closed label set: the M4 "soft" Stage 1 group context, and the stored
``probabilities`` of ``hikari predict --probabilities`` (group and disease) that calibration is measured on.

The original approximated P(group | image) with beam search (4 beams, 2 returns, softmax of sequence scores).
With only four possible answers we can score every one exactly: the log-likelihood of each complete answer
(as training renders it, through `<|im_end|>`) under teacher forcing, then a softmax over the answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hikari.data.prompts import SOFT_GROUP_CONTEXT
from hikari.models.batching import VLMCollator, supervised_positions


@torch.inference_mode()
def choice_probabilities(
    model: torch.nn.Module,
    processor: Any,
    batch: Sequence[list[dict[str, Any]]],
    choices: Sequence[str],
) -> torch.Tensor:
    """P(choice | conversation) for every conversation and choice: (len(batch), len(choices)), rows sum to 1."""
    collator = VLMCollator(processor, max_length=1 << 30)
    items = [{"messages": list(messages), "target": choice} for messages in batch for choice in choices]
    inputs = collator(items)
    labels = inputs.pop("labels")
    mask, targets = supervised_positions(labels)
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    logits = model(**inputs, logits_to_keep=mask.to(device), use_cache=False).logits.float()  # (N, V)
    token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.to(device)[:, None]).squeeze(-1)
    rows = mask.nonzero()[:, 0].to(device)  # the sequence each supervised position belongs to
    seq_logp = torch.zeros(len(items), device=device).index_add_(0, rows, token_logp)
    return torch.softmax(seq_logp.view(len(batch), len(choices)), dim=-1).cpu()


def soft_group_text(probabilities: dict[str, float]) -> str:
    """'Primary: {g1} ({p1}%), Alternative: {g2} ({p2}%)' from a group → probability mapping."""
    (g1, p1), (g2, p2) = sorted(probabilities.items(), key=lambda kv: -kv[1])[:2]
    return SOFT_GROUP_CONTEXT.format(g1=g1, p1=f"{100 * p1:.1f}", g2=g2, p2=f"{100 * p2:.1f}")

"""`transformers.Trainer` with HIKARI's loss: cross-entropy on answer tokens, one global token count per step.

Qwen3-VL sets `accepts_loss_kwargs = False`, so a stock Trainer averages each micro-batch separately and then
averages those averages: under gradient accumulation (or data parallelism) a short answer weighs as much as a
long one. We compute the summed token loss ourselves and divide by `num_items_in_batch`, the Trainer's count
of supervised tokens over every micro-batch of the optimizer step, gathered across processes. Only logits of
supervised positions are ever computed (`logits_to_keep` with a boolean mask), never the full (B, L, V) tensor.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

from hikari.training.data import IGNORE_INDEX


def supervised_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean mask (B, L) of positions whose *next* token is supervised, and those targets (N,)."""
    shifted = labels[:, 1:]
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = shifted != IGNORE_INDEX
    return mask, shifted[shifted != IGNORE_INDEX]


def answer_token_loss(
    model: torch.nn.Module, inputs: dict[str, Any], num_items: torch.Tensor | int | None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Summed CE over answer tokens / num_items (defaults to this batch's own count). Returns (loss, stats)."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    mask, targets = supervised_positions(labels)
    outputs = model(**inputs, logits_to_keep=mask, use_cache=False)
    logits = outputs.logits  # (N, V): only supervised positions
    loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
    denom = num_items if num_items is not None else targets.numel()
    if torch.is_tensor(denom):
        denom = denom.to(loss_sum.device)
    stats = {"supervised_tokens": torch.tensor(float(targets.numel())), "ce_sum": loss_sum.detach()}
    return loss_sum / denom, stats


class HikariTrainer(Trainer):
    """Trainer whose loss is normalised once per optimizer step over all micro-batches and processes."""

    loss_is_scaled_for_ga = True  # compute_loss already divides by the step's global token count

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Make the Trainer count supervised tokens across the accumulated micro-batches (and gather them across
        # processes) and hand us that count; Qwen3-VL's own flag would disable it.
        self.model_accepts_loss_kwargs = True

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        loss, stats = answer_token_loss(model, inputs, num_items_in_batch)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # The denominator is the global count, but DDP averages gradients over processes: undo that average.
            loss = loss * self.accelerator.num_processes
        return (loss, stats) if return_outputs else loss


class EpochSetter(TrainerCallback):
    """Tells the training dataset which epoch it is in, so seeded augmentation differs between epochs."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.dataset.epoch = int(state.epoch or 0)
        return control

"""`transformers.Trainer` with HIKARI's loss: (weighted) cross-entropy on answer tokens, normalised once per step.

Qwen3-VL sets `accepts_loss_kwargs = False`, so a stock Trainer averages each micro-batch separately and then
averages those averages: under gradient accumulation (or data parallelism) a short answer weighs as much as a
long one. We compute the summed token loss ourselves and divide by `num_items_in_batch`, the Trainer's count of
supervised tokens over every micro-batch of the optimizer step, gathered across processes (with STS
`normalize="global"`: the sum of the token weights instead).

Every recipe goes through the fused weighted cross-entropy (`hikari.training.losses`): the final hidden states
of the supervised positions are captured at the decoder's last norm, and the (N, V) logits are never
materialised — weights are all 1 without STS. The original silently fell back to plain CE when its fused loss
returned no logits; here the weighted path is the only path, and every logging step records that it ran
(`sts/mean_weight`, `sts/supervised_tokens`) next to `loss/ce`, `loss/weighted_ce` and `loss/penalty`.

A LoRA penalty (IBR) is added exactly once per optimizer step: 1/k of it on each of the k accumulated
micro-batches, and not scaled by the process count (every rank computes the same penalty; DDP averages).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from hikari.training.data import IGNORE_INDEX
from hikari.training.losses import fused_weighted_cross_entropy, lora_penalty
from hikari.training.sts import shifted_token_weights


def supervised_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean mask (B, L) of positions whose *next* token is supervised, and those targets (N,)."""
    shifted = labels[:, 1:]
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = shifted != IGNORE_INDEX
    return mask, shifted[shifted != IGNORE_INDEX]


def _output_modules(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(final decoder norm, lm_head) of a possibly DDP- and PEFT-wrapped causal (V)LM."""
    base = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    if hasattr(base, "get_base_model"):  # PeftModel
        base = base.get_base_model()
    return base.get_decoder().norm, base.get_output_embeddings()


def answer_token_loss(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    num_items: torch.Tensor | int | float | None,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Σ w·CE over answer tokens / num_items (default: this batch's token count). Returns (loss, stats).

    `inputs` may hold `loss_weights` (B, L) aligned with `labels` (STS); without it every weight is 1.
    The forward pass runs through `model` itself (so DDP hooks fire) with an all-False `logits_to_keep`, and
    the normed hidden states are taken from a forward hook on the decoder's final norm.
    """
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    weights = inputs.pop("loss_weights", None)
    mask, targets = supervised_positions(labels)
    norm, lm_head = _output_modules(model)
    captured: dict[str, torch.Tensor] = {}
    handle = norm.register_forward_hook(lambda _m, _i, out: captured.__setitem__("hidden", out))
    try:
        model(**inputs, logits_to_keep=torch.zeros_like(mask), use_cache=False)
    finally:
        handle.remove()
    hidden = captured["hidden"][mask.to(captured["hidden"].device)]  # (N, H)
    token_w = shifted_token_weights(weights, labels).to(hidden.device) if weights is not None else None
    loss_sum, ce = fused_weighted_cross_entropy(
        hidden, lm_head.weight, targets.to(hidden.device), token_w, bias=lm_head.bias, backend=backend
    )
    denom = num_items if num_items is not None else targets.numel()
    if torch.is_tensor(denom):
        denom = denom.to(loss_sum.device)
    stats = {"supervised_tokens": ce.n_tokens.float(), "weight_sum": ce.weight_sum, "ce_sum": ce.ce_sum,
             "weighted_ce_sum": loss_sum.detach()}  # fmt: skip
    return loss_sum / denom, stats


class HikariTrainer(Trainer):
    """Trainer whose loss is normalised once per optimizer step over all micro-batches and processes.

    Args (besides the Trainer's): `penalty` ("none" | "ibr_ab" | "ibr_delta"), `beta`, `sigma2` (the LoRA
    penalty), `normalize` ("mean" | "none": divide by the supervised-token count; "global": by Σ token weights
    over the step), `ce_backend` (fused CE backend: auto | torch | liger | cce).
    """

    loss_is_scaled_for_ga = True  # compute_loss already divides by the step's global count

    def __init__(
        self,
        *args: Any,
        penalty: str = "none",
        beta: float = 0.01,
        sigma2: float = 1.0,
        normalize: str = "mean",
        ce_backend: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # Make the Trainer count supervised tokens across the accumulated micro-batches (and gather them across
        # processes) and hand us that count; Qwen3-VL's own flag would disable it.
        self.model_accepts_loss_kwargs = True
        if normalize not in ("mean", "none", "global"):
            raise ValueError(f"unknown normalize {normalize!r}; valid: mean, none, global")
        lora_penalty(self.model, penalty, beta, sigma2)  # validates kind/beta/sigma2 and that LoRA tensors exist
        self.penalty, self.beta, self.sigma2 = penalty, beta, sigma2
        self.normalize, self.ce_backend = normalize, ce_backend
        self._window: dict[str, float] = {}

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | int | None:
        if self.normalize != "global" or not batch_samples or "loss_weights" not in batch_samples[0]:
            return super()._get_num_items_in_batch(batch_samples, device)
        total = sum(shifted_token_weights(b["loss_weights"], b["labels"]).sum() for b in batch_samples)
        total = torch.as_tensor(total, dtype=torch.float32, device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            total = self.accelerator.gather(total).sum()
        return total

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        loss, stats = answer_token_loss(model, inputs, num_items_in_batch, backend=self.ce_backend)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # The denominator is the global count, but DDP averages gradients over processes: undo that average.
            loss = loss * self.accelerator.num_processes
        penalty = torch.zeros((), device=loss.device)
        if self.penalty != "none" and model.training:
            penalty = lora_penalty(model, self.penalty, self.beta, self.sigma2).to(loss.device)
            loss = loss + penalty / self.current_gradient_accumulation_steps
        self._accumulate(stats, penalty)
        return (loss, stats) if return_outputs else loss

    def _accumulate(self, stats: dict[str, torch.Tensor], penalty: torch.Tensor) -> None:
        w = self._window
        for key in ("supervised_tokens", "weight_sum", "ce_sum", "weighted_ce_sum"):
            w[key] = w.get(key, 0.0) + float(stats[key])
        w["penalty_sum"] = w.get("penalty_sum", 0.0) + float(penalty.detach())
        w["micro_batches"] = w.get("micro_batches", 0.0) + 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        w, self._window = self._window, {}
        if "loss" in logs and w.get("supervised_tokens"):
            n = w["supervised_tokens"]
            logs["loss/ce"] = w["ce_sum"] / n
            logs["loss/weighted_ce"] = w["weighted_ce_sum"] / n
            logs["loss/penalty"] = w["penalty_sum"] / w["micro_batches"]
            logs["sts/mean_weight"] = w["weight_sum"] / n
            logs["sts/supervised_tokens"] = n
        super().log(logs, start_time)


class EpochSetter(TrainerCallback):
    """Tells the training dataset which epoch it is in, so seeded augmentation differs between epochs."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.dataset.epoch = int(state.epoch or 0)
        return control

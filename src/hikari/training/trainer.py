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

A LoRA penalty (IBR) is applied exactly once per optimizer step and not scaled by the process count (every rank
computes the same penalty). By default its gradient is added in closed form (`lora_penalty_gradients`, a few
fused kernels, no autograd graph) to the accumulated gradients after the step's last backward pass and before
gradient clipping — after DDP's all-reduce, so every rank adds the same term once. Where the gradients are not
plain, complete `.grad` tensors at that point (DeepSpeed, FSDP, fp16 loss scaling) the penalty goes through
autograd instead: 1/k of it on each of the k accumulated micro-batches. Both give the same update (tested).
At the same point the trainer measures the CE and penalty gradient norms for a `CollapseGuard`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import torch
from accelerate.utils import DistributedType
from transformers import Trainer, TrainerCallback

from hikari.config import LossConfig, default
from hikari.models.batching import supervised_positions
from hikari.training.collapse import CollapseGuard
from hikari.training.cross_entropy import choose_backend, fused_weighted_cross_entropy
from hikari.training.penalties import (
    LoraFactor,
    add_to_grads,
    lora_factors,
    lora_penalty,
    lora_penalty_gradients,
    lora_trainable_tensors,
    squared_norm_sum,
)
from hikari.training.sts import shifted_token_weights


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
    backend: str = default(LossConfig, "ce_backend"),
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


def finish_step_gradients(
    factors: Sequence[LoraFactor],
    penalty: str,
    beta: float,
    sigma2: float,
    *,
    guards: Sequence[CollapseGuard] = (),
    observers: Sequence[Any] = (),
    step: int = 0,
) -> torch.Tensor:
    """End of an optimizer step's backward passes, before clipping: hand the CE and penalty gradient norms of the
    LoRA tensors to the `guards` that measure optimizer step `step` (1-based) and the gradients themselves to the
    `observers` that do (`PenaltyStrengthProbe`), then add the penalty's closed-form gradient to the accumulated
    gradients. Returns the penalty value (0-dim, detached)."""
    value, params, grads = lora_penalty_gradients(factors, penalty, beta, sigma2)  # type: ignore[arg-type]
    for observer in observers:
        if observer.measures_gradients_at(step):
            observer.observe_gradients(step, factors, penalty, beta, params, grads)
    measuring = [g for g in guards if g.measures_gradients_at(step)]
    if measuring:
        # The gradients hold the CE part alone until the penalty's is added below.
        ce_grads = [p.grad for p in lora_trainable_tensors(factors) if p.grad is not None]
        ce_norm = math.sqrt(float(squared_norm_sum(ce_grads)))
        pen_norm = math.sqrt(float(squared_norm_sum(grads)))
        for guard in measuring:
            guard.record_gradient_norms(step, pen_norm, ce_norm)
    if params:
        add_to_grads(params, grads)
    return value


def forget_optimizer_overrides(model: torch.nn.Module) -> None:
    """Drop what bitsandbytes' process-wide `GlobalOptimManager` holds of `model`.

    For an 8-bit optimizer the Trainer registers every `nn.Embedding` with that singleton (to keep their states in
    32 bits); the registration is never removed, so the embedding — 1.2 GB at Qwen3-VL-8B's width, measured by
    benchmarks/real_shape.py — outlived its run and a second run in the same process (the Stage 3 ablation with one
    worker, the demo) held one more. The overrides matter only while the optimizer is built."""
    bnb = sys.modules.get("bitsandbytes")  # loaded only if an 8-bit optimizer or 4-bit base was used
    if bnb is None:
        return
    manager = bnb.optim.GlobalOptimManager.get_instance()
    modules = {id(m) for m in model.modules()}
    manager.module_weight_config_triple = [t for t in manager.module_weight_config_triple if id(t[0]) not in modules]
    manager.optimizer = None


class HikariTrainer(Trainer):
    """Trainer whose loss is normalised once per optimizer step over all micro-batches and processes.

    Args (besides the Trainer's): `loss`, the run's `LossConfig`: the LoRA penalty (`penalty` "none" | "ibr_ab" |
    "ibr_delta", `beta`, `sigma2`, `penalty_path` "auto": closed-form gradient where the gradients allow it, else
    autograd; "closed_form" or "autograd" to force one — see the module docstring), the fused CE `ce_backend`
    (auto | torch | liger | cce) and, when `sts` is on, `normalize` ("mean" | "none": divide by the
    supervised-token count; "global": by Σ token weights over the step). Without STS the loss is a plain mean over
    supervised tokens. Default: `LossConfig()`, plain cross-entropy.
    """

    loss_is_scaled_for_ga = True  # compute_loss already divides by the step's global count

    def __init__(
        self,
        *args: Any,
        loss: LossConfig = LossConfig(),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # Make the Trainer count supervised tokens across the accumulated micro-batches (and gather them across
        # processes) and hand us that count; Qwen3-VL's own flag would disable it.
        self.model_accepts_loss_kwargs = True
        penalty, penalty_path = loss.penalty, loss.penalty_path
        lora_penalty(self.model, penalty, loss.beta, loss.sigma2)  # validates the kind and that LoRA tensors exist
        self.penalty, self.beta, self.sigma2 = penalty, loss.beta, loss.sigma2
        self.normalize = loss.normalize if loss.sts else "mean"  # "mean" and "none" divide alike: by the token count
        # Which cross-entropy implementation runs is decided once, here, before training: an explicit liger/cce that
        # cannot run on this device fails now, naming the option, and the choice is recorded (`ce_backend_choice`).
        _, lm_head = _output_modules(self.model)
        try:
            self.ce_backend_choice = choose_backend(loss.ce_backend, self.args.device,
                                                    has_bias=lm_head.bias is not None)  # fmt: skip
        except ValueError as err:
            raise ValueError(f"loss.ce_backend={loss.ce_backend!r}: {err}") from None
        self.ce_backend = self.ce_backend_choice.name
        self._window: dict[str, Any] = {}
        # The closed form needs every rank's complete, unscaled gradient in each LoRA tensor's .grad after the last
        # backward pass: not so under DeepSpeed/FSDP (sharded or flattened gradients) or fp16 loss scaling.
        plain = self.accelerator.distributed_type not in (DistributedType.DEEPSPEED, DistributedType.FSDP) and (
            getattr(self.accelerator, "scaler", None) is None
        )
        if penalty_path == "closed_form" and not plain:
            raise ValueError("penalty_path='closed_form' needs plain .grad tensors: not under DeepSpeed, FSDP or fp16 "
                             "loss scaling; use 'auto' or 'autograd'")  # fmt: skip
        self.closed_form = plain and penalty_path != "autograd"
        self._factors = lora_factors(self.model)  # the trainable adapters: the same tensors for the whole run
        self._guards = [cb for cb in self.callback_handler.callbacks if isinstance(cb, CollapseGuard)]
        for guard in self._guards:
            guard.gradients_from_trainer = self.closed_form
        # Callbacks that read the step's CE-only gradients (PenaltyStrengthProbe): handed over with the guards'.
        self._observers = [cb for cb in self.callback_handler.callbacks if hasattr(cb, "observe_gradients")]

    def train(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().train(*args, **kwargs)
        finally:
            forget_optimizer_overrides(self.model)

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
        if model.training:
            if self.penalty != "none" and not self.closed_form:
                penalty = lora_penalty(model, self.penalty, self.beta, self.sigma2, factors=self._factors)
                loss = loss + penalty.to(loss.device) / self.current_gradient_accumulation_steps
                if self.accelerator.sync_gradients:  # the step's last micro-batch: count the penalty once
                    self._add_penalty(penalty)
            self._accumulate(stats)
        return (loss, stats) if return_outputs else loss

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.closed_form and self.accelerator.sync_gradients:  # the step's last backward pass has run
            penalty = finish_step_gradients(self._factors, self.penalty, self.beta, self.sigma2,
                                            guards=self._guards, observers=self._observers,
                                            step=self.state.global_step + 1)  # fmt: skip
            if self.penalty != "none":
                self._add_penalty(penalty)
                loss = loss + penalty.to(loss.device)  # the logged training loss includes the penalty, as before
        return loss

    def _accumulate(self, stats: dict[str, torch.Tensor]) -> None:
        w = self._window  # device tensors: no host sync per micro-batch
        for key in ("supervised_tokens", "weight_sum", "ce_sum", "weighted_ce_sum"):
            w[key] = w[key] + stats[key].detach() if key in w else stats[key].detach()

    def _add_penalty(self, penalty: torch.Tensor) -> None:
        w = self._window
        w["penalty_sum"] = w["penalty_sum"] + penalty.detach() if "penalty_sum" in w else penalty.detach()
        w["penalty_steps"] = w.get("penalty_steps", 0) + 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        w, self._window = self._window, {}
        n = float(w["supervised_tokens"]) if "supervised_tokens" in w else 0.0
        if "loss" in logs and n:
            logs["loss/ce"] = float(w["ce_sum"]) / n
            logs["loss/weighted_ce"] = float(w["weighted_ce_sum"]) / n
            logs["loss/penalty"] = float(w["penalty_sum"]) / w["penalty_steps"] if w.get("penalty_steps") else 0.0
            logs["sts/mean_weight"] = float(w["weight_sum"]) / n
            logs["sts/supervised_tokens"] = n
        super().log(logs, start_time)


class EpochSetter(TrainerCallback):
    """Tells the training dataset which epoch it is in, so seeded augmentation differs between epochs."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.dataset.epoch = int(state.epoch or 0)
        return control

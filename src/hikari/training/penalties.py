"""Penalties on LoRA tensors (IBR) and the adapter measurements built on the same batched products.

`lora_penalty` is the IBR term of the original ("ibr_ab": an L2 penalty on the LoRA factors) and a variant on
the weight change itself ("ibr_delta"). Contract with the trainer: the penalty is added once per optimizer step
— to one micro-batch's loss, or divided by the number of accumulation steps on each — and is not divided by
any token count. Every data-parallel process adds the same penalty, so averaging gradients over processes keeps
it as it is. `lora_penalty_gradients` gives the same value and its gradient in closed form (no autograd graph).

The penalty's kind, β and σ² have no defaults here: they come from the run config (`LossConfig`), their one home.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from peft.tuners.lora import LoraLayer

PENALTIES = ("ibr_ab", "ibr_delta", "none")


@dataclass(frozen=True)
class LoraFactor:
    """One trainable adapter of a PEFT LoRA layer: its A and B tensors (as stored; conv LoRA A is (r, in, k, k))
    and its scaling. The weight change is scale · B·A (embedding LoRA: its transpose)."""

    a: torch.Tensor
    b: torch.Tensor
    scale: float

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A as (r, in) and B as (out, r): views, so that autograd reaches the stored tensors."""
        return self.a.reshape(self.a.shape[0], -1), self.b.reshape(self.b.shape[0], -1)


@dataclass
class _ShapeGroup:
    """Adapters with the same (A shape, B shape, device), computed on as one batch."""

    members: list[LoraFactor]
    scales: dict[torch.device, torch.Tensor] = field(default_factory=dict)  # (G,) fp32 scale², per device

    def __post_init__(self) -> None:
        self.a = [m.a for m in self.members]
        self.b = [m.b for m in self.members]
        self.plain = all(t.dim() == 2 and t.requires_grad for t in (*self.a, *self.b))  # no reshape, all trainable

    def scale2(self) -> torch.Tensor:
        device = self.a[0].device
        if device not in self.scales:
            self.scales[device] = torch.tensor([m.scale**2 for m in self.members], dtype=torch.float32,
                                               device=device)  # fmt: skip
        return self.scales[device]

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 (G, r, in) A and (G, out, r) B."""
        if self.plain:
            return torch.stack(self.a).float(), torch.stack(self.b).float()
        pairs = [m.matrices() for m in self.members]
        return torch.stack([p[0] for p in pairs]).float(), torch.stack([p[1] for p in pairs]).float()


class LoraFactors(tuple):  # type: ignore[type-arg]
    """A tuple of `LoraFactor`s that also keeps their grouping by shape (computed on first use), so that the
    batched penalty computations do not regroup and rebuild per-group tensors on every step."""

    @functools.cached_property
    def groups(self) -> list[_ShapeGroup]:
        return _group_by_shape(self)


def lora_factors(model: torch.nn.Module) -> LoraFactors:
    """Every trainable adapter (A or B requires grad) of every PEFT LoRA layer in `model`, in module order.

    The result holds the parameters themselves; it stays valid for as long as the adapters are not replaced (a
    trainer computes it once)."""
    factors: list[LoraFactor] = []
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for name in module.lora_A:
            a, b = module.lora_A[name].weight, module.lora_B[name].weight
            if a.requires_grad or b.requires_grad:
                factors.append(LoraFactor(a, b, float(module.scaling[name])))
        for name in module.lora_embedding_A:
            a, b = module.lora_embedding_A[name], module.lora_embedding_B[name]
            if a.requires_grad or b.requires_grad:
                factors.append(LoraFactor(a, b, float(module.scaling[name])))
    return LoraFactors(factors)


def lora_trainable_tensors(factors: Sequence[LoraFactor]) -> list[torch.Tensor]:
    """The A and B tensors of `factors` that require grad, in order (A before B per adapter)."""
    return [p for f in factors for p in (f.a, f.b) if p.requires_grad]


def squared_norm_sum(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """0-dim fp32 Σ‖t‖² over `tensors` (one fused torch._foreach_norm per device), on the first tensor's device;
    differentiable. A zero tensor for an empty sequence."""
    if not tensors:
        return torch.zeros((), dtype=torch.float32)
    device = tensors[0].device
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t if t.dtype == torch.float32 else t.float())
    total = torch.zeros((), dtype=torch.float32, device=device)
    for group in by_device.values():
        total = total + torch.stack(torch._foreach_norm(group)).square().sum().to(device)
    return total


def _group_by_shape(factors: Sequence[LoraFactor]) -> list[_ShapeGroup]:
    groups: dict[tuple[Any, ...], list[LoraFactor]] = {}
    for f in factors:
        groups.setdefault((tuple(f.a.shape), tuple(f.b.shape), f.a.device), []).append(f)
    return [_ShapeGroup(members) for members in groups.values()]


def _shape_groups(factors: Sequence[LoraFactor]) -> list[_ShapeGroup]:
    """The factors grouped by (A shape, B shape, device), so that each group runs as one batched product; cached
    when `factors` is a `LoraFactors`."""
    return factors.groups if isinstance(factors, LoraFactors) else _group_by_shape(factors)


def _check_penalty(kind: str, beta: float, sigma2: float) -> None:
    if kind not in PENALTIES:
        raise ValueError(f"unknown LoRA penalty {kind!r}; valid: {', '.join(PENALTIES)}")
    if beta < 0 or sigma2 <= 0:
        raise ValueError(f"lora_penalty needs beta >= 0 and sigma2 > 0, got beta={beta}, sigma2={sigma2}")


def lora_penalty(
    model: torch.nn.Module,
    kind: Literal["ibr_ab", "ibr_delta", "none"],
    beta: float,
    sigma2: float,
    *,
    factors: Sequence[LoraFactor] | None = None,
) -> torch.Tensor:
    """A 0-dim fp32 penalty on the trainable LoRA adapters of a PEFT model, differentiable wrt them.

    - "ibr_ab" (the original IBR): β · Σ ‖p‖² / (2σ²) over every trainable lora_A and lora_B tensor. PEFT starts
      A random and B at zero, so at step 0 the penalty is already non-zero and pulls A — and with it the adapter
      — towards zero, whatever the data says.
    - "ibr_delta": β · Σ over adapted modules ‖scale · B · A‖²_F / (2σ²), the penalty on the weight change the
      adapter actually makes; zero at initialisation (B = 0). Computed as scale² · Σ (BᵀB) ∘ (AAᵀ), two r × r
      Gram matrices, never the (out, in) product.
    - "none": a zero tensor (no gradient).

    `factors` (from `lora_factors(model)`) saves the walk over the model's modules when the caller keeps them.
    Apply once per optimizer step (see the module docstring); `lora_penalty_gradients` gives the same value and
    its gradient without an autograd graph. Raises ValueError when `kind` is unknown or when an IBR penalty finds
    no trainable LoRA tensor (it would silently do nothing).
    """
    _check_penalty(kind, beta, sigma2)
    if kind == "none":
        return torch.zeros((), dtype=torch.float32)
    factors = lora_factors(model) if factors is None else factors
    if not factors:
        raise ValueError(f"lora_penalty({kind!r}): the model has no trainable PEFT LoRA tensors")
    device = factors[0].a.device
    if kind == "ibr_ab":
        # One fused norm over every trainable tensor (torch._foreach_norm), not two reductions per module.
        total = squared_norm_sum(lora_trainable_tensors(factors))
    else:
        # ‖BA‖²_F = trace(AᵀBᵀBA) = trace((BᵀB)(AAᵀ)) = Σ_ij (BᵀB)_ij (AAᵀ)_ij (both symmetric). Modules with the
        # same factor shapes are stacked and done in one batched product (a few kernels instead of ~5 per module).
        total = torch.zeros((), dtype=torch.float32, device=device)
        for group in _shape_groups(factors):
            a, b = group.stacked()
            gram = (torch.bmm(b.transpose(1, 2), b) * torch.bmm(a, a.transpose(1, 2))).sum((1, 2))
            total = total + (group.scale2() * gram).sum().to(device)
    return beta * total / (2.0 * sigma2)


@torch.no_grad()
def lora_penalty_gradients(
    factors: Sequence[LoraFactor],
    kind: Literal["ibr_ab", "ibr_delta", "none"],
    beta: float,
    sigma2: float,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """`lora_penalty` and its gradient in closed form, without an autograd graph: (value, params, grads).

    `params` are the trainable A/B tensors of `factors`, `grads[i]` (fp32, `params[i]`'s shape) is
    ∂penalty/∂params[i]:
    - "ibr_ab": β/σ² · p;
    - "ibr_delta": β/σ² · scale² · B(AAᵀ) for B and β/σ² · scale² · (BᵀB)A for A (per shape group, batched).
    A trainer adds these to the accumulated gradients once per optimizer step, before clipping — the same update
    as back-propagating `lora_penalty`, at the cost of a few fused kernels instead of a graph per step.
    """
    _check_penalty(kind, beta, sigma2)
    if kind == "none" or not factors:
        return torch.zeros((), dtype=torch.float32), [], []
    coef = beta / sigma2
    device = factors[0].a.device
    params: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    if kind == "ibr_ab":
        params = lora_trainable_tensors(factors)
        grads = list(torch._foreach_mul([p if p.dtype == torch.float32 else p.float() for p in params], coef))
        return beta * squared_norm_sum(params) / (2.0 * sigma2), params, grads
    total = torch.zeros((), dtype=torch.float32, device=device)
    for group in _shape_groups(factors):
        a, b = group.stacked()
        scales = group.scale2()
        aat = torch.bmm(a, a.transpose(1, 2))  # (G, r, r)
        btb = torch.bmm(b.transpose(1, 2), b)  # (G, r, r)
        total = total + (scales * (btb * aat).sum((1, 2))).sum().to(device)
        s = (scales * coef).view(-1, 1, 1)
        grad_a = torch.bmm(btb, a).mul_(s)  # (G, r, in)
        grad_b = torch.bmm(b, aat).mul_(s)  # (G, out, r)
        if group.plain:  # every tensor trainable and 2-D: the slices are the gradients as they are
            params += group.a + group.b
            grads += [*grad_a.unbind(0), *grad_b.unbind(0)]
            continue
        for m, ga, gb in zip(group.members, grad_a.unbind(0), grad_b.unbind(0), strict=True):
            for p, g in ((m.a, ga), (m.b, gb)):
                if p.requires_grad:
                    params.append(p)
                    grads.append(g if g.dim() == p.dim() else g.view(p.shape))  # conv LoRA: back to (r, in, k, k)
    return beta * total / (2.0 * sigma2), params, grads


@torch.no_grad()
def lora_delta_norm_sum(factors: Sequence[LoraFactor]) -> torch.Tensor:
    """0-dim fp32 Σ over `factors` of ‖scale · B · A‖_F (the adapter's weight change), from the r × r Gram
    matrices (‖BA‖²_F = Σ (BᵀB) ∘ (AAᵀ)), modules of one shape batched; never forms the (out, in) product."""
    if not factors:
        return torch.zeros((), dtype=torch.float32)
    device = factors[0].a.device
    total = torch.zeros((), dtype=torch.float32, device=device)
    for group in _shape_groups(factors):
        a, b = group.stacked()
        sq = (torch.bmm(b.transpose(1, 2), b) * torch.bmm(a, a.transpose(1, 2))).sum((1, 2)).mul_(group.scale2())
        # √(s²·‖BA‖²) = |s|·‖BA‖; rounding can make a tiny square negative
        total = total + sq.clamp_min(0.0).sqrt().sum().to(device)
    return total


@torch.no_grad()
def add_to_grads(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
    """p.grad += g for every pair (one fused foreach add per dtype/device); a missing p.grad becomes g."""
    current = [p.grad for p in params]
    if all(g is not None and g.dtype == torch.float32 for g in current):  # the usual case: fp32 LoRA gradients
        torch._foreach_add_(current, [g.to(c.device) for g, c in zip(grads, current, strict=True)])
        return
    present: dict[tuple[torch.dtype, torch.device], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for p, g in zip(params, grads, strict=True):
        if p.grad is None:
            p.grad = g.to(dtype=p.dtype, device=p.device, copy=True)
        else:
            dst, src = present.setdefault((p.grad.dtype, p.grad.device), ([], []))
            dst.append(p.grad)
            src.append(g.to(p.grad))
    for dst, src in present.values():
        torch._foreach_add_(dst, src)

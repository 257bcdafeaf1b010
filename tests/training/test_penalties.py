"""The LoRA penalties (IBR) against hand computations on a tiny PEFT model, and their closed-form gradient against
autograd."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer

from hikari.training.penalties import add_to_grads, lora_factors, lora_penalty, lora_penalty_gradients


def _peft_model(use_rslora: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    config = LoraConfig(r=2, lora_alpha=6, target_modules=["0", "2"], lora_dropout=0.0, use_rslora=use_rslora)
    return get_peft_model(base, config)


def _lora_modules(model: torch.nn.Module) -> list[Any]:
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def test_ibr_ab_is_the_l2_norm_of_every_lora_factor() -> None:
    model = _peft_model()
    beta, sigma2 = 0.5, 2.0
    by_hand = sum(float((p.detach() ** 2).sum()) for name, p in model.named_parameters()
                  if "lora_A" in name or "lora_B" in name)
    penalty = lora_penalty(model, "ibr_ab", beta=beta, sigma2=sigma2)
    assert by_hand > 0  # A is random at initialisation: the original penalty pulls on it from step 0
    assert penalty.item() == pytest.approx(beta * by_hand / (2 * sigma2), rel=1e-6)
    penalty.backward()
    for name, p in model.named_parameters():
        if "lora_" in name:
            torch.testing.assert_close(p.grad, beta * p.detach() / sigma2)
        else:
            assert p.grad is None, f"{name} is not a LoRA tensor but got a gradient"


@pytest.mark.parametrize("use_rslora", [False, True])
def test_ibr_delta_is_zero_at_init_and_the_weight_change_norm_after(use_rslora: bool) -> None:
    model = _peft_model(use_rslora)
    assert lora_penalty(model, "ibr_delta", beta=1.0, sigma2=1.0).item() == 0.0  # B = 0: no weight change yet
    with torch.no_grad():
        for m in _lora_modules(model):
            m.lora_B["default"].weight.normal_()
    beta, sigma2 = 0.3, 0.5
    explicit = 0.0
    for m in _lora_modules(model):
        a, b = m.lora_A["default"].weight.detach(), m.lora_B["default"].weight.detach()
        delta = m.scaling["default"] * b @ a  # the (out, in) weight change
        torch.testing.assert_close(delta, m.get_delta_weight("default"))
        explicit += float((delta**2).sum())
    assert m.scaling["default"] == pytest.approx(6.0 / 2**0.5 if use_rslora else 6.0 / 2)  # alpha/sqrt(r), alpha/r
    penalty = lora_penalty(model, "ibr_delta", beta=beta, sigma2=sigma2)
    assert penalty.item() == pytest.approx(beta * explicit / (2 * sigma2), rel=1e-5)
    penalty.backward()
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
        else:
            assert p.grad is None, f"{name} is not a LoRA tensor but got a gradient"


def test_penalty_skips_frozen_adapters_and_fails_without_lora() -> None:
    model = _peft_model()
    first = _lora_modules(model)[0]
    for p in (first.lora_A["default"].weight, first.lora_B["default"].weight):
        p.requires_grad_(False)
    second = _lora_modules(model)[1]
    only_second = sum(float((p.detach() ** 2).sum()) for p in (second.lora_A["default"].weight,
                                                               second.lora_B["default"].weight))
    assert lora_penalty(model, "ibr_ab", beta=1.0, sigma2=0.5).item() == pytest.approx(only_second, rel=1e-6)

    none = lora_penalty(model, "none", beta=1.0, sigma2=1.0)
    assert float(none) == 0.0 and not none.requires_grad
    with pytest.raises(ValueError, match="valid: ibr_ab, ibr_delta, none"):
        lora_penalty(model, "l2", beta=1.0, sigma2=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no trainable PEFT LoRA"):
        lora_penalty(torch.nn.Linear(3, 3), "ibr_ab", beta=1.0, sigma2=1.0)


@pytest.mark.parametrize("kind", ["ibr_ab", "ibr_delta"])
@pytest.mark.parametrize("use_rslora", [False, True])
def test_closed_form_penalty_gradient_equals_autograd(kind: str, use_rslora: bool) -> None:
    """The trainer adds `lora_penalty_gradients` to .grad instead of back-propagating `lora_penalty`: same value,
    same gradient for every trainable LoRA tensor (B made non-zero, so ibr_delta's gradient is not trivially 0;
    one adapter half-frozen, so only trainable tensors get one)."""
    model = _peft_model(use_rslora)
    with torch.no_grad():
        for m in _lora_modules(model):
            m.lora_B["default"].weight.normal_()
    _lora_modules(model)[0].lora_A["default"].weight.requires_grad_(False)
    beta, sigma2 = 0.3, 0.5
    penalty = lora_penalty(model, kind, beta=beta, sigma2=sigma2)  # type: ignore[arg-type]
    penalty.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    value, params, grads = lora_penalty_gradients(lora_factors(model), kind, beta, sigma2)  # type: ignore[arg-type]
    assert value.item() == pytest.approx(penalty.item(), rel=1e-6)
    assert not value.requires_grad and all(not g.requires_grad for g in grads)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in params} == set(expected)  # the frozen A is left out
    add_to_grads(params, grads)  # no .grad yet: assigned
    add_to_grads(params, grads)  # then accumulated
    for name, p in model.named_parameters():
        if name in expected:
            torch.testing.assert_close(p.grad, 2 * expected[name], rtol=1e-5, atol=1e-7)
        else:
            assert p.grad is None, name
    assert lora_penalty_gradients(lora_factors(model), "none", beta, sigma2)[1] == []

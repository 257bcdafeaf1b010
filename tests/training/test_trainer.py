"""The answer-token loss and its normalisation in HikariTrainer (hikari.training.trainer).

The loss is checked against plain cross-entropy over the full logits (values and gradients) and against the
model's own `labels=` loss; the Trainer-level normalisation is checked by gradient accumulation: batch 1 ×
accumulation 8 must give the same SGD update as batch 8 × accumulation 1 on answers of different lengths, which a
per-micro-batch mean (the stock Trainer's behaviour for Qwen3-VL) does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from hikari.config import load_config, resolve_recipe
from hikari.models.batching import IGNORE_INDEX, VLMCollator
from hikari.models.load import load_model, load_processor
from hikari.training.trainer import HikariTrainer, answer_token_loss
from tests.conftest import make_items

from .conftest import CapturedRun, tiny_overrides, train_captured


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> torch.nn.Module:
    return load_model(tiny_model_dir, dtype="fp32")


@pytest.fixture(scope="module")
def batch(tiny_model_dir: Path, train_records: list) -> dict[str, torch.Tensor]:
    """Two captions and two group names: answers of very different lengths, padded, with images of two sizes."""
    items = make_items(train_records[:2], "caption") + make_items(train_records[2:4], "group")
    return VLMCollator(load_processor(tiny_model_dir))(items)


def _naive_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean CE over every supervised token from the full (B, L, V) logits, shifted by hand."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )


def _grads(model: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad]))


def test_answer_token_loss_equals_full_logits_cross_entropy(
    tiny_model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> None:
    lengths = (batch["labels"] != IGNORE_INDEX).sum(-1)
    assert lengths.max() > 3 * lengths.min()  # really different answer lengths
    loss, stats = answer_token_loss(tiny_model, batch, None)
    naive = _naive_loss(tiny_model, batch)
    torch.testing.assert_close(loss, naive, rtol=1e-5, atol=1e-6)
    for ours, ref in zip(_grads(tiny_model, loss), _grads(tiny_model, naive), strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)
    assert stats["supervised_tokens"].item() == lengths.sum().item()


def test_answer_token_loss_equals_the_models_own_loss(
    tiny_model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> None:
    with torch.no_grad():
        own = tiny_model(**batch, use_cache=False).loss
        loss, _ = answer_token_loss(tiny_model, batch, None)
    torch.testing.assert_close(loss, own, rtol=1e-5, atol=1e-6)


def test_answer_token_loss_divides_the_sum_by_the_given_count(
    tiny_model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> None:
    n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    with torch.no_grad():
        mean, stats = answer_token_loss(tiny_model, batch, None)
        over_three = answer_token_loss(tiny_model, batch, torch.tensor(3 * n))[0]
        over_int = answer_token_loss(tiny_model, batch, 3 * n)[0]
    torch.testing.assert_close(over_three, mean / 3)
    torch.testing.assert_close(over_int, mean / 3)
    torch.testing.assert_close(stats["ce_sum"], mean * n)


class PerMicroBatchMeanTrainer(HikariTrainer):
    """The stock behaviour for Qwen3-VL: each micro-batch's own token mean, divided by the accumulation steps."""

    loss_is_scaled_for_ga = False

    def compute_loss(  # type: ignore[no-untyped-def]
        self, model, inputs, return_outputs=False, num_items_in_batch=None
    ):
        loss, stats = answer_token_loss(model, inputs, None)  # ignores the step's token count
        return (loss, stats) if return_outputs else loss


def _one_sgd_step(
    out: Path, *, batch_size: int, grad_accum: int, trainer_class: type | None, data: dict[str, Any]
) -> CapturedRun:
    overrides = tiny_overrides(
        data_dir=data["dir"],
        split=data["split"],
        output_dir=out,
        steps=1,
        extra=[
            f"model.base={data['model']}",
            "task=caption",  # captions: answers of very different lengths
            "data.augment=false",
            "train.optim=sgd",  # the update is -lr * gradient: nothing hides a wrong normalisation
            "train.learning_rate=1.0",
            "train.lr_scheduler=constant",
            "train.weight_decay=0",
            "train.max_grad_norm=0",
            f"train.batch_size={batch_size}",
            f"train.grad_accum={grad_accum}",
        ],
    )
    config = load_config(resolve_recipe("subaru"), overrides)
    return train_captured(config, out.with_name(out.name + "_capture"), trainer_class=trainer_class)


def _update(run: CapturedRun) -> torch.Tensor:
    return torch.cat([(run.final[n] - run.initial[n]).flatten() for n in sorted(run.trainable)])


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_gradient_accumulation_gives_the_large_batch_update(
    tmp_path: Path, tiny_model_dir: Path, synth_dir: Path, synth_split: Path
) -> None:
    data = {"dir": synth_dir, "split": synth_split, "model": tiny_model_dir}
    big = _one_sgd_step(tmp_path / "b8x1", batch_size=8, grad_accum=1, trainer_class=None, data=data)
    accumulated = _one_sgd_step(tmp_path / "b1x8", batch_size=1, grad_accum=8, trainer_class=None, data=data)
    assert (big.micro_batches, accumulated.micro_batches) == (1, 8)
    assert _update(big).norm() > 0
    assert _relative_difference(_update(accumulated), _update(big)) < 1e-4
    assert accumulated.losses[0] == pytest.approx(big.losses[0], abs=1e-5)  # the logged loss is the step's mean

    # The test has teeth: averaging each micro-batch separately weighs a 10-token answer like a 100-token one ...
    naive = _one_sgd_step(
        tmp_path / "naive_b1x8", batch_size=1, grad_accum=8, trainer_class=PerMicroBatchMeanTrainer, data=data
    )
    assert _relative_difference(_update(naive), _update(big)) > 1e-2
    # ... while without accumulation it is the same loss, so that is the only difference.
    naive_big = _one_sgd_step(
        tmp_path / "naive_b8x1", batch_size=8, grad_accum=1, trainer_class=PerMicroBatchMeanTrainer, data=data
    )
    assert _relative_difference(_update(naive_big), _update(big)) < 1e-4

"""STS weights and the LoRA penalty inside the trainer: weighted loss vs a naive reference, the penalty applied
once per optimizer step under gradient accumulation, the weighted path recorded in the logs, Antares recipes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from hikari.config import STSConfig, load_config, resolve_recipe
from hikari.models.batching import supervised_positions
from hikari.models.load import load_model, load_processor
from hikari.training.data import STSCollator
from hikari.training.sts import shifted_token_weights
from hikari.training.trainer import answer_token_loss
from tests.conftest import make_items

from .conftest import StageChain, tiny_overrides


def test_weighted_answer_loss_matches_naive_full_logits(tiny_model_dir: Path, train_records: list) -> None:
    model = load_model(str(tiny_model_dir), dtype="fp32")
    processor = load_processor(str(tiny_model_dir))
    batch = STSCollator(processor, sts=STSConfig(reason_mode="span"))(make_items(train_records[:3], "caption"))
    assert "loss_weights" in batch
    loss, stats = answer_token_loss(model, batch, None)

    inputs = {k: v for k, v in batch.items() if k not in ("labels", "loss_weights")}
    mask, targets = supervised_positions(batch["labels"])
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits[mask]
    w = shifted_token_weights(batch["loss_weights"], batch["labels"])
    naive = (F.cross_entropy(logits.float(), targets, reduction="none") * w).sum() / targets.numel()
    torch.testing.assert_close(loss.detach(), naive, rtol=1e-5, atol=1e-5)
    assert float(stats["weight_sum"]) == pytest.approx(float(w.sum()), rel=1e-6)
    assert not torch.allclose(w, torch.ones_like(w))  # the weights are really non-uniform


def _one_step(config_overrides: list[str], out: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """LoRA tensors before and after one optimizer step of a short subaru run (SGD, no decay/clipping)."""
    from hikari.training import stages

    seen: dict[str, Any] = {}
    prepare = stages.prepare_model

    def capture(*args: Any, **kwargs: Any) -> Any:
        model, processor, base = prepare(*args, **kwargs)
        seen["model"] = model
        seen["before"] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return model, processor, base

    config = load_config(resolve_recipe("subaru"), config_overrides)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stages, "prepare_model", capture)
        stages.run_training(config, evaluate=False)
    after = {n: p.detach().clone() for n, p in seen["model"].named_parameters() if p.requires_grad}
    return seen["before"], after


@pytest.mark.parametrize("path", ["closed_form", "autograd"])
def test_penalty_is_applied_once_per_optimizer_step(
    tiny_model_dir: Path, synth_dir: Path, synth_split: Path, tmp_path: Path, path: str
) -> None:
    """update(with ibr_ab) - update(without) == -lr * beta * p / sigma2, whatever the accumulation (4 here), with
    the penalty's gradient added in closed form or back-propagated."""
    lr, beta, sigma2 = 0.5, 0.2, 2.0
    common = [
        f"model.base={tiny_model_dir}", "train.optim=sgd", f"train.learning_rate={lr}", "train.warmup_steps=0",
        "train.lr_scheduler=constant", "train.weight_decay=0.0", "train.max_grad_norm=0.0", "train.batch_size=1",
        "train.grad_accum=4", "data.oversample=false", "data.augment=false", f"loss.penalty_path={path}",
    ]  # fmt: skip

    def run(name: str, extra: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        overrides = tiny_overrides(data_dir=synth_dir, split=synth_split, output_dir=tmp_path / name, steps=1,
                                   extra=[*common, *extra])  # fmt: skip
        return _one_step(overrides, tmp_path / name)

    before, plain = run("plain", [])
    before2, penalised = run("ibr", ["loss.penalty=ibr_ab", f"loss.beta={beta}", f"loss.sigma2={sigma2}"])
    for name, p0 in before.items():
        torch.testing.assert_close(before2[name], p0)  # same seeded start
        expected = -lr * beta * p0 / sigma2  # gradient of beta * |p|^2 / (2 sigma2), applied once
        torch.testing.assert_close(penalised[name] - plain[name], expected, rtol=1e-4, atol=1e-6)


def test_closed_form_and_autograd_penalties_train_alike_with_clipping(
    tiny_model_dir: Path, synth_dir: Path, synth_split: Path, tmp_path: Path
) -> None:
    """ibr_delta (non-zero gradient from step 2 on, when B has moved), accumulation 2, and a clipping threshold
    that binds: the closed-form gradient must be added before clipping, exactly where autograd puts it."""
    common = [
        f"model.base={tiny_model_dir}", "train.optim=sgd", "train.learning_rate=0.5", "train.warmup_steps=0",
        "train.lr_scheduler=constant", "train.weight_decay=0.0", "train.max_grad_norm=0.05", "train.batch_size=1",
        "train.grad_accum=2", "data.oversample=false", "data.augment=false", "loss.penalty=ibr_delta",
        "loss.beta=50.0",
    ]  # fmt: skip
    runs = {}
    for path in ("closed_form", "autograd"):
        overrides = tiny_overrides(data_dir=synth_dir, split=synth_split, output_dir=tmp_path / path, steps=3,
                                   extra=[*common, f"loss.penalty_path={path}"])  # fmt: skip
        runs[path] = _one_step(overrides, tmp_path / path)
    (start_c, end_c), (start_a, end_a) = runs["closed_form"], runs["autograd"]
    moved = 0.0
    for name, p0 in start_c.items():
        torch.testing.assert_close(start_a[name], p0)
        torch.testing.assert_close(end_c[name], end_a[name], rtol=1e-4, atol=1e-6)
        moved += float((end_c[name] - p0).norm())
    assert moved > 0
    logs = [json.loads((tmp_path / p / "metrics.json").read_text(encoding="utf-8"))["train"]["log_history"]
            for p in runs]  # fmt: skip
    penalties = [[h["loss/penalty"] for h in log if "loss/penalty" in h] for log in logs]
    assert penalties[0] and penalties[0] == pytest.approx(penalties[1], rel=1e-4)
    assert max(penalties[0]) > 0


@pytest.mark.parametrize("name", ["antares", "antares_ckpt", "antares_as_run"])
def test_antares_recipes_train_and_log_the_weighted_path(stage_chain: StageChain, name: str) -> None:
    run = stage_chain.get(name)
    assert run.losses and all(math.isfinite(x) for x in run.losses)
    moved = [n for n in run.trainable if not torch.equal(run.initial[n], run.final[n])]
    assert moved, "LoRA tensors must change"
    history = json.loads((run.out / "metrics.json").read_text(encoding="utf-8"))["train"]["log_history"]
    logged = [h for h in history if "sts/mean_weight" in h]
    assert logged, "every logging step must record that the weighted path ran"
    assert all(h["sts/supervised_tokens"] > 0 and h["loss/penalty"] > 0 for h in logged)
    if run.config.loss.sts:
        assert run.config.loss.reason_mode == "vocab"
        # mean-normalised caption weights + template tokens at 1: the mean stays 1, but the loss is reweighted
        assert all(h["sts/mean_weight"] == pytest.approx(1.0, abs=1e-3) for h in logged)
        assert any(abs(h["loss/weighted_ce"] - h["loss/ce"]) > 1e-4 for h in logged)
    else:  # antares_as_run: plain CE + IBR, what the original actually ran
        assert all(h["loss/weighted_ce"] == pytest.approx(h["loss/ce"]) for h in logged)

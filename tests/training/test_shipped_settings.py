"""The recipes' shipped settings, at tiny size: gradient checkpointing, bf16 autocast, a 4-bit NF4 base and 8-bit
AdamW (bitsandbytes' CPU backend), and the cross-entropy backend decided before training and recorded.

Every shipped recipe sets `load_in_4bit`, `adamw_8bit` and gradient checkpointing; the other training tests switch
them off (CPU_OVERRIDES) to stay fast and exact, so these tests put them back one by one."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from hikari.config import ConfigError, RunConfig, load_config, resolve_recipe
from hikari.data.split import read_split_records
from hikari.models.load import load_processor
from hikari.training.data import STSCollator
from hikari.training.penalties import lora_factors
from hikari.training.stages import bf16_supported, prepare_model, run_training
from hikari.training.trainer import answer_token_loss, finish_step_gradients
from tests.conftest import make_items

from .conftest import CPU_OVERRIDES, StageChain, tiny_overrides, train_captured

BNB = importlib.util.find_spec("bitsandbytes") is not None
NEEDS_BNB = pytest.mark.skipif(not BNB, reason="bitsandbytes is not installed (it is in the dev extras)")
CPU_BF16 = pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="this CPU has no native bf16")


def _lora_gradients(
    config: RunConfig, out: Path, batch: dict[str, torch.Tensor]
) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and LoRA gradients of one micro-batch through the recipe's own model preparation: fused weighted CE
    (STS weights) backward, then the closed-form penalty gradient added as HikariTrainer adds it."""
    torch.manual_seed(0)
    model, _, _ = prepare_model(config, out)
    with torch.no_grad():  # B = 0 at init would make ibr_delta's gradient trivially 0
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    model.train()
    loss, _ = answer_token_loss(model, batch, None, backend="torch")
    loss.backward()
    lc = config.loss
    finish_step_gradients(lora_factors(model), lc.penalty, lc.beta, lc.sigma2)
    return float(loss), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(stage_chain: StageChain, tmp_path: Path) -> None:
    """Antares' loss (STS weights + ibr_delta penalty) with gradient checkpointing on (as shipped: non-reentrant,
    input gradients enabled) and off: same loss, same gradient on every LoRA tensor of both towers."""
    extra = [f"model.base={stage_chain.base_model}", "model.init=base", "model.previous_run=null",
             "loss.penalty=ibr_delta", "loss.beta=0.5"]
    common = tiny_overrides(data_dir=stage_chain.data_dir, split=stage_chain.split, output_dir=tmp_path / "run",
                            steps=1, extra=extra)
    processor = load_processor(stage_chain.base_model)
    config_off = load_config(resolve_recipe("antares"), common)
    records = read_split_records(stage_chain.data_dir, stage_chain.split, ["train"]).parts["train"][:3]
    batch = STSCollator(processor, sts=config_off.loss)(make_items(records, "caption"))
    loss_off, grads_off = _lora_gradients(config_off, tmp_path / "off", batch)
    config_on = load_config(resolve_recipe("antares"), [*common, "model.gradient_checkpointing=true"])
    loss_on, grads_on = _lora_gradients(config_on, tmp_path / "on", batch)

    assert math.isfinite(loss_off) and loss_on == pytest.approx(loss_off, rel=1e-5)
    assert set(grads_on) == set(grads_off) and any(".visual." in n for n in grads_on)
    for name, g in grads_off.items():
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(grads_on[name], g, rtol=1e-4, atol=1e-7, msg=name)


@CPU_BF16
def test_bf16_autocast_on_a_cpu_that_supports_it(stage_chain: StageChain, tmp_path: Path) -> None:
    """dtype bf16 (as shipped) trains under bf16 autocast on a CPU with native bf16, close to the fp32 run."""
    fp32 = stage_chain.get("subaru")
    config = load_config(resolve_recipe("subaru"), [*stage_chain.overrides("subaru"), f"output_dir={tmp_path / 'r'}",
                                                    "model.dtype=bf16"])  # fmt: skip
    run = train_captured(config, tmp_path / "capture")
    assert run.run_info["precision"] == {"dtype": "bf16", "load_in_4bit": False, "upcast_frozen_fp32": False,
                                         "bf16_autocast": True, "device": "cpu"}  # fmt: skip
    assert all(math.isfinite(x) for x in run.losses)
    assert run.losses[0] == pytest.approx(fp32.losses[0], rel=2e-2)  # same data, same init, bf16 rounding only


@NEEDS_BNB
@CPU_BF16
def test_the_shipped_quantised_settings_train_a_step(stage_chain: StageChain, tmp_path: Path) -> None:
    """Subaru as shipped — NF4 4-bit base (bitsandbytes' CPU backend), 8-bit AdamW, gradient checkpointing, bf16 —
    trains on the tiny model: finite loss, every LoRA tensor moved, the 4-bit weights untouched, and the run
    records what ran."""
    shipped_keys = ("model.dtype", "model.load_in_4bit", "model.gradient_checkpointing", "train.optim")
    shipped = [o for o in CPU_OVERRIDES if not o.startswith(shipped_keys)]
    overrides = [f"data.dir={stage_chain.data_dir}", f"data.split={stage_chain.split}", f"output_dir={tmp_path / 'r'}",
                 *shipped, "train.max_steps=2", "train.learning_rate=3e-3", f"model.base={stage_chain.base_model}"]
    config = load_config(resolve_recipe("subaru"), overrides)
    assert (config.model.load_in_4bit, config.model.gradient_checkpointing, config.train.optim,
            config.model.dtype) == (True, True, "adamw_8bit", "bf16")  # fmt: skip
    run = train_captured(config, tmp_path / "capture")
    assert len(run.losses) == 2 and all(math.isfinite(x) for x in run.losses)
    unmoved = [n for n in run.trainable if torch.equal(run.initial[n], run.final[n])]
    assert run.trainable and not unmoved
    quantised = [n for n in run.initial if n not in run.trainable and run.initial[n].dtype == torch.uint8]
    assert quantised, "no 4-bit weights: the base was not quantised"
    assert all(torch.equal(run.initial[n], run.final[n]) for n in quantised)
    assert run.run_info["precision"]["load_in_4bit"] is True
    assert run.run_info["cross_entropy"]["name"] == "torch"
    # The Trainer registered the embedding with bitsandbytes' process-wide optimizer manager for 8-bit AdamW;
    # HikariTrainer takes it back, or the model would outlive the run (1.2 GB at the 8B's width).
    import bitsandbytes as bnb  # optional extra (skipped without it)

    assert bnb.optim.GlobalOptimManager.get_instance().module_weight_config_triple == []


def test_the_cross_entropy_backend_is_recorded_with_its_reason(stage_chain: StageChain) -> None:
    info = stage_chain.get("subaru").run_info
    assert info["cross_entropy"] == {"requested": "auto", "name": "torch",
                                     "reason": "auto: Liger and Cut Cross-Entropy need CUDA, this run is on cpu"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure without CUDA")
@pytest.mark.parametrize("backend", ["liger", "cce"])
def test_a_backend_that_cannot_run_fails_before_any_data_is_read(tmp_path: Path, backend: str) -> None:
    config = load_config(resolve_recipe("subaru"), [f"data.dir={tmp_path / 'missing'}", f"data.split={tmp_path / 's'}",
                                                    f"output_dir={tmp_path / 'o'}", f"loss.ce_backend={backend}"])
    with pytest.raises(ConfigError, match=rf"loss.ce_backend='{backend}': backend '{backend}' runs on CUDA only"):
        run_training(config)
    assert not (tmp_path / "o").exists()  # nothing was written: it failed first


@pytest.mark.skipif(BNB, reason="checks the failure without bitsandbytes")
def test_8bit_adam_without_bitsandbytes_names_the_option(tmp_path: Path) -> None:
    config = load_config(resolve_recipe("subaru"), [f"data.dir={tmp_path}", f"data.split={tmp_path / 's'}",
                                                    f"output_dir={tmp_path / 'o'}", "model.load_in_4bit=false"])
    with pytest.raises(ConfigError, match="train.optim='adamw_8bit' needs the bitsandbytes package"):
        run_training(config)

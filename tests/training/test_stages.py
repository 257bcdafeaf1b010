"""Recipe smoke runs and stage chaining (hikari.training.stages) on the tiny Qwen3-VL and synthetic SkinCAP.

Every recipe of the demo cascade trains a few steps through `run_training`: the loss is finite and falls, the
LoRA tensors move and nothing else does, and the run directory holds what the next stage reads. Chaining is
checked on real batches: merged-init starts from exactly base+adapter with a no-op fresh adapter, and
checkpoint-init continues the previous stage's very tensors. Resuming from a checkpoint reproduces the
uninterrupted run.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hikari.config import ConfigError, load_config, resolve_recipe
from hikari.data import prompts as P
from hikari.data.labels import DISEASE_TO_GROUP, GROUPS
from hikari.training import stages
from tests.conftest import make_items

from .conftest import CHAIN_STEPS, PREVIOUS, StageChain, adapter_key, tiny_overrides, train_captured

SMOKE_RECIPES = ["subaru", "altair", "deneb", "polaris_m0", "polaris_m1", "rigel", "vega"]


@pytest.mark.parametrize("name", SMOKE_RECIPES)
def test_recipe_trains_lora_only_and_writes_its_run(stage_chain: StageChain, name: str) -> None:
    run = stage_chain.get(name)
    expected = load_config(resolve_recipe(name), stage_chain.overrides(name))
    assert run.config == expected  # config.resolved.yaml round-trips to the config that ran

    # The loss is finite at every step and lower after CHAIN_STEPS steps than at step 1.
    assert len(run.losses) == CHAIN_STEPS
    assert all(math.isfinite(x) for x in run.losses), run.losses
    assert run.losses[-1] < run.losses[0], run.losses

    # Only LoRA tensors train; every one of them moved (A and B, language and vision towers); nothing else did.
    assert run.trainable and all(".lora_A." in n or ".lora_B." in n for n in run.trainable)
    assert any(".visual." in n for n in run.trainable) and any(".language_model." in n for n in run.trainable)
    unmoved = [n for n in run.trainable if torch.equal(run.initial[n], run.final[n])]
    assert not unmoved, f"{len(unmoved)} LoRA tensors did not change, e.g. {unmoved[:3]}"
    frozen = set(run.initial) - run.trainable
    assert frozen
    moved = [n for n in frozen if not torch.equal(run.initial[n], run.final[n])]
    assert not moved, f"frozen parameters changed: {moved[:3]}"

    # The run directory: resolved config, run_info naming base and adapter, the adapter = the trained tensors.
    info = run.run_info
    assert (info["name"], info["task"], info["init"]) == (name, expected.task, expected.model.init)
    assert info["adapter"] == "adapter" and info["data"]["n_truncated_sequences"] == 0
    if expected.model.previous_run is not None:
        assert Path(info["previous_run"]) == expected.model.previous_run
    saved = load_file(str(run.out / info["adapter"] / "adapter_model.safetensors"))
    assert set(saved) == {adapter_key(n) for n in run.trainable}
    for n in run.trainable:
        assert torch.equal(saved[adapter_key(n)], run.final[n]), n
    assert (run.out / info["adapter"] / "adapter_config.json").is_file()
    assert (run.out / "metrics.json").is_file()


def test_training_examples_follow_the_task_and_group_context(stage_chain: StageChain) -> None:
    """Stage 1 answers the group, Stage 2 the disease (M1 with the true group in the prompt), Stage 3 a caption."""
    subaru = stage_chain.get("subaru").examples
    assert {ex["prompt"] for ex in subaru} <= set(P.STAGE1_PROMPTS)
    assert all(ex["target"] == ex["group"] and ex["target"] in GROUPS for ex in subaru)

    m0 = stage_chain.get("polaris_m0").examples
    assert {ex["prompt"] for ex in m0} <= set(P.STAGE2_TRAIN_PROMPTS)
    m1 = stage_chain.get("polaris_m1").examples
    assert [ex["file_name"] for ex in m1] == [ex["file_name"] for ex in m0]
    for ex in m0 + m1:
        assert ex["target"] == P.stage2_target(ex["disease"])
    for ex in m1:
        assert ex["prompt"] == P.GROUP_CONTEXT_PROMPT.format(group=DISEASE_TO_GROUP[ex["disease"]])

    vega = stage_chain.get("vega").examples
    assert {ex["prompt"] for ex in vega} <= set(P.STAGE3_PROMPTS)
    assert all(len(ex["target"].split()) > 5 for ex in vega)


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        return model(**inputs, use_cache=False).logits


def _real_batch(processor, train_records, task: str) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    from hikari.models.batching import VLMCollator

    return VLMCollator(processor)(make_items(train_records[:3], task))


@pytest.mark.parametrize("name", ["deneb", "vega"])
def test_merged_init_starts_from_previous_base_plus_adapter(
    stage_chain: StageChain, train_records: list, name: str
) -> None:
    from peft import PeftModel

    from hikari.models.load import load_model, load_processor

    run, previous = stage_chain.get(name), stage_chain.get(PREVIOUS[name])  # type: ignore[arg-type]
    merged_dir = Path(run.run_info["base_model"])
    assert merged_dir == run.out / "init-merged"
    batch = _real_batch(load_processor(merged_dir), train_records, run.config.task)

    reference = PeftModel.from_pretrained(
        load_model(previous.run_info["base_model"], dtype="fp32"), str(previous.out / "adapter")
    ).eval()
    with_adapter = _logits(reference, batch)
    with reference.disable_adapter():
        without_adapter = _logits(reference, batch)
    merged = _logits(load_model(merged_dir, dtype="fp32"), batch)

    assert (merged - with_adapter).abs().max().item() <= 1e-4
    # The previous adapter really changes the model, so the equality above says something.
    assert (without_adapter - with_adapter).abs().max().item() > 1e-2


def test_merged_init_fresh_adapter_is_an_exact_noop(stage_chain: StageChain, train_records: list) -> None:
    from hikari.models.load import load_model, load_processor
    from hikari.models.lora import add_lora

    run = stage_chain.get("deneb")
    merged_dir = Path(run.run_info["base_model"])
    batch = _real_batch(load_processor(merged_dir), train_records, "disease")
    model = load_model(merged_dir, dtype="fp32")
    plain = _logits(model, batch)
    lo = run.config.lora
    peft_model = add_lora(model, r=lo.r, alpha=lo.alpha, dropout=lo.dropout, target=lo.target,
                          seed=run.config.train.seed).eval()
    assert torch.equal(_logits(peft_model, batch), plain)

    # That is the very model deneb started training from: the merged weights and the same seeded fresh LoRA.
    start = dict(peft_model.named_parameters())
    assert set(start) == set(run.initial)
    assert all(torch.equal(p.detach(), run.initial[n]) for n, p in start.items())
    assert all(not run.initial[n].any() for n in run.trainable if ".lora_B." in n)


def test_checkpoint_init_continues_the_previous_adapter(stage_chain: StageChain) -> None:
    rigel, deneb = stage_chain.get("rigel"), stage_chain.get("deneb")
    assert rigel.run_info["base_model"] == deneb.run_info["base_model"]  # Deneb's base (merged Subaru), not Qwen
    saved = load_file(str(deneb.out / "adapter" / "adapter_model.safetensors"))
    start = {adapter_key(n): rigel.initial[n] for n in rigel.trainable}
    assert set(start) == set(saved)
    assert all(torch.equal(start[k], saved[k]) for k in saved)
    frozen = set(rigel.initial) - rigel.trainable
    assert frozen == set(deneb.initial) - deneb.trainable
    assert all(torch.equal(rigel.initial[n], deneb.initial[n]) for n in frozen)
    # ... and rigel trained that adapter further.
    assert all(not torch.equal(rigel.final[n], saved[adapter_key(n)]) for n in rigel.trainable)
    # Way 1 (deneb's base + deneb's adapter) and Way 2 (merged + no-op LoRA) compute the same function, so on the
    # same first batch rigel and vega start from the same loss.
    assert rigel.losses[0] == pytest.approx(stage_chain.get("vega").losses[0], abs=1e-4)


def test_resume_reproduces_the_uninterrupted_run(
    tmp_path: Path, tiny_model_dir: Path, synth_dir: Path, synth_split: Path
) -> None:
    """Stop after step 2 (the checkpoint there is what an interruption leaves), resume to step 4: steps 3 and 4
    match a run that never stopped (same data order, optimizer moments, RNG state and adapter)."""
    extra = [
        f"model.base={tiny_model_dir}",
        "train.learning_rate=3e-3",
        "train.lr_scheduler=constant",  # the interrupted run's schedule must not depend on its max_steps
        "train.grad_accum=2",
        "train.save_steps=2",
    ]

    def config(out: Path, steps: int):  # type: ignore[no-untyped-def]
        overrides = tiny_overrides(data_dir=synth_dir, split=synth_split, output_dir=out, steps=steps, extra=extra)
        return load_config(resolve_recipe("subaru"), overrides)

    whole = train_captured(config(tmp_path / "whole", 4), tmp_path / "cap_whole")
    train_captured(config(tmp_path / "resumed", 2), tmp_path / "cap_first")
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint-2").is_dir()
    # A kill during the next save leaves a checkpoint-3 without its trainer_state.json: it must not be picked.
    partial = tmp_path / "resumed" / "checkpoints" / "checkpoint-3"
    shutil.copytree(tmp_path / "resumed" / "checkpoints" / "checkpoint-2", partial)
    (partial / "trainer_state.json").unlink()
    with pytest.raises(ConfigError, match=r"train.learning_rate: 0.003 → 0.001 changed since .* cannot apply it"):
        stages.run_training(load_config(resolve_recipe("subaru"), [
            *tiny_overrides(data_dir=synth_dir, split=synth_split, output_dir=tmp_path / "resumed", steps=4,
                            extra=extra), "train.learning_rate=1e-3"]), resume=True, evaluate=False)  # fmt: skip
    resumed = train_captured(config(tmp_path / "resumed", 4), tmp_path / "cap_resumed", resume=True)

    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["train"]["global_step"] == 4
    assert not partial.exists() and len(list(partial.parent.glob("incomplete-checkpoint-3-*"))) == 1
    run_info = json.loads((tmp_path / "resumed" / "run_info.json").read_text(encoding="utf-8"))
    assert run_info["resume"]["checkpoint"].endswith("checkpoint-2")
    assert run_info["resume"]["changed"] == {"train.max_steps": [2, 4]}
    assert run_info["replaced_run"]  # the finished 2-step run's files, set aside (not overwritten)
    assert json.loads((Path(run_info["replaced_run"]) / "run_info.json").read_text())["name"] == "subaru"
    # the train loss of the resumed run is over all four steps, as the uninterrupted run's
    whole_metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["train"]["train_loss"] == pytest.approx(whole_metrics["train"]["train_loss"], abs=1e-5)
    # It really resumed: only steps 3-4 ran (2 steps x 2 micro-batches); a restart would give the same numbers.
    assert (whole.micro_batches, resumed.micro_batches) == (8, 4)
    assert len(whole.losses) == len(resumed.losses) == 4
    assert resumed.losses[2:] == pytest.approx(whole.losses[2:], abs=1e-5, rel=0)
    assert resumed.losses[:2] == pytest.approx(whole.losses[:2], abs=1e-5, rel=0)  # restored history
    for n in whole.trainable:
        torch.testing.assert_close(resumed.final[n], whole.final[n], atol=1e-6, rtol=1e-5)

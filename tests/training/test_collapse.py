"""The collapse guard: caption statistics, adapter measurements against hand computations, the decision on
hand-made probes, and the callback inside real (tiny) training runs — firing on a constructed one-liner collapse
under a large IBR penalty, quiet on a model that writes reference-length captions."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import TrainerControl, TrainingArguments

from hikari.config import ConfigError, GuardConfig, LossConfig, load_config, resolve_recipe
from hikari.data import prompts as P
from hikari.data.images import load_rgb
from hikari.data.labels import GROUPS
from hikari.models.batching import VLMCollator
from hikari.models.load import load_model, load_processor
from hikari.models.lora import add_lora
from hikari.training.collapse import (
    CollapseGuard,
    ProbeMetrics,
    diagnose,
    distinct_n,
    is_previous_answer,
    lora_delta_norm,
    previous_stage_answers,
    probe_metrics,
    repetition_floor,
)
from hikari.training.data import SupervisedVLMDataset, build_examples
from hikari.training.penalties import lora_factors, lora_penalty
from hikari.training.trainer import HikariTrainer, answer_token_loss, finish_step_gradients

from .conftest import StageChain

ONE_LINER = "This image shows melanocytic nevi."
N_PROBE = 4
IMAGE_SIZE = 96


# ---------------------------------------------------------------------------------------------------------------
# Caption statistics
# ---------------------------------------------------------------------------------------------------------------
def test_distinct_2_counts_unique_bigrams_over_all_outputs() -> None:
    assert distinct_n(["a b c", "A b d"]) == pytest.approx(3 / 4)  # (a b) twice, lowercased
    assert distinct_n([ONE_LINER] * 8) == pytest.approx(1 / 8)
    assert distinct_n(["word", ""]) == 0.0


def test_previous_stage_one_liners_are_recognised() -> None:
    answers = previous_stage_answers()
    assert P.stage2_target("psoriasis") in answers and GROUPS[1] in answers
    for text in (ONE_LINER, "This image shows melanocytic nevus.", f"This image shows {GROUPS[2]}.", GROUPS[0],
                 "this image shows acne vulgaris on the cheek"):  # fmt: skip
        assert is_previous_answer(text, answers), text
    long_caption = "This image shows " + "red scaly plaques on the extensor surfaces of both elbows " * 2
    for text in ("The image shows red plaques.", long_caption, "", "Psoriatic plaques with silvery scale."):
        assert not is_previous_answer(text, answers), text


def test_probe_metrics_strip_thinking_and_measure_against_references() -> None:
    outputs = ["</think>\n\n" + ONE_LINER, "<think>hm</think>This image shows psoriasis."]
    refs = ["one two three four five six seven eight nine ten", "a b c d e f g h i j k l m n"]
    m = probe_metrics(outputs, refs, diseases=["melanocytic nevi", "lupus erythematosus"],
                      previous_answers=previous_stage_answers())  # fmt: skip
    assert m.gen_words == 4.5 and m.ref_words == 12 and m.one_liner_share == 1.0
    assert m.mention_rate == 50.0 and m.length_ratio == pytest.approx(4.5 / 12)
    with pytest.raises(ValueError, match="as many outputs"):
        probe_metrics(outputs, refs[:1])


# ---------------------------------------------------------------------------------------------------------------
# Adapter measurements on a tiny PEFT model
# ---------------------------------------------------------------------------------------------------------------
def _tiny_peft(seed: int = 0) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=6, target_modules=["0", "2"]))
    with torch.no_grad():  # B starts at zero: make the adapter do something
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    return model


def test_delta_w_norm_equals_explicit_scaled_product() -> None:
    from peft.tuners.lora import LoraLayer

    model = _tiny_peft()
    expected = 0.0
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert len(layers) == 2
    for m in layers:
        a, b = m.lora_A["default"].weight, m.lora_B["default"].weight
        assert m.scaling["default"] == pytest.approx(3.0)
        expected += float(torch.linalg.matrix_norm(m.scaling["default"] * b.detach() @ a.detach()))
    assert lora_delta_norm(model) == pytest.approx(expected, rel=1e-5)
    assert expected > 0


def test_penalty_gradient_ratio_matches_hand_computation_under_accumulation() -> None:
    """Two micro-batches, each adding data-loss/2 + penalty/2 (the trainer's contract); the guard's ratio must
    equal ‖β·p/σ²‖ / ‖∇ data loss‖ computed separately — before any clipping of the gradients."""
    beta, sigma2 = 0.7, 2.0
    model = _tiny_peft()
    torch.manual_seed(1)
    x, y = torch.randn(2, 4, 6), torch.randn(2, 4, 3)
    guard = CollapseGuard(GuardConfig(policy="warn", grad_every=10),
                          loss=LossConfig(penalty="ibr_ab", beta=beta, sigma2=sigma2))  # fmt: skip
    params = [p for n, p in model.named_parameters() if "lora_" in n]

    def data_loss(i: int) -> torch.Tensor:
        return ((model(x[i]) - y[i]) ** 2).mean() / 2

    ce_grads = torch.autograd.grad(sum(data_loss(i) for i in range(2)), params)
    hand_ce = math.sqrt(sum(float(g.square().sum()) for g in ce_grads))
    hand_pen = math.sqrt(sum(float((beta * p / sigma2).square().sum()) for p in params))

    state, control = SimpleNamespace(global_step=9), TrainerControl()  # step 10 is a measured step
    guard.on_step_begin(None, state, control, model=model)
    for i in range(2):
        (data_loss(i) + lora_penalty(model, "ibr_ab", beta, sigma2) / 2).backward()
    torch.nn.utils.clip_grad_norm_(params, 1e-3)  # the Trainer clips before on_pre_optimizer_step
    guard.on_pre_optimizer_step(None, state, control, model=model)
    step, ratio = guard.ratio_history[-1]
    assert step == 10
    assert ratio == pytest.approx(hand_pen / hand_ce, rel=1e-4)
    assert guard._pending["guard/ce_grad_norm"] == pytest.approx(hand_ce, rel=1e-4)
    assert not any(p._post_accumulate_grad_hooks for p in params)  # hooks removed after the step


def test_trainer_measured_gradient_ratio_matches_hand_computation_and_sets_no_hooks() -> None:
    """HikariTrainer's path: after the step's backward passes (CE only in the gradients), `finish_step_gradients`
    hands the guard ‖∇penalty‖ and ‖∇CE‖, then adds the penalty's gradient; the guard sets no hooks."""
    beta, sigma2 = 0.7, 2.0
    model = _tiny_peft()
    torch.manual_seed(1)
    x, y = torch.randn(4, 6), torch.randn(4, 3)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    guard = CollapseGuard(GuardConfig(policy="warn", grad_every=10),
                          loss=LossConfig(penalty="ibr_ab", beta=beta, sigma2=sigma2))  # fmt: skip
    guard.gradients_from_trainer = True
    guard.on_step_begin(None, SimpleNamespace(global_step=9), TrainerControl(), model=model)
    assert not any(p._post_accumulate_grad_hooks for p in params)

    ((model(x) - y) ** 2).mean().backward()
    ce = [p.grad.clone() for p in params]
    hand_ce = math.sqrt(sum(float(g.square().sum()) for g in ce))
    hand_pen = math.sqrt(sum(float((beta * p / sigma2).square().sum()) for p in params))
    value = finish_step_gradients(lora_factors(model), "ibr_ab", beta, sigma2, guards=[guard], step=10)
    assert guard.ratio_history == [(10, pytest.approx(hand_pen / hand_ce, rel=1e-5))]
    assert guard._pending["guard/ce_grad_norm"] == pytest.approx(hand_ce, rel=1e-5)
    assert value.item() == pytest.approx(beta * sum(float(p.square().sum()) for p in params) / (2 * sigma2))
    for p, g in zip(params, ce, strict=True):
        torch.testing.assert_close(p.grad, g + beta * p.detach() / sigma2)
    finish_step_gradients(lora_factors(model), "ibr_ab", beta, sigma2, guards=[guard], step=11)
    assert len(guard.ratio_history) == 1  # step 11 is not a measured step


# ---------------------------------------------------------------------------------------------------------------
# The decision on hand-made probes
# ---------------------------------------------------------------------------------------------------------------
def _probe(gen: float, share: float, distinct: float, ref: float = 61.0, ref_distinct: float = 0.6) -> ProbeMetrics:
    return ProbeMetrics(step=50, gen_words=gen, ref_words=ref, distinct_2=distinct, one_liner_share=share,
                        mention_rate=None, n=8, ref_distinct_2=ref_distinct)  # fmt: skip


FLAT = [(0, 0.0), (10, 0.50), (20, 0.51)]
GROWING = [(0, 0.0), (10, 0.5), (20, 1.5)]


def test_diagnose_names_penalty_driven_previous_stage_collapse() -> None:
    r = diagnose(_probe(7, 1.0, 0.12), penalty_ratio=35.0, delta_w_history=FLAT, step=50)
    assert r.detected and r.step == 50
    assert r.cause == "penalty-driven collapse; previous-stage answers"
    assert "penalty gradient 35× the CE gradient" in r.message and "ΔW norm flat" in r.message
    assert "captions 7 words vs 61 in references" in r.message and "ibr_delta" in r.message
    assert {"penalty_dominates", "delta_w_flat", "short_captions", "previous_stage_answers"} <= set(
        r.evidence["symptoms"]
    )
    # the same captions while the adapter keeps growing: the penalty is not the cause
    grown = diagnose(_probe(7, 1.0, 0.12), penalty_ratio=35.0, delta_w_history=GROWING, base_norm=100.0)
    assert grown.detected and grown.cause == "previous-stage answers"
    # ... unless, though growing, it is still negligible next to the base weights (from B = 0 it always grows)
    pinned = diagnose(_probe(7, 1.0, 0.12), penalty_ratio=35.0, delta_w_history=GROWING, base_norm=1e4)
    assert pinned.cause.startswith("penalty-driven") and "delta_w_negligible" in pinned.evidence["symptoms"]


def test_diagnose_names_an_active_penalty_under_a_shrinking_adapter_even_at_a_small_gradient_ratio() -> None:
    # Adam moves every element by ~lr: a steady penalty wins against a larger CE gradient (antares, beta 1, tiny)
    shrinking = [(1, 0.0), (10, 2.0), (20, 1.2)]
    r = diagnose(_probe(22, 0.53, 0.13), penalty_ratio=0.2, delta_w_history=shrinking)
    assert r.cause == "penalty-driven collapse; previous-stage answers"
    no_penalty = diagnose(_probe(22, 0.53, 0.13), penalty_ratio=0.0, delta_w_history=shrinking)
    assert no_penalty.cause == "previous-stage answers"


def test_diagnose_repetition_and_short_captions() -> None:
    assert diagnose(_probe(60, 0.0, 0.1)).cause == "degenerate repetition"
    assert diagnose(_probe(10, 0.0, 0.9)).cause == "short captions"


def test_repetition_is_judged_against_the_references_and_the_starting_point() -> None:
    """Distinct-2 0.15 is repetitive next to references at 0.6 (floor 0.35 × 0.6 = 0.21), not next to references at
    0.3 (floor 0.105); and a model whose own step-0 captions were at 0.2 is judged against those (floor 0.07)."""
    assert repetition_floor(_probe(60, 0.0, 0.15), GuardConfig()) == pytest.approx(0.21)
    assert diagnose(_probe(60, 0.0, 0.15)).cause == "degenerate repetition"
    assert not diagnose(_probe(60, 0.0, 0.15, ref_distinct=0.3)).detected
    started_repetitive = _probe(60, 0.0, 0.2)
    r = diagnose(_probe(60, 0.0, 0.15), start=started_repetitive)
    assert not r.detected and r.evidence["distinct_2_floor"] == pytest.approx(0.07)
    assert r.evidence["start_distinct_2"] == 0.2
    # A start of one-liners (a merged Stage 2 model answering "This image shows X.") is no caption baseline:
    # short texts score a high distinct-2 whatever they say, so the references set the floor.
    assert diagnose(_probe(60, 0.0, 0.15), start=_probe(6, 1.0, 0.3)).cause == "degenerate repetition"
    started_varied = _probe(60, 0.0, 0.8)
    assert diagnose(_probe(60, 0.0, 0.15), start=started_varied).cause == "degenerate repetition"
    # The absolute floor (off by default) still applies when set, e.g. by an older run's config.
    assert diagnose(_probe(60, 0.0, 0.25, ref_distinct=0.3), config=GuardConfig(min_distinct_2=0.3)).detected
    # Without references' statistics (a probe from elsewhere) only the absolute floor is left.
    bare = ProbeMetrics(step=1, gen_words=60, ref_words=61, distinct_2=0.01, one_liner_share=0.0, mention_rate=None,
                        n=8)  # fmt: skip
    assert repetition_floor(bare, GuardConfig()) == 0.0


def test_diagnose_stays_quiet_on_healthy_captions_even_with_a_strong_penalty() -> None:
    r = diagnose(_probe(55, 0.0, 0.7), penalty_ratio=35.0, delta_w_history=FLAT)
    assert not r.detected and r.cause == ""
    assert "penalty_dominates" in r.evidence["symptoms"]  # recorded, but healthy captions are not a collapse
    assert not diagnose(_probe(25, 0.5, 0.31)).detected  # exactly at / just past the thresholds


def test_guard_config_defaults_and_validation(tmp_path: Path) -> None:
    g = GuardConfig()
    assert (g.policy, g.probe_every, g.n_probe, g.grad_every, g.max_new_tokens) == ("warn", 50, 8, 10, 256)
    base = [f"data.dir={tmp_path}", f"data.split={tmp_path / 's.json'}", f"output_dir={tmp_path / 'o'}"]
    config = load_config(resolve_recipe("antares"), [*base, "guard.policy=stop", "guard.probe_every=5"])
    assert config.guard.policy == "stop" and config.guard.probe_every == 5
    with pytest.raises(ConfigError, match="guard"):
        load_config(resolve_recipe("antares"), [*base, "guard.policy=panic"])
    with pytest.raises(ValueError, match="policy"):
        CollapseGuard(GuardConfig(policy="panic"))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# The callback in real training runs of the tiny model
# ---------------------------------------------------------------------------------------------------------------
def _memorised_model(base_dir: Path, records: list, targets: list[str], *, steps: int, out: Path) -> Path:
    """The tiny model fully fine-tuned to answer the Stage 3 prompt on `records`' images with `targets`."""
    torch.manual_seed(0)
    model, processor = load_model(str(base_dir), dtype="fp32"), load_processor(str(base_dir))
    images = [load_rgb(r.image_path, max_size=IMAGE_SIZE) for r in records]
    batch = VLMCollator(processor)([{"messages": P.stage3_messages(im), "target": t} for im, t in zip(images, targets)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss, _ = answer_token_loss(model, batch, None, backend="torch")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def probe_records(train_records: list) -> list:
    return train_records[:N_PROBE]


@pytest.fixture(scope="module")
def one_liner_model(tiny_model_dir: Path, probe_records: list, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one_liner") / "model"
    return _memorised_model(tiny_model_dir, probe_records, [ONE_LINER] * N_PROBE, steps=30, out=out)


@pytest.fixture(scope="module")
def captioner_model(tiny_model_dir: Path, probe_records: list, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("captioner") / "model"
    return _memorised_model(tiny_model_dir, probe_records, [r.caption for r in probe_records], steps=120, out=out)


def _train_with_guard(
    model_dir: Path, records: list, out: Path, *, penalty: str, beta: float, lr: float, optim: str, steps: int,
    policy: str, targets: list[str] | None = None,
) -> tuple[CollapseGuard, Any]:  # fmt: skip
    """LoRA caption training on `records` (their own captions as targets, or `targets`) with a guard probing those
    images against their own captions."""
    model = add_lora(load_model(str(model_dir), dtype="fp32"), r=4, alpha=8, dropout=0.0, target="language", seed=0)
    processor = load_processor(str(model_dir))
    loss = LossConfig(penalty=penalty, beta=beta, sigma2=1.0, ce_backend="torch")
    guard = CollapseGuard(
        GuardConfig(policy=policy, probe_every=2, max_new_tokens=96, grad_every=1, patience=2), loss=loss,
        probe_images=[load_rgb(r.image_path, max_size=IMAGE_SIZE) for r in records],
        probe_references=[r.caption for r in records], probe_diseases=[r.disease for r in records],
        previous_answers=previous_stage_answers(), processor=processor,
    )  # fmt: skip
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=2, gradient_accumulation_steps=2, learning_rate=lr,
        lr_scheduler_type="constant", max_steps=steps, optim=optim, weight_decay=0.0, logging_steps=1,
        save_strategy="no", report_to=[], remove_unused_columns=False, use_cpu=True, seed=0,
        average_tokens_across_devices=True,
    )  # fmt: skip
    trained_on = records if targets is None else [replace(r, caption=t) for r, t in zip(records, targets, strict=True)]
    dataset = SupervisedVLMDataset(build_examples(trained_on, "caption", seed=0), seed=0, max_image_size=IMAGE_SIZE,
                                   oversample=False, augment=False)  # fmt: skip
    trainer = HikariTrainer(model=model, args=args, train_dataset=dataset, data_collator=VLMCollator(processor),
                            callbacks=[guard], loss=loss)  # fmt: skip
    trainer.train()
    return guard, trainer


def test_guard_fires_and_stops_on_a_one_liner_model_under_a_large_penalty(
    one_liner_model: Path, probe_records: list, tmp_path: Path
) -> None:
    guard, trainer = _train_with_guard(one_liner_model, probe_records, tmp_path, penalty="ibr_ab", beta=20.0,
                                       lr=0.05, optim="sgd", steps=8, policy="stop")  # fmt: skip
    assert trainer.state.global_step == 4, "policy 'stop' must end training at the 2nd symptomatic probe"
    report = guard.report()
    assert report.detected and report.step == 4
    assert "previous-stage answers" in report.cause and "penalty-driven collapse" in report.cause
    assert report.evidence["penalty_grad_ratio"] > 10
    assert report.to_dict()["evidence"]["probe"]["one_liner_share"] == 1.0
    logged = {k for h in trainer.state.log_history for k in h}
    assert {"guard/penalty_grad_ratio", "guard/delta_w_norm", "guard/one_liner_share"} <= logged


def test_guard_stays_quiet_on_reference_length_captions(
    captioner_model: Path, probe_records: list, tmp_path: Path
) -> None:
    guard, trainer = _train_with_guard(captioner_model, probe_records, tmp_path, penalty="none", beta=0.0,
                                       lr=1e-4, optim="adamw_torch", steps=4, policy="stop")  # fmt: skip
    assert trainer.state.global_step == 4
    assert [p.step for p in guard.probes] == [2, 4]
    report = guard.report()
    assert not report.detected, report.message
    last = guard.probes[-1]
    assert last.gen_words >= 0.8 * last.ref_words and last.one_liner_share == 0.0
    history = trainer.state.log_history
    for key in ("guard/gen_words", "guard/ref_words", "guard/distinct_2", "guard/one_liner_share",
                "guard/mention_rate", "guard/delta_w_norm", "guard/penalty_grad_ratio"):  # fmt: skip
        assert any(key in h for h in history), key
    assert all(h["guard/penalty_grad_ratio"] == 0.0 for h in history if "guard/penalty_grad_ratio" in h)


@pytest.fixture(scope="module")
def varied_records(train_records: list) -> list:
    """8 probe images of 8 different diseases: enough captions for distinct-2 to tell one template from varied
    text. (With two images of one disease among them, the tiny model memorised that disease's caption for all 8.)"""
    first = {}
    for record in train_records:
        first.setdefault(record.disease, record)
    return list(first.values())[:8]


@pytest.fixture(scope="module")
def varied_captioner(tiny_model_dir: Path, varied_records: list, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("varied") / "model"
    return _memorised_model(tiny_model_dir, varied_records, [r.caption for r in varied_records], steps=150, out=out)


@pytest.fixture(scope="module")
def template_captioner(tiny_model_dir: Path, varied_records: list, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("template") / "model"
    template = varied_records[0].caption
    return _memorised_model(tiny_model_dir, varied_records, [template] * len(varied_records), steps=60, out=out)


def test_guard_fires_when_captions_turn_repetitive(
    varied_captioner: Path, template_captioner: Path, varied_records: list
) -> None:
    """The guard's step-0 probe sees image-specific captions (the varied model); the later probes see one template
    caption for every image (the template model, as a run that collapsed into repetition would write):
    reference-length, no one-liners, but distinct-2 far below the floor set by the references of the same images
    — degenerate repetition, detected at the second probe (patience 2) and named."""
    processor = load_processor(str(varied_captioner))
    guard = CollapseGuard(
        GuardConfig(probe_every=2, max_new_tokens=96, patience=2),
        probe_images=[load_rgb(r.image_path, max_size=IMAGE_SIZE) for r in varied_records],
        probe_references=[r.caption for r in varied_records], probe_diseases=[r.disease for r in varied_records],
        previous_answers=previous_stage_answers(), processor=processor,
    )  # fmt: skip
    control = TrainerControl()
    varied = load_model(str(varied_captioner), dtype="fp32")
    template = load_model(str(template_captioner), dtype="fp32")
    guard.on_train_begin(None, SimpleNamespace(global_step=0), control, model=varied)
    assert guard.start_probe is not None and guard.start_probe.distinct_2 > 0.5  # it started varied
    for step in (2, 4):
        guard.on_step_end(None, SimpleNamespace(global_step=step, max_steps=6), control, model=template)
    report = guard.report()
    assert report.detected and report.cause == "degenerate repetition", report.message
    last = guard.probes[-1]
    assert last.distinct_2 < report.evidence["distinct_2_floor"] and last.one_liner_share == 0.0
    assert last.gen_words >= 0.5 * last.ref_words
    # The same template captions judged against a template start: nothing collapsed.
    quiet = CollapseGuard(guard.config, probe_images=guard.probe_images, probe_references=guard.probe_references,
                          probe_diseases=guard.probe_diseases, previous_answers=guard.previous_answers,
                          processor=processor)  # fmt: skip
    quiet.on_train_begin(None, SimpleNamespace(global_step=0), control, model=template)
    for step in (2, 4):
        quiet.on_step_end(None, SimpleNamespace(global_step=step, max_steps=6), control, model=template)
    assert not quiet.report().detected, quiet.report().message


def test_guard_does_not_blame_a_model_that_started_repetitive(
    template_captioner: Path, varied_records: list, tmp_path: Path
) -> None:
    """The same template captions from a model that wrote them before training started: judged against its own
    step-0 captions, nothing collapsed (an absolute distinct-2 threshold of 0.3 would have fired)."""
    template = [varied_records[0].caption] * len(varied_records)
    guard, _ = _train_with_guard(template_captioner, varied_records, tmp_path, penalty="none", beta=0.0, lr=1e-4,
                                 optim="adamw_torch", steps=4, policy="warn", targets=template)  # fmt: skip
    assert guard.start_probe is not None and guard.start_probe.distinct_2 < 0.3
    last = guard.probes[-1]
    assert last.distinct_2 < 0.3  # still the template: an absolute floor would call this a collapse
    report = guard.report()
    assert not report.detected, report.message
    assert diagnose(last, config=GuardConfig(min_distinct_2=0.3)).detected


def test_caption_recipe_writes_guard_findings_to_metrics(stage_chain: StageChain) -> None:
    run = stage_chain.get("antares")
    metrics = json.loads((run.out / "metrics.json").read_text(encoding="utf-8"))
    guard = metrics["guard"]
    assert set(guard) == {"detected", "cause", "message", "evidence", "step"}
    assert guard["step"] == run.config.train.max_steps  # the last step is always probed
    assert guard["evidence"]["probe"]["n"] == run.config.guard.n_probe
    history = metrics["train"]["log_history"]
    assert any("guard/gen_words" in h for h in history) and any("guard/penalty_grad_ratio" in h for h in history)
    # other tasks have no guard
    assert json.loads((stage_chain.get("deneb").out / "metrics.json").read_text(encoding="utf-8"))["guard"] is None

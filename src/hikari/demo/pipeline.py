"""The demo pipeline as an importable function (`hikari demo` is a thin wrapper): the whole HIKARI cascade on
the built-in synthetic SkinCAP and the tiny Qwen3-VL, on a CPU, in minutes.

    synthetic SkinCAP → split + audit → tiny Qwen3-VL (+ brief generic pre-training) → Stage 1 (subaru)
    → Stage 2 (deneb, merged-init from subaru) → the penalty's 8B-equivalent β (below) → Stage 3 ablation from
    deneb: rigel (checkpoint-init), vega (merged-init), antares at the published β 0.01, antares,
    antares_as_run, antares_ckpt and sts_safe at the 8B-equivalent β, and antares at β 1 (a stress row, not an
    equivalence; antares_ckpt too) → report.json / report.md

The 8B-equivalent β: the published β 0.01 is a different penalty on a 128-wide model than on Qwen3-VL-8B (its
gradient scales with the LoRA elements, which PEFT draws in ±1/√width, and the CE's pull depends on width, loss and
learning rate). `hikari.training.strength` defines the penalty's relative strength as what Adam sees (median over
lora_A elements of |∇penalty| / RMS ∇CE over the first 8 steps); the shipped reference is its measurement for the
published Antares settings at 8B width (benchmarks/penalty_strength.py); the demo measures its own tiny model the same
way (random base, Stage 1 and 2 one step each, then antares with the demo's settings) and finds the β with the same
strength (`match_beta`).

Every stage runs the *real* recipe from configs/ with a small set of CPU overrides (DEMO_OVERRIDES below: fp32,
no 4-bit, small images, short schedules, a higher learning rate for a model with 64-dim layers). Every step
writes its artifact under the run directory, so any stage can be rerun alone with `hikari train`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from hikari.config import load_config, resolve_recipe
from hikari.data.audit import audit_split
from hikari.data.split import load_split, split_dataset
from hikari.demo.pretrain import pretrain_tiny_vlm
from hikari.demo.rag import run_stage2_rag
from hikari.demo.synth import write_synthetic_skincap
from hikari.demo.tiny import TinyDims, build_tiny_qwen3vl
from hikari.evaluation.captions import evaluate_captions
from hikari.evaluation.predictions import read_predictions
from hikari.inference.predict import run_predict
from hikari.training.ablation import CAPTION_COLUMNS, AblationArm, AblationRow, run_stage3_ablation
from hikari.training.stages import run_training
from hikari.training.strength import (
    STRENGTH_STEPS,
    match_beta,
    prepare_chain,
    recipe_strength,
    reference_strength,
    reference_strength_path,
)
from hikari.utils.io import Stopwatch, atomic_write_json, atomic_write_text

# Longer image side in pixels for every demo picture (pre-training, stages, evaluation).
DEMO_IMAGE_SIZE = 96
# CPU settings shared by every demo stage (the recipes' hyperparameters are for the 8B model on a GPU).
DEMO_OVERRIDES = [
    "model.dtype=fp32",
    "model.load_in_4bit=false",
    "model.gradient_checkpointing=false",
    "train.optim=adamw_torch",
    "train.batch_size=8",
    "train.grad_accum=1",
    "train.learning_rate=5e-3",
    "lora.target=both",
    "train.warmup_steps=10",
    "train.logging_steps=10",
    "train.save_steps=100000",
    "train.save_total_limit=1",
    f"data.max_image_size={DEMO_IMAGE_SIZE}",
    "data.samples_per_image=1",
    "eval.batch_size=16",
]
# Optimizer steps per stage: enough for the tiny model to learn each task, small enough for 2 CPU cores.
DEMO_STEPS = {"subaru": 300, "deneb": 800, "sirius": 300, "stage3": 480}
# The training-run folders a demo writes under --out (removed before it trains them again).
DEMO_RUN_FOLDERS = ("subaru", "deneb", "sirius", "stage3", "strength")
# Stage 3 rows run at the 8B-equivalent β (named <recipe>_8b_eq); antares also runs at the published β.
EQUIVALENT_ARMS = ("antares", "antares_as_run", "antares_ckpt", "sts_safe")
# One more antares row at a β chosen by hand, 100× the published one — *not* an equivalence: the demonstration of
# the penalty-driven failure mode (and of the guard on it) on the tiny model (see docs/penalty_strength.md).
STRESS_BETA = 1.0
STRESS_ARMS = ("antares", "antares_ckpt")  # merged-init (published Antares) and checkpoint-init ("Way 1" + STS)
# Stage 3 recipes trained at once (one process and one torch thread each): the demo machine has 2 cores.
DEMO_WORKERS = max(1, min(2, os.cpu_count() or 1))
# Stage 3 runs only: evaluate and probe with a caption-sized budget (the references are ~55 words).
DEMO_STAGE3_OVERRIDES = ["eval.max_new_tokens=120", "guard.max_new_tokens=120", "guard.probe_every=80"]
# Generic pre-training of the tiny base: vision-tower warm-up steps, then image-text + text steps.
PRETRAIN_VISION_STEPS = 1200
PRETRAIN_STEPS = 800
# Sizes of the demo's tiny model (the tests use the smaller `TinyDims()` default, 64 wide × 2 layers). Measured
# on the demo (one run each, val = 48 or 97 images): with the 64 × 2 language model Stage 2 stayed at 60-66 %
# and its training loss flat at 0.31 per answer token (the disease token near uniform even on training images);
# 128 × 3 fits the training set (loss 0.13) and, with 1,200 rows instead of 600, reaches 74 % on validation.
DEMO_DIMS = TinyDims(text_hidden=128, text_intermediate=384, text_layers=3)
# Synthetic SkinCAP rows (10 top diseases + rarer ones; the top-10 filter keeps ~80 %): 864 train / 97 val images.
DEMO_ROWS = 1200


def run_demo(out: Path, *, n: int | None = None, seed: int = 0, console: Console | None = None) -> dict[str, Any]:
    """Run the demo pipeline into `out` and return the report dictionary (also saved as report.json/.md).

    `n`: synthetic SkinCAP rows (None: `DEMO_ROWS`)."""
    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    stopwatch = Stopwatch()
    lap, timings = stopwatch.lap, stopwatch.timings

    console.rule("1/9 synthetic SkinCAP")
    synth = write_synthetic_skincap(data_dir, n=DEMO_ROWS if n is None else n, seed=seed)
    console.print(f"wrote {data_dir} ({synth.n_rows} rows)")
    lap("synth")

    console.rule("2/9 leak-free split + audit")
    split_path = out / "split.json"
    split, dataset = split_dataset(data_dir, seed=42)
    split.save(split_path)
    split_info = load_split(split_path)
    counts = {part: len(names) for part, names in split_info.parts.items()}
    audit = audit_split(split_info, dataset.records)
    console.print(f"{split_path}: {counts}; overlaps: {len(audit.overlaps)} ({'clean' if audit.clean else 'LEAK'})")
    if not audit.clean:
        raise RuntimeError(f"the demo split leaks: {audit.overlaps[:3]}")
    lap("split_audit")

    console.rule("3/9 tiny Qwen3-VL + generic pre-training")
    raw_model = build_tiny_qwen3vl(out / "tiny-init", seed=seed, dims=DEMO_DIMS, overwrite=True)
    base = pretrain_tiny_vlm(
        raw_model, out / "tiny-base", steps=PRETRAIN_STEPS, vision_warmup_steps=PRETRAIN_VISION_STEPS, seed=seed,
        max_image_size=DEMO_IMAGE_SIZE,
    )
    console.print(f"base model: {base}")
    lap("tiny_model")

    # A new demo replaces the previous demo's runs (they are rebuilt exactly; a training run into a finished run's
    # folder would set the old one aside in replaced-<time>/, and reruns would pile those up).
    for name in DEMO_RUN_FOLDERS:
        shutil.rmtree(out / name, ignore_errors=True)

    def stage(recipe: str, step: str, extra: list[str]) -> dict[str, Any]:
        console.rule(f"{step} {recipe}")
        overrides = [
            f"data.dir={data_dir}",
            f"data.split={split_path}",
            f"output_dir={out / recipe}",
            *DEMO_OVERRIDES,
            f"train.max_steps={DEMO_STEPS[recipe]}",
            *extra,
        ]
        config = load_config(resolve_recipe(recipe), overrides)
        result = run_training(config)
        lap(recipe)
        metrics = result.eval_metrics or {}
        shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        console.print(shown)
        return metrics

    s1 = stage("subaru", "4/9", [f"model.base={base}"])
    # T0 = the first training prompt: a 64-wide model cannot generalise to P0's new wording (the 8B model can).
    s2 = stage("deneb", "5/9", [f"model.previous_run={out / 'subaru'}", "prompts.eval_prompt=T0"])
    console.rule("6/9 Stage 2 with retrieved references: sirius (RAG-in-Training), K = 0 / 1 / 3 at inference")
    stage2_rag = run_stage2_rag(
        out / "sirius", data_dir, split_path, out / "deneb", base, [*DEMO_OVERRIDES, "prompts.eval_prompt=T0"],
        DEMO_STEPS["sirius"], console,
    )  # fmt: skip
    lap("sirius")

    console.rule("7/9 the penalty's 8B-equivalent strength (random tiny base, the demo's Stage 3 settings)")
    strength = equivalent_strength(out, data_dir, split_path, raw_model, console)
    beta = strength["beta_8b_equivalent"]
    lap("strength")

    console.rule(f"8/9 Stage 3: rigel, vega, antares (β 0.01); {', '.join(EQUIVALENT_ARMS)} at β {beta:.3g}; β 1")
    arms = ["rigel", "vega", "antares"]
    arms += [AblationArm(f"{name}_8b_eq", name, (f"loss.beta={beta}",)) for name in EQUIVALENT_ARMS]
    arms += [AblationArm(f"{name}_beta1", name, (f"loss.beta={STRESS_BETA}",)) for name in STRESS_ARMS]
    ablation = run_stage3_ablation(
        out / "deneb", out / "stage3", recipes=arms, overrides=[*DEMO_OVERRIDES, *DEMO_STAGE3_OVERRIDES],
        steps=DEMO_STEPS["stage3"], workers=DEMO_WORKERS, console=console,
    )  # fmt: skip
    lap("stage3_ablation")

    console.rule("9/9 untrained base on Stage 3 (the reference point for the captions) + report")
    base_captions = _evaluate_base_captions(base, data_dir, split_path, out / "base.predictions.val.jsonl")
    lap("base_eval")

    report: dict[str, Any] = {
        "data": str(data_dir),
        "split": str(split_path),
        "split_counts": counts,
        "audit": {"overlaps": len(audit.overlaps), "clean": audit.clean},
        "base_model": str(base),
        "stage1": _pick(s1, ("accuracy", "balanced_accuracy", "f1_macro", "n")),
        "stage2": _pick(s2, ("accuracy", "balanced_accuracy", "f1_macro", "cohen_kappa", "mcc", "n")),
        "stage2_rag": stage2_rag,
        "stage3": {
            "base": _pick(base_captions, _CAPTION_KEYS),
            **{row.recipe: _stage3_entry(row) for row in ablation},
        },
        "stage3_table": str(out / "stage3" / "ablation.md"),
        "penalty_strength": strength,
        "timings_s": timings,
    }
    report["wall_time_s"] = round(sum(timings.values()), 1)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_demo_markdown(report))
    return report


def equivalent_strength(out: Path, data_dir: Path, split: Path, raw_model: Path, console: Console) -> dict[str, Any]:
    """The β at which antares on the demo's tiny model has the relative penalty strength the published settings have
    at Qwen3-VL-8B width, measured the same way on both (random base; see `hikari.training.strength`)."""
    reference = reference_strength("antares")
    work = out / "strength"
    overrides = [*DEMO_OVERRIDES, *DEMO_STAGE3_OVERRIDES, "guard.policy=off"]
    previous = prepare_chain(raw_model, data_dir, split, work, overrides=overrides)
    # The Stage 3 rows' learning-rate schedule, over at least the measured steps (B = 0 until the first non-zero
    # learning rate: a schedule shorter than the warm-up would leave A without any CE gradient to compare with).
    schedule = max(DEMO_STEPS["stage3"], STRENGTH_STEPS + 2)
    runs = iter(range(100))
    results: list[Any] = []

    def measure(beta: float) -> Any:
        results.append(recipe_strength(previous, data_dir, split, work / f"antares-{next(runs)}", beta=beta,
                                       overrides=overrides, schedule_steps=schedule))  # fmt: skip
        return results[-1]

    literal_beta = load_config(resolve_recipe("antares")).loss.beta
    matched = match_beta(measure, reference, beta=literal_beta, iterations=4)
    beta = float(f"{matched.beta:.3g}")
    # The same measurement on the demo's own trained Deneb (what the Stage 3 rows start from), for comparison.
    trained = recipe_strength(out / "deneb", data_dir, split, work / "antares-trained", beta=beta, overrides=overrides,
                              schedule_steps=schedule)  # fmt: skip
    trained_literal = recipe_strength(out / "deneb", data_dir, split, work / "antares-trained-published",
                                      beta=literal_beta, overrides=overrides, schedule_steps=schedule)
    tiny_at_literal = matched.measured[0][1]
    console.print(
        f"penalty strength (median |∇pen|/RMS ∇CE over lora_A, {STRENGTH_STEPS} steps): 8B width "
        f"{reference.strength:.3g}, tiny {tiny_at_literal:.3g} at β {literal_beta} → β {beta:.3g} "
        f"(measured {matched.measured[-1][1]:.3g}); on the trained demo Deneb at that β: {trained.strength:.3g}"
    )
    return {
        "definition": "median over lora_A elements of mean|grad penalty| / RMS(grad CE), first "
                      f"{STRENGTH_STEPS} optimizer steps (hikari.training.strength)",
        "reference": {"strength": reference.strength, "norm_ratio": reference.norm_ratio,
                      "share_a_dominated": reference.share_a_dominated, "beta": reference.beta,
                      "file": str(reference_strength_path("antares")), **{k: reference.meta.get(k) for k in
                      ("model", "hidden_size", "text_layers", "vision_blocks", "settings", "lr_schedule_steps")}},
        "tiny_at_published_beta": {"beta": literal_beta, "strength": tiny_at_literal},
        "measurements": [{"beta": r.beta, "strength": r.strength, "norm_ratio": r.norm_ratio,
                          "share_a_dominated": r.share_a_dominated} for r in results],
        "converged": matched.converged,
        "beta_8b_equivalent": beta,
        "ratio_to_published": beta / literal_beta,
        "trained_deneb_at_equivalent_beta": {"beta": beta, "strength": trained.strength,
                                             "norm_ratio": trained.norm_ratio},
        "trained_deneb_at_published_beta": {"beta": literal_beta, "strength": trained_literal.strength,
                                            "norm_ratio": trained_literal.norm_ratio},
    }  # fmt: skip


def _evaluate_base_captions(base: Path, data_dir: Path, split: Path, out: Path) -> dict[str, Any]:
    """Caption metrics of the untrained (only generically pre-trained) base model on the val part."""
    out.unlink(missing_ok=True)  # the base model directory is rebuilt each run: never resume stale lines
    run_predict(
        str(base), data_dir, split, "caption", out, part="val", batch_size=16, image_max_size=DEMO_IMAGE_SIZE,
        progress=False,
    )
    return evaluate_captions(read_predictions(out))


_CAPTION_KEYS = ("bleu_1", "bleu_2", "bleu_4", "rouge_1", "rouge_l", "mention_rate", "generated_words_mean", "reference_words_mean", "n")


def _stage3_entry(row: AblationRow) -> dict[str, Any]:
    """A Stage 3 recipe's report entry: caption metrics + the ablation's collapse verdicts."""
    return {**row.metrics, "distinct_2": row.distinct_2, "low_diversity": row.low_diversity,
            "collapse_detected": row.collapse_detected, "collapse_cause": row.collapse_cause,
            "guard_fired": row.guard_fired, "delta_w_norm": row.final_delta_w_norm, "plot": row.plot}  # fmt: skip


def _pick(metrics: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: metrics[k] for k in keys if k in metrics}


def render_demo_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# HIKARI demo report",
        "",
        "Synthetic SkinCAP + tiny Qwen3-VL on CPU. Numbers measure the pipeline, not dermatology.",
        "",
        f"- split: `{report['split']}` {report['split_counts']}; audit overlaps: {report['audit']['overlaps']}",
        f"- base model: `{report['base_model']}`",
        "",
        "| stage | metric | value |",
        "|---|---|---|",
    ]
    for key in ("stage1", "stage2"):
        for metric, value in report[key].items():
            lines.append(f"| {key} | {metric} | {value} |")
    for metric, value in report.get("stage2_rag", {}).items():
        if isinstance(value, (int, float)):
            lines.append(f"| stage2_rag | {metric} | {value} |")
    lines += ["", "## Stage 3 (captions)", "", "| recipe | BLEU-1 | BLEU-2 | BLEU-4 | ROUGE-1 | ROUGE-L | mention % "
              "| words | distinct-2 | collapse | cause | guard fired |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for recipe, m in report["stage3"].items():
        columns = (*CAPTION_COLUMNS, "distinct_2")
        cells = [f"{m[k]:.2f}" if isinstance(m.get(k), (int, float)) else "–" for k in columns]
        flags = ["yes" if m.get("collapse_detected") else ("–" if "collapse_detected" not in m else "no"),
                 m.get("collapse_cause") or "–",
                 "yes" if m.get("guard_fired") else ("–" if "guard_fired" not in m else "no")]
        lines.append(f"| {recipe} | " + " | ".join(cells + flags) + " |")
    strength = report.get("penalty_strength")
    if strength:
        lines += ["", f"Rows `*_8b_eq` run at the derived 8B-equivalent β = {strength['beta_8b_equivalent']:.4g} "
                  f"(below); `*_beta1` are stress rows at β = {STRESS_BETA:g}, 100× the published value — not an "
                  "equivalence."]
        ref, tiny = strength["reference"], strength["tiny_at_published_beta"]
        steps = ", ".join(f"β {m['beta']:.3g} → {m['strength']:.3g}" for m in strength["measurements"])
        lines += [
            "", "## The penalty's 8B-equivalent strength", "",
            f"Relative strength = {strength['definition']}.", "",
            "| model | β | strength |", "|---|---|---|",
            f"| Qwen3-VL-8B width ({ref.get('text_layers')} text layers, random weights; shipped antares settings) "
            f"| {ref['beta']} | {ref['strength']:.4g} |",
            f"| tiny demo model (random weights; demo settings) | {tiny['beta']} | {tiny['strength']:.4g} |",
            f"| tiny demo model, matched | {strength['beta_8b_equivalent']:.4g} | "
            f"{strength['measurements'][-1]['strength']:.4g} |",
            "",
            f"Measurements: {steps}; converged: {strength['converged']}. The `*_8b_eq` rows above run at "
            f"β = {strength['beta_8b_equivalent']:.4g} ({strength['ratio_to_published']:.3g}× the published 0.01); "
            f"on the demo's trained Deneb (where the Stage 3 rows start) that β gives a strength of "
            f"{strength['trained_deneb_at_equivalent_beta']['strength']:.4g} and the published β "
            f"{strength['trained_deneb_at_published_beta']['strength']:.4g}. Gradient-norm ratio "
            f"‖∇pen‖/‖∇CE‖ at the published β: 8B width {ref['norm_ratio']:.3g}, tiny (random base) "
            f"{strength['measurements'][0]['norm_ratio']:.3g}, tiny (trained Deneb) "
            f"{strength['trained_deneb_at_published_beta']['norm_ratio']:.3g}.",
        ]  # fmt: skip
    lines += ["", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["timings_s"].items()]
    lines.append(f"| total | {report['wall_time_s']} |")
    return "\n".join(lines) + "\n"

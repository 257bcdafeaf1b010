"""The Stage 3 ablation: eval-set collapse diagnosis, plots, table, and a two-recipe run on the tiny default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hikari.config import load_config
from hikari.data import prompts as P
from hikari.training.ablation import (
    STAGE3_ABLATION,
    AblationArm,
    AblationRow,
    diagnose_run,
    plot_run_curves,
    render_ablation_markdown,
    run_stage3_ablation,
    stage2_inputs,
)

from .conftest import CHAIN_LR, CPU_OVERRIDES, StageChain

REFERENCE = ("The image shows a well demarcated brown plaque with irregular borders and fine scale on the back of "
             "the trunk; dermoscopy would help to exclude melanoma and a biopsy is recommended if it changes.")  # fmt: skip


def _write_run(
    run_dir: Path, outputs: list[str], *, guard: dict | None = None, history: list | None = None,
    references: list[str] | None = None,
) -> None:
    run_dir.mkdir(parents=True)
    references = references or [REFERENCE] * len(outputs)
    lines = [
        {"id": str(i), "file_name": f"{i}.png", "task": "caption", "raw_output": o, "parsed": o,
         "ground_truth": r, "disease": "melanoma"}
        for i, (o, r) in enumerate(zip(outputs, references))
    ]  # fmt: skip
    (run_dir / "predictions.val.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    metrics = {"train": {"log_history": history or []}, "eval": {"bleu_4": 1.0}, "guard": guard}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_diagnose_run_flags_previous_stage_one_liners_on_the_eval_set(tmp_path: Path) -> None:
    one_liner = P.stage2_target("melanoma")
    history = [{"step": s, "guard/delta_w_norm": 1e-6} for s in (10, 20, 30)]
    guard = {"detected": False, "cause": "", "evidence": {"penalty_grad_ratio": 40.0, "delta_w_norm": 1e-6,
                                                           "delta_w_relative": 1e-8}}  # fmt: skip
    _write_run(tmp_path / "collapsed", [one_liner] * 6, guard=guard, history=history)
    found = diagnose_run(tmp_path / "collapsed")
    assert found["report"].detected
    assert "previous-stage answers" in found["report"].cause
    assert "penalty-driven collapse" in found["report"].cause  # 40× ratio and a flat, negligible ΔW
    assert found["guard_fired"] is False and found["guard_step"] is None  # the guard's own verdict, separately
    _write_run(tmp_path / "stopped", [one_liner] * 6, guard={**guard, "detected": True, "cause": "x", "step": 160},
               history=history)  # fmt: skip
    assert diagnose_run(tmp_path / "stopped")["guard_step"] == 160  # where the guard confirmed (and stopped) it


def test_the_same_caption_for_every_image_is_repetition_judged_against_the_references(tmp_path: Path) -> None:
    varied = [REFERENCE, "A pink scaly patch on the elbow with silver scale, typical of psoriasis vulgaris.",
              "Multiple violet flat papules on the wrist; lichen planus is likely, a biopsy can confirm it here.",
              "Two pearly nodules with fine vessels on the nose suggest basal cell carcinoma; excision is advised.",
              "Comedones and inflamed pustules across the forehead of a teenager are consistent with acne vulgaris.",
              "An annular red plaque with central clearing on the cheek may indicate discoid lupus erythematosus."]
    same = [REFERENCE] * 6  # reference-length, no one-liners, but the same text for every image
    _write_run(tmp_path / "same", same, guard={"detected": False, "cause": "", "evidence": {}}, references=varied)
    found = diagnose_run(tmp_path / "same")
    assert found["distinct_2"] == pytest.approx(1 / 6, abs=0.01) and found["reference_distinct_2"] > 0.9
    assert found["report"].detected and found["report"].cause == "degenerate repetition"
    assert found["low_diversity"]
    # The same six captions against references that are themselves one template: nothing to blame.
    _write_run(tmp_path / "same_refs", same, guard={"detected": False, "cause": "", "evidence": {}}, references=same)
    assert not diagnose_run(tmp_path / "same_refs")["report"].detected
    _write_run(tmp_path / "varied", varied, guard={"detected": False, "cause": "", "evidence": {}}, references=varied)
    assert not diagnose_run(tmp_path / "varied")["low_diversity"]


def test_diagnose_run_stays_quiet_on_reference_like_captions(tmp_path: Path) -> None:
    varied = [REFERENCE, "A pink scaly patch on the elbow with silver scale, typical of psoriasis vulgaris.",
              "Multiple violet flat papules on the wrist; lichen planus is likely, a biopsy can confirm it here.",
              "An ulcerated nodule with a pearly rolled border on the nose suggests basal cell carcinoma today."]
    _write_run(tmp_path / "healthy", varied, guard={"detected": False, "cause": "", "evidence": {}})
    found = diagnose_run(tmp_path / "healthy")
    assert not found["report"].detected and found["report"].cause == ""


def test_plot_writes_a_png_with_loss_and_delta_w_curves(tmp_path: Path) -> None:
    history = [{"step": s, "loss/ce": 3.0 / s, "loss/weighted_ce": 2.0 / s, "loss/penalty": 0.01,
                "guard/delta_w_norm": 0.1 * s} for s in range(1, 6)]  # fmt: skip
    png = plot_run_curves(history, tmp_path / "r.png", title="r")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_markdown_table_has_one_row_per_recipe_with_collapse_columns() -> None:
    rows = [
        AblationRow("vega", "v", {"bleu_4": 12.345}, False, "", "", False, "", None, 0.5, 0.05, 0.34, True),
        AblationRow("antares", "a", {"bleu_4": 0.61}, True, "previous-stage answers", "m", True, "x", None, 1e-5),
        AblationRow("stopped", "s", {}, True, "previous-stage answers", "m", True, "x", None, guard_step=160),
    ]
    table = render_ablation_markdown(rows).splitlines()
    assert len(table) == 5
    assert table[2].startswith("| vega | – | – | 12.35 |") and "| 0.05 (low) | no |" in table[2]
    assert "| yes | previous-stage answers | yes |" in table[3]
    assert "| yes | previous-stage answers | yes (step 160) |" in table[4]


def test_stage2_inputs_requires_a_finished_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a finished HIKARI run"):
        stage2_inputs(tmp_path)


def test_every_ablation_recipe_is_a_caption_recipe_from_deneb() -> None:
    from hikari.config import load_config, resolve_recipe

    for name in STAGE3_ABLATION:
        config = load_config(resolve_recipe(name))
        assert config.task == "caption" and Path(config.model.previous_run).name == "deneb", name
    safe = load_config(resolve_recipe("sts_safe")).loss
    assert safe.sts and safe.penalty == "ibr_delta" and safe.normalize == "global"


def test_ablation_trains_evaluates_and_tabulates_from_one_stage2_run(stage_chain: StageChain, tmp_path: Path) -> None:
    deneb = stage_chain.get("deneb").out
    overrides = [o for o in CPU_OVERRIDES if not o.startswith("eval.enabled")]
    overrides += [f"train.learning_rate={CHAIN_LR}", "eval.limit=3", "eval.max_new_tokens=12",
                  "guard.n_probe=2", "guard.max_new_tokens=8"]  # fmt: skip
    arms = ("vega", "antares", AblationArm.parse("antares_b1=antares:loss.beta=1.0;loss.sigma2=2"))
    rows = run_stage3_ablation(deneb, tmp_path / "abl", recipes=arms, overrides=overrides, steps=3,
                              workers=2)  # the parallel path (spawned workers)
    assert [r.recipe for r in rows] == ["vega", "antares", "antares_b1"]
    saved = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [r["recipe"] for r in saved["rows"]] == ["vega", "antares", "antares_b1"]
    # an arm is its recipe with its own overrides on top of the common ones
    b1 = load_config(tmp_path / "abl" / "antares_b1" / "config.resolved.yaml")
    assert (b1.name, b1.loss.beta, b1.loss.sigma2, b1.train.max_steps) == ("antares", 1.0, 2.0, 3)
    assert load_config(tmp_path / "abl" / "antares" / "config.resolved.yaml").loss.beta == 0.01
    for row in rows:
        assert {"bleu_4", "rouge_1", "mention_rate", "generated_words_mean"} <= set(row.metrics)
        assert Path(row.plot).read_bytes()[:4] == b"\x89PNG"
        info = json.loads((Path(row.run_dir) / "run_info.json").read_text())
        assert Path(info["previous_run"]) == deneb
        assert isinstance(row.collapse_detected, bool)
    # antares runs the weighted loss + ibr_ab penalty: its penalty shows up in the plotted log
    log = json.loads((tmp_path / "abl" / "antares" / "metrics.json").read_text())["train"]["log_history"]
    assert any(e.get("loss/penalty", 0) > 0 for e in log)
    assert (tmp_path / "abl" / "ablation.md").read_text().count("\n") == 5


def test_ablation_arms_parse_and_refuse_clearly(tmp_path: Path) -> None:
    assert AblationArm.parse("vega") == AblationArm("vega", "vega")
    assert AblationArm.parse("x=antares") == AblationArm("x", "antares")
    assert AblationArm.parse("x=antares:loss.beta=1;train.seed=3").overrides == ("loss.beta=1", "train.seed=3")
    assert AblationArm.of("my/recipe.yaml").name == "recipe"
    with pytest.raises(ValueError, match="NAME=RECIPE"):
        AblationArm.parse("=antares")
    (tmp_path / "deneb").mkdir()
    (tmp_path / "deneb" / "config.resolved.yaml").write_text("data: {dir: d, split: s.json}\n")
    with pytest.raises(ValueError, match="distinct names"):
        run_stage3_ablation(tmp_path / "deneb", tmp_path / "o", recipes=["vega", AblationArm("vega", "antares")])

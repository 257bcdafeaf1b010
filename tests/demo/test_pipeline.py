"""`hikari demo` end to end on a small synthetic set with very short schedules: every artifact is produced and
the report has the keys the README promises (learning quality is what the full `make demo` measures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import hikari.demo.pipeline as demo


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_demo_runs_every_stage_and_writes_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "DEMO_STEPS", {k: 2 for k in demo.DEMO_STEPS})
    monkeypatch.setattr(demo, "PRETRAIN_STEPS", 2)
    monkeypatch.setattr(demo, "PRETRAIN_VISION_STEPS", 2)
    monkeypatch.setattr(demo, "ENCODER_STEPS", 2)
    monkeypatch.setattr(demo, "BOOTSTRAP", 50)
    monkeypatch.setattr(demo, "DEMO_OVERRIDES", [*demo.DEMO_OVERRIDES, "eval.limit=4"])
    out = tmp_path / "demo"
    report = demo.run_demo(out, n=150, seed=1)

    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["audit"]["overlaps"] == 0
    assert Path(saved["split"]).is_file()
    for key in ("accuracy", "balanced_accuracy", "f1_macro"):
        assert 0.0 <= saved["stage1"][key] <= 100.0
        assert 0.0 <= saved["stage2"][key] <= 100.0
    rows = ("rigel", "vega", "antares", "antares_8b_eq", "antares_ckpt_8b_eq", "sts_safe_8b_eq", "antares_beta1",
            "antares_ckpt_beta1")
    assert [k for k in saved["stage3"] if k != "base"] == list(rows)
    for recipe in rows:
        metrics = saved["stage3"][recipe]
        assert {"bleu_4", "rouge_1", "mention_rate"} <= set(metrics)
        assert isinstance(metrics["collapse_detected"], bool) and isinstance(metrics["collapse_cause"], str)
        assert Path(metrics["plot"]).is_file()
        for key in ("bleu_4", "rouge_1"):  # CIs of the ablation table's headline columns
            ci = metrics["ci"][key]
            assert ci["value"] == pytest.approx(metrics[key]) and ci["ci_low"] <= ci["value"] <= ci["ci_high"]
    refs = saved["stage2_references"]
    assert 0.0 <= refs["encoders"]["precision_at_1"] <= 100.0 and refs["encoders"]["steps"] == 2
    assert set(refs["retrieval_vote"]) == {"k1", "k3"}
    expected = {"deneb_none", "deneb_retrieved_k1", "deneb_retrieved_k3"}
    expected |= {f"sirius_{kind}_{k}" for kind in ("retrieved", "noise", "oracle") for k in ("none", "k1", "k3")}
    assert set(refs["rows"]) == expected and Path(refs["plot"]).is_file()
    stats = saved["statistics"]
    for stage in ("stage1_ci", "stage2_ci"):
        accuracy = stats[stage]["accuracy"]
        assert accuracy["ci_low"] <= accuracy["value"] <= accuracy["ci_high"]
    calibration = stats["calibration"]
    assert {"ece", "brier"} <= set(calibration["before"]) and {"ece", "brier"} <= set(calibration["after"])
    assert Path(calibration["reliability_png"]).is_file() and calibration["n"] == saved["split_counts"]["val"]
    assert set(stats["skin_type"]) == {"deneb", "vega"} and stats["skin_type"]["deneb"]["by"]["skin_band"]
    assert {"bleu_4", "rouge_1", "n"} <= set(saved["stage3"]["base"])  # the untrained reference point
    assert (out / "base.predictions.val.jsonl").is_file()
    for stage in ("subaru", "deneb", "stage3/rigel", "stage3/vega", "stage3/antares", "stage3/sts_safe_8b_eq"):
        assert (out / stage / "run_info.json").is_file()
        assert (out / stage / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "stage3" / "ablation.md").read_text().count("\n") == 10
    # The 8B-equivalent β: derived from the shipped 8B reference and the tiny model's own measurements, and used.
    strength = saved["penalty_strength"]
    beta = strength["beta_8b_equivalent"]
    assert strength["reference"]["hidden_size"] == 4096 and strength["reference"]["strength"] > 0
    assert strength["measurements"][0]["beta"] == 0.01 and beta > 0
    assert strength["tiny_at_published_beta"]["strength"] == strength["measurements"][0]["strength"]
    for name in ("antares_8b_eq", "antares_ckpt_8b_eq", "sts_safe_8b_eq"):
        resolved = (out / "stage3" / name / "config.resolved.yaml").read_text()
        assert f"beta: {beta}" in resolved, name
    assert "beta: 0.01" in (out / "stage3" / "antares" / "config.resolved.yaml").read_text()
    # vega is merged-init from deneb: its base is the merged Stage 2 model inside its own run directory
    vega_info = json.loads((out / "stage3" / "vega" / "run_info.json").read_text())
    assert vega_info["base_model"] == str(out / "stage3" / "vega" / "init-merged")
    rigel_info = json.loads((out / "stage3" / "rigel" / "run_info.json").read_text())
    deneb_info = json.loads((out / "deneb" / "run_info.json").read_text())
    assert rigel_info["base_model"] == deneb_info["base_model"]  # checkpoint-init keeps Deneb's base
    markdown = (out / "report.md").read_text()
    assert "| stage1 | accuracy |" in markdown and "| antares |" in markdown
    assert "## The penalty's 8B-equivalent strength" in markdown
    assert "## Calibration" in markdown and "#### By skin type" in markdown
    assert "## Stage 2 with references" in markdown

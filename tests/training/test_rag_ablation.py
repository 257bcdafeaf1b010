"""`run_stage2_ablation` (the reference-quality sweep) on the test stage chain with very short schedules: every row,
the retrieval-only baseline, the table and the plot are produced, and each model saw the references it should
(learning quality is what `make demo` measures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hikari.data.labels import DISEASES
from hikari.training.rag_ablation import run_stage2_ablation
from tests.training.conftest import CPU_OVERRIDES, one_torch_thread, stage_chain  # noqa: F401  (fixtures)


def test_stage2_ablation_rows_references_and_outputs(stage_chain, tiny_encoders_dir: Path,  # noqa: F811
                                                     tmp_path: Path) -> None:  # fmt: skip
    deneb = stage_chain.get("deneb")
    overrides = [o for o in CPU_OVERRIDES if o != "eval.enabled=false"] + ["eval.limit=6", "prompts.eval_prompt=T0"]
    out = tmp_path / "ablation"
    report = run_stage2_ablation(deneb.out, out, encoder=tiny_encoders_dir, overrides=overrides, steps=2)
    rows = {r["name"]: r for r in report["rows"]}
    expected = {"deneb_none", "deneb_retrieved_k1", "deneb_retrieved_k3"}
    expected |= {f"sirius_{kind}_{k}" for kind in ("retrieved", "noise", "oracle") for k in ("none", "k1", "k3")}
    assert set(rows) == expected
    assert all(0.0 <= r["accuracy"] <= 100.0 and r["n"] == 6 for r in rows.values())
    # The references shown decide precision@1: oracle always right, noise always wrong, none without references.
    assert rows["sirius_oracle_k1"]["precision_at_1"] == 100.0 and rows["sirius_noise_k3"]["precision_at_1"] == 0.0
    assert rows["sirius_oracle_none"]["precision_at_1"] is None and rows["deneb_none"]["shown"] == "none"
    assert rows["deneb_retrieved_k1"]["precision_at_1"] == report["retrieval"]["precision_at_1"]
    for row in rows.values():  # each prediction file used the prompt of its K
        prompts = {json.loads(x)["prompt_id"] for x in Path(row["predictions"]).open()}
        assert prompts == {"T0" if row["k"] == 0 else f"T0+rag{row['k']}"}, row["name"]
    labels = {}
    for row in (rows["sirius_oracle_k3"], rows["sirius_noise_k3"]):  # the references each model was trained on
        info = json.loads((out / row["model"] / "run_info.json").read_text())
        assert info["rag"]["references"] == row["trained_with"] and info["name"] == "sirius"
        assert Path(info["previous_run"]) == stage_chain.root / "subaru"
        labels[row["model"]] = row
    vote = report["retrieval"]["vote"]
    assert set(vote) == {"k1", "k3"} and all(0.0 <= v["accuracy"] <= 100.0 for v in vote.values())
    assert set(vote["k3"]["per_class"]) == set(DISEASES)
    assert json.loads((out / "ablation.json").read_text()) == json.loads(json.dumps(report))
    table = (out / "ablation.md").read_text()
    assert "retrieval-only vote" in table and "sirius_noise" in table
    assert (out / "accuracy_vs_precision.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage2_ablation_needs_one_retrieval_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of encoder"):
        run_stage2_ablation(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="unknown reference kinds"):
        run_stage2_ablation(tmp_path, tmp_path / "out", encoder="R2", kinds=["random"])

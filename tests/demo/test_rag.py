"""`run_stage2_rag` (the demo's RAG step) on the test stage chain with very short schedules: every number and
artifact the demo report needs is produced (learning quality is what the full `make demo` measures)."""

from __future__ import annotations

import json
from pathlib import Path

from hikari.demo.rag import run_stage2_rag
from tests.training.conftest import CPU_OVERRIDES, one_torch_thread, stage_chain  # noqa: F401  (fixtures)


def test_run_stage2_rag_reports_accuracy_without_refs_k1_k3(stage_chain, tmp_path: Path) -> None:  # noqa: F811
    deneb = stage_chain.get("deneb")
    overrides = [o for o in CPU_OVERRIDES if o != "eval.enabled=false"] + ["eval.limit=4", "prompts.eval_prompt=T0"]
    out = tmp_path / "rag"
    report = run_stage2_rag(out, stage_chain.data_dir, stage_chain.split, deneb.out, stage_chain.base_model,
                            overrides, steps=2)  # fmt: skip
    for key in ("without_refs", "k1", "k3", "deneb_k3", "retrieval_top1_label_precision"):
        assert 0.0 <= report[key] <= 100.0, key
    assert report["n"] == 4 and report["k_train"] == 1 and report["train_steps"] == 2
    assert json.loads((out / "stage2_rag.json").read_text()) == json.loads(json.dumps(report))
    prompt_ids = {name: {json.loads(x)["prompt_id"] for x in (out / f"predictions.{name}.val.jsonl").open()}
                  for name in ("without_refs", "k1", "k3", "deneb_k3")}  # fmt: skip
    assert prompt_ids == {"without_refs": {"T0"}, "k1": {"T0+rag1"}, "k3": {"T0+rag3"}, "deneb_k3": {"T0+rag3"}}
    info = json.loads((Path(report["run"]) / "run_info.json").read_text())
    assert info["name"] == "sirius" and info["rag"]["k_train"] == 1
    assert Path(info["previous_run"]) == stage_chain.root / "subaru"

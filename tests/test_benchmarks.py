"""`benchmarks/gpu_8b.py --tiny`: the GPU check's whole matrix at tiny size on the CPU, so that the one command a
GPU session runs keeps working (every arm trains or says why it was skipped, and the loss paths agree)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    markdown = tmp_path_factory.mktemp("gpu") / "gpu.md"
    result = subprocess.run([sys.executable, "benchmarks/gpu_8b.py", "--tiny", "--no-tests", "--markdown",
                             str(markdown)], cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert markdown.read_text().count("\n| ") == len(lines) + 1  # a table row per arm, plus the header
    return {row["arm"]: row for row in lines}


def test_every_arm_trains_or_says_why_not(rows: dict[str, dict]) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_8b

    assert list(rows) == [arm.name for arm in gpu_8b.ARMS]
    for name, row in rows.items():
        assert row.get("loss_finite") is True or row.get("skipped"), (name, row)
    assert "CUDA" in rows["loss_liger"]["skipped"]  # Liger's kernels need a GPU


def test_the_arms_change_what_they_say(rows: dict[str, dict]) -> None:
    k0, k1, k3 = rows["stage2_k0"], rows["stage2_k1"], rows["stage2_k3"]
    assert k1["image_tokens"] == 2 * k0["image_tokens"] and k3["image_tokens"] == 4 * k0["image_tokens"]
    assert rows["micro_batch_4"]["supervised_tokens"] > 3 * rows["stage3_plain"]["supervised_tokens"]
    assert rows["stage3_plain"]["supervised_tokens"] > k0["supervised_tokens"]  # a caption is longer than a label


def test_our_fused_loss_gives_transformers_gradients(rows: dict[str, dict]) -> None:
    """transformers' own loss (full logits) and our fused weighted CE with unit weights: the same LoRA gradients,
    up to bf16 rounding (the tiny model runs in bf16, as the recipes do)."""
    row = rows["loss_transformers"]
    assert row["grad_cosine_vs_fused"] > 0.9999
    assert row["grad_rel_diff_vs_fused"] < 0.05


def test_serve_benchmark_prints_one_json_line(tiny_model_dir: Path, rag_index_dir: Path, synth_dir: Path) -> None:
    """benchmarks/serve.py on the test models, small: every level measured, the ratios computed from them."""
    model = str(tiny_model_dir)
    result = subprocess.run([sys.executable, "benchmarks/serve.py", "--stage1", model, "--stage2", model, "--stage3",
                             model, "--index", str(rag_index_dir), "--images", str(synth_dir / "skincap"),
                             "--requests", "4", "--concurrency", "1,2", "--max-new-tokens", "4"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = [line for line in result.stdout.splitlines() if line.startswith("{")]
    row = json.loads(line)
    assert set(row["server"]) == {"c1", "c2"} and row["in_process"]["n"] == row["server"]["c2"]["n"] == 4
    assert row["overhead_ratio_c1"] == round(row["server"]["c1"]["p50_ms"] / row["in_process"]["p50_ms"], 3)
    unbatched = row["server_max_batch_1_c2"]
    assert row["batching_gain_c2"] == round(row["server"]["c2"]["req_per_s"] / unbatched["req_per_s"], 3)


def test_penalty_strength_benchmark_runs_the_shipped_settings_on_any_base(
    tiny_model_dir: Path, synth_dir: Path, synth_split: Path, tmp_path: Path
) -> None:
    """benchmarks/penalty_strength.py with --base/--data/--split (the GPU user's command) on the tiny model: the
    shipped antares settings (4-bit, 8-bit AdamW, checkpointing) run and one PenaltyStrength line is printed; the
    shipped reference file is not touched without --write."""
    reference = (ROOT / "src/hikari/recipes/reference_strength/antares.json").read_bytes()
    result = subprocess.run([sys.executable, "benchmarks/penalty_strength.py", "--base", str(tiny_model_dir),
                             "--data", str(synth_dir), "--split", str(synth_split), "--steps", "3",
                             "--schedule-steps", "20", "--work", str(tmp_path), "--threads", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = [line for line in result.stdout.splitlines() if line.startswith("{")]
    row = json.loads(line)
    assert row["penalty"] == "ibr_ab" and row["beta"] == 0.01 and row["steps"] == 3
    assert row["strength"] > 0 and row["meta"]["model"] == str(tiny_model_dir)
    resolved = (tmp_path / "runs" / "antares" / "config.resolved.yaml").read_text()
    assert "optim: adamw_8bit" in resolved and "load_in_4bit: true" in resolved and "sts: true" in resolved
    assert (ROOT / "src/hikari/recipes/reference_strength/antares.json").read_bytes() == reference


def test_retrieval_benchmark_measures_the_shipped_index_on_every_workload() -> None:
    """benchmarks/retrieval.py, tiny: each workload (three cluster spreads, the demo encoders' embeddings) gets the
    library's own index with its defaults (nlist √n, nprobe tuned) and reports what it chose and what that gives."""
    from hikari.retrieval.index import default_nlist

    result = subprocess.run([sys.executable, "benchmarks/retrieval.py", "--n", "3000", "--clusters", "30", "--d-img",
                             "16", "--d-txt", "16", "--synth-rows", "120", "--encoder-steps", "2", "--batch", "32",
                             "--threads", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = [line for line in result.stdout.splitlines() if line.startswith("{")]
    out = json.loads(line)
    assert list(out["workloads"]) == ["sigma1", "sigma3", "sigma6", "encoders"]
    for name, row in out["workloads"].items():
        assert row["nlist"] == default_nlist(3000), name  # nothing private: the library chose
        assert row["tuning_curve"] and row["tuning_reason"], name
        if row["search"] == "exact":
            assert row["nprobe"] is None and row["recall_at_10"] == 1.0, name
        else:
            assert row["search"] == "approximate" and row["tuned_recall_at_10"] >= 0.95, name
            assert row["nprobe"] == row["tuning_curve"][-1]["nprobe"], name
        assert row["exact_ms_per_query"] > 0 and row["approx_ms_per_query"] > 0 and row["peak_rss_gb"] > 0, name
        assert set(row["targets_met"]) >= {"recall_at_10", "exact_vs_numpy"}, name
        assert ("speedup" in row["targets_met"]) == (row["search"] == "approximate"), name
    assert [out["workloads"][f"sigma{s}"]["sigma"] for s in (1, 3, 6)] == [1.0, 3.0, 6.0]
    encoders = out["workloads"]["encoders"]
    assert encoders["synth_rows"] == 120 and encoders["base_train"] > 0 and encoders["val"] > 0

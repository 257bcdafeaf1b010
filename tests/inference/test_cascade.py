"""The cascade (Stage 1 → Stage 2 with references → guided Stage 3) on synthetic images and the tiny Qwen3-VL,
as a library call and through `hikari cascade`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hikari.data import prompts as P
from hikari.data.labels import DISEASES, GROUPS, UNKNOWN
from hikari.inference import cascade as cascade_module
from hikari.inference.cascade import render_summary, run_cascade


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training-run-shaped directory: run_info.json naming the tiny base + a fresh LoRA adapter."""
    from hikari.models.load import load_model, load_processor
    from hikari.models.lora import add_lora

    out = tmp_path_factory.mktemp("cascade_run")
    model = add_lora(load_model(tiny_model_dir, dtype="fp32"), r=4, alpha=4, dropout=0.0, target="language", seed=0)
    model.save_pretrained(out / "adapter")
    load_processor(tiny_model_dir).save_pretrained(out / "adapter")
    (out / "run_info.json").write_text(json.dumps({"base_model": str(tiny_model_dir), "adapter": "adapter"}))
    return out


def _images(synth_split: Path, synth_dir: Path, part: str, n: int) -> list[Path]:
    names = json.loads(synth_split.read_text())["parts"][part]["file_names"][:n]
    return [synth_dir / "skincap" / name for name in names]


def test_cascade_with_references_and_generated_query_captions(
    tiny_model_dir: Path, run_dir: Path, rag_index_dir: Path, synth_dir: Path, synth_split: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, list]] = []
    run = cascade_module.StagesOneAtATime.run

    def spy(self, stage, batch, max_new_tokens, choices=None):  # type: ignore[no-untyped-def]
        calls.append((stage, batch))
        return run(self, stage, batch, min(max_new_tokens, 6), choices)

    monkeypatch.setattr(cascade_module.StagesOneAtATime, "run", spy)
    images = _images(synth_split, synth_dir, "train", 2) + _images(synth_split, synth_dir, "val", 1)
    results = run_cascade(images, stage1=tiny_model_dir, stage2=run_dir, stage3=tiny_model_dir, refs=rag_index_dir,
                          k=3, texts=[None, "red scaly plaque", None], dtype="fp32", device="cpu",
                          image_max_size=96)  # fmt: skip
    assert [r.image for r in results] == [str(p) for p in images]
    # stage 1, the unguided stage 3 captions for the two images without user text, stage 2, guided stage 3
    assert [len(b) for _, b in calls] == [3, 2, 3, 3]
    assert [stage for stage, _ in calls] == ["stage1", "stage3", "stage2", "stage3"]
    for r, path in zip(results, images, strict=True):
        assert r.group in (*GROUPS, UNKNOWN) and r.diagnosis in (*DISEASES, UNKNOWN)
        # exact answer scoring on the transformers engine: a distribution over the 4 groups and the 10 diseases
        assert list(r.group_probabilities) == list(GROUPS)
        assert sum(r.group_probabilities.values()) == pytest.approx(1, abs=1e-5)
        assert list(r.disease_probabilities) == list(DISEASES)
        assert sum(r.disease_probabilities.values()) == pytest.approx(1, abs=1e-5)
        assert set(r.timings_ms) == {"stage1", "stage3_query", "retrieval", "stage2", "stage3"}
        assert len(r.references) == 3 and path.name not in {ref["file_name"] for ref in r.references}
        assert set(r.raw) >= {"stage1", "stage2", "stage3"}
    assert [r.query_text_source for r in results][1] == "user" and results[1].query_text == "red scaly plaque"
    assert results[1].references[0]["cos_text"] is not None
    # Stage 2 saw 3 reference images + the query; Stage 3 was guided by the Stage 2 answer.
    stage2_batch, stage3_batch = calls[2][1], calls[3][1]
    for messages, r in zip(stage2_batch, results, strict=True):
        content = messages[0]["content"]
        assert sum(c["type"] == "image" for c in content) == 4
        labels = [c["text"].split("\n")[0] for c in content if c["type"] == "text" and c["text"].startswith("Ref")]
        assert labels == [f"Reference {i}: {ref['label']}" for i, ref in enumerate(r.references, 1)]
    for messages, r in zip(stage3_batch, results, strict=True):
        assert messages[0]["content"][-1]["text"].startswith(P.GUIDED_PREFIX.format(label=r.diagnosis))
    summary = render_summary(results)
    assert summary.count("Stage 2 diagnosis:") == 3 and "references" in summary
    json.dumps([r.to_dict() for r in results])


def test_cascade_without_references_and_via_cli(tiny_model_dir: Path, synth_dir: Path, synth_split: Path,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hikari.cli import app

    run = cascade_module.StagesOneAtATime.run
    monkeypatch.setattr(cascade_module.StagesOneAtATime, "run",
                        lambda self, stage, batch, n, choices=None: run(self, stage, batch, min(n, 4), choices))
    images = _images(synth_split, synth_dir, "val", 2)
    out = tmp_path / "cascade.json"
    result = CliRunner().invoke(app, ["cascade", *map(str, images), "--stage1", str(tiny_model_dir), "--stage2",
                                      str(tiny_model_dir), "--stage3", str(tiny_model_dir), "--dtype", "fp32",
                                      "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Stage 1 group:" in result.output
    saved = json.loads(out.read_text())
    assert len(saved) == 2 and all(r["references"] == [] and r["query_text_source"] == "none" for r in saved)
    bad = CliRunner().invoke(app, ["cascade", str(tmp_path / "missing.png"), "--stage1", str(tiny_model_dir),
                                   "--stage2", str(tiny_model_dir), "--stage3", str(tiny_model_dir)])  # fmt: skip
    assert bad.exit_code == 2 and "missing.png" in bad.output

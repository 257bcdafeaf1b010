"""`run_predict` / `hikari predict --refs` with reference cases in the Stage 2 prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hikari.data.split import read_split_records
from hikari.inference.predict import run_predict


def test_run_predict_shows_k_references_per_item(synth_dir: Path, synth_split: Path, rag_index_dir: Path,
                                                 tiny_engine, tmp_path: Path) -> None:
    from hikari.retrieval.references import references_for_prediction

    records = read_split_records(synth_dir, synth_split, ["val"]).parts["val"][:3]
    refs = references_for_prediction(rag_index_dir, records, k=3, reference_text="label")
    seen: list = []

    class Spy:
        name = "transformers"

        def generate(self, batch, *, max_new_tokens, temperature=0.0):  # type: ignore[no-untyped-def]
            seen.extend(batch)
            return tiny_engine.generate(batch, max_new_tokens=max_new_tokens)

    out = tmp_path / "pred.jsonl"
    summary = run_predict("tiny", synth_dir, synth_split, "disease", out, prompt="T0", engine=Spy(), limit=3,
                          max_new_tokens=3, references=refs, progress=False, image_max_size=96)  # fmt: skip
    assert summary.complete and summary.prompt_id == "T0+rag3"
    assert len(seen) == 3
    for messages, record in zip(seen, records, strict=True):
        content = messages[0]["content"]
        assert sum(c["type"] == "image" for c in content) == 4
        labels = [c["text"] for c in content if c["type"] == "text" and c["text"].startswith("Reference")]
        assert labels == [f"Reference {i}: {r[1]}" for i, r in enumerate(refs[record.file_name], 1)]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert {x["prompt_id"] for x in lines} == {"T0+rag3"}

    with pytest.raises(ValueError, match="no references"):
        run_predict("tiny", synth_dir, synth_split, "disease", tmp_path / "p2.jsonl", engine=Spy(), limit=3,
                    references={}, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="disease task"):
        run_predict("tiny", synth_dir, synth_split, "group", tmp_path / "p3.jsonl", engine=Spy(), limit=3,
                    references=refs, progress=False)  # fmt: skip


def test_an_index_holding_the_evaluated_images_is_refused(synth_dir: Path, synth_split: Path,
                                                          rag_index_dir: Path) -> None:
    from hikari.retrieval.references import references_for_prediction

    train = read_split_records(synth_dir, synth_split, ["train"]).parts["train"][:2]
    with pytest.raises(ValueError, match="holds 2 of the images"):
        references_for_prediction(rag_index_dir, train, k=1)


def test_cli_predict_with_refs(synth_dir: Path, synth_split: Path, rag_index_dir: Path, tiny_model_dir: Path,
                               tmp_path: Path) -> None:
    from hikari.cli import app

    out = tmp_path / "cli.jsonl"
    result = CliRunner().invoke(app, [
        "predict", "--model", str(tiny_model_dir), "--data", str(synth_dir), "--split", str(synth_split),
        "--task", "disease", "--out", str(out), "--limit", "2", "--max-new-tokens", "2", "--refs", str(rag_index_dir),
        "-k", "2", "--prompt", "T0",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {json.loads(x)["prompt_id"] for x in out.read_text().splitlines()} == {"T0+rag2"}

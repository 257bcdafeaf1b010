"""`hikari retrieve build/query`: thin wrappers; errors exit 2 with the reason."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hikari.cli import app


def test_build_then_query_prints_references_with_scores(
    synth_dir: Path, synth_split: Path, tiny_encoders_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "index"
    result = CliRunner().invoke(app, ["retrieve", "build", "--data", str(synth_dir), "--split", str(synth_split),
                                      "--encoder", str(tiny_encoders_dir), "--alpha", "0.7", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "index.json").is_file() and json.loads((out / "index.json").read_text())["alpha"] == 0.7
    image = synth_dir / "skincap" / json.loads(synth_split.read_text())["parts"]["train"]["file_names"][0]
    result = CliRunner().invoke(app, ["retrieve", "query", str(out), str(image), "--text", "red plaque", "-k", "2",
                                      "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output.strip().splitlines()[-1])
    assert len(hits) == 2 and all({"score", "cos_image", "cos_text", "label"} <= set(h) for h in hits)
    assert image.name not in {h["file_name"] for h in hits}  # the query picture itself is excluded
    table = CliRunner().invoke(app, ["retrieve", "query", str(out), str(image), "-k", "3"])
    assert table.exit_code == 0 and "score" in table.output


def test_unknown_encoder_exits_2_listing_the_valid_names(synth_dir: Path, synth_split: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["retrieve", "build", "--data", str(synth_dir), "--split", str(synth_split),
                                      "--encoder", "R7", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "unknown encoder 'R7'" in result.output and "R2" in result.output


def test_evaluate_gives_precision_and_the_vote_metrics(rag_index_dir: Path, synth_dir: Path,
                                                       synth_split: Path) -> None:  # fmt: skip
    result = CliRunner().invoke(app, ["retrieve", "evaluate", str(rag_index_dir), "--data", str(synth_dir),
                                      "--split", str(synth_split), "-k", "1", "-k", "3", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    n_val = len(json.loads(synth_split.read_text())["parts"]["val"]["file_names"])
    assert report["n"] == n_val and set(report["vote"]) == {"k1", "k3"}
    assert 0.0 <= report["precision_at_1"] <= 100.0 and 0.0 <= report["precision_at_3"] <= 100.0
    for vote in report["vote"].values():
        assert {"accuracy", "balanced_accuracy", "f1_macro", "cohen_kappa", "mcc", "per_class"} <= set(vote)
        assert vote["n"] == n_val
    assert report["vote"]["k1"]["precision_at_1"] == report["precision_at_1"]
    table = CliRunner().invoke(app, ["retrieve", "evaluate", str(rag_index_dir), "--data", str(synth_dir),
                                     "--split", str(synth_split)])  # fmt: skip
    assert table.exit_code == 0 and "retrieval-only vote" in table.output and "precision@3" in table.output


def test_evaluate_refuses_the_indexed_part(rag_index_dir: Path, synth_dir: Path, synth_split: Path) -> None:
    result = CliRunner().invoke(app, ["retrieve", "evaluate", str(rag_index_dir), "--data", str(synth_dir),
                                      "--split", str(synth_split), "--part", "train"])  # fmt: skip
    assert result.exit_code == 2 and "query another part" in result.output

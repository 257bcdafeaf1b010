"""`hikari data synth` / `hikari data inspect`, through a local typer app (the root app imports every sub-app)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hikari.cli.data_read import inspect_command, synth_command
from hikari.data.labels import DISEASES, GROUPS
from hikari.data.skincap import CSV_NAME, XLSX_NAME, read_skincap
from hikari.demo.captions import MAX_WORDS
from hikari.demo.synth import CORRUPT_KINDS

app = typer.Typer()
app.command("synth")(synth_command)
app.command("inspect")(inspect_command)
runner = CliRunner()


def _inspect_json(*args: str) -> dict:
    result = runner.invoke(app, ["inspect", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_synth_writes_a_readable_folder_and_reports_bad_rows(tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = runner.invoke(app, ["synth", "--out", str(out), "--n", "100", "--seed", "3", "--corrupt"])
    assert result.exit_code == 0, result.output
    assert (out / CSV_NAME).is_file() and (out / XLSX_NAME).is_file()
    for kind in CORRUPT_KINDS:
        assert kind in result.output
    assert "Wrote 109 rows (100 good)" in " ".join(result.output.split())
    assert len(read_skincap(out).records) > 50


def test_synth_refuses_tiny_n(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", "--out", str(tmp_path / "x"), "--n", "5"])
    assert result.exit_code == 2
    assert "n >= 100" in result.output


def test_inspect_json_matches_the_reader(synth_corrupt_dir: Path) -> None:
    data = _inspect_json(str(synth_corrupt_dir))
    ds = read_skincap(synth_corrupt_dir)
    assert data["n_rows"] == ds.report.n_rows == 209
    assert data["n_used"] == len(ds.records)
    assert data["n_missing_images"] == 1
    assert data["skipped"] == {"empty_caption": 1, "missing_image": 1, "unknown_disease": 2,
                               "unreadable_image": 1, "unsafe_path": 1}  # fmt: skip
    assert set(data["per_disease"]) == set(DISEASES) == set(data["top_diseases"])
    assert set(data["per_group"]) == set(GROUPS)
    assert data["n_flagged"] > 0 and data["n_not_include_ignored"] > 0
    words = data["caption_words"]
    assert 40 <= words["min"] <= words["mean"] <= words["max"] <= MAX_WORDS
    assert {issue["row"] for issue in data["issues"]} == {i.row for i in ds.report.issues}


def test_inspect_options(synth_dir: Path) -> None:
    xlsx = _inspect_json(str(synth_dir), "--metadata", "xlsx")
    assert xlsx["caption_column"] == "caption_en" and xlsx["metadata"].endswith(XLSX_NAME)
    assert xlsx["n_used"] == _inspect_json(str(synth_dir))["n_used"]
    excluded = _inspect_json(str(synth_dir), "--exclude-flagged")
    assert excluded["n_used"] == xlsx["n_used"] - xlsx["n_flagged"]
    top3 = _inspect_json(str(synth_dir), "--top-k", "3")
    assert len(top3["per_disease"]) == 3
    zh = _inspect_json(str(synth_dir), "--caption-column", "caption_zh")
    assert zh["caption_column"] == "caption_zh"


def test_inspect_tables(synth_corrupt_dir: Path) -> None:
    result = runner.invoke(app, ["inspect", str(synth_corrupt_dir)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for expected in ("Rows per disease", "Rows per group", "Skipped rows by reason", "unsafe_path",
                     "missing images", "Caption length", "psoriasis", GROUPS[0]):  # fmt: skip
        assert expected in text, expected


@pytest.mark.parametrize("args", [["{missing}"], ["{data}", "--caption-column", "nope"]])
def test_inspect_errors_exit_2_with_a_message(args: list[str], synth_dir: Path, tmp_path: Path) -> None:
    argv = [a.format(missing=tmp_path / "missing", data=synth_dir) for a in args]
    result = runner.invoke(app, ["inspect", *argv])
    assert result.exit_code == 2
    assert "error" in result.output

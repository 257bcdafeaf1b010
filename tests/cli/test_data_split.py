"""`hikari data split` / `hikari data audit`: files written, leaks reported, exit codes 0 clean, 1 leak, 2 usage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hikari.cli import app
from hikari.data.split import load_split

WIDE = {"COLUMNS": "200"}  # rich wraps at the terminal width; keep summary lines on one line


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def split_file(runner: CliRunner, synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("split") / "split.json"
    result = runner.invoke(app, ["data", "split", "--data", str(synth_dir), "--out", str(out)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "Rows per part and disease" in result.output and "clean" in result.output
    assert "source_image=" in result.output  # groups merged, by reason
    return out


def test_split_writes_a_file_that_reads_back_and_is_reproducible(
    runner: CliRunner, synth_dir: Path, split_file: Path, tmp_path: Path
) -> None:
    info = load_split(split_file)
    assert info.format == "hikari" and set(info.parts) == {"train", "val"} and info.config["seed"] == 42
    again = tmp_path / "again.json"
    result = runner.invoke(app, ["data", "split", "--data", str(synth_dir), "--out", str(again)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == split_file.read_bytes()
    other = tmp_path / "seed7.json"
    args = ["data", "split", "--data", str(synth_dir), "--out", str(other), "--seed", "7", "--test-frac", "0.1"]
    assert runner.invoke(app, args, env=WIDE).exit_code == 0
    assert set(load_split(other).parts) == {"train", "val", "test"}


def test_split_reports_skipped_rows(runner: CliRunner, synth_corrupt_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    result = runner.invoke(app, ["data", "split", "--data", str(synth_corrupt_dir), "--out", str(out)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "Skipped rows:" in result.output and "missing_image=" in result.output
    assert out.is_file()


def test_split_fails_cleanly_on_a_folder_without_metadata(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "split", "--data", str(tmp_path), "--out", str(tmp_path / "s.json")])
    assert result.exit_code == 2 and "error" in result.output
    assert not (tmp_path / "s.json").exists()


def test_audit_of_a_clean_split_exits_0(runner: CliRunner, synth_dir: Path, split_file: Path) -> None:
    result = runner.invoke(app, ["data", "audit", str(split_file), "--data", str(synth_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["clean"] and all(report["checked"].values()) and report["notes"] == []
    assert runner.invoke(app, ["data", "audit", str(split_file)], env=WIDE).exit_code == 0


def test_audit_finds_planted_leaks_between_two_splits(
    runner: CliRunner, synth_dir: Path, synth_summary, tmp_path: Path
) -> None:
    (a, b), (c, d) = synth_summary.identical_pairs[0], synth_summary.same_source_pairs[0]
    e, f, _ = synth_summary.reencoded_pairs[0]
    path = "SkinCAP\\skincap\\{}.png".format
    train = {"train_image_paths": [path(x) for x in (a, c, e, "1")], "val_image_paths": [path("2")]}
    evaluation = {"train_image_paths": [path("3")], "val_image_paths": [path(x) for x in (b, d, f, "1")]}
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "eval.json").write_text(json.dumps(evaluation))
    args = ["data", "audit", "--train", str(tmp_path / "train.json"), "--eval", str(tmp_path / "eval.json")]

    result = runner.invoke(app, [*args, "--data", str(synth_dir), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    kinds = {(o["file_a"], o["file_b"]): o["kind"] for o in report["overlaps"]}
    assert kinds == {
        (f"{a}.png", f"{b}.png"): "identical_pixels",
        (f"{c}.png", f"{d}.png"): "source_image",
        (f"{e}.png", f"{f}.png"): "near_duplicate",
        ("1.png", "1.png"): "file_name",
    }
    assert report["n_overlapping_eval_items"] == 4 and report["reverse"]["clean"]

    # Without --data only the shared file name is visible, and the output says what was not checked.
    bare = runner.invoke(app, args, env=WIDE)
    assert bare.exit_code == 1
    assert "1 of 4 evaluation items" in bare.output and "not checked" in bare.output


def test_audit_of_the_original_hikari_splits_finds_46_of_104(runner: CliRunner, reference_dir: Path) -> None:
    train, evaluation = reference_dir / "split_info_fuzzytopk.json", reference_dir / "split_info_3stage.json"
    args = ["data", "audit", "--train", str(train), "--eval", str(evaluation)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["n_overlapping_eval_items"] == 46 and report["n_eval_items"] == 104
    assert report["reverse"]["n_overlapping_eval_items"] == 47 and report["reverse"]["n_eval_items"] == 105
    text = runner.invoke(app, args, env=WIDE)
    assert text.exit_code == 1 and "46 of 104 evaluation items" in text.output and "Reverse direction" in text.output
    assert runner.invoke(app, ["data", "audit", str(evaluation)]).exit_code == 0  # consistent on its own


@pytest.mark.parametrize(
    "args",
    [
        ["data", "audit"],
        ["data", "audit", "x.json", "--train", "a.json", "--eval", "b.json"],
        ["data", "audit", "--train", "a.json"],
    ],
)
def test_audit_needs_exactly_one_form(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--train" in result.output


def test_audit_of_a_missing_file_is_an_error_not_a_leak(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "audit", str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "nope.json" in result.output

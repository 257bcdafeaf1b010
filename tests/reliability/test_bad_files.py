"""Bad metadata, prediction and config files through the real commands: one line naming the file, the line or row
and the field, exit 2 (or the bad row skipped and counted), never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import Damaged, assert_clean_failure, hikari

CSV = "skincap_v240623.csv"


def folder_with_csv(damaged: Damaged, tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    """A copy of the damaged folder's metadata (images linked) with `edit(bytes) -> bytes` applied."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "skincap").symlink_to(damaged.root / "skincap", target_is_directory=True)
    (root / CSV).write_bytes(edit((damaged.root / CSV).read_bytes()))
    return root


def test_a_non_utf8_csv_names_its_line(damaged: Damaged, tmp_path: Path) -> None:
    def edit(data: bytes) -> bytes:
        lines = data.split(b"\n")
        lines[6] = lines[6].replace(b"e", b"\xe9", 1)  # Latin-1 'é' on line 7
        return b"\n".join(lines)

    assert_clean_failure(hikari("data", "inspect", str(folder_with_csv(damaged, tmp_path, edit))),
                         CSV, "line 7", "not UTF-8")  # fmt: skip


def test_a_short_row_is_skipped_and_named_and_a_bom_is_fine(damaged: Damaged, tmp_path: Path) -> None:
    def edit(data: bytes) -> bytes:
        lines = data.split(b"\n")
        lines[4] = b",".join(lines[4].split(b",")[:3])  # spreadsheet row 5 cut after three cells
        return b"\xef\xbb\xbf" + b"\n".join(lines)

    result = hikari("data", "inspect", str(folder_with_csv(damaged, tmp_path, edit)), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["skipped"].get("short_row") == 1
    assert any(i["row"] == 5 and "the row has 3 of" in i["message"] for i in report["issues"])


@pytest.fixture(scope="module")
def predictions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = [{"id": str(i), "file_name": f"{i}.png", "task": "disease", "raw_output": "psoriasis",
              "parsed": "psoriasis", "ground_truth": "psoriasis" if i % 2 else "acne vulgaris"} for i in range(8)]
    path = tmp_path_factory.mktemp("pred") / "p.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_repeated_ids_are_refused_or_deduplicated(predictions: Path, tmp_path: Path) -> None:
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_text(predictions.read_text() + predictions.read_text().split("\n", 4)[-1])  # lines 5-8 again
    assert_clean_failure(hikari("eval", "diagnosis", str(doubled)), "doubled.jsonl", "'4' ×2", "--dedupe")
    result = hikari("eval", "diagnosis", str(doubled), "--dedupe", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == 8 and "dropped 4 repeated line(s)" in result.stderr


@pytest.mark.parametrize(("name", "edit", "words"), [
    ("latin1.jsonl", lambda t: t.replace(b"acne", b"acn\xe9", 1), ("latin1.jsonl", "line 1", "not UTF-8")),
    ("truth.jsonl", lambda t: t.replace(b'"ground_truth": "psoriasis"', b'"ground_truth": "martian pox"', 1),
     ("truth.jsonl", "line 2", "id 1", "'martian pox'")),
    ("broken.jsonl", lambda t: t.replace(b'"task"', b'"task', 1), ("broken.jsonl", "line 1", "invalid JSON")),
    ("nofield.jsonl", lambda t: t.replace(b'"parsed"', b'"parsd"', 1), ("nofield.jsonl", "line 1", "parsed")),
])  # fmt: skip
def test_bad_prediction_files_name_file_line_and_field(predictions: Path, tmp_path: Path, name: str, edit,  # type: ignore[no-untyped-def]
                                                       words: tuple[str, ...]) -> None:  # fmt: skip
    bad = tmp_path / name
    bad.write_bytes(edit(predictions.read_bytes()))
    assert_clean_failure(hikari("eval", "diagnosis", str(bad)), *words)


def test_a_bom_prediction_file_is_read(predictions: Path, tmp_path: Path) -> None:
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + predictions.read_bytes())
    result = hikari("eval", "diagnosis", str(bom), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == 8


@pytest.mark.parametrize(("args", "words"), [
    (["--set", "train.epochs=[1"], ("train.epochs=[1", "not valid YAML", "line 1, column 3")),
    (["--set", "train.epochs=-1"], ("train.epochs",)),
    (["--set", "train.nonsense=1"], ("train.nonsense",)),
    (["--set", "data.dir=/nowhere/at/all"], ("/nowhere/at/all",)),
    (["--set", "data.split=/nowhere/split.json"], ("/nowhere/split.json", "no such file")),
])  # fmt: skip
def test_bad_settings_are_one_line(damaged: Damaged, tmp_path: Path, args: list[str], words: tuple[str, ...]) -> None:
    base = ["--set", f"data.dir={damaged.root}", "--set", f"data.split={damaged.split}", "--set",
            f"output_dir={tmp_path / 'run'}"]  # fmt: skip
    assert_clean_failure(hikari("train", "subaru", *base, *args), *words)
    assert not (tmp_path / "run" / "config.resolved.yaml").exists()  # nothing written for a run that never started


def test_bad_yaml_and_missing_recipe(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n  task: [group\n")
    assert_clean_failure(hikari("train", str(bad)), "bad.yaml", "line 2, column 7")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert_clean_failure(hikari("train", str(latin)), "latin.yaml", "not UTF-8")
    assert_clean_failure(hikari("train", str(tmp_path / "absent.yaml")), "absent.yaml")


def test_a_missing_model_is_named(damaged: Damaged, tmp_path: Path) -> None:
    result = hikari("predict", "--model", str(tmp_path / "no-model"), "--data", str(damaged.root), "--split",
                    str(damaged.split), "--task", "disease", "--out", str(tmp_path / "p.jsonl"))  # fmt: skip
    assert_clean_failure(result, "no-model")
    shutil.rmtree(tmp_path, ignore_errors=True)

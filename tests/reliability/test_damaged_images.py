"""Every command on a folder damaged after it was split: bad images are named and counted, never a crash; every good
item is done exactly once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hikari.evaluation.predictions import read_predictions

from .conftest import LEFT_OUT, UNREADABLE, VALID, Damaged, hikari


def test_inspect_names_every_bad_image(damaged: Damaged) -> None:
    result = hikari("data", "inspect", str(damaged.root), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    issues = {issue["message"] for issue in report["issues"]} if "issues" in report else set()
    text = json.dumps(report)
    for kind in ("truncated", "zero_byte", "not_an_image", "bomb", "missing", "directory", "link_outside"):
        name = damaged.val[kind]
        assert f"skincap/{name}" in text, (kind, name, sorted(issues)[:5])
    assert "400.0 megapixels" in text and "is a directory" in text and "outside the image folder" in text
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def predicted(damaged: Damaged, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    out = tmp_path_factory.mktemp("predict") / "val.jsonl"
    args = ["predict", "--model", str(tiny_model_dir), "--data", str(damaged.root), "--split", str(damaged.split),
            "--task", "disease", "--out", str(out), "--max-new-tokens", "3", "--batch-size", "4"]  # fmt: skip
    return hikari(*args), out, args


def test_predict_finishes_every_good_image_and_records_each_bad_one(damaged: Damaged, predicted: tuple) -> None:
    result, out, _ = predicted
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = read_predictions(out)
    by_name = {p.file_name: p for p in lines}
    assert len(by_name) == len(lines)  # one line per image
    left_out = {damaged.val[k] for k in LEFT_OUT}
    assert set(by_name) == set(damaged.val_names) - left_out  # nothing good lost
    for kind, words in UNREADABLE.items():
        line = by_name[damaged.val[kind]]
        assert line.status == "error" and damaged.val[kind] in line.extra["error"] and words in line.extra["error"]
    for kind in VALID:
        assert by_name[damaged.val[kind]].status == "success", kind
    errors = {p.file_name for p in lines if p.status == "error"}
    assert errors == {damaged.val[k] for k in UNREADABLE}
    for kind, words in LEFT_OUT.items():  # named in the summary
        assert damaged.val[kind] in result.stderr and words in result.stderr, (kind, result.stderr[-2000:])


def test_rerunning_predict_adds_nothing_and_eval_counts_each_image_once(damaged: Damaged, predicted: tuple) -> None:
    _, out, args = predicted
    before = out.read_bytes()
    again = hikari(*args)
    assert again.returncode == 0 and out.read_bytes() == before  # resumed: every id already there
    scored = hikari("eval", "diagnosis", str(out), "--json")
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert json.loads(scored.stdout)["n"] == len(read_predictions(out))
    retried = hikari(*args, "--retry-errors")  # still unreadable: the same error lines again, no duplicates
    assert retried.returncode == 0
    assert sorted(p.id for p in read_predictions(out)) == sorted(p.id for p in read_predictions_bytes(before, out))


def read_predictions_bytes(data: bytes, like: Path) -> list:
    copy = like.with_name("before.jsonl")
    copy.write_bytes(data)
    return read_predictions(copy)


def test_retrieve_build_leaves_out_the_unreadable_train_image(damaged: Damaged, tiny_encoders_dir: Path,
                                                             tmp_path: Path) -> None:  # fmt: skip
    result = hikari("retrieve", "build", "--data", str(damaged.root), "--split", str(damaged.split), "--encoder",
                    str(tiny_encoders_dir), "--out", str(tmp_path / "index"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads((tmp_path / "index" / "index.json").read_text())
    assert [s["file_name"] for s in info["skipped"]] == [damaged.train_bomb]
    assert "400.0 megapixels" in info["skipped"][0]["error"]
    assert "1 unreadable train image(s) left out" in result.stdout + result.stderr


def test_cascade_answers_the_readable_images_and_names_the_others(damaged: Damaged, tiny_model_dir: Path,
                                                                 tmp_path: Path) -> None:  # fmt: skip
    good, bomb, note = (damaged.image(damaged.val[k]) for k in ("rgba", "bomb", "not_an_image"))
    model = str(tiny_model_dir)
    result = hikari("cascade", str(good), str(bomb), str(note), "--stage1", model, "--stage2", model, "--stage3",
                    model, "--out", str(tmp_path / "c.json"), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "c.json").read_text())
    assert [r["error"] is None for r in rows] == [True, False, False]
    assert "400.0 megapixels" in rows[1]["error"] and damaged.val["not_an_image"] in rows[2]["error"]
    assert "2 of 3 image(s) could not be read" in result.stderr


def test_training_counts_the_unreadable_images_and_trains_on_the_rest(damaged: Damaged, tiny_model_dir: Path,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    from tests.training.conftest import CPU_OVERRIDES

    sets = [f"data.dir={damaged.root}", f"data.split={damaged.split}", f"output_dir={tmp_path / 'run'}",
            f"model.base={tiny_model_dir}", *CPU_OVERRIDES, "train.max_steps=1", "guard.policy=off"]  # fmt: skip
    result = hikari("train", "subaru", *(a for s in sets for a in ("--set", s)))
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["data"]["skipped"]["unreadable_image"] >= 5  # the train bomb and the val part's unreadable ones
    assert info["data"]["parts"]["val"] == len(damaged.val_names) - len(UNREADABLE) - len(LEFT_OUT)


def test_a_reference_deleted_after_the_index_was_built_is_named_and_the_queries_still_answered(
    damaged: Damaged, tiny_model_dir: Path, tiny_encoders_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    shutil.copytree(damaged.root, root, symlinks=True)
    built = hikari("retrieve", "build", "--data", str(root), "--split", str(damaged.split), "--encoder",
                   str(tiny_encoders_dir), "--out", str(tmp_path / "index"))  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    references = json.loads((tmp_path / "index" / "references.json").read_text())
    gone = [Path(r["image_path"]) for r in references[::2]]
    for path in gone:  # half the reference pictures, deleted after the index was built
        path.unlink()
    out = tmp_path / "rag.jsonl"
    result = hikari("predict", "--model", str(tiny_model_dir), "--data", str(root), "--split", str(damaged.split),
                    "--task", "disease", "--out", str(out), "--max-new-tokens", "2", "--refs", str(tmp_path / "index"),
                    "-k", "3", "--limit", "12")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = read_predictions(out)
    readable = [p for p in lines if p.file_name not in {damaged.val[k] for k in UNREADABLE}]
    assert readable and all(p.status == "success" for p in readable)  # no query blamed for its references
    assert "unreadable reference images" in result.stderr
    named = [p.name for p in gone if p.name in result.stderr]
    assert named, result.stderr[-2000:]

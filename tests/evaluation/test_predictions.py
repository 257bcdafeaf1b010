from __future__ import annotations

import json
from pathlib import Path

import pytest

from hikari.data.labels import DISEASES, GROUPS, UNKNOWN
from hikari.evaluation.predictions import (
    Prediction,
    PredictionFileError,
    append_predictions,
    completed_ids,
    exclude_file_names,
    infer_task,
    read_disease_labels,
    read_predictions,
    train_file_names,
)


def _ours(i: int, task: str = "disease", **kw: object) -> Prediction:
    base: dict[str, object] = {"id": str(i), "file_name": f"{i}.png", "task": task, "raw_output": "psoriasis",
                               "parsed": "psoriasis", "ground_truth": "psoriasis"}  # fmt: skip
    base.update(kw)
    return Prediction(**base)  # type: ignore[arg-type]


def test_jsonl_round_trip_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    first = [
        _ours(1, prompt_id="P0", model="m", engine="transformers", split="val"),
        _ours(2, task="caption", raw_output="<think>x</think>A plaque.", parsed="A plaque.",
              ground_truth="A red plaque.", disease="psoriasis"),
    ]  # fmt: skip
    assert append_predictions(path, first) == 2
    assert completed_ids(path) == {("1", "disease"), ("2", "caption")}
    assert append_predictions(path, [_ours(3, truncated=True, parsed=UNKNOWN, extra={"latency_ms": 12.5})]) == 1
    read = read_predictions(path)
    assert read[:2] == first
    assert read[2].truncated and read[2].extra == {"latency_ms": 12.5}
    assert completed_ids(tmp_path / "missing.jsonl") == set()


def test_minimal_jsonl_object_and_integer_id(tmp_path: Path) -> None:
    path = tmp_path / "p.json"  # a one-line JSONL file with a .json suffix is still ours
    path.write_text(json.dumps({"id": 7, "file_name": "7.png", "task": "group", "raw_output": "3",
                                "parsed": GROUPS[2]}) + "\n")  # fmt: skip
    (p,) = read_predictions(path)
    assert (p.id, p.ground_truth, p.truncated, p.status) == ("7", None, False, "success")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: invalid JSON"),
        ('["a list"]', "line 2: expected a JSON object"),
        ('{"id": "1", "file_name": "1.png", "task": "disease", "raw_output": "x"}', "line 2: missing field 'parsed'"),
        ('{"id": "1", "file_name": "1.png", "task": "stage9", "raw_output": "x", "parsed": "x"}',
         "line 2: field 'task' must be one of group, disease, caption"),
        ('{"id": "1", "file_name": 5, "task": "disease", "raw_output": "x", "parsed": "x"}',
         "line 2: field 'file_name' must be a string"),
        ('{"id": "1", "file_name": "1.png", "task": "disease", "raw_output": "x", "parsed": "x", "truncated": "no"}',
         "line 2: field 'truncated' must be true or false"),
        ('{"id": "1", "file_name": "1.png", "task": "disease", "raw_output": "x", "parsed": "x", "ground_truth": 3}',
         "line 2: field 'ground_truth' must be a string or null"),
    ],
)  # fmt: skip
def test_bad_jsonl_lines_name_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_ours(1).to_json()) + "\n" + line + "\n")
    with pytest.raises(PredictionFileError, match=message) as info:
        read_predictions(path)
    assert str(path) in str(info.value)


def test_interrupted_last_line_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl"
    path.write_text(json.dumps(_ours(1).to_json()) + '\n{"id": "2", "file_na')
    with pytest.raises(PredictionFileError, match="line 2: invalid JSON.*interrupted write"):
        read_predictions(path)


def test_original_formats(tmp_path: Path) -> None:
    path = tmp_path / "orig.json"
    items = [
        {"id": 10, "file_name": "10.png", "image_path": "SkinCAP\\skincap\\10.png", "ground_truth": DISEASES[0],
         "disease_group": GROUPS[0], "predicted_raw": "psoriasis vulgaris", "predicted": DISEASES[0],
         "status": "success"},
        {"id": "11", "file_name": "11.png", "image_path": "x", "ground_truth_caption": "ref",
         "generated_caption": "gen", "status": "error", "stage2_disease": "psoriasis"},
    ]  # fmt: skip
    path.write_text(json.dumps({"predictions": items, "metrics": {}}, indent=2))
    diag, cap = read_predictions(path)
    assert (diag.id, diag.task, diag.raw_output, diag.parsed, diag.ground_truth) == (
        "10", "disease", "psoriasis vulgaris", DISEASES[0], DISEASES[0])  # fmt: skip
    assert diag.extra["disease_group"] == GROUPS[0]
    assert (cap.task, cap.parsed, cap.ground_truth, cap.status) == ("caption", "gen", "ref", "error")
    # stage2_disease is a *prediction*: it is kept aside, never used as the ground-truth disease
    assert cap.disease is None and cap.extra["stage2_disease"] == "psoriasis"


def test_original_group_items_are_recognised(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    item = {"id": 1, "file_name": "1.png", "ground_truth": GROUPS[1], "predicted_raw": "2", "predicted": GROUPS[1]}
    path.write_text(json.dumps({"predictions": [item]}))
    assert read_predictions(path)[0].task == "group"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"predictions": {"a": 1}}, "predictions: expected a list"),
        ({"predictions": [{"id": 1, "file_name": "1.png"}]}, r"predictions\[0\]: neither a caption item"),
        ({"predictions": [{"id": 1, "file_name": "1.png", "generated_caption": "x"}]},
         r"predictions\[0\]: missing field 'ground_truth_caption'"),
        ({"predictions": [{"id": [1], "file_name": "1.png", "generated_caption": "x", "ground_truth_caption": "y"}]},
         r"predictions\[0\]: field 'id' must be a string"),
        ({"train_image_paths": []}, "not a prediction file"),
    ],
)  # fmt: skip
def test_bad_original_files(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content, indent=1))
    with pytest.raises(PredictionFileError, match=message):
        read_predictions(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PredictionFileError, match="not found"):
        read_predictions(tmp_path / "nope.jsonl")


def test_infer_task_and_exclude() -> None:
    preds = [_ours(1), _ours(2), _ours(3)]
    assert infer_task(preds) == "disease"
    with pytest.raises(ValueError, match="mix tasks"):
        infer_task([*preds, _ours(4, task="caption")])
    kept, dropped = exclude_file_names(preds, {"2.png", "99.png"})
    assert [p.id for p in kept] == ["1", "3"] and dropped == 1


def test_disease_labels_from_our_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    append_predictions(path, [_ours(1, ground_truth="acne vulgaris"),
                              _ours(2, task="caption", ground_truth="a caption", disease="scleroderma"),
                              _ours(3, task="caption", ground_truth="no disease known")])  # fmt: skip
    assert read_disease_labels(path) == {"1.png": "acne vulgaris", "2.png": "scleroderma"}


def test_disease_labels_from_our_split_file(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    path.write_text(json.dumps({
        "format": "hikari-split", "version": 1,
        "parts": {"train": {"ids": ["1"], "file_names": ["1.png"]}, "val": {"ids": ["2"], "file_names": ["2.png"]}},
        "labels": {"1.png": "psoriasis", "2.png": "acne vulgaris"},
    }))  # fmt: skip
    assert read_disease_labels(path) == {"1.png": "psoriasis", "2.png": "acne vulgaris"}
    assert train_file_names(path) == {"1.png"}


def test_reference_label_sources(reference_dir: Path) -> None:
    labels = read_disease_labels(reference_dir / "results_disease_fuzzytopk_s1cascade_RAGR2_a09_val_predictions.json")
    assert len(labels) == 99 and labels["10.png"] == "squamous cell carcinoma in situ"
    with pytest.raises(PredictionFileError, match="records no diseases"):
        read_disease_labels(reference_dir / "split_info_fuzzytopk.json")
    with pytest.raises(PredictionFileError, match="stage2_disease is a prediction"):
        read_disease_labels(reference_dir / "results_caption_merged_guided_val_predictions.json")
    train = train_file_names(reference_dir / "split_info_fuzzytopk.json")
    assert len(train) == 939 and "1766.png" in train


def test_reference_prediction_files_all_read(reference_dir: Path) -> None:
    for path in sorted(reference_dir.glob("results_*.json")):
        preds = read_predictions(path)
        assert len(preds) == 99, path.name
        assert len({p.file_name for p in preds}) == 99
        assert infer_task(preds) == ("caption" if "caption" in path.name else "disease")


def test_disease_labels_from_a_skincap_folder(tmp_path: Path) -> None:
    from hikari.demo.synth import write_synthetic_skincap

    write_synthetic_skincap(tmp_path / "skincap", n=100, seed=3)
    labels = read_disease_labels(tmp_path / "skincap")
    assert labels and set(labels.values()) <= set(DISEASES)
    assert all(name.endswith(".png") for name in labels)

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hikari.cli.eval import app
from hikari.data.labels import DISEASES, GROUPS, UNKNOWN
from hikari.evaluation.predictions import Prediction, append_predictions

runner = CliRunner()

VEGA = "results_caption_fuzzytopk_s1cascade_merged_init_stage3_val_predictions.json"
RIGEL = "results_caption_fuzzytopk_s1cascade_stage3_val_predictions.json"
GUIDED = "results_caption_merged_guided_val_predictions.json"
DENEB = "results_disease_fuzzytopk_s1cascade_RAGR2_a09_val_predictions.json"
SIRIUS = "results_disease_fuzzytopk_s1cascade_ragR2_a09_RAGR0_a09_val_predictions.json"
SPLIT = "split_info_fuzzytopk.json"


def _run_json(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # exactly one JSON object on stdout; messages went to stderr


def _rounded(metrics: dict[str, Any], keys: list[str]) -> dict[str, float]:
    return {k: round(metrics[k], 2) for k in keys}


# --- synthetic files (always run) ---------------------------------------------------------------------------------


@pytest.fixture
def mixed_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "preds.jsonl"
    preds = [
        Prediction("1", "1.png", "disease", "Final diagnosis: psoriasis", "psoriasis", ground_truth="psoriasis"),
        Prediction("2", "2.png", "disease", "This image shows bcc.", UNKNOWN, ground_truth="basal cell carcinoma"),
        Prediction("3", "3.png", "disease", "acne", "acne vulgaris", ground_truth="psoriasis"),
        Prediction("1", "1.png", "caption", "Red plaques of psoriasis.", "Red plaques of psoriasis.",
                   ground_truth="Silvery plaques consistent with psoriasis.", disease="psoriasis"),
        Prediction("2", "2.png", "caption", "<think>a pearly", "", ground_truth="A pearly papule.", truncated=True,
                   disease="basal cell carcinoma"),
        Prediction("3", "3.png", "caption", "Comedones on the face.", "Comedones on the face.",
                   ground_truth="Red plaques on the elbow.", disease="psoriasis"),
    ]  # fmt: skip
    append_predictions(path, preds)
    return path


@pytest.fixture
def our_split(tmp_path: Path) -> Path:
    path = tmp_path / "split.json"
    path.write_text(json.dumps({
        "format": "hikari-split", "version": 1,
        "parts": {"train": {"ids": ["3"], "file_names": ["3.png"]},
                  "val": {"ids": ["1", "2"], "file_names": ["1.png", "2.png"]}},
        "labels": {"1.png": "psoriasis", "2.png": "basal cell carcinoma", "3.png": "psoriasis"},
    }))  # fmt: skip
    return path


def test_diagnosis_json_shape_stored_and_reparsed(mixed_jsonl: Path) -> None:
    assert _run_json("diagnosis", str(mixed_jsonl))["task"] == "disease"  # caption items are not diagnoses
    m = _run_json("diagnosis", str(mixed_jsonl), "--task", "disease")
    assert {"n", "n_excluded", "accuracy", "balanced_accuracy", "f1_macro", "cohen_kappa", "mcc", "per_class",
            "confusion"} <= set(m)  # fmt: skip
    assert (m["task"], m["n"], m["n_excluded"], m["n_unknown"]) == ("disease", 3, 0, 1)
    assert m["accuracy"] == pytest.approx(100 / 3)
    r = _run_json("diagnosis", str(mixed_jsonl), "--task", "disease", "--reparse")
    assert r["accuracy"] == pytest.approx(200 / 3) and r["n_reparse_changed"] == 1
    g = _run_json("diagnosis", str(mixed_jsonl), "--task", "group")
    assert g["task"] == "group" and list(g["per_class"]) == list(GROUPS)
    assert g["accuracy"] == pytest.approx(100 / 3)  # 1.png right; 2.png Unknown; 3.png acne group ≠ group 1


def test_captions_json_shape_truncation_and_exclusion(mixed_jsonl: Path, our_split: Path) -> None:
    m = _run_json("captions", str(mixed_jsonl))
    assert {"n", "n_excluded", "n_truncated", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_1", "rouge_2",
            "rouge_l", "mention_rate"} <= set(m)  # fmt: skip
    assert (m["n"], m["n_truncated"], m["mention_rate"]) == (2, 1, 50.0)
    result = runner.invoke(app, ["captions", str(mixed_jsonl), "--exclude-train", str(our_split), "--json"])
    assert result.exit_code == 0, result.output
    assert "dropped 1 of 3" in result.stderr and "2 remain" in result.stderr
    m = json.loads(result.stdout)
    assert (m["n"], m["n_excluded"], m["mention_rate"]) == (1, 1, 100.0)
    # labels from our split file override the stored diseases
    m = _run_json("captions", str(mixed_jsonl), "--labels", str(our_split))
    assert m["mention_rate"] == 50.0


def test_rich_tables_without_json(mixed_jsonl: Path) -> None:
    result = runner.invoke(app, ["diagnosis", str(mixed_jsonl), "--task", "disease"])
    assert result.exit_code == 0
    assert "Balanced accuracy" in result.stdout and "Confusion matrix" in result.stdout
    result = runner.invoke(app, ["captions", str(mixed_jsonl)])
    assert result.exit_code == 0 and "BLEU-4" in result.stdout and "ROUGE-L" in result.stdout


def test_reports_are_written(mixed_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    runner.invoke(app, ["diagnosis", str(mixed_jsonl), "--task", "disease", "--report", str(out / "d"), "--json"])
    runner.invoke(app, ["captions", str(mixed_jsonl), "--report", str(out / "c"), "--json"])
    assert sorted(p.name for p in (out / "d").iterdir()) == [
        "confusion_matrix.png", "per_class.png", "report.json", "report.md"]  # fmt: skip
    assert sorted(p.name for p in (out / "c").iterdir()) == ["length_histogram.png", "report.json", "report.md"]
    report = json.loads((out / "d" / "report.json").read_text())
    assert report["kind"] == "diagnosis" and report["metrics"]["n"] == 3


def test_diagnosis_task_must_be_given_for_a_group_and_disease_file(tmp_path: Path, mixed_jsonl: Path) -> None:
    group = Prediction("9", "9.png", "group", "3", GROUPS[2], ground_truth=GROUPS[2])
    append_predictions(mixed_jsonl, [group])
    result = runner.invoke(app, ["diagnosis", str(mixed_jsonl)])
    assert result.exit_code == 2 and "mix tasks" in result.stderr
    m = _run_json("diagnosis", str(mixed_jsonl), "--task", "group")  # the group item alone, not the diseases
    assert (m["n"], m["accuracy"], m["cohen_kappa"]) == (1, 100.0, None)


def test_errors_exit_2_with_the_reason(tmp_path: Path, mixed_jsonl: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "file_name": "1.png", "task": "disease", "raw_output": "x"}\n')
    result = runner.invoke(app, ["diagnosis", str(bad)])
    assert result.exit_code == 2 and "line 1" in result.stderr and "parsed" in result.stderr
    result = runner.invoke(app, ["diagnosis", str(mixed_jsonl), "--task", "stage9"])
    assert result.exit_code == 2 and "--task must be one of" in result.stderr
    result = runner.invoke(app, ["captions", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2 and "not found" in result.stderr


def test_bertscore_unavailable_is_a_clear_error(mixed_jsonl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bert_score", None)  # `import bert_score` raises ImportError
    result = runner.invoke(app, ["captions", str(mixed_jsonl), "--bertscore"])
    assert result.exit_code == 2 and "pip install 'hikari[bertscore]'" in result.stderr


# --- the original HIKARI files (skipped when absent) ----------------------------------------------------------------

BLEU_ROUGE = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_1", "rouge_2", "rouge_l"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (VEGA, [42.22, 35.19, 31.55, 29.33, 53.55, 36.33, 46.10, 62.63]),
        (RIGEL, [29.22, 18.65, 13.03, 9.82, 38.90, 15.71, 27.89, 47.47]),
        (GUIDED, [35.68, 22.85, 16.65, 13.11, 41.20, 17.36, 29.04, 78.79]),
    ],
)
def test_eval_captions_reproduces_published_numbers(reference_dir: Path, name: str, expected: list[float]) -> None:
    m = _run_json("captions", str(reference_dir / name), "--labels", str(reference_dir / DENEB))
    assert _rounded(m, [*BLEU_ROUGE, "mention_rate"]) == dict(zip([*BLEU_ROUGE, "mention_rate"], expected))
    assert (m["n"], m["n_excluded"], m["n_truncated"]) == (99, 0, 0)


def test_eval_captions_without_labels_has_no_mention_rate(reference_dir: Path) -> None:
    result = runner.invoke(app, ["captions", str(reference_dir / GUIDED), "--json"])
    assert result.exit_code == 0 and "mention rate not computed" in result.stderr
    assert "mention_rate" not in json.loads(result.stdout)


def test_eval_captions_exclude_train_shows_the_leak(reference_dir: Path) -> None:
    m = _run_json("captions", str(reference_dir / VEGA), "--labels", str(reference_dir / DENEB),
                  "--exclude-train", str(reference_dir / SPLIT))  # fmt: skip
    assert (m["n"], m["n_excluded"]) == (53, 46)
    # Vega's published BLEU-4 of 29.33 falls to ~10 on the images it was not trained on (Rigel: 9.51 there).
    assert _rounded(m, ["bleu_4", "rouge_1", "mention_rate"]) == {"bleu_4": 10.22, "rouge_1": 40.23,
                                                                   "mention_rate": 54.72}  # fmt: skip


@pytest.mark.parametrize(
    ("name", "expected", "clean"),
    [
        (DENEB, [79.80, 79.14, 78.88, 77.43, 77.68], [81.13, 75.79, 68.77, 77.98, 78.27]),
        (SIRIUS, [85.86, 82.12, 80.78, 84.18, 84.28], [73.58, 68.72, 61.31, 69.24, 69.53]),
    ],
)
def test_eval_diagnosis_reference(
    reference_dir: Path, name: str, expected: list[float], clean: list[float]
) -> None:
    keys = ["accuracy", "balanced_accuracy", "f1_macro", "cohen_kappa", "mcc"]
    for extra in ([], ["--reparse"]):
        m = _run_json("diagnosis", str(reference_dir / name), *extra)
        assert m["task"] == "disease" and (m["n"], m["n_excluded"], m["n_unknown"]) == (99, 0, 0)
        assert _rounded(m, keys) == dict(zip(keys, expected))
    assert m["n_reparse_changed"] == 0
    m = _run_json("diagnosis", str(reference_dir / name), "--exclude-train", str(reference_dir / SPLIT))
    assert (m["n"], m["n_excluded"]) == (53, 46)
    assert _rounded(m, keys) == dict(zip(keys, clean))
    assert sum(row["support"] for row in m["per_class"].values()) == 53
    assert m["confusion"]["rows"] == list(DISEASES)


# --- issue 18: confidence intervals, paired comparison, calibration, skin-type subgroups --------------------------


def test_diagnosis_json_and_markdown_hold_bootstrap_intervals(mixed_jsonl: Path, tmp_path: Path) -> None:
    m = _run_json("diagnosis", str(mixed_jsonl), "--bootstrap", "200", "--seed", "1", "--ci", "0.9")
    acc = m["ci"]["accuracy"]
    assert acc["value"] == m["accuracy"] and acc["n"] == 3 and acc["ci_low"] <= acc["value"] <= acc["ci_high"]
    assert m["bootstrap"] == {"resamples": 200, "seed": 1, "level": 0.9}
    assert "ci" not in _run_json("diagnosis", str(mixed_jsonl), "--bootstrap", "0")
    result = runner.invoke(app, ["diagnosis", str(mixed_jsonl), "--report", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "value [95 % CI]" in result.stdout
    assert "| Accuracy | 33.3 [" in (tmp_path / "r" / "report.md").read_text()
    captions = _run_json("captions", str(mixed_jsonl), "--bootstrap", "100")
    assert {"bleu_4", "rouge_l", "mention_rate"} <= set(captions["ci"])
    result = runner.invoke(app, ["diagnosis", str(mixed_jsonl), "--ci", "95"])
    assert result.exit_code == 2 and "--ci must be between 0 and 1" in result.stderr


def _diagnosis_file(path: Path, answers: dict[str, str], truth: str = "psoriasis") -> Path:
    append_predictions(path, [Prediction(name.split(".")[0], name, "disease", answer, answer, ground_truth=truth)
                              for name, answer in answers.items()])  # fmt: skip
    return path


def test_compare_small_made_up_files(tmp_path: Path, our_split: Path) -> None:
    right, wrong = "psoriasis", "acne vulgaris"
    a = _diagnosis_file(tmp_path / "a.jsonl", {"1.png": wrong, "2.png": wrong, "3.png": right, "4.png": right})
    b = _diagnosis_file(tmp_path / "b.jsonl", {"4.png": right, "3.png": right, "2.png": right, "1.png": right,
                                               "9.png": right})  # fmt: skip
    m = _run_json("compare", str(a), str(b), "--bootstrap", "100")
    assert (m["n"], m["n_only_a"], m["n_only_b"], m["only_b"]) == (4, 0, 1, ["9.png"])
    assert (m["accuracy_a"], m["accuracy_b"], m["only_b_correct"]) == (50.0, 100.0, 2)
    assert m["mcnemar_p"] == 0.5 and m["accuracy_difference"]["value"] == 50.0
    result = runner.invoke(app, ["compare", str(a), str(b), "--exclude-train", str(our_split)])
    assert result.exit_code == 0 and "McNemar exact p" in result.stdout and "1 only in B" in result.stderr
    assert "paired on 3 images" in result.stdout
    c = _diagnosis_file(tmp_path / "c.jsonl", {"7.png": right})
    result = runner.invoke(app, ["compare", str(a), str(c)])
    assert result.exit_code == 2 and "share no image" in result.stderr and "7.png" in result.stderr


def test_compare_captions(mixed_jsonl: Path) -> None:
    m = _run_json("compare", str(mixed_jsonl), str(mixed_jsonl), "--task", "caption", "--bootstrap", "50")
    assert m["task"] == "caption" and m["n"] == 2  # the truncated caption is not scored
    assert m["metrics"]["bleu_4"]["difference"]["value"] == 0


def test_calibration_command_and_automatic_calibration(tmp_path: Path) -> None:
    preds = []
    for i in range(20):
        truth = GROUPS[i % 4]
        probs = {g: 0.91 if g == GROUPS[0] else 0.03 for g in GROUPS}  # always 91 % sure of group 1
        preds.append(Prediction(str(i), f"{i}.png", "group", GROUPS[0], GROUPS[0], ground_truth=truth,
                                extra={"probabilities": probs}))  # fmt: skip
    path = tmp_path / "g.jsonl"
    append_predictions(path, preds)
    m = _run_json("calibration", str(path), "--report", str(tmp_path / "cal"))
    assert m["method"] == "cross_fit_halves" and m["before"]["ece"] == pytest.approx(91 - 25)
    assert m["after"]["ece"] < m["before"]["ece"]
    assert sorted(p.name for p in (tmp_path / "cal").iterdir()) == ["calibration.json", "reliability.png",
                                                                    "risk_coverage.png"]  # fmt: skip
    result = runner.invoke(app, ["diagnosis", str(path), "--report", str(tmp_path / "d")])
    assert result.exit_code == 0 and "Calibration" in result.stdout
    assert (tmp_path / "d" / "reliability.png").exists()
    assert "## Calibration" in (tmp_path / "d" / "report.md").read_text()


def test_metadata_breaks_metrics_down_by_skin_type_and_source(synth_dir: Path, tmp_path: Path) -> None:
    from hikari.data.skincap import read_skincap

    records = read_skincap(synth_dir, check_images=False).records[:80]
    path = tmp_path / "p.jsonl"
    append_predictions(path, [Prediction(r.id, r.file_name, "disease", r.disease, r.disease if i % 3 else "Unknown",
                                         ground_truth=r.disease) for i, r in enumerate(records)])  # fmt: skip
    m = _run_json("diagnosis", str(path), "--metadata", str(synth_dir), "--bootstrap", "100")
    bands = m["subgroups"]["by"]["skin_band"]
    assert sum(cell["n"] for cell in bands.values()) == 80
    assert set(m["subgroups"]["by"]["source"]) <= {"ddi", "fitzpatrick17k", "unknown"}
    assert all({"value", "ci_low", "ci_high", "n"} <= set(c["metrics"]["accuracy"]) for c in bands.values())
    result = runner.invoke(app, ["diagnosis", str(path), "--metadata", str(synth_dir), "--report", str(tmp_path / "r")])
    assert result.exit_code == 0 and "By skin type" in result.stdout
    assert "## By skin type" in (tmp_path / "r" / "report.md").read_text()


def test_eval_compare_reference_deneb_vs_sirius(reference_dir: Path) -> None:
    args = ["compare", str(reference_dir / DENEB), str(reference_dir / SIRIUS)]
    m = _run_json(*args)
    assert m["n"] == 99 and round(m["mcnemar_p"], 4) == 0.2379
    clean = _run_json(*args, "--exclude-train", str(reference_dir / SPLIT))
    assert clean["n"] == 53 and round(clean["mcnemar_p"], 4) == 0.2891
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "McNemar exact p" in result.stdout and "0.2379" in result.stdout


def test_eval_diagnosis_reference_prints_a_ci(reference_dir: Path) -> None:
    m = _run_json("diagnosis", str(reference_dir / SIRIUS))
    acc = m["ci"]["accuracy"]
    assert round(acc["value"], 2) == 85.86 and acc["ci_low"] < 85.86 < acc["ci_high"] and acc["n"] == 99

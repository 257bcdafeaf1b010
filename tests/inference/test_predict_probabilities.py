"""`hikari predict --probabilities` on synthetic SkinCAP + the tiny Qwen3-VL: every group/disease line stores the
exact answer probabilities over all labels, `--group-probabilities` keeps its field, and eval reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hikari.data.labels import DISEASES, GROUPS
from hikari.evaluation.calibration import evaluate_calibration
from hikari.evaluation.predictions import read_predictions
from hikari.inference.engines import TransformersEngine
from hikari.inference.predict import run_predict


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize(("task", "labels"), [("disease", DISEASES), ("group", GROUPS)])
def test_probabilities_cover_every_label_and_sum_to_one(
    task: str, labels: tuple[str, ...], skincap: tuple[Path, Path], tiny_model_dir: Path,
    tiny_engine: TransformersEngine, tmp_path: Path,
) -> None:  # fmt: skip
    out = tmp_path / f"{task}.jsonl"
    run_predict(str(tiny_model_dir), skincap[0], skincap[1], task, out, engine=tiny_engine, limit=4, batch_size=2,
                max_new_tokens=2, progress=False, probabilities=True)  # fmt: skip
    for row in _lines(out):
        assert list(row["probabilities"]) == list(labels)
        assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert ("group_probabilities" in row) == (task == "group")
        if task == "group":
            assert row["group_probabilities"] == row["probabilities"]
    result = evaluate_calibration(read_predictions(out), labels)
    assert result["n"] == 4 and len(result["temperature"]) == 2


def test_group_probabilities_alone_keeps_its_old_field(
    skincap: tuple[Path, Path], tiny_model_dir: Path, tiny_engine: TransformersEngine, tmp_path: Path
) -> None:
    out = tmp_path / "g.jsonl"
    run_predict(str(tiny_model_dir), skincap[0], skincap[1], "group", out, engine=tiny_engine, limit=2,
                max_new_tokens=2, progress=False, group_probabilities=True)  # fmt: skip
    rows = _lines(out)
    assert all(list(r["group_probabilities"]) == list(GROUPS) and "probabilities" not in r for r in rows)


def test_probabilities_are_refused_for_captions(skincap: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="probabilities apply to the group and disease tasks"):
        run_predict("m", skincap[0], skincap[1], "caption", tmp_path / "c.jsonl", probabilities=True)


def test_cli_predict_probabilities_then_eval_diagnosis_shows_calibration(
    skincap: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    import typer

    from hikari.cli.eval import app as eval_app
    from hikari.cli.predict import predict_command

    app = typer.Typer()
    app.command("predict")(predict_command)
    app.command("noop")(lambda: None)  # a second command keeps `predict` a named sub-command
    out = tmp_path / "cli.jsonl"
    runner = CliRunner()
    args = ["predict", "--model", str(tiny_model_dir), "--data", str(skincap[0]), "--split", str(skincap[1]),
            "--task", "disease", "--out", str(out), "--limit", "4", "--max-new-tokens", "2", "--probabilities",
            "--engine-option", "dtype=fp32"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert all(len(r["probabilities"]) == len(DISEASES) for r in _lines(out))
    result = runner.invoke(eval_app, ["diagnosis", str(out), "--json", "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    calibration = json.loads(result.stdout)["calibration"]
    assert {"ece", "brier"} <= set(calibration["before"]) and calibration["method"] == "cross_fit_halves"

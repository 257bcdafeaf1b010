"""`hikari predict` on synthetic SkinCAP + the tiny Qwen3-VL: output lines, resuming after a crash or a torn
write, unreadable images, consistency checks and the CLI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hikari.data.labels import DISEASES, GROUPS, UNKNOWN
from hikari.data.prompts import STAGE2_INFERENCE_PROMPTS
from hikari.data.split import load_split
from hikari.evaluation.predictions import read_predictions
from hikari.inference.engines import Engine, Messages, TransformersEngine
from hikari.inference.predict import STATUS_ERROR, repair_partial_line, resolve_prompt, run_predict

FIELDS = {"id", "file_name", "task", "ground_truth", "raw_output", "parsed", "truncated", "prompt_id", "model",
          "engine", "split"}  # fmt: skip
MAX_NEW = 4  # tokens per answer: enough to exercise decoding, cheap on two CPU cores


class CrashingEngine(Engine):
    """Delegates to a real engine, then raises on call number `crash_on` (simulates a kill mid-run)."""

    name = "transformers"

    def __init__(self, inner: Engine, crash_on: int) -> None:
        self.inner, self.crash_on, self.calls = inner, crash_on, 0

    def generate(self, batch: Sequence[Messages], *, max_new_tokens: int, temperature: float = 0.0) -> list[str]:
        self.calls += 1
        if self.calls == self.crash_on:
            raise KeyboardInterrupt("simulated interruption")
        return self.inner.generate(batch, max_new_tokens=max_new_tokens, temperature=temperature)


def predict(skincap: tuple[Path, Path], model_dir: Path, engine: Engine, out: Path, **kwargs) -> object:
    data, split = skincap
    options = {"task": "disease", "limit": 6, "batch_size": 2, "max_new_tokens": MAX_NEW, "progress": False}
    options.update(kwargs)
    task = options.pop("task")
    return run_predict(str(model_dir), data, split, task, out, engine=engine, **options)


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prediction_lines_have_every_field(
    skincap: tuple[Path, Path], tiny_model_dir: Path, tiny_engine: TransformersEngine, tmp_path: Path
) -> None:
    out = tmp_path / "pred.jsonl"
    summary = predict(skincap, tiny_model_dir, tiny_engine, out)
    assert (summary.n_items, summary.n_written, summary.n_errors) == (6, 6, 0) and summary.complete

    rows = lines_of(out)
    val = load_split(skincap[1])
    assert [r["file_name"] for r in rows] == val.parts["val"][:6]  # the part's first items, in split order
    truth = val.labels
    for row in rows:
        assert FIELDS <= set(row)
        assert row["task"] == "disease" and row["prompt_id"] == "P0" and row["split"] == "val"
        assert row["engine"] == "transformers" and row["model"] == str(tiny_model_dir)
        assert row["ground_truth"] == truth[row["file_name"]] and row["ground_truth"] in DISEASES
        assert row["parsed"] in (*DISEASES, UNKNOWN) and isinstance(row["raw_output"], str)
        assert row["truncated"] is False and "status" not in row
    assert len(read_predictions(out)) == 6  # our own reader accepts the file


@pytest.mark.parametrize(("task", "prompt", "prompt_id"), [("group", "2", "stage1_2"), ("caption", None, "stage3_0")])
def test_group_and_caption_tasks(
    task: str,
    prompt: str | None,
    prompt_id: str,
    skincap: tuple[Path, Path],
    tiny_model_dir: Path,
    tiny_engine: TransformersEngine,
    tmp_path: Path,
) -> None:
    from hikari.data.skincap import read_skincap

    out = tmp_path / f"{task}.jsonl"
    predict(skincap, tiny_model_dir, tiny_engine, out, task=task, prompt=prompt, limit=2)
    records = read_skincap(skincap[0]).by_file_name()
    for row in lines_of(out):
        record = records[row["file_name"]]
        assert row["prompt_id"] == prompt_id and row["disease"] == record.disease
        if task == "group":
            assert row["ground_truth"] == record.group and row["parsed"] in (*GROUPS, UNKNOWN)
        else:
            assert row["ground_truth"] == record.caption and row["parsed"] == row["raw_output"].strip()


def test_thinking_outputs_without_a_closing_tag_are_truncated(
    skincap: tuple[Path, Path], tiny_model_dir: Path, tiny_engine: TransformersEngine, tmp_path: Path
) -> None:
    # The random tiny model never writes </think>: for a thinking model that means it ran out of tokens.
    out = tmp_path / "thinking.jsonl"
    summary = predict(skincap, tiny_model_dir, tiny_engine, out, limit=2, thinking=True)
    assert summary.n_truncated == 2
    assert all(row["truncated"] is True and row["parsed"] == UNKNOWN for row in lines_of(out))


def test_resume_after_an_interruption_keeps_earlier_lines(
    skincap: tuple[Path, Path], tiny_model_dir: Path, tiny_engine: TransformersEngine, tmp_path: Path
) -> None:
    out = tmp_path / "pred.jsonl"
    with pytest.raises(KeyboardInterrupt):
        predict(skincap, tiny_model_dir, CrashingEngine(tiny_engine, crash_on=2), out)
    before = out.read_bytes()
    assert len(lines_of(out)) == 2  # the first batch was written (and fsynced) before the crash

    engine = CrashingEngine(tiny_engine, crash_on=-1)
    summary = predict(skincap, tiny_model_dir, engine, out)
    assert (summary.n_skipped_existing, summary.n_written, engine.calls) == (2, 4, 2)
    assert out.read_bytes().startswith(before)
    ids = [row["id"] for row in lines_of(out)]
    assert len(ids) == 6 and len(set(ids)) == 6

    # A third run has nothing left to do and loads nothing.
    again = predict(skincap, tiny_model_dir, CrashingEngine(tiny_engine, crash_on=1), out)
    assert (again.n_written, again.n_skipped_existing) == (0, 6)


def test_a_torn_last_line_is_cut_and_reported(
    skincap: tuple[Path, Path], tiny_model_dir: Path, tiny_engine: TransformersEngine, tmp_path: Path
) -> None:
    out = tmp_path / "pred.jsonl"
    predict(skincap, tiny_model_dir, tiny_engine, out, limit=4)
    complete = out.read_bytes()
    lines = complete.splitlines(keepends=True)
    # Simulate a crash in the middle of writing line 4: keep lines 1-3 and half of line 4.
    torn = b"".join(lines[:3]) + lines[3][: len(lines[3]) // 2]
    out.write_bytes(torn)

    summary = predict(skincap, tiny_model_dir, tiny_engine, out, limit=6)
    assert summary.dropped_partial_line == lines[3][: len(lines[3]) // 2].decode()
    assert (summary.n_skipped_existing, summary.n_written) == (3, 3)
    assert out.read_bytes().startswith(b"".join(lines[:3]))
    rows = lines_of(out)
    assert sorted(r["id"] for r in rows) == sorted({r["id"] for r in rows}) and len(rows) == 6
    # Greedy decoding: the re-predicted item gets the line it had before the crash.
    assert rows[3] == json.loads(lines[3])


def test_repair_partial_line_leaves_complete_files_alone(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n')
    assert repair_partial_line(path) is None and path.read_text() == '{"a": 1}\n{"b": 2}\n'
    path.write_text('{"a": 1}\n{"b"')
    assert repair_partial_line(path) == '{"b"' and path.read_text() == '{"a": 1}\n'
    path.write_text('{"only')
    assert repair_partial_line(path) == '{"only' and path.read_bytes() == b""


def test_unreadable_images_become_error_lines(
    skincap: tuple[Path, Path], tiny_model_dir: Path, tiny_engine: TransformersEngine, tmp_path: Path
) -> None:
    data = tmp_path / "skincap"
    shutil.copytree(skincap[0], data)
    bad = load_split(skincap[1]).parts["val"][1]
    png = (data / "skincap" / bad).read_bytes()
    (data / "skincap" / bad).write_bytes(png[: len(png) // 3])  # a truncated PNG
    out = tmp_path / "pred.jsonl"

    summary = predict((data, skincap[1]), tiny_model_dir, tiny_engine, out, limit=4)
    assert (summary.n_written, summary.n_errors) == (4, 1)
    rows = {row["file_name"]: row for row in lines_of(out)}
    assert rows[bad]["status"] == STATUS_ERROR and rows[bad]["parsed"] == UNKNOWN
    assert "cannot read image" in rows[bad]["error"] and rows[bad]["raw_output"] == ""
    assert all("status" not in row for name, row in rows.items() if name != bad)

    # A plain rerun keeps the error line; --retry-errors tries that one image again (and only it).
    assert predict((data, skincap[1]), tiny_model_dir, tiny_engine, out, limit=4).n_written == 0
    (data / "skincap" / bad).write_bytes(png)
    retried = predict((data, skincap[1]), tiny_model_dir, tiny_engine, out, limit=4, retry_errors=True)
    assert (retried.n_retried_errors, retried.n_written, retried.n_errors) == (1, 1, 0)
    rows_after = lines_of(out)
    assert len(rows_after) == 4 and all("status" not in row for row in rows_after)


def test_resuming_with_other_arguments_refuses_to_mix(
    skincap: tuple[Path, Path], tiny_model_dir: Path, tiny_engine: TransformersEngine, tmp_path: Path
) -> None:
    out = tmp_path / "pred.jsonl"
    predict(skincap, tiny_model_dir, tiny_engine, out, limit=2)
    with pytest.raises(ValueError, match=r"line 1 .* has prompt_id='P0', this run has prompt_id='P2'"):
        predict(skincap, tiny_model_dir, tiny_engine, out, limit=2, prompt="P2")


def test_a_split_file_not_in_the_data_is_named(skincap: tuple[Path, Path], tmp_path: Path) -> None:
    split = tmp_path / "split_info_3stage.json"  # the original format: Windows paths
    split.write_text(json.dumps({"train_image_paths": ["SkinCAP\\skincap\\1.png"],
                                 "val_image_paths": ["SkinCAP\\skincap\\99999.png"]}))  # fmt: skip
    with pytest.raises(ValueError, match=r"split_info_3stage\.json.*99999\.png"):
        run_predict("unused/model", skincap[0], split, "disease", tmp_path / "p.jsonl", progress=False)


def test_prompt_names_are_checked() -> None:
    assert resolve_prompt("disease", "P3")[0] == "P3"
    messages = resolve_prompt("disease", None)[1]("IMAGE")
    assert messages[0]["content"][1]["text"] == STAGE2_INFERENCE_PROMPTS["P0"]
    with pytest.raises(ValueError, match="valid: P0, P1, P2, P3"):
        resolve_prompt("disease", "P9")
    with pytest.raises(ValueError, match=r"index 0\.\.2, got '3'"):
        resolve_prompt("group", "3")
    with pytest.raises(ValueError, match="valid: group, disease, caption"):
        resolve_prompt("segmentation", None)


# ---------------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    from hikari.cli.predict import predict_command

    app = typer.Typer()
    app.command("predict")(predict_command)
    app.command("noop")(lambda: None)  # a second command keeps `predict` a named sub-command
    return app


def test_cli_predict_writes_and_resumes(
    cli: typer.Typer, skincap: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cli.jsonl"
    args = ["predict", "--model", str(tiny_model_dir), "--data", str(skincap[0]), "--split", str(skincap[1]),
            "--task", "disease", "--prompt", "P1", "--limit", "2", "--batch-size", "2", "--max-new-tokens", "3",
            "--engine-option", "dtype=fp32", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert [row["prompt_id"] for row in lines_of(out)] == ["P1", "P1"]
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and len(lines_of(out)) == 2


def test_cli_reports_an_unknown_engine(cli: typer.Typer, skincap: tuple[Path, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [
        "predict", "--model", "x/y", "--data", str(skincap[0]), "--split", str(skincap[1]), "--task", "disease",
        "--engine", "onnx", "--out", str(tmp_path / "p.jsonl"),
    ])  # fmt: skip
    assert result.exit_code == 2
    assert "unknown engine 'onnx'; valid: transformers, vllm, sglang" in result.output

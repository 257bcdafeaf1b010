"""`hikari train` / `hikari merge` wrappers: config errors exit 2 with the reason; merge of a bare adapter dir."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hikari.cli import app
from tests.models.test_lora import logits_of, text_batch, trained_adapter


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_train_unknown_recipe_exits_2_and_lists_the_recipes() -> None:
    result = CliRunner().invoke(app, ["train", "no_such_recipe"])
    assert result.exit_code == 2
    assert "unknown recipe" in result.output and "subaru" in result.output


def test_train_bad_override_names_the_key() -> None:
    result = CliRunner().invoke(app, ["train", "subaru", "--set", "train.learnin_rate=1e-3"])
    assert result.exit_code == 2
    assert "train.learnin_rate" in result.output


def test_merge_a_bare_adapter_dir_reads_the_base_from_its_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    from hikari.models.load import load_model
    from hikari.models.lora import load_adapter

    adapter = trained_adapter(tiny_model_dir, tmp_path / "adapter")
    out = tmp_path / "merged"
    result = CliRunner().invoke(app, ["merge", str(adapter), "--out", str(out), "--dtype", "fp32"])
    assert result.exit_code == 0, result.output
    base = load_model(str(tiny_model_dir), dtype="fp32")
    batch = text_batch(base)
    expected = logits_of(load_adapter(base, adapter, trainable=False), batch)
    assert (logits_of(load_model(str(out), dtype="fp32"), batch) - expected).abs().max().item() <= 1e-4


def test_merge_rejects_a_directory_that_is_neither_run_nor_adapter(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["merge", str(tmp_path), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "neither a HIKARI run" in result.output

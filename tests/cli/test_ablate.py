"""`hikari ablate stage3|stage2`: arms and options given on the command line are checked before anything trains."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from hikari.cli import app


def _stage2_run(tmp_path: Path) -> Path:
    run = tmp_path / "deneb"
    run.mkdir()
    (run / "config.resolved.yaml").write_text(f"data: {{dir: {tmp_path}, split: {tmp_path / 's.json'}}}\n")
    return run


def test_a_malformed_arm_exits_2_and_shows_the_form(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ablate", "stage3", "--stage2-run", str(_stage2_run(tmp_path)),
                                      "--arm", "=antares:loss.beta=1"])  # fmt: skip
    assert result.exit_code == 2
    assert "NAME=RECIPE" in result.output


def test_an_arm_with_a_bad_override_names_the_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ablate", "stage3", "--stage2-run", str(_stage2_run(tmp_path)),
                                      "--arm", "b1=antares:loss.betta=1", "--out", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 2
    assert "betta" in result.output
    assert not (tmp_path / "o" / "b1").exists()  # nothing trained


def test_stage2_needs_exactly_one_retrieval_source(tmp_path: Path) -> None:
    run = _stage2_run(tmp_path)
    for extra in ([], ["--encoder", "R2", "--index", str(tmp_path)]):
        result = CliRunner().invoke(app, ["ablate", "stage2", "--stage2-run", str(run), *extra])
        assert result.exit_code == 2 and "exactly one of encoder" in result.output
    result = CliRunner().invoke(app, ["ablate", "stage2", "--stage2-run", str(run), "--encoder", "R2",
                                      "--kind", "random"])  # fmt: skip
    assert result.exit_code == 2 and "unknown reference kinds" in result.output


def test_stage2_help_names_the_rows() -> None:
    result = CliRunner().invoke(app, ["ablate", "stage2", "--help"])
    assert result.exit_code == 0 and "oracle" in result.output and "--stage2-run" in result.output

"""The CLI answers at once: building it, and `--help` of every command and sub-command, imports neither torch nor
transformers (nor the other heavy libraries a command loads when it runs). Checked in a fresh interpreter, since
this test process has imported them long ago."""

from __future__ import annotations

import json
import subprocess
import sys

from hikari.cli.predict import ENGINE_NAMES
from hikari.inference.engines import ENGINES

HEAVY = ("torch", "transformers", "torchvision", "peft", "accelerate", "faiss", "scipy", "nltk", "sklearn",
         "matplotlib", "pandas")  # fmt: skip

PROBE = """
import json, sys
import click
import typer.main
from typer.testing import CliRunner

import hikari.cli

heavy = {heavy!r}
after_import = sorted(m for m in heavy if m in sys.modules)
paths, group = [], typer.main.get_command(hikari.cli.app)

def walk(command, prefix):
    paths.append(prefix)
    for name, sub in getattr(command, "commands", {{}}).items():
        walk(sub, [*prefix, name])

walk(group, [])
codes = {{" ".join(p): CliRunner().invoke(hikari.cli.app, [*p, "--help"]).exit_code for p in paths}}
print(json.dumps({{"after_import": after_import, "after_help": sorted(m for m in heavy if m in sys.modules),
                   "codes": codes}}))
"""


def _probe() -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)], capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_building_the_cli_and_every_help_import_no_heavy_library() -> None:
    result = _probe()
    assert result["after_import"] == []
    assert result["after_help"] == []
    commands = result["codes"]
    for expected in ("", "train", "merge", "predict", "cascade", "demo", "data split", "data audit", "data synth",
                     "data inspect", "eval captions", "eval diagnosis", "retrieve build", "retrieve query",
                     "retrieve tiny-encoders", "model tiny", "model info", "ablate stage3"):  # fmt: skip
        assert expected in commands, f"`hikari {expected}` is not a command any more; update this test"
    assert set(commands.values()) == {0}, commands


def test_the_predict_help_lists_exactly_the_registered_engines() -> None:
    assert ENGINE_NAMES == tuple(ENGINES)

"""`hikari demo`: the main job on the built-in synthetic SkinCAP and tiny Qwen3-VL, end to end on a CPU."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console

from hikari.demo import DEMO_ROWS, run_demo

console = Console()


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory for every demo artifact."),
    n: int = typer.Option(DEMO_ROWS, "--n", help="Synthetic SkinCAP rows."),
    seed: int = typer.Option(0, "--seed", help="Seed for data synthesis and the tiny model."),
) -> None:
    """Synthesise SkinCAP, build the tiny Qwen3-VL, split + audit, and write runs/demo/report.{json,md}."""
    start = time.perf_counter()
    report = run_demo(out, n=n, seed=seed, console=console)
    console.print(f"[bold]report[/bold]: {out / 'report.json'}  ({time.perf_counter() - start:.1f} s)")
    console.print_json(json.dumps(report))

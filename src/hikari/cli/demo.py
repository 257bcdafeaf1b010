"""`hikari demo`: the main job on the built-in synthetic SkinCAP and tiny Qwen3-VL, end to end on a CPU."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console

console = Console()


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory for every demo artifact."),
    n: int | None = typer.Option(None, "--n", help="Synthetic SkinCAP rows (default: the demo's size)."),
    seed: int = typer.Option(0, "--seed", help="Seed for data synthesis and the tiny model."),
) -> None:
    """Synthesise SkinCAP, build the tiny Qwen3-VL, split + audit, and write runs/demo/report.{json,md}."""
    from hikari.demo import run_demo  # CLI start-up time: torch, transformers

    start = time.perf_counter()
    report = run_demo(out, n=n, seed=seed, console=console)
    console.print(f"[bold]report[/bold]: {out / 'report.json'}  ({time.perf_counter() - start:.1f} s)")
    console.print_json(json.dumps(report))

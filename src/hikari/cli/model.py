"""`hikari model tiny` and `hikari model info`: thin wrappers over `hikari.demo.tiny` and `hikari.models.load`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)  # error paths stay copyable

app = typer.Typer(no_args_is_help=True)


@app.command("tiny", help="Build the tiny offline Qwen3-VL (random weights, HIKARI tokenizer) into a directory.")
def tiny_command(
    out: Path = typer.Option(..., "--out", help="Directory to create (must be empty or absent)."),
    seed: int = typer.Option(0, help="Weight-initialisation seed; the same seed gives identical weights."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --out directory."),
) -> None:
    """Build, save and summarise the tiny model."""
    start = time.perf_counter()
    # CLI start-up time: torch, transformers
    from transformers.utils import logging as hf_logging

    from hikari.demo.tiny import build_tiny_qwen3vl, directory_size
    from hikari.models.load import safetensors_parameter_count

    progress_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one rich spinner instead of transformers' tqdm bars
    try:
        with console.status(f"Training the tokenizer and building the tiny Qwen3-VL in {out} ..."):
            path = build_tiny_qwen3vl(out, seed=seed, overwrite=overwrite)
    except (FileExistsError, NotADirectoryError) as err:
        err_console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    finally:
        if progress_was_enabled:
            hf_logging.enable_progress_bar()
    seconds = time.perf_counter() - start
    size = directory_size(path)
    params = safetensors_parameter_count(path)
    console.print(
        f"[green]Saved[/green] tiny Qwen3-VL to {path}: {params:,} parameters, {size / 1e6:.2f} MB, "
        f"seed {seed}, {seconds:.1f} s"
    )


@app.command("info", help="Summarise a model directory or Hub id: architecture, sizes, token ids, parameters.")
def info_command(
    model: str = typer.Argument(
        ..., help="Model directory (with config.json) or Hub id, e.g. Qwen/Qwen3-VL-8B-Thinking."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Print a config summary without loading any weights."""
    from hikari.models.load import describe_model  # CLI start-up time: torch, transformers

    try:
        summary = describe_model(model)
    except (OSError, ValueError) as err:
        err_console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    if as_json:
        console.print_json(json.dumps(summary))
        return
    table = Table(title=f"{summary['model_type']}: {summary['source']}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    params = summary["parameters"]
    table.add_row("architectures", ", ".join(summary["architectures"]) or "-")
    table.add_row("dtype", summary["dtype"])
    table.add_row("parameters", f"{params:,}" if params is not None else "unknown (not a local directory)")
    for group in ("text", "vision", "token_ids"):
        for key, value in (summary.get(group) or {}).items():
            table.add_row(f"{group}.{key}", str(value))
    table.add_row("rope", json.dumps(summary["rope"]))
    table.add_row("tie_word_embeddings", str(summary["tie_word_embeddings"]))
    console.print(table)

"""`hikari cascade`: a thin wrapper over `hikari.inference.cascade.run_cascade`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from hikari.config import DataConfig, RagConfig, default

console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)


def cascade_command(
    images: list[Path] = typer.Argument(..., help="Image files."),
    stage1: str = typer.Option(..., "--stage1", help="Stage 1 model: merged dir, hub id or run dir."),
    stage2: str = typer.Option(..., "--stage2", help="Stage 2 model: merged dir, hub id or run dir."),
    stage3: str = typer.Option(..., "--stage3", help="Stage 3 model: merged dir, hub id or run dir."),
    refs: Path | None = typer.Option(None, "--refs", help="Retrieval index for Stage 2 references."),
    k: int = typer.Option(default(RagConfig, "k_eval"), "-k", "--k", min=1, help="References per image."),
    text: list[str] = typer.Option([], "--text", help="Query text per image (repeat once per image)."),
    query_text: str = typer.Option("caption", "--query-text", help="Without --text: caption | none."),
    ref_text: str = typer.Option("label_description", "--ref-text", help="label | label_description."),
    prompt: str = typer.Option("P0", "--prompt", help="Stage 2 prompt: P0..P3 or T0..T2."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | bf16 | fp16 | fp32."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, ... (default: cuda when available)."),
    image_max_size: int = typer.Option(
        default(DataConfig, "max_image_size"), "--image-max-size", min=16, help="Thumbnail images to this size."
    ),
    out: Path | None = typer.Option(None, "--out", help="Also write the results as JSON here."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the summary."),
) -> None:
    """Group → diagnosis (with references) → guided caption for each image."""
    from hikari.inference.cascade import render_summary, run_cascade  # CLI start-up time: torch, transformers
    from hikari.utils.io import atomic_write_json

    if text and len(text) != len(images):
        err_console.print(f"[red]error:[/red] {len(text)} --text values for {len(images)} images")
        raise typer.Exit(2)
    try:
        results = run_cascade(
            images, stage1=stage1, stage2=stage2, stage3=stage3, refs=refs, k=k, texts=text or None,
            query_text=query_text, reference_text=ref_text, stage2_prompt=prompt, dtype=dtype, device=device,
            image_max_size=image_max_size,
        )  # type: ignore[arg-type]  # fmt: skip
    except (ValueError, FileNotFoundError, NotADirectoryError, OSError) as err:
        err_console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    payload = [r.to_dict() for r in results]
    if out is not None:
        atomic_write_json(out, payload)
    if as_json:
        print(json.dumps(payload, ensure_ascii=False))
    else:
        console.print(render_summary([r for r in results if r.error is None]))
    failed = [r for r in results if r.error is not None]
    if failed:
        err_console.print(f"[yellow]{len(failed)} of {len(results)} image(s) could not be read[/yellow] and were "
                          f"skipped: {'; '.join(r.error or '' for r in failed[:3])}")  # fmt: skip
        if len(failed) == len(results):
            raise typer.Exit(2)

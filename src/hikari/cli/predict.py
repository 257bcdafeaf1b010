"""`hikari predict`: a thin wrapper over `hikari.inference.predict.run_predict` (resumable JSONL predictions).

The inference machinery (torch, transformers, the retrieval encoders) is imported when the command runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import typer
from rich.console import Console
from rich.table import Table

from hikari.config import RagConfig, Task, default

if TYPE_CHECKING:
    from hikari.inference.predict import PredictSummary

# The registered engine names (`hikari.inference.engines.ENGINES`; a test keeps this list equal to it). An
# unknown --engine is rejected by the registry with the valid names.
ENGINE_NAMES = ("transformers", "vllm", "sglang", "openai")

console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)  # error paths stay copyable


def parse_engine_options(pairs: list[str]) -> dict[str, Any]:
    """``["quantization=fp8", "max_model_len=4096"]`` → ``{"quantization": "fp8", "max_model_len": 4096}``.

    Values are read as JSON when they parse (numbers, true/false, null, objects), else kept as strings.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--engine-option")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def _summary_table(summary: PredictSummary) -> Table:
    table = Table(title=f"hikari predict: {summary.task} ({summary.prompt_id})")
    table.add_column("")
    table.add_column("items", justify="right")
    rows = [
        ("selected", summary.n_items),
        ("already in the file (resumed)", summary.n_skipped_existing),
        ("written now", summary.n_written),
        ("  unreadable images (error lines)", summary.n_errors),
        ("  truncated reasoning", summary.n_truncated),
    ]
    if summary.n_retried_errors:
        rows.append(("earlier error lines retried", summary.n_retried_errors))
    if summary.unreadable_references:
        rows.append(("unreadable reference images (left out of prompts)", len(summary.unreadable_references)))
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def _prediction_references(
    data: Path, split: Path, part: str, limit: int | None, index_dir: Path, k: int, ref_text: str,
    query_captions: list[Path], device: str,
) -> dict[str, Any]:
    """References for the records `run_predict` will select (query texts: generated captions only)."""
    # CLI start-up time: retrieval loads faiss, torch and transformers
    from hikari.data.split import read_split_records
    from hikari.retrieval.references import generated_captions, references_for_prediction

    records = read_split_records(data, split, [part]).parts[part]
    records = records[:limit] if limit is not None else records
    texts = generated_captions(query_captions) if query_captions else None
    return references_for_prediction(index_dir, records, k=k, reference_text=ref_text, query_texts=texts,
                                     device=device, progress=True)  # fmt: skip


def predict_command(
    model: str = typer.Option(..., "--model", help="Merged model directory or Hugging Face Hub id."),
    data: Path = typer.Option(..., "--data", help="SkinCAP folder (metadata + skincap/ images)."),
    split: Path = typer.Option(..., "--split", help="Split JSON (ours or the original split_info_*.json)."),
    task: str = typer.Option(..., "--task", help=f"What to predict: {' | '.join(get_args(Task))}."),
    out: Path = typer.Option(..., "--out", help="Prediction JSONL; appended to, and resumed on rerun."),
    prompt: str | None = typer.Option(
        None, "--prompt", help="disease: P0..P3 (default P0); group/caption: prompt index (default 0)."
    ),
    engine: str = typer.Option("transformers", "--engine", help=f"Inference engine: {' | '.join(ENGINE_NAMES)}."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Items per generate call and per write."),
    part: str = typer.Option("val", "--part", help="Split part to predict (val, test, train)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N items of the part."),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", min=1, help="Generation budget (default 64 for group/disease, 256 for caption)."
    ),
    thinking: bool = typer.Option(
        False, "--thinking", help="Zero-shot thinking model: 1024-token default budget, unclosed <think> = truncated."
    ),
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="Drop earlier error lines (unreadable images) and try those items again."
    ),
    force_mixed: bool = typer.Option(
        False, "--force-mixed", help="Resume --out although its lines were made with other generation settings "
        "(budget, engine, thinking, image size); default: refuse, naming the setting."
    ),
    engine_option: list[str] = typer.Option(
        [], "--engine-option", help="Engine option KEY=VALUE, repeatable (e.g. quantization=fp8, dtype=bf16)."
    ),
    group_probabilities: bool = typer.Option(
        False, "--group-probabilities", help="Group task: also store P(group) for all 4 groups (M4 soft context)."
    ),
    probabilities: bool = typer.Option(
        False, "--probabilities", help="Group/disease task: also store the exact answer probability of every label "
        "('probabilities' field; input of `hikari eval calibration`). Transformers engine only."
    ),
    refs: Path | None = typer.Option(
        None, "--refs", help="Disease task: a retrieval index (`hikari retrieve build`); shows K reference cases."
    ),
    k: int = typer.Option(default(RagConfig, "k_eval"), "-k", "--k", min=1, help="References per image with --refs."),
    ref_text: str = typer.Option(
        "label_description", "--ref-text", help="Reference text with --refs: label | label_description."
    ),
    query_captions: list[Path] = typer.Option(
        [], "--query-captions", help="Stage 3 caption predictions (JSONL) used as query texts with --refs."
    ),
    encoder_device: str = typer.Option("cpu", "--encoder-device", help="Retrieval encoder device with --refs."),
) -> None:
    """Generate predictions for one task on one split part; rerun the same command to resume."""
    from hikari.inference.engines import EngineUnavailable  # CLI start-up time: torch, transformers
    from hikari.inference.predict import run_predict
    from hikari.utils.io import WriterBusy

    try:
        references = None
        if refs is not None:
            references = _prediction_references(data, split, part, limit, refs, k, ref_text, query_captions,
                                                encoder_device)  # fmt: skip
        summary = run_predict(
            model, data, split, task, out, part=part, prompt=prompt, engine=engine, batch_size=batch_size,
            max_new_tokens=max_new_tokens, limit=limit, engine_options=parse_engine_options(engine_option),
            thinking=thinking, retry_errors=retry_errors, force_mixed=force_mixed,
            group_probabilities=group_probabilities, references=references, probabilities=probabilities,
        )  # fmt: skip
    except (ValueError, KeyError, FileNotFoundError, NotADirectoryError, EngineUnavailable, WriterBusy) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        err_console.print(f"[red]error:[/red] {message}")
        raise typer.Exit(2) from err
    if summary.dropped_partial_line is not None:
        err_console.print(
            f"[yellow]warning:[/yellow] {out} ended in an incomplete line from an interrupted write "
            f"({len(summary.dropped_partial_line)} characters); it was removed and that item predicted again."
        )
    console.print(_summary_table(summary))
    if summary.error_ids:
        shown = ", ".join(summary.error_ids[:10]) + (" …" if len(summary.error_ids) > 10 else "")
        err_console.print(f"[yellow]unreadable images[/yellow] (ids {shown}): written as status=error lines.")
    if summary.left_out:
        shown = "; ".join(f"{n} ({why})" for n, why in list(summary.left_out.items())[:5])
        err_console.print(f"[yellow]{len(summary.left_out)} file(s) of the part left out[/yellow]: {shown}"
                          f"{' …' if len(summary.left_out) > 5 else ''}")  # fmt: skip
    if summary.unreadable_references:
        names = sorted(summary.unreadable_references)
        err_console.print(f"[yellow]unreadable reference images[/yellow] ({', '.join(names[:5])}"
                          f"{' …' if len(names) > 5 else ''}): left out; those queries saw fewer references.")
    console.print(f"predictions: {out}")

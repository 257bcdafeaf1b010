"""`hikari serve`: the cascade as a local web app and HTTP API — a thin wrapper over `hikari.serve` (which loads
FastAPI, uvicorn and the models when the command runs, not when the CLI starts)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from hikari.config import ServeConfig, default

console = Console(stderr=True, soft_wrap=True, highlight=False)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# What `make demo` leaves under --demo-dir: Stage 1, Stage 2 with references (and its index), two Stage 3 models.
DEMO_RUNS = {"stage1": "subaru", "stage2": "sirius/run", "index": "sirius/rag-index",
             "stage3": ("stage3/vega", "stage3/antares")}  # fmt: skip


def _stage3(values: list[str]) -> list[tuple[str | None, str]]:
    """`NAME=PATH` or `PATH` → (name or None, path)."""
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        out.append((name, path) if sep and not Path(value).exists() else (None, value))
    return out


def serve_command(
    stage1: str | None = typer.Option(None, "--stage1", help="Stage 1 (group) model: merged dir, hub id, run dir."),
    stage2: str | None = typer.Option(None, "--stage2", help="Stage 2 (diagnosis) model: merged dir, hub id, run dir."),
    stage3: list[str] = typer.Option([], "--stage3", help="Stage 3 (caption) model, [NAME=]PATH; repeat to offer "
                                     "several (the page compares two side by side); the first is the default."),
    index: Path | None = typer.Option(None, "--index", help="Reference index (hikari retrieve build) for Stage 2."),
    demo: bool = typer.Option(False, "--demo", help="Serve what `make demo` trained (subaru, sirius + its index, "
                              "vega and antares) from --demo-dir."),
    demo_dir: Path = typer.Option(Path("runs/demo"), "--demo-dir", help="Where `make demo` wrote its runs."),
    host: str = typer.Option(default(ServeConfig, "host"), "--host",
                             help="Interface to bind. The server has no authentication unless --api-key is set."),
    port: int = typer.Option(default(ServeConfig, "port"), "--port", help="TCP port."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="HIKARI_API_KEY",
                                       help="Require 'Authorization: Bearer KEY' on /v1/ endpoints."),
    allowed_folder: Path | None = typer.Option(None, "--allowed-folder",
                                               help="Chat requests may read file:// pictures under this folder."),
    max_upload_mb: float = typer.Option(default(ServeConfig, "max_upload_mb"), "--max-upload-mb",
                                        help="Largest request body (MB), refused while it streams in."),
    max_pixels: int = typer.Option(default(ServeConfig, "max_pixels"), "--max-pixels",
                                   help="Largest picture (width × height) decoded; more is a decompression bomb."),
    queue_size: int = typer.Option(default(ServeConfig, "queue_size"), "--queue-size",
                                   help="Requests allowed to wait for the model; more get 503 + Retry-After."),
    max_batch: int = typer.Option(default(ServeConfig, "max_batch"), "--max-batch",
                                  help="Waiting requests run together as one batch (dynamic batching)."),
    max_new_tokens: int = typer.Option(default(ServeConfig, "max_new_tokens"), "--max-new-tokens",
                                       help="Largest generation budget a request may ask for."),
    engine: str = typer.Option("transformers", "--engine", help="Inference engine: transformers | vllm | sglang | "
                               "openai (vLLM and SGLang load merged models on a CUDA GPU; openai: each model is the "
                               "URL of a running server, e.g. vllm serve: http://127.0.0.1:8001/v1)."),
    engine_option: list[str] = typer.Option([], "--engine-option", help="Engine option KEY=VALUE, repeatable."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | bf16 | fp16 | fp32 (transformers engine)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, … (default: cuda when available)."),
    stage2_prompt: str = typer.Option("P0", "--stage2-prompt", help="Stage 2 question: P0..P3 or T0..T2."),
    reference_text: str = typer.Option("label_description", "--reference-text", help="label | label_description."),
) -> None:
    """Serve the cascade (group → diagnosis with references → caption) as a web page and an HTTP API."""
    # CLI start-up time: the server's modules load FastAPI, uvicorn, torch and transformers
    from hikari.cli.predict import parse_engine_options
    from hikari.serve.app import create_app
    from hikari.serve.run import bind, serve
    from hikari.serve.service import HikariService

    if demo:
        missing = [p for p in (DEMO_RUNS["stage1"], DEMO_RUNS["stage2"], DEMO_RUNS["index"], *DEMO_RUNS["stage3"])
                   if not (demo_dir / p).exists()]  # fmt: skip
        if missing:
            console.print(f"[red]error:[/red] {demo_dir} lacks {', '.join(missing)}: run `make demo` first")
            raise typer.Exit(2)
        stage1 = stage1 or str(demo_dir / DEMO_RUNS["stage1"])
        stage2 = stage2 or str(demo_dir / DEMO_RUNS["stage2"])
        stage3 = stage3 or [str(demo_dir / p) for p in DEMO_RUNS["stage3"]]
        index = index or demo_dir / DEMO_RUNS["index"]
        stage2_prompt, reference_text = "T0", "label"  # what the demo's tiny sirius was trained with
    if not (stage1 and stage2 and stage3):
        console.print("[red]error:[/red] give --stage1, --stage2 and at least one --stage3 (or --demo)")
        raise typer.Exit(2)
    config = ServeConfig(host=host, port=port, max_upload_mb=max_upload_mb, max_pixels=max_pixels,
                         queue_size=queue_size, max_batch=max_batch, max_new_tokens=max_new_tokens)  # fmt: skip
    if host not in LOCAL_HOSTS:
        console.print(f"[yellow]warning:[/yellow] binding to {host}: other machines can reach this server"
                      + ("" if api_key else ", and it has no authentication (set --api-key)"))  # fmt: skip
    try:
        sock = bind(host, port)  # before the models load: a port in use fails at once
    except OSError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    port = sock.getsockname()[1]
    try:
        service = HikariService.load(stage1=stage1, stage2=stage2, stage3=_stage3(stage3), index=index,
                                     engine=engine, engine_options=parse_engine_options(engine_option), dtype=dtype,
                                     device=device, stage2_prompt=stage2_prompt,
                                     reference_text=reference_text)  # fmt: skip
    except (ValueError, FileNotFoundError, NotADirectoryError, OSError) as err:
        sock.close()
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    app = create_app(service, config, allowed_folder=allowed_folder, api_key=api_key)
    console.print(f"HIKARI on http://{host}:{port}/ (API: /v1/cascade, /v1/chat/completions; Ctrl+C stops)")
    try:
        serve(app, sock)
    finally:
        service.close()

"""`hikari train` and `hikari merge`: thin wrappers over hikari.training.stages and hikari.models.lora."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from hikari.config import ConfigError, load_config, resolve_recipe

console = Console(soft_wrap=True, highlight=False)  # paths and errors stay on one line
err_console = Console(stderr=True, soft_wrap=True, highlight=False)


def train_command(
    config: str = typer.Argument(..., help="Recipe name (subaru, deneb, vega, …) or a YAML path."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key: --set train.epochs=1"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip generation + metrics after training."),
) -> None:
    """Train one HIKARI recipe; writes adapter, resolved config, logs, metrics into the run directory."""
    from hikari.training.stages import run_training  # CLI start-up time: torch, transformers, peft

    try:
        cfg = load_config(resolve_recipe(config), overrides)
    except ConfigError as exc:
        err_console.print(f"[red]config error[/red]: {exc}")
        raise typer.Exit(2) from None
    console.print(f"[bold]{cfg.name}[/bold] ({cfg.task}, init={cfg.model.init}) → {cfg.output_dir}")
    result = run_training(cfg, resume=resume, evaluate=False if no_eval else None)
    console.print(f"adapter: {result.adapter_dir}")
    if result.eval_metrics:
        shown = {k: v for k, v in result.eval_metrics.items() if isinstance(v, (int, float))}
        console.print_json(json.dumps(shown))


def merge_command(
    run: Path = typer.Argument(..., help="A training run directory or an adapter directory."),
    out: Path = typer.Option(..., "--out", help="Where to write the merged model."),
    dtype: str = typer.Option("bf16", "--dtype", help="Saved dtype: bf16, fp16 or fp32 (merge runs in fp32)."),
    base: str | None = typer.Option(None, "--base", help="Base model (default: the run's recorded base)."),
) -> None:
    """Merge a LoRA adapter into its base: sharded safetensors + processor + model card, loadable without PEFT."""
    # CLI start-up time: torch, transformers, peft
    from hikari.models.lora import merge_adapter_into_base
    from hikari.training.stages import RUN_INFO, read_run_info

    card = ""
    if (run / RUN_INFO).is_file():
        info = read_run_info(run)
        adapter = run / info["adapter"]
        base = base or info["base_model"]
        metrics_path = run / "metrics.json"
        card = "## Training run\n\n```json\n" + json.dumps(info, indent=2) + "\n```\n"
        if metrics_path.is_file():
            metrics = json.loads(metrics_path.read_text(encoding="utf-8")).get("eval") or {}
            shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            card += "\n## Evaluation\n\n```json\n" + json.dumps(shown, indent=2) + "\n```\n"
        if (run / "config.resolved.yaml").is_file():
            card += "\n## Config\n\n```yaml\n" + (run / "config.resolved.yaml").read_text(encoding="utf-8") + "```\n"
    elif (run / "adapter_config.json").is_file():
        adapter = run
        if base is None:
            base = json.loads((run / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    else:
        err_console.print(f"[red]error:[/red] {run} is neither a HIKARI run (no {RUN_INFO}) nor an adapter (no "
                          "adapter_config.json)")
        raise typer.Exit(2)
    merged = merge_adapter_into_base(str(base), adapter, out, save_dtype=dtype, extra_readme=card)
    console.print(f"merged model: {merged}")

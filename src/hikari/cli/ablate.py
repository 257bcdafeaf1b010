"""`hikari ablate stage3|stage2`: thin wrappers over hikari.training.ablation and hikari.training.rag_ablation."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from hikari.config import ConfigError

console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)
app = typer.Typer(no_args_is_help=True)


@app.command("stage3")
def stage3_command(
    stage2_run: Path = typer.Option(..., "--stage2-run", help="A finished Stage 2 (deneb) run directory."),
    data: Path | None = typer.Option(None, "--data", help="SkinCAP folder (default: the Stage 2 run's)."),
    split: Path | None = typer.Option(None, "--split", help="Split JSON (default: the Stage 2 run's)."),
    out: Path = typer.Option(Path("runs/ablation_stage3"), "--out", help="Ablation directory."),
    recipes: list[str] = typer.Option([], "--recipe", help="Only these recipes (repeatable; default: all six)."),
    arms: list[str] = typer.Option(
        [], "--arm",
        help="An extra row: NAME=RECIPE:KEY=VALUE;KEY=VALUE (repeatable), e.g. antares_b1=antares:loss.beta=1",
    ),
    overrides: list[str] = typer.Option([], "--set", help="Override for every recipe: --set train.epochs=1"),
    steps: int | None = typer.Option(None, "--steps", help="train.max_steps for every recipe."),
    workers: int = typer.Option(1, "--workers", help="Recipes trained at once (CPU: cores; one GPU: 1)."),
) -> None:
    """Train rigel, vega, antares, antares_ckpt, antares_as_run and sts_safe (or the --recipe/--arm rows) from one
    Stage 2 run; table + PNGs."""
    # CLI start-up time: torch, transformers, peft
    from hikari.training.ablation import (
        STAGE3_ABLATION,
        AblationArm,
        render_ablation_markdown,
        run_stage3_ablation,
    )

    try:
        extra = [AblationArm.parse(a) for a in arms]
        chosen = [*(recipes or ([] if extra else STAGE3_ABLATION)), *extra]
        rows = run_stage3_ablation(
            stage2_run, out, recipes=chosen, data_dir=data, split=split,
            overrides=overrides, steps=steps, workers=workers, console=console,
        )  # fmt: skip
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        err_console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    console.print(render_ablation_markdown(rows))
    for row in rows:
        if row.collapse_detected:
            console.print(f"[yellow]{row.recipe}[/yellow]: {row.collapse_message}")
    console.print(f"table: {out / 'ablation.md'}; plots: {out}/<recipe>.png")


@app.command("stage2")
def stage2_command(
    stage2_run: Path = typer.Option(..., "--stage2-run", help="A finished Stage 2 run without references (deneb)."),
    encoder: str | None = typer.Option(
        None, "--encoder", help="Index the split's train part with this encoder (R0..R4 or an encoder directory)."
    ),
    index: Path | None = typer.Option(None, "--index", help="Or an index built from the split's train part."),
    data: Path | None = typer.Option(None, "--data", help="SkinCAP folder (default: the Stage 2 run's)."),
    split: Path | None = typer.Option(None, "--split", help="Split JSON (default: the Stage 2 run's)."),
    out: Path = typer.Option(Path("runs/ablation_stage2"), "--out", help="Ablation directory."),
    kinds: list[str] = typer.Option(
        [], "--kind", help="Reference kinds to train Sirius with (repeatable): retrieved, noise, oracle (default all)."
    ),
    ks: list[int] = typer.Option(
        [], "-k", "--k", help="References per evaluated image (repeatable; default 1 and 3)."
    ),
    overrides: list[str] = typer.Option([], "--set", help="Override for every Sirius: --set train.epochs=1"),
    steps: int | None = typer.Option(None, "--steps", help="train.max_steps for every Sirius."),
    workers: int = typer.Option(1, "--workers", help="Models trained at once (CPU: cores; one GPU: 1)."),
) -> None:
    """Stage 2 with references of controlled quality: Deneb (none), Sirius with retrieved / noise / oracle references,
    each evaluated without references and at K = 1 and 3, and the retrieval-only vote; table + plot."""
    # CLI start-up time: torch, transformers, peft, faiss
    from hikari.training.rag_ablation import K_EVAL, REFERENCE_KINDS, run_stage2_ablation

    try:
        report = run_stage2_ablation(
            stage2_run, out, encoder=encoder, index=index, data_dir=data, split=split, overrides=overrides,
            steps=steps, kinds=kinds or REFERENCE_KINDS, ks=ks or K_EVAL, workers=workers, console=console,
        )  # fmt: skip
    except (ConfigError, FileNotFoundError, ValueError, OSError) as exc:
        err_console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    console.print((out / "ablation.md").read_text(encoding="utf-8"))
    console.print(f"table: {out / 'ablation.md'}; plot: {out / 'accuracy_vs_precision.png'}; "
                  f"{len(report['rows'])} rows")  # fmt: skip

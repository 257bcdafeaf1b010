"""`hikari data synth` and `hikari data inspect`: thin wrappers over `hikari.demo.synth` and `hikari.data.skincap`
(imported when the command runs, not when the CLI starts)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from hikari.config import DataConfig, default
from hikari.data.labels import FUZZY_MERGE_THRESHOLD

if TYPE_CHECKING:
    from hikari.data.skincap import SkinCapDataset
    from hikari.demo.synth import SynthSummary

console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)  # error paths stay copyable

_MAX_ISSUES_SHOWN = 20
ALLOW_OUTSIDE_HELP = "Follow image files that are links to outside skincap/ (refused by default, like '../' names)."


def _count_table(title: str, counts: dict[str, int], key: str) -> Table:
    table = Table(title=title)
    table.add_column(key)
    table.add_column("rows", justify="right")
    for name, count in counts.items():
        table.add_row(name, str(count))
    table.add_row("[bold]total[/bold]", f"[bold]{sum(counts.values())}[/bold]")
    return table


def _print_synth(summary: SynthSummary) -> None:
    from hikari.demo.synth import VALID_CORRUPT_KINDS  # CLI start-up time

    console.print(_count_table("Rows per disease (after normalisation; top 10 + synthetic-only rare)",
                               summary.per_disease, "disease"))  # fmt: skip
    misspelled = ", ".join(f"{wrong!r}→{right!r}" for wrong, right in summary.misspellings.items())
    console.print(f"Misspellings planted (fuzzy-merge ≥ {FUZZY_MERGE_THRESHOLD:g}): {misspelled}")
    console.print(f"Flagged 'Do not consider this image': {summary.n_flagged} rows")
    leaks = Table(title="Planted leak material (id pairs)")
    leaks.add_column("kind")
    leaks.add_column("pairs", justify="right")
    leaks.add_column("ids")
    for kind, pairs in (("same ori_file_path (re-crop)", summary.same_source_pairs),
                        ("pixel-identical copy", summary.identical_pairs),
                        ("re-encoded copy", summary.reencoded_pairs)):  # fmt: skip
        leaks.add_row(kind, str(len(pairs)), " ".join("/".join(p) for p in pairs))
    console.print(leaks)
    console.print(f"not_include/ images (not in the metadata): {len(summary.not_include)}")
    if summary.corrupt:
        bad = Table(title="Corrupt rows appended (--corrupt)")
        bad.add_column("kind")
        bad.add_column("ids")
        bad.add_column("a reader should")
        for kind, ids in summary.corrupt.items():
            bad.add_row(kind, ", ".join(ids), "read it (convert to RGB)" if kind in VALID_CORRUPT_KINDS else "skip it")
        console.print(bad)
    else:
        console.print("No bad rows (use --corrupt to append some).")


def synth_command(
    out: Path = typer.Option(..., "--out", help="Folder to write the synthetic SkinCAP into (created)."),
    n: int = typer.Option(600, "--n", help="Number of good rows (≥ 100)."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed writes byte-identical files."),
    corrupt: bool = typer.Option(False, "--corrupt", help="Also append bad rows (missing/truncated images, …)."),
) -> None:
    """Write a synthetic SkinCAP (real layout, learnable images, planted leaks) and summarise it."""
    from hikari.demo.synth import write_synthetic_skincap  # CLI start-up time: numpy, PIL, openpyxl

    try:
        summary = write_synthetic_skincap(out, n=n, seed=seed, corrupt=corrupt, progress=True)
    except (OSError, ValueError) as err:
        err_console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    _print_synth(summary)
    console.print(f"Wrote {summary.n_rows_total} rows ({summary.n_rows} good) to {summary.out}")


def _print_inspect(ds: SkinCapDataset, top_k: int) -> None:
    s = ds.summary()
    overview = Table(title=f"SkinCAP at {ds.root} ({ds.metadata_path.name})", show_header=False)
    overview.add_column("what")
    overview.add_column("value", justify="right")
    for label, value in (
        ("metadata rows", s["n_rows"]),
        ("used", s["n_used"]),
        (f"outside the top {top_k}", s["n_outside_top_k"]),
        ("flagged 'Do not consider this image'", s["n_flagged"]),
        ("flagged and excluded", s["n_flagged_excluded"]),
        ("missing images", s["n_missing_images"]),
        ("skipped (bad rows)", s["n_skipped"]),
        ("not_include/ images ignored", s["n_not_include_ignored"]),
        ("images not in the metadata", s["n_images_unreferenced"]),
    ):
        overview.add_row(label, str(value))
    console.print(overview)
    console.print(_count_table("Rows per disease", s["per_disease"], "disease"))
    console.print(_count_table("Rows per group", s["per_group"], "group"))
    words = s["caption_words"]
    if words["mean"] is not None:
        console.print(f"Caption length ({s['caption_column']}), words: mean {words['mean']:.1f}, "
                      f"median {words['median']}, min {words['min']}, max {words['max']}")  # fmt: skip
    _print_issues(ds)


def _print_issues(ds: SkinCapDataset) -> None:
    report = ds.report
    if not report.skipped:
        console.print("Skipped rows: none.")
        return
    table = Table(title="Skipped rows by reason")
    table.add_column("reason")
    table.add_column("rows", justify="right")
    for reason, count in sorted(report.skipped.items()):
        table.add_row(reason, str(count))
    console.print(table)
    for issue in report.issues[:_MAX_ISSUES_SHOWN]:
        console.print(f"  {issue.file} row {issue.row}, column {issue.column!r}: {issue.message}")
    if len(report.issues) > _MAX_ISSUES_SHOWN:
        console.print(f"  … and {len(report.issues) - _MAX_ISSUES_SHOWN} more")


def inspect_command(
    data: Path = typer.Argument(..., help="SkinCAP folder (metadata file + skincap/ images)."),
    metadata: str = typer.Option(
        default(DataConfig, "metadata"), "--metadata", help="'csv', 'xlsx' or a path to the metadata file."
    ),
    caption_column: str = typer.Option(
        default(DataConfig, "caption_column"), "--caption-column",
        help="Caption column (caption_en on the XLSX is mapped automatically).",
    ),
    exclude_flagged: bool = typer.Option(False, "--exclude-flagged", help="Drop 'Do not consider this image' rows."),
    top_k: int = typer.Option(
        default(DataConfig, "top_k"), "--top-k", help="Keep the K most frequent diseases (fuzzy-merging spellings)."
    ),
    allow_outside: bool = typer.Option(False, "--allow-outside", help=ALLOW_OUTSIDE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Summarise a SkinCAP folder: rows, classes, groups, flagged, missing images, skipped rows, captions."""
    from hikari.data import skincap  # CLI start-up time: numpy, PIL, openpyxl

    # The per-row warnings of the reader would repeat the issue list printed below, so mute them here only.
    reader_logger = logging.getLogger(skincap.__name__)
    level = reader_logger.level
    reader_logger.setLevel(logging.ERROR)
    try:
        ds = skincap.read_skincap(
            data, metadata=metadata, caption_column=caption_column, exclude_flagged=exclude_flagged, top_k=top_k,
            allow_outside=allow_outside,
        )
    except skincap.SkinCapFormatError as err:
        err_console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    finally:
        reader_logger.setLevel(level)
    if json_out:
        # Plain print: rich would wrap long lines and break the JSON.
        print(json.dumps(ds.summary(), ensure_ascii=False))
        return
    _print_inspect(ds, top_k)

"""`hikari data split` and `hikari data audit`: thin wrappers over `hikari.data.split` and `hikari.data.audit`
(imported when the command runs, not when the CLI starts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from hikari.cli.data_read import ALLOW_OUTSIDE_HELP
from hikari.config import DEFAULT_HASH_THRESHOLD, DataConfig, default

if TYPE_CHECKING:
    from hikari.data.audit import AuditReport
    from hikari.data.split import Split

console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)  # error paths stay copyable

_MAX_ISSUES_SHOWN = 20


def _counts_table(split: Split) -> Table:
    counts = split.counts()
    parts = list(counts)
    table = Table(title="Rows per part and disease")
    table.add_column("disease")
    for part in parts:
        table.add_column(part, justify="right")
    table.add_column("eval share", justify="right")
    diseases = sorted({d for c in counts.values() for d in c})
    for disease in [*diseases, "total"]:
        row = [sum(c.values()) if disease == "total" else c.get(disease, 0) for c in counts.values()]
        share = sum(row[1:]) / max(1, sum(row))
        table.add_row(disease, *map(str, row), f"{share:.1%}")
    return table


def split_command(
    data: Path = typer.Option(..., "--data", help="SkinCAP folder (metadata file + skincap/ images)."),
    out: Path = typer.Option(..., "--out", help="Split JSON to write (atomically)."),
    top_k: int = typer.Option(
        default(DataConfig, "top_k"), help="Keep the K most frequent diseases (fuzzy-merging rare spellings)."
    ),
    val_frac: float = typer.Option(0.1, help="Fraction of each disease's rows that goes to val."),
    test_frac: float = typer.Option(0.0, help="Fraction of each disease's rows that goes to test (0: no test part)."),
    seed: int = typer.Option(42, help="Seed of the group ranking; the same seed gives a byte-identical file."),
    hash_threshold: int = typer.Option(
        DEFAULT_HASH_THRESHOLD, help="pHash Hamming distance (bits) at or below which two images count as copies."
    ),
    metadata: str = typer.Option(default(DataConfig, "metadata"), help="'csv', 'xlsx' or a path to the metadata file."),
    exclude_flagged: bool = typer.Option(
        default(DataConfig, "exclude_flagged"), help="Drop rows marked 'Do not consider this image'."
    ),
    allow_outside: bool = typer.Option(False, "--allow-outside", help=ALLOW_OUTSIDE_HELP),
) -> None:
    """Make a stratified split that keeps copies of one picture together, save it, and audit it."""
    # CLI start-up time: reading and hashing pull in numpy, scipy, PIL and openpyxl
    from hikari.data.audit import audit_split
    from hikari.data.split import load_split, split_dataset

    try:
        split, dataset = split_dataset(
            data,
            top_k=top_k,
            val_frac=val_frac,
            test_frac=test_frac,
            seed=seed,
            hash_threshold=hash_threshold,
            metadata=metadata,
            exclude_flagged=exclude_flagged,
            allow_outside=allow_outside,
        )
    except (OSError, ValueError) as err:
        err_console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    split.save(out)

    report = dataset.report
    console.print(
        f"Read {report.n_rows} rows from {dataset.metadata_path}: {report.n_used} used, "
        f"{report.n_outside_top_k} outside the top {top_k}, {report.n_flagged} flagged "
        f"({report.n_flagged_excluded} excluded), {sum(report.skipped.values())} skipped."
    )
    if report.skipped:
        console.print("Skipped rows: " + ", ".join(f"{k}={v}" for k, v in sorted(report.skipped.items())))
        for issue in report.issues[:_MAX_ISSUES_SHOWN]:
            console.print(f"  {issue.file} row {issue.row}, column {issue.column!r}: {issue.message}")
        if len(report.issues) > _MAX_ISSUES_SHOWN:
            console.print(f"  … and {len(report.issues) - _MAX_ISSUES_SHOWN} more")
    console.print(_counts_table(split))
    by_reason: dict[str, int] = {}
    for group in split.groups:
        for reason in group.reasons:
            by_reason[reason] = by_reason.get(reason, 0) + 1
    rows_grouped = sum(len(g.file_names) for g in split.groups)
    console.print(
        f"Kept together: {len(split.groups)} groups of >1 rows ({rows_grouped} rows); groups per reason: "
        + (", ".join(f"{k}={v}" for k, v in sorted(by_reason.items())) or "none")
    )
    console.print(f"Wrote {out} (dataset fingerprint {split.dataset['fingerprint'][:16]}…)")

    # Audit the file as written (this also proves it reads back), reusing the hashes computed for the split.
    audit = audit_split(load_split(out), dataset.records, hashes=split.hashes, threshold=hash_threshold)
    _print_report(audit)
    if not audit.clean:  # make_split guarantees this; a failure here is a bug worth stopping for
        err_console.print("[red]error:[/red] the new split is not leak-free (please report this as a bug)")
        raise typer.Exit(1)


def _print_report(report: AuditReport, *, heading: str = "") -> None:
    from hikari.data.audit import OVERLAP_KINDS  # CLI start-up time

    if heading:
        console.rule(heading)
    if report.overlaps:
        table = Table(title=f"Overlaps — {report.title}")
        for column in ("kind", "part", "file", "eval part", "eval file", "distance", "detail"):
            table.add_column(column)
        for o in report.overlaps:
            distance = "" if o.distance is None else str(o.distance)
            table.add_row(o.kind, o.part_a, o.file_a, o.part_b, o.file_b, distance, o.detail)
        console.print(table)
    checked = ", ".join(
        f"{kind} ({report.coverage[kind][0]}/{report.coverage[kind][1]} files)" if report.checked[kind] else
        f"{kind} (not checked)"
        for kind in OVERLAP_KINDS
    )  # fmt: skip
    counts = ", ".join(f"{k}={v}" for k, v in report.counts.items())
    status = "[green]clean[/green]" if report.clean else "[red]LEAK[/red]"
    console.print(f"{status} {report.title}")
    console.print(
        f"  {report.n_overlapping_eval_items} of {report.n_eval_items} evaluation items overlap the other side; "
        f"overlaps by kind: {counts}"
    )
    console.print(f"  checked: {checked}; near-duplicate threshold {report.threshold} bits")
    for note in report.notes:
        console.print(f"  note: {note}")


def audit_command(
    split: Path | None = typer.Argument(None, help="A split file (ours or the original split_info_*.json)."),
    data: Path | None = typer.Option(
        None, "--data", help="SkinCAP folder: enables the source-image, identical-pixel and near-duplicate checks."
    ),
    train: Path | None = typer.Option(None, "--train", help="Split whose TRAIN part a model was trained on."),
    eval_: Path | None = typer.Option(None, "--eval", help="Split whose val/test parts the model was evaluated on."),
    hash_threshold: int = typer.Option(DEFAULT_HASH_THRESHOLD, help="pHash distance (bits) for near-duplicates."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON instead of tables."),
) -> None:
    """Report every overlap between training and evaluation images; exit 1 if there is any, 0 if clean, 2 on error.

    `hikari data audit SPLIT.json` checks one split's parts against each other; `hikari data audit --train A.json
    --eval B.json` checks A's training images against B's evaluation images (and, for information, the reverse).
    """
    pair_form = train is not None or eval_ is not None
    if split is None and not pair_form:
        raise typer.BadParameter("give a SPLIT file, or --train A.json and --eval B.json")
    if split is not None and pair_form:
        raise typer.BadParameter("give either a SPLIT file or --train/--eval, not both")
    if pair_form and (train is None or eval_ is None):
        raise typer.BadParameter("the pair form needs both --train A.json and --eval B.json")
    # CLI start-up time: reading and hashing pull in numpy, scipy, PIL and openpyxl
    from hikari.data.audit import audit_pair, audit_split
    from hikari.data.skincap import read_skincap
    from hikari.data.split import hash_records, load_split

    try:
        splits = [load_split(p) for p in ([split] if split is not None else [train, eval_]) if p is not None]
        records, hashes = None, None
        if data is not None:
            # Every row (no top-K filter), so each file of either split can be matched to its source and image.
            records = read_skincap(data, top_k=None).records
            in_splits = {name for s in splits for names in s.parts.values() for name in names}
            hashes = hash_records(records, only=in_splits, progress=not json_out)
        reverse = None
        if len(splits) == 1:
            main = audit_split(splits[0], records, hashes, threshold=hash_threshold)
        else:
            train_info, eval_info = splits
            main = audit_pair(train_info, eval_info, records, hashes, threshold=hash_threshold)
            if "train" in eval_info.parts and train_info.eval_parts():
                reverse = audit_pair(eval_info, train_info, records, hashes, threshold=hash_threshold)
    except (OSError, ValueError, KeyError) as err:
        err_console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err

    if json_out:
        payload = main.to_dict()
        if reverse is not None:
            payload["reverse"] = reverse.to_dict()
        typer.echo(json.dumps(payload, indent=2))
    else:
        _print_report(main)
        if reverse is not None:
            _print_report(reverse, heading="Reverse direction (information only; does not change the exit code)")
    raise typer.Exit(0 if main.clean else 1)

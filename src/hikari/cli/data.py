"""`hikari data …`: the commands live next to the code they wrap; this module only registers them."""

from __future__ import annotations

import typer

from hikari.cli.data_read import inspect_command, synth_command
from hikari.cli.data_split import audit_command, split_command

app = typer.Typer(no_args_is_help=True)
app.command("synth", help="Write a synthetic SkinCAP folder (real layout, learnable disease-dependent images).")(
    synth_command
)
app.command("inspect", help="Summarise a SkinCAP folder: rows, classes, groups, flagged, missing images, captions.")(
    inspect_command
)
app.command("split", help="Make a leak-free stratified split (grouped by source image and near-duplicates).")(
    split_command
)
app.command("audit", help="Report every train/eval overlap (id, source image, near-duplicate hash); exit 1 if any.")(
    audit_command
)

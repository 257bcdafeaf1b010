"""`hikari retrieve …`: build a reference index, query it, build tiny offline encoders (thin wrappers over
`hikari.retrieval` and `hikari.demo.encoders`, imported when a command runs: they load faiss, torch and
transformers)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from hikari.config import DEFAULT_TARGET_RECALL, RagConfig, default

console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

app = typer.Typer(no_args_is_help=True)


def _fail(err: BaseException) -> None:
    err_console.print(f"[red]error:[/red] {err}")
    raise typer.Exit(2) from err


@app.command("build", help="Index the train part of a split: image + caption embeddings, hybrid α score, faiss.")
def build_command(
    data: Path = typer.Option(..., "--data", help="SkinCAP folder (metadata + skincap/ images)."),
    split: Path = typer.Option(..., "--split", help="Split JSON; only its train part is indexed."),
    encoder: str = typer.Option(..., "--encoder", help="R0..R4, or a directory from `hikari retrieve tiny-encoders`."),
    out: Path = typer.Option(..., "--out", help="Index directory to write (replaced atomically)."),
    alpha: float = typer.Option(
        default(RagConfig, "alpha"), "--alpha", min=0.0, max=1.0, help="Image weight α of the hybrid score."
    ),
    approximate: bool = typer.Option(False, "--approximate", help="Also build an IVF-SQ8 index (large sets)."),
    nlist: int | None = typer.Option(None, "--nlist", min=1, help="IVF lists (default √n)."),
    nprobe: int | None = typer.Option(
        None, "--nprobe", min=1, help="IVF lists probed per query (default: the fewest reaching --target-recall)."
    ),
    target_recall: float = typer.Option(
        DEFAULT_TARGET_RECALL, "--target-recall", min=0.0, max=1.0,
        help="recall@10 the approximate index must reach at build time, else exact search is used.",
    ),
    device: str = typer.Option("cpu", "--device", help="Encoder device (cpu, cuda)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images/texts per encoder batch."),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Allow hub model code (needed by R3 jina-clip-v2 and R4 nomic)."
    ),
) -> None:
    from hikari.retrieval.references import build_reference_index  # CLI start-up time

    try:
        index = build_reference_index(
            data, split, encoder, out=out, alpha=alpha, approximate=approximate, nlist=nlist, nprobe=nprobe,
            target_recall=target_recall, device=device, trust_remote_code=trust_remote_code, batch_size=batch_size,
            progress=True,
        )  # fmt: skip
    except (ValueError, KeyError, FileNotFoundError, NotADirectoryError, OSError) as err:
        _fail(err)
    info = index.info
    console.print(
        f"[green]index[/green] {out}: {len(index.references)} references, encoder {info.encoder.get('name')}, "
        f"α={info.alpha}, dims image {info.image_dim} + text {info.text_dim}"
        + (f", approximate nlist={info.approximate['nlist']}" if info.approximate else "")
    )
    if info.tuning is not None:
        console.print(f"approximate search: {info.tuning.search}"
                      + (f" at nprobe {info.tuning.nprobe}" if info.tuning.nprobe else "")
                      + f" ({info.tuning.reason})")  # fmt: skip
    if info.skipped:
        names = ", ".join(item["file_name"] for item in info.skipped[:5])
        console.print(f"[yellow]{len(info.skipped)} unreadable train image(s) left out[/yellow] ({names}"
                      f"{', …' if len(info.skipped) > 5 else ''}); listed in {out}/index.json")  # fmt: skip


@app.command("query", help="Print the references of one image (and optional text) with their scores.")
def query_command(
    index_dir: Path = typer.Argument(..., help="Index directory from `hikari retrieve build`."),
    image: Path = typer.Argument(..., help="Query image."),
    text: str | None = typer.Option(None, "--text", help="Query text (Strategy B), e.g. a Stage 3 caption."),
    k: int = typer.Option(default(RagConfig, "k_eval"), "-k", "--k", min=1, help="References to return."),
    alpha: float | None = typer.Option(None, "--alpha", min=0.0, max=1.0, help="Override the index's α."),
    approximate: bool = typer.Option(False, "--approximate", help="Search the IVF index."),
    device: str = typer.Option("cpu", "--device", help="Encoder device."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow hub model code (R3, R4)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    # CLI start-up time: faiss, torch, transformers
    from hikari.data.hashing import image_hash
    from hikari.retrieval.index import Exclusion, HybridIndex
    from hikari.retrieval.references import encoders_for

    try:
        index = HybridIndex.load(index_dir)
        encoders = encoders_for(index, device=device, trust_remote_code=trust_remote_code)
        image_emb = encoders.encode_images([image])
        text_emb = encoders.encode_texts([text], query=True) if text else None
        # The query picture itself (or a near-duplicate of it) is never returned.
        exclude = [Exclusion(phash=image_hash(image))]
        hits = index.search(image_emb, text_emb, k=k, exclude=exclude, alpha=alpha, approximate=approximate)[0]
    except (ValueError, FileNotFoundError, OSError) as err:
        _fail(err)
    if as_json:
        print(json.dumps([h.to_dict() for h in hits], ensure_ascii=False))
        return
    table = Table(title=f"references of {image.name} ({'image + text' if text else 'image'})")
    for col in ("#", "score", "cos img", "cos txt", "label", "file"):
        table.add_column(col)
    for i, h in enumerate(hits, start=1):
        cos_txt = "-" if h.cos_text is None else f"{h.cos_text:.4f}"
        table.add_row(str(i), f"{h.score:.4f}", f"{h.cos_image:.4f}", cos_txt, h.reference.label, h.reference.file_name)
    console.print(table)


@app.command("tiny-encoders", help="Build tiny random image (CLIP/SigLIP) + text encoders for offline runs.")
def tiny_encoders_command(
    out: Path = typer.Option(..., "--out", help="Directory to create."),
    seed: int = typer.Option(0, "--seed", help="Weight seed."),
    image_arch: str = typer.Option("clip", "--image-arch", help="clip | siglip"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out."),
) -> None:
    from hikari.demo.encoders import build_tiny_encoders  # CLI start-up time

    try:
        path = build_tiny_encoders(out, seed=seed, image_arch=image_arch, overwrite=overwrite)
    except (ValueError, FileExistsError, NotADirectoryError) as err:
        _fail(err)
    console.print(f"[green]tiny encoders[/green]: {path}")


@app.command("train-encoders", help="Train tiny image + text encoders on a split's train part (offline, CPU).")
def train_encoders_command(
    data: Path = typer.Option(..., "--data", help="SkinCAP folder."),
    split: Path = typer.Option(..., "--split", help="Split JSON; only its train part is read."),
    out: Path = typer.Option(..., "--out", help="Encoder directory to create (load it with --encoder OUT)."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Optimizer steps (default: the demo's)."),
    seed: int = typer.Option(0, "--seed", help="Weights, batches and flips."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out."),
) -> None:
    from hikari.demo.encoders import TRAINED_STEPS, train_tiny_encoders  # CLI start-up time

    try:
        result = train_tiny_encoders(out, data, split, steps=steps or TRAINED_STEPS, seed=seed, overwrite=overwrite)
    except (ValueError, FileExistsError, FileNotFoundError, OSError) as err:
        _fail(err)
    console.print(f"[green]trained encoders[/green]: {out} ({result['train_images']} train images, "
                  f"{result['steps']} steps, loss {result['loss_first']:.3f} → {result['loss_last']:.3f}, "
                  f"{result['seconds']} s)")  # fmt: skip


@app.command("evaluate", help="Retrieval-only baseline: precision@k of the references and a vote's diagnosis metrics.")
def evaluate_command(
    index_dir: Path = typer.Argument(..., help="Index directory from `hikari retrieve build` (train part)."),
    data: Path = typer.Option(..., "--data", help="SkinCAP folder."),
    split: Path = typer.Option(..., "--split", help="The split the index was built from."),
    part: str = typer.Option("val", "--part", help="Split part to evaluate (never the indexed train part)."),
    ks: list[int] = typer.Option([], "-k", "--k", help="References voting (repeatable; default 1 and 3)."),
    device: str = typer.Option("cpu", "--device", help="Encoder device."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow hub model code (R3, R4)."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
) -> None:
    """Each image of `--part` is diagnosed by a similarity-weighted vote of its top-K leak-free references (image-only
    query); reports precision@1/@3 and accuracy, balanced accuracy, macro-F1, κ, MCC, per class."""
    # CLI start-up time: faiss, torch, transformers, scikit-learn
    from hikari.data.split import read_split_records
    from hikari.retrieval.index import HybridIndex
    from hikari.retrieval.references import (
        check_index_matches_split,
        encoders_for,
        refuse_indexed_records,
        retrieve_references,
    )
    from hikari.retrieval.vote import evaluate_vote, reference_precision  # CLI start-up time: scikit-learn

    ks = sorted(set(ks or [1, 3]))
    if min(ks) < 1:
        _fail(ValueError(f"-k must be >= 1, got {min(ks)}"))
    try:
        index = HybridIndex.load(index_dir)
        check_index_matches_split(index, split)
        records = read_split_records(data, split, [part]).parts[part]
        refuse_indexed_records(index, records, index_dir)
        encoders = encoders_for(index, device=device, trust_remote_code=trust_remote_code)
        hits = retrieve_references(index, encoders, records, k=max(ks), progress=not as_json)
    except (ValueError, KeyError, FileNotFoundError, OSError) as err:
        _fail(err)
    result = {
        "index": str(index_dir), "encoder": index.info.encoder.get("name"), "part": part, "n": len(records),
        "precision_at_1": reference_precision(records, hits, 1),
        **{f"precision_at_{k}": reference_precision(records, hits, k) for k in ks if k > 1},
        "vote": {f"k{k}": evaluate_vote(records, hits, k) for k in ks},
    }  # fmt: skip
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    console.print(f"{index_dir} ({result['encoder']}), part {part}: {len(records)} images; precision@1 "
                  f"{result['precision_at_1']:.1f} %" + "".join(f", precision@{k} {result[f'precision_at_{k}']:.1f} %"
                                                            for k in ks if k > 1))  # fmt: skip
    table = Table(title="retrieval-only vote (%)")
    for col in ("K", "accuracy", "balanced acc.", "macro-F1", "κ", "MCC"):
        table.add_column(col, justify="right")
    for k in ks:
        m = result["vote"][f"k{k}"]
        table.add_row(str(k), *("n/a" if m.get(key) is None else f"{m[key]:.1f}"
                                for key in ("accuracy", "balanced_accuracy", "f1_macro", "cohen_kappa", "mcc")))
    console.print(table)

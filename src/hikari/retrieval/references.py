"""Reference cases for records: build the index of a split's train part, retrieve K references per record
(own id, source image and near-duplicates excluded), and cache them on disk before any VLM is loaded.

    index = build_reference_index(data_dir, split_path, "R2", out=Path("runs/rag-r2"), alpha=config.rag.alpha)
    refs = retrieve_references(index, encoders, records, k=3, query_texts=None)   # file name → [Hit, ...]

Query texts: the training sample's own caption is fair game during training (it is training data, and the
sample itself is excluded from its references); an evaluated image's query text must be the model's own Stage 3
caption or user text — this module never reads an evaluated record's ground-truth caption.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from hikari.config import DEFAULT_HASH_THRESHOLD, DEFAULT_TARGET_RECALL, DataConfig, default
from hikari.data.hashing import hash_images
from hikari.data.images import load_rgb
from hikari.data.records import SkinCapRecord
from hikari.data.split import load_split, normalise_source, read_split_records
from hikari.evaluation.predictions import read_predictions
from hikari.retrieval.encoders import Encoders, load_encoders
from hikari.retrieval.index import Exclusion, Hit, HybridIndex, Reference, Strategy
from hikari.utils.io import atomic_write_json, fingerprint_strings, sha256_file

logger = logging.getLogger(__name__)

ReferenceText = Literal["label", "label_description"]
REFERENCE_TEXTS: tuple[str, ...] = ("label", "label_description")
CACHE_VERSION = 1


def build_reference_index(
    data_dir: Path,
    split_path: Path,
    encoder: str | Path | Encoders,
    *,
    out: Path,
    alpha: float,
    approximate: bool = False,
    nlist: int | None = None,
    nprobe: int | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    device: str = "cpu",
    trust_remote_code: bool = False,
    batch_size: int = 32,
    image_max_size: int | None = default(DataConfig, "max_image_size"),
    progress: bool = False,
) -> HybridIndex:
    """Encode the *train part only* of `split_path` (images + captions) and save a `HybridIndex` to `out`.

    The split's reader options are used to read `data_dir`, and every image is hashed (pHash) so that queries
    can exclude near-duplicates. `encoder` is a registry name (R0–R4), a tiny-encoder directory or a loaded
    `Encoders`. A train image that cannot be read (missing, undecodable, over the pixel limit) is left out, logged
    and listed in the index's `info.skipped`. With `approximate`, nprobe None is tuned at build time to
    `target_recall` (recall@10), or exact search is chosen (`HybridIndex.from_embeddings`).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    train = read_split_records(data_dir, split_path, ["train"])
    split, records = train.split, train.parts["train"]
    if not records:
        raise ValueError(f"{split_path}: the train part is empty; nothing to index")
    enc = encoder if isinstance(encoder, Encoders) else load_encoders(
        encoder, device=device, trust_remote_code=trust_remote_code
    )
    unreadable: dict[int, str] = {}
    readable_hashes = hash_images([r.image_path for r in records], progress=progress, errors=unreadable)
    skipped = [{"file_name": records[i].file_name, "error": message} for i, message in sorted(unreadable.items())]
    for item in skipped:
        logger.warning("%s: %s — left out of the index", item["file_name"], item["error"])
    records = [r for i, r in enumerate(records) if i not in unreadable]
    if not records:
        raise ValueError(f"{split_path}: no train image could be read; nothing to index")
    hashes = {r.file_name: h for r, h in zip(records, readable_hashes, strict=True)}
    image_emb = enc.encode_images([r.image_path for r in records], batch_size=batch_size, max_size=image_max_size,
                                  progress=progress)  # fmt: skip
    text_emb = None
    if enc.has_text:
        empty = [r.file_name for r in records if not r.caption.strip()]
        if empty:
            raise ValueError(f"{data_dir}: {len(empty)} train record(s) have an empty caption, e.g. {empty[:3]}")
        text_emb = enc.encode_texts([r.caption for r in records], batch_size=batch_size, progress=progress)
    references = [
        Reference(id=r.id, file_name=r.file_name, label=r.disease, caption=r.caption,
                  image_path=str(Path(r.image_path).resolve()), source=normalise_source(r.ori_file_path),
                  phash=hashes[r.file_name].phash)
        for r in records
    ]  # fmt: skip
    index = HybridIndex.from_embeddings(
        image_emb, text_emb, references, alpha=alpha, approximate=approximate, nlist=nlist, nprobe=nprobe,
        target_recall=target_recall, encoder=enc.describe(), split=str(Path(split_path).resolve()),
        split_fingerprint=split.fingerprint,
        data_dir=str(Path(data_dir).resolve()),
        hash_threshold=int(split.config.get("hash_threshold", DEFAULT_HASH_THRESHOLD)), skipped=skipped,
    )  # fmt: skip
    index.save(Path(out))
    return index


def encoders_for(index: HybridIndex, *, device: str = "cpu", trust_remote_code: bool = False) -> Encoders:
    """Load the very encoders an index was built with (recorded in its metadata)."""
    ref = index.info.encoder.get("ref")
    if not ref:
        raise ValueError("the index metadata does not record how to load its encoders ('encoder.ref')")
    return load_encoders(ref, device=device, trust_remote_code=trust_remote_code)


def check_index_matches_split(index: HybridIndex, split_path: Path) -> None:
    """Raise unless every reference of `index` is in the train part of `split_path` (no eval image indexed)."""
    split = load_split(split_path)
    train = split.file_names("train")
    outside = [r.file_name for r in index.references if r.file_name not in train]
    if outside:
        raise ValueError(
            f"index built from {index.info.split} holds {len(outside)} reference(s) outside the train part of "
            f"{split_path}, e.g. {outside[:3]}: those could be evaluation images (a leak); rebuild the index "
            "from this split"
        )
    if index.info.split_fingerprint and split.fingerprint and index.info.split_fingerprint != split.fingerprint:
        raise ValueError(f"index was built on data with fingerprint {index.info.split_fingerprint[:12]}…, the split "
                         f"{split_path} describes {split.fingerprint[:12]}…; rebuild the index")  # fmt: skip


def exclusion_for(record: SkinCapRecord, phash: int | None) -> Exclusion:
    return Exclusion(id=record.id, source=normalise_source(record.ori_file_path), phash=phash)


def retrieve_references(
    index: HybridIndex,
    encoders: Encoders,
    records: Sequence[SkinCapRecord],
    *,
    k: int,
    query_texts: Mapping[str, str] | None = None,
    alpha: float | None = None,
    batch_size: int = 64,
    image_max_size: int | None = default(DataConfig, "max_image_size"),
    progress: bool = False,
) -> dict[str, list[Hit]]:
    """File name → top-k references of each record (own id, source and near-duplicates excluded).

    `query_texts` (file name → text) switches a record's query to Strategy B; records without one use
    Strategy A on aligned encoders, else the image alone. A record whose image cannot be read gets no references
    (logged); whoever reads the image next reports it as unreadable.
    """
    if not records:
        return {}
    unreadable: dict[int, str] = {}
    hashes = hash_images([r.image_path for r in records], errors=unreadable)
    for i, message in sorted(unreadable.items()):
        logger.warning("%s: %s — no references for it", records[i].file_name, message)
    empty = {records[i].file_name: [] for i in unreadable}
    records = [r for i, r in enumerate(records) if i not in unreadable]
    if not records:
        return empty
    image_emb = encoders.encode_images([r.image_path for r in records], batch_size=batch_size,
                                       max_size=image_max_size, progress=progress)  # fmt: skip
    texts = dict(query_texts or {})
    with_text = [i for i, r in enumerate(records) if texts.get(r.file_name, "").strip() and encoders.has_text]
    without = [i for i in range(len(records)) if i not in set(with_text)]
    out: dict[str, list[Hit]] = {}
    groups: list[tuple[list[int], Strategy]] = [(with_text, "text")]
    groups.append((without, "image_text" if index.info.encoder.get("aligned") and index.info.text_dim else "image"))
    for rows, strategy in groups:
        if not rows:
            continue
        text_emb = None
        if strategy == "text":
            text_emb = encoders.encode_texts([texts[records[i].file_name] for i in rows], query=True,
                                             batch_size=batch_size)  # fmt: skip
        exclude = [exclusion_for(records[i], hashes[i].phash) for i in rows]
        hits = index.search(image_emb[rows], text_emb, k=k, exclude=exclude, strategy=strategy, alpha=alpha)
        for i, found in zip(rows, hits, strict=True):
            out[records[i].file_name] = found
    return {**out, **empty}


def reference_triples(
    hits: Sequence[Hit], reference_text: str, *, k: int | None = None
) -> list[tuple[str, str, str | None]]:
    """(image path, label, caption or None) per hit — what `prompts.rag_messages` renders."""
    if reference_text not in REFERENCE_TEXTS:
        raise ValueError(f"unknown reference_text {reference_text!r}; valid: {', '.join(REFERENCE_TEXTS)}")
    chosen = hits if k is None else hits[:k]
    return [(h.reference.image_path, h.reference.label,
             h.reference.caption if reference_text == "label_description" else None) for h in chosen]  # fmt: skip


def load_reference_images(
    triples: Sequence[tuple[Any, str, str | None]],
    *,
    max_size: int | None,
    unreadable: set[str] | None = None,
) -> list[tuple[Image.Image, str, str | None]]:
    """Decode the references' images (paths, or PIL images kept as they are) for `prompts.rag_messages`. A
    reference whose image cannot be read (deleted or damaged after the index was built) is left out and logged,
    its path added to `unreadable`: the query is answered with the remaining references, and the query image is
    not blamed."""
    shown = []
    for image, label, caption in triples:
        if not isinstance(image, (str, os.PathLike)):
            shown.append((image, label, caption))
            continue
        try:
            shown.append((load_rgb(image, max_size=max_size), label, caption))
        except OSError as err:
            if unreadable is None or str(image) not in unreadable:
                logger.warning("reference %s left out: %s", image, err)
            if unreadable is not None:
                unreadable.add(str(image))
    return shown


def index_digest(index_dir: Path) -> str:
    """A content digest of an index directory (metadata + references), used as a cache key."""
    return fingerprint_strings([sha256_file(index_dir / "index.json"), sha256_file(index_dir / "references.json")])


def cached_references(
    cache_path: Path,
    index_dir: Path,
    records: Sequence[SkinCapRecord],
    *,
    k: int,
    query_texts: Mapping[str, str] | None,
    query_kind: str,
    alpha: float | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
    image_max_size: int | None = default(DataConfig, "max_image_size"),
    progress: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """File name → reference dicts (`Hit.to_dict`), read from `cache_path` when its key matches, else computed
    (encoders loaded, used and released) and written atomically. The key covers the index content, k, α, the
    query-text kind and the records' file names."""
    key = {
        "version": CACHE_VERSION,
        "index": str(Path(index_dir).resolve()),
        "index_digest": index_digest(Path(index_dir)),
        "k": k,
        "alpha": alpha,
        "query": query_kind,
        "query_texts": fingerprint_strings(f"{n}\t{t}" for n, t in sorted((query_texts or {}).items())),
        "records": fingerprint_strings(r.file_name for r in records),
    }
    if cache_path.is_file():
        cached = json.loads(cache_path.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            return cached["references"]
        logger.info("%s: stale reference cache (index, k or queries changed); recomputing", cache_path)
    index = HybridIndex.load(Path(index_dir))
    encoders = encoders_for(index, device=device, trust_remote_code=trust_remote_code)
    try:
        hits = retrieve_references(index, encoders, records, k=k, query_texts=query_texts, alpha=alpha,
                                   image_max_size=image_max_size, progress=progress)  # fmt: skip
    finally:
        del encoders
    refs = {name: [h.to_dict() for h in found] for name, found in hits.items()}
    short = [n for n, found in refs.items() if len(found) < k]
    if short:
        logger.warning("%d record(s) got fewer than %d references (index too small after exclusions), e.g. %s",
                       len(short), k, short[:3])  # fmt: skip
    atomic_write_json(cache_path, {"key": key, "references": refs}, indent=None)
    return refs


def triples_from_dicts(
    refs: Sequence[Mapping[str, Any]], reference_text: str, *, k: int | None = None
) -> list[tuple[str, str, str | None]]:
    """`reference_triples` for cached reference dicts."""
    if reference_text not in REFERENCE_TEXTS:
        raise ValueError(f"unknown reference_text {reference_text!r}; valid: {', '.join(REFERENCE_TEXTS)}")
    chosen = refs if k is None else refs[:k]
    return [(r["image_path"], r["label"], r["caption"] if reference_text == "label_description" else None)
            for r in chosen]  # fmt: skip


def refuse_indexed_records(index: HybridIndex, records: Sequence[SkinCapRecord], index_dir: Path | str) -> None:
    """Raise when the index holds any of `records` (built on another split: they would be their own references)."""
    indexed = {r.file_name for r in index.references}
    inside = [r.file_name for r in records if r.file_name in indexed]
    if inside:
        raise ValueError(f"index {index_dir} holds {len(inside)} of the images to query (e.g. {inside[:3]}); build "
                         "the index from the train part of this split and query another part")  # fmt: skip


def references_for_prediction(
    index_dir: Path,
    records: Sequence[SkinCapRecord],
    *,
    k: int,
    reference_text: str = "label_description",
    query_texts: Mapping[str, str] | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
    image_max_size: int | None = default(DataConfig, "max_image_size"),
    progress: bool = False,
) -> dict[str, list[tuple[str, str, str | None]]]:
    """File name → (image path, label, caption or None) of the top-k references of each record to predict.

    Refuses an index that holds any of the records themselves (it was built on another split, so evaluation
    images would be their own references); own ids, source images and near-duplicates are excluded as always.
    `query_texts` must be generated text (Stage 3 captions, user text), never the records' true captions.
    """
    index = HybridIndex.load(Path(index_dir))
    refuse_indexed_records(index, records, index_dir)
    encoders = encoders_for(index, device=device, trust_remote_code=trust_remote_code)
    hits = retrieve_references(index, encoders, records, k=k, query_texts=query_texts, image_max_size=image_max_size,
                               progress=progress)  # fmt: skip
    return {name: reference_triples(found, reference_text) for name, found in hits.items()}


def generated_captions(paths: Sequence[Path]) -> dict[str, str]:
    """File name → generated caption from Stage 3 prediction files (the evaluation query texts)."""
    out: dict[str, str] = {}
    for path in paths:
        for lineno, p in enumerate(read_predictions(path), start=1):
            if p.task != "caption":
                raise ValueError(f"{path}: line {lineno} is a {p.task!r} prediction; rag.eval_query_captions needs "
                                 "Stage 3 caption predictions (`hikari predict --task caption`)")  # fmt: skip
            out[p.file_name] = p.parsed
    return out


ControlledKind = Literal["oracle", "noise"]
CONTROLLED_KINDS: tuple[str, ...] = ("oracle", "noise")


def controlled_references(
    index: HybridIndex, records: Sequence[SkinCapRecord], *, k: int, kind: ControlledKind, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """File name → `k` reference dicts of controlled quality, for the reference-quality ablation.

    ``oracle``: random indexed (train-part) images of the record's own disease; ``noise``: random indexed images
    of one random *other* disease (all `k` from that disease, so the labels agree with each other and are wrong).
    The leak-free rules of `search` apply unchanged (`HybridIndex.allowed`: not the record itself, not its source
    image, not a near-duplicate of its image). The draw for a record depends only on (`seed`, its file name), not
    on the other records. The dicts have `Hit.to_dict`'s keys with ``score`` 1.0 and no cosines. A record whose
    image cannot be hashed gets no references (logged), as in `retrieve_references`.
    """
    if kind not in CONTROLLED_KINDS:
        raise ValueError(f"unknown reference kind {kind!r}; valid: {', '.join(CONTROLLED_KINDS)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    unreadable: dict[int, str] = {}
    hashes = hash_images([r.image_path for r in records], errors=unreadable)
    hash_of = {}
    readable = [r for i, r in enumerate(records) if i not in unreadable]
    for record, h in zip(readable, hashes, strict=True):
        hash_of[record.file_name] = h.phash
    for i, message in sorted(unreadable.items()):
        logger.warning("%s: %s — no references for it", records[i].file_name, message)
    labels = np.array([ref.label for ref in index.references])
    diseases = sorted(set(labels.tolist()))
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.file_name not in hash_of:
            out[record.file_name] = []
            continue
        rng = random.Random(f"{seed}:{kind}:{record.file_name}")
        target = record.disease
        if kind == "noise":
            others = [d for d in diseases if d != record.disease]
            if not others:
                raise ValueError(f"index {index.info.encoder.get('name')}: every reference has the disease "
                                 f"{record.disease!r}; noise references need another disease")  # fmt: skip
            target = rng.choice(others)
        allowed = index.allowed(exclusion_for(record, hash_of[record.file_name])) & (labels == target)
        rows = np.flatnonzero(allowed).tolist()
        chosen = rng.sample(rows, min(k, len(rows)))
        out[record.file_name] = [
            {"score": 1.0, "cos_image": None, "cos_text": None,
             **{key: value for key, value in asdict(index.references[i]).items() if key != "phash"}}
            for i in chosen
        ]  # fmt: skip
    short = [name for name, refs in out.items() if len(refs) < k]
    if short:
        logger.warning("%d record(s) got fewer than %d %s references, e.g. %s", len(short), k, kind, short[:3])
    return out

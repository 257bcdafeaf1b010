"""The leak audit: every picture that appears on both the training and the evaluation side of a split.

`audit_split` checks one split's parts against each other (train–val, train–test, val–test); `audit_pair` checks
the training part of one split against the evaluation parts of another — the check the original HIKARI missed,
whose Stage 2/3 models were trained on `split_info_fuzzytopk.json` and evaluated on the validation images of
`split_info_3stage.json` (46 of those 104 images were in the training part).

Four kinds of overlap, strongest evidence first: the same file name; identical decoded pixels; the same source
image (``ori_file_path``, needs the metadata); a near-duplicate pHash (needs the images).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hikari.config import DEFAULT_HASH_THRESHOLD
from hikari.data.hashing import ImageHashes, hamming, near_duplicate_matches
from hikari.data.records import SkinCapRecord
from hikari.data.split import (
    PARTS,
    REASON_IDENTICAL,
    REASON_NEAR,
    REASON_SOURCE,
    HashLike,
    SplitInfo,
    as_image_hashes,
    hash_records,
    natural_key,
    normalise_source,
)

# Overlap kinds, strongest evidence first; a pair of images is reported once, under its strongest kind.
OVERLAP_KINDS: tuple[str, ...] = ("file_name", REASON_IDENTICAL, REASON_SOURCE, REASON_NEAR)
_KIND_RANK = {kind: rank for rank, kind in enumerate(OVERLAP_KINDS)}


@dataclass(frozen=True)
class Overlap:
    """One leak: `file_a` in part `part_a` (the training side) is the same picture as `file_b` in `part_b`.

    `distance` is the pHash Hamming distance when both images were hashed; `detail` the shared source path.
    """

    kind: str
    part_a: str
    file_a: str
    part_b: str
    file_b: str
    distance: int | None = None
    detail: str = ""


@dataclass
class AuditReport:
    """Every overlap found, what was checked, and how many evaluation items are affected.

    `clean` means no overlap was *found*; `checked` and `coverage` say which kinds could be looked for at all
    (file names always; source images need the metadata; pixel and near-duplicate checks need the images).
    """

    title: str
    overlaps: list[Overlap]
    compared: list[tuple[str, str]]
    checked: dict[str, bool]
    coverage: dict[str, tuple[int, int]]
    n_eval_items: int
    threshold: int
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(o.kind for o in self.overlaps)
        return {kind: found.get(kind, 0) for kind in OVERLAP_KINDS}

    @property
    def n_overlapping_eval_items(self) -> int:
        return len({(o.part_b, o.file_b) for o in self.overlaps})

    @property
    def clean(self) -> bool:
        return not self.overlaps

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "clean": self.clean,
            "compared": [list(c) for c in self.compared],
            "n_eval_items": self.n_eval_items,
            "n_overlapping_eval_items": self.n_overlapping_eval_items,
            "counts": self.counts,
            "checked": self.checked,
            "coverage": {k: list(v) for k, v in self.coverage.items()},
            "hash_threshold": self.threshold,
            "notes": self.notes,
            "overlaps": [vars(o) for o in self.overlaps],
        }


def _resolve_hashes(
    file_names: set[str],
    records: Sequence[SkinCapRecord] | None,
    hashes: Mapping[str, HashLike] | None,
    progress: bool,
) -> dict[str, ImageHashes]:
    """Fingerprints of the split's files: from `hashes` when given, else by hashing the records' images."""
    if hashes is not None:
        return {n: as_image_hashes(h) for n, h in hashes.items() if n in file_names}
    return hash_records(records or (), only=file_names, progress=progress)


def _compare(
    part_a: str,
    files_a: Sequence[str],
    part_b: str,
    files_b: Sequence[str],
    sources: Mapping[str, str],
    hashes: Mapping[str, ImageHashes],
    threshold: int,
) -> list[Overlap]:
    """Every pair (a in files_a, b in files_b) showing the same picture, each pair once under its strongest kind."""
    found: dict[tuple[str, str], tuple[str, str]] = {}  # (file_a, file_b) → (kind, detail)

    def add(fa: str, fb: str, kind: str, detail: str = "") -> None:
        prev = found.get((fa, fb))
        if prev is None or _KIND_RANK[kind] < _KIND_RANK[prev[0]]:
            found[(fa, fb)] = (kind, detail)

    for name in set(files_a) & set(files_b):
        add(name, name, "file_name")
    pixels = {n: h.pixel_sha256 for n, h in hashes.items() if h.pixel_sha256}
    for kind, key_of in ((REASON_IDENTICAL, pixels), (REASON_SOURCE, sources)):
        index: dict[str, list[str]] = {}
        for fb in files_b:
            if fb in key_of:
                index.setdefault(key_of[fb], []).append(fb)
        for fa in files_a:
            for fb in index.get(key_of.get(fa, ""), []):
                add(fa, fb, kind, key_of[fa] if kind == REASON_SOURCE else "")
    hashed_a = [n for n in files_a if n in hashes]
    hashed_b = [n for n in files_b if n in hashes]
    a_hashes = [hashes[n].phash for n in hashed_a]
    for i, j, _ in near_duplicate_matches(a_hashes, [hashes[n].phash for n in hashed_b], threshold):
        add(hashed_a[i], hashed_b[j], REASON_NEAR)

    overlaps = [
        Overlap(
            kind=kind,
            part_a=part_a,
            file_a=fa,
            part_b=part_b,
            file_b=fb,
            distance=hamming(hashes[fa].phash, hashes[fb].phash) if fa in hashes and fb in hashes else None,
            detail=detail,
        )
        for (fa, fb), (kind, detail) in found.items()
    ]
    return sorted(overlaps, key=lambda o: (natural_key(o.file_b), natural_key(o.file_a)))


def _audit(
    title: str,
    comparisons: list[tuple[str, list[str], str, list[str]]],
    eval_items: set[tuple[str, str]],
    records: Sequence[SkinCapRecord] | None,
    hashes: Mapping[str, HashLike] | None,
    threshold: int,
    progress: bool,
) -> AuditReport:
    all_files = {n for _, fa, _, fb in comparisons for n in (*fa, *fb)}
    sources = {
        r.file_name: s for r in records or () if r.file_name in all_files and (s := normalise_source(r.ori_file_path))
    }
    with_record = {r.file_name for r in records or ()} & all_files
    resolved = _resolve_hashes(all_files, records, hashes, progress)
    overlaps = [o for pa, fa, pb, fb in comparisons for o in _compare(pa, fa, pb, fb, sources, resolved, threshold)]
    total = len(all_files)
    coverage = {
        "file_name": (total, total),
        REASON_SOURCE: (len(with_record), total),
        REASON_IDENTICAL: (sum(1 for h in resolved.values() if h.pixel_sha256), total),
        REASON_NEAR: (len(resolved), total),
    }
    checked = {kind: covered > 0 for kind, (covered, _) in coverage.items()}
    notes = []
    if not with_record:
        notes.append("source images (ori_file_path) not checked: no metadata given (pass --data DIR)")
    if not resolved:
        notes.append("identical-pixel and near-duplicate checks not run: no images given (pass --data DIR)")
    for kind in (REASON_SOURCE, REASON_IDENTICAL, REASON_NEAR):
        covered, _ = coverage[kind]
        if 0 < covered < total:
            notes.append(f"{kind} check covers only {covered} of {total} files (the rest are not in the data)")
    return AuditReport(
        title=title,
        overlaps=overlaps,
        compared=[(pa, pb) for pa, _, pb, _ in comparisons],
        checked=checked,
        coverage=coverage,
        n_eval_items=len(eval_items),
        threshold=threshold,
        notes=notes,
    )


def _name(split: SplitInfo) -> str:
    return split.path.name if split.path is not None else "<in-memory split>"


def audit_split(
    split: SplitInfo,
    records: Sequence[SkinCapRecord] | None = None,
    hashes: Mapping[str, HashLike] | None = None,
    threshold: int = DEFAULT_HASH_THRESHOLD,
    *,
    progress: bool = False,
) -> AuditReport:
    """Look for the same picture in two parts of one split: train vs val, train vs test, val vs test.

    `records` enable the source-image check (and, without `hashes`, the image checks by hashing their files);
    `hashes` maps file name → pHash or `ImageHashes`.
    """
    present = [p for p in PARTS if p in split.parts]
    comparisons = [(a, split.parts[a], b, split.parts[b]) for i, a in enumerate(present) for b in present[i + 1 :]]
    eval_items = {(p, n) for p in split.eval_parts() for n in split.parts[p]}
    title = f"{_name(split)}: {' / '.join(present)}"
    return _audit(title, comparisons, eval_items, records, hashes, threshold, progress)


def audit_pair(
    train: SplitInfo,
    eval: SplitInfo,  # noqa: A002 - mirrors the CLI's --train/--eval
    records: Sequence[SkinCapRecord] | None = None,
    hashes: Mapping[str, HashLike] | None = None,
    threshold: int = DEFAULT_HASH_THRESHOLD,
    *,
    progress: bool = False,
) -> AuditReport:
    """Look for pictures of `train`'s training part in `eval`'s evaluation parts (val and test).

    This is the check the original HIKARI missed: its Stage 2/3 models were trained on one split and evaluated
    on another split's validation images.
    """
    eval_parts = eval.eval_parts()
    if not eval_parts:
        raise ValueError(f"split {_name(eval)} has no evaluation part (val or test); parts: {sorted(eval.parts)}")
    if "train" not in train.parts:
        raise ValueError(f"split {_name(train)} has no 'train' part; parts: {sorted(train.parts)}")
    comparisons = [("train", train.parts["train"], p, eval.parts[p]) for p in eval_parts]
    eval_items = {(p, n) for p in eval_parts for n in eval.parts[p]}
    title = f"train of {_name(train)} vs {' + '.join(eval_parts)} of {_name(eval)}"
    return _audit(title, comparisons, eval_items, records, hashes, threshold, progress)

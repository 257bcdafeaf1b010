"""Leak-free train/val(/test) splits of SkinCAP records and their JSON files (the audit is in `hikari.data.audit`).

Two split file formats are read by `load_split`:

* ``hikari`` — written by `Split.save` (``"format": "hikari-split"``): config, dataset fingerprint, per part the
  ids and file names, the disease per file name, the merged groups and per-disease counts.
* ``hikari-original`` — the original research code's ``split_info_*.json``: ``train_image_paths`` /
  ``val_image_paths`` holding Windows paths such as ``SkinCAP\\skincap\\292.png``.

The join key everywhere is the image *file name* (``"<id>.png"``), never a position or a full path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any, NamedTuple

from hikari.config import DEFAULT_HASH_THRESHOLD, DataConfig, default
from hikari.data.hashing import (
    HASH_BITS,
    ImageHashes,
    hash_images,
    near_duplicate_pairs,
)
from hikari.data.labels import FUZZY_MERGE_THRESHOLD
from hikari.data.records import SkinCapRecord
from hikari.data.skincap import SkinCapDataset, read_skincap
from hikari.utils.io import atomic_write_json, fingerprint_strings

logger = logging.getLogger(__name__)

SPLIT_FORMAT = "hikari-split"
SPLIT_VERSION = 1
EVAL_PARTS: tuple[str, ...] = ("val", "test")
PARTS: tuple[str, ...] = ("train", *EVAL_PARTS)


def natural_key(file_name: str) -> tuple[int, int | str, str]:
    """Sort key that orders ``"9.png"`` before ``"10.png"`` (numeric stems first, then any other name)."""
    stem = Path(file_name).stem
    return (0, int(stem), file_name) if stem.isdigit() else (1, stem, file_name)


@dataclass(frozen=True)
class SplitInfo:
    """A split read from disk, in either format; parts hold image file names (the join key).

    `labels` maps file name → disease where the file records it (ours does; the original does not), `config`
    holds the settings the split was made with, `fingerprint` the dataset fingerprint (ours only).
    """

    format: str
    path: Path | None
    parts: dict[str, list[str]]
    labels: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    fingerprint: str | None = None
    part_ids: dict[str, list[str]] = field(default_factory=dict)

    def _check_part(self, part: str) -> None:
        if part not in self.parts:
            raise KeyError(f"split {self.path or '<memory>'} has no part {part!r}; parts: {sorted(self.parts)}")

    def ids(self, part: str) -> list[str]:
        """Record ids of `part`, aligned with ``parts[part]`` (the file-name stem for the original format)."""
        self._check_part(part)
        if part in self.part_ids:
            return list(self.part_ids[part])
        return [Path(name).stem for name in self.parts[part]]

    def file_names(self, part: str) -> set[str]:
        self._check_part(part)
        return set(self.parts[part])

    def eval_parts(self) -> list[str]:
        """The evaluation parts present in this split (``val`` and/or ``test``), in that order."""
        return [p for p in EVAL_PARTS if p in self.parts]


def _file_name_of(raw: object, *, path: Path, key: str, index: int) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{path}: {key}[{index}] should be an image path string, got {raw!r}")
    # Windows paths (the original was run on Windows) and POSIX paths both reduce to the last component.
    return PureWindowsPath(raw.strip().replace("/", "\\")).name


def _load_original(path: Path, obj: Mapping[str, Any]) -> SplitInfo:
    parts: dict[str, list[str]] = {}
    for part, key in (("train", "train_image_paths"), ("val", "val_image_paths"), ("test", "test_image_paths")):
        if key not in obj:
            continue
        if not isinstance(obj[key], list):
            raise ValueError(f"{path}: {key!r} should be a list of image paths, got {type(obj[key]).__name__}")
        names = [_file_name_of(raw, path=path, key=key, index=i) for i, raw in enumerate(obj[key])]
        duplicates = sorted({n for n in names if names.count(n) > 1}, key=natural_key)
        if duplicates:
            raise ValueError(f"{path}: {key!r} lists {duplicates[:5]} more than once")
        parts[part] = names
    config = {k: v for k, v in obj.items() if not k.endswith("_image_paths")}
    return SplitInfo(format="hikari-original", path=path, parts=parts, config=config)


def _load_ours(path: Path, obj: Mapping[str, Any]) -> SplitInfo:
    version = obj.get("version")
    if version != SPLIT_VERSION:
        raise ValueError(f"{path}: split file version {version!r} is not supported (expected {SPLIT_VERSION})")
    raw_parts = obj.get("parts")
    if not isinstance(raw_parts, dict) or "train" not in raw_parts:
        raise ValueError(f"{path}: 'parts' should be an object with at least a 'train' entry")
    parts: dict[str, list[str]] = {}
    part_ids: dict[str, list[str]] = {}
    for part, entry in raw_parts.items():
        if part not in PARTS:
            raise ValueError(f"{path}: unknown part {part!r}; expected one of {list(PARTS)}")
        names, ids = entry.get("file_names"), entry.get("ids")
        if not isinstance(names, list) or not isinstance(ids, list) or len(names) != len(ids):
            raise ValueError(f"{path}: parts.{part} needs equally long 'ids' and 'file_names' lists")
        parts[part], part_ids[part] = [str(n) for n in names], [str(i) for i in ids]
    return SplitInfo(
        format="hikari",
        path=path,
        parts=parts,
        labels={str(k): str(v) for k, v in obj.get("labels", {}).items()},
        config=dict(obj.get("config", {})),
        fingerprint=obj.get("dataset", {}).get("fingerprint"),
        part_ids=part_ids,
    )


def load_split(path: str | Path) -> SplitInfo:
    """Read a split file written by HIKARI (`Split.save`) or by the original research code (``split_info_*.json``).

    Raises ValueError naming the file and key when the content is neither format.
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a split file should hold a JSON object, got {type(obj).__name__}")
    if obj.get("format") == SPLIT_FORMAT:
        return _load_ours(path, obj)
    if "train_image_paths" in obj:
        return _load_original(path, obj)
    raise ValueError(
        f"{path}: not a split file: expected \"format\": {SPLIT_FORMAT!r} (HIKARI) or a 'train_image_paths' list "
        f"(original HIKARI split_info_*.json); found keys {sorted(obj)[:10]}"
    )


# ---------------------------------------------------------------------------------------------------------------
# Making a split
# ---------------------------------------------------------------------------------------------------------------

HashLike = int | ImageHashes  # a bare pHash, or both fingerprints of an image

# Why rows were kept together; the audit reports overlaps under the same names (plus "file_name").
REASON_SOURCE = "source_image"  # same non-empty ori_file_path
REASON_IDENTICAL = "identical_pixels"  # same decoded RGB pixels
REASON_NEAR = "near_duplicate"  # pHashes within the threshold


@dataclass(frozen=True)
class SplitGroup:
    """Rows that must stay on the same side, and why (a sorted subset of the REASON_* names)."""

    file_names: tuple[str, ...]
    reasons: tuple[str, ...]


@dataclass
class Split:
    """A split of records into parts (``train``, ``val`` and optionally ``test``), ready to save.

    `hashes` (file name → fingerprints) is kept in memory so the caller can audit without re-hashing; it is not
    part of the saved file beyond the dataset fingerprint.
    """

    parts: dict[str, list[SkinCapRecord]]
    groups: list[SplitGroup]
    config: dict[str, Any]
    dataset: dict[str, Any]
    hashes: dict[str, ImageHashes] = field(default_factory=dict, repr=False)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per part, the number of rows per disease (diseases sorted by name)."""
        return {part: dict(sorted(Counter(r.disease for r in recs).items())) for part, recs in self.parts.items()}

    def to_dict(self) -> dict[str, Any]:
        parts: dict[str, Any] = {}
        labels: dict[str, str] = {}
        for part, recs in self.parts.items():
            ordered = sorted(recs, key=lambda r: natural_key(r.file_name))
            parts[part] = {
                "n": len(ordered),
                "ids": [r.id for r in ordered],
                "file_names": [r.file_name for r in ordered],
            }
            labels.update((r.file_name, r.disease) for r in ordered)
        return {
            "format": SPLIT_FORMAT,
            "version": SPLIT_VERSION,
            "config": self.config,
            "dataset": self.dataset,
            "counts": self.counts(),
            "parts": parts,
            "labels": dict(sorted(labels.items(), key=lambda kv: natural_key(kv[0]))),
            "groups": [{"reasons": list(g.reasons), "file_names": list(g.file_names)} for g in self.groups],
        }

    def save(self, path: str | Path) -> Path:
        """Write the split JSON atomically. No timestamps: the same input and seed give a byte-identical file."""
        return atomic_write_json(path, self.to_dict())

    def info(self) -> SplitInfo:
        """The split as `load_split` would return it after `save` (for in-memory audits)."""
        d = self.to_dict()
        return SplitInfo(
            format="hikari",
            path=None,
            parts={p: e["file_names"] for p, e in d["parts"].items()},
            labels=d["labels"],
            config=d["config"],
            fingerprint=d["dataset"].get("fingerprint"),
            part_ids={p: e["ids"] for p, e in d["parts"].items()},
        )


def as_image_hashes(value: HashLike) -> ImageHashes:
    """`ImageHashes` from either form (a bare pHash has no pixel hash: ``pixel_sha256 == \"\"``)."""
    return value if isinstance(value, ImageHashes) else ImageHashes(phash=int(value), pixel_sha256="")


def _image_digest(h: ImageHashes | None) -> str:
    if h is None:
        return "-"
    return h.pixel_sha256 or f"phash:{h.phash:x}"


def dataset_fingerprint(records: Sequence[SkinCapRecord], hashes: Mapping[str, HashLike] | None = None) -> str:
    """sha256 over the sorted (id, file name, disease, image pixel hash) of every record.

    Changes when a row is added, removed, relabelled or its image changes. Images without a pixel hash fall
    back to their pHash (``phash:…``), images without any hash to ``-``.
    """
    hashes = hashes or {}
    rows = sorted(
        (
            r.id,
            r.file_name,
            r.disease,
            _image_digest(as_image_hashes(hashes[r.file_name]) if r.file_name in hashes else None),
        )
        for r in records
    )
    return fingerprint_strings("\t".join(row) for row in rows)


def normalise_source(path: str) -> str:
    """Canonical form of an ``ori_file_path`` for equality: trimmed, forward slashes, lower case ("" if empty)."""
    return path.strip().replace("\\", "/").lower()


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]  # path halving
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def _link_equal_keys(keys: Sequence[str], reason: str, edges: list[tuple[int, int, str]]) -> None:
    """Append an edge from each row to the first earlier row with the same non-empty key."""
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if not key:
            continue
        if key in first:
            edges.append((first[key], i, reason))
        else:
            first[key] = i


def group_records(
    records: Sequence[SkinCapRecord], hashes: Mapping[str, ImageHashes], hash_threshold: int
) -> list[tuple[list[int], set[str]]]:
    """Union-find the rows that must not be separated; returns (row indices, reasons) per group, all sizes.

    Rows are joined when they share a non-empty ``ori_file_path``, identical decoded pixels, or
    pHashes within `hash_threshold` bits. Groups are ordered by their smallest row index.
    """
    edges: list[tuple[int, int, str]] = []
    _link_equal_keys([normalise_source(r.ori_file_path) for r in records], REASON_SOURCE, edges)
    present = [i for i, r in enumerate(records) if r.file_name in hashes]
    pixel = [hashes[records[i].file_name].pixel_sha256 for i in present]
    identical: list[tuple[int, int, str]] = []
    _link_equal_keys(pixel, REASON_IDENTICAL, identical)
    edges.extend((present[a], present[b], why) for a, b, why in identical)
    for a, b in near_duplicate_pairs([hashes[records[i].file_name].phash for i in present], hash_threshold):
        if not pixel[a] or pixel[a] != pixel[b]:  # identical pairs are already linked, with the stronger reason
            edges.append((present[a], present[b], REASON_NEAR))

    uf = _UnionFind(len(records))
    for i, j, _ in edges:
        uf.union(i, j)
    members: dict[int, list[int]] = {}
    for i in range(len(records)):
        members.setdefault(uf.find(i), []).append(i)
    reasons: dict[int, set[str]] = {root: set() for root in members}
    for i, _, why in edges:
        reasons[uf.find(i)].add(why)
    return [(members[root], reasons[root]) for root in sorted(members)]


def hash_records(
    records: Sequence[SkinCapRecord], *, only: set[str] | None = None, progress: bool = False
) -> dict[str, ImageHashes]:
    """File name → fingerprints of the records' images (restricted to the file names in `only` when given)."""
    todo = list({r.file_name: r for r in records if only is None or r.file_name in only}.values())
    return {
        r.file_name: h for r, h in zip(todo, hash_images([r.image_path for r in todo], progress=progress), strict=True)
    }


def _priority(seed: int, key: str) -> int:
    """A seeded pseudo-random rank that depends only on the group's own key (stable under unrelated edits)."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{key}".encode()).digest()[:8], "big")


def _round_half_up(x: float) -> int:
    # Python's round() rounds halves to even (round(2.5) == 2); a split size should not depend on parity. The
    # epsilon makes products such as 0.15 · 10 = 1.4999999999999998 count as the half they stand for.
    return math.floor(x + 0.5 + 1e-9)


def _fill(groups: list[list[int]], taken: set[int], target: int) -> list[int]:
    """First-fit in priority order: take whole groups while they fit under `target` rows; returns group positions."""
    chosen, total = [], 0
    for pos, members in enumerate(groups):
        if total >= target:
            break
        if pos in taken or total + len(members) > target:
            continue
        chosen.append(pos)
        total += len(members)
    return chosen


def make_split(
    records: Sequence[SkinCapRecord],
    *,
    val_frac: float = 0.1,
    test_frac: float = 0.0,
    seed: int = 42,
    hash_threshold: int = DEFAULT_HASH_THRESHOLD,
    hashes: Mapping[str, HashLike] | None = None,
    root: str | Path | None = None,
    metadata: str | None = None,
    options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> Split:
    """Stratified, grouped, seeded split that never separates copies of the same picture.

    Rows sharing an ``ori_file_path``, identical pixels or a near-duplicate pHash form one group (union-find);
    a group goes wholly to one part. Per disease (mixed groups count for their majority disease, ties broken by
    name) the groups are ranked by a seeded hash of their smallest file name; the first groups that fit fill
    ``test`` up to round(test_frac·n) rows, then ``val`` up to round(val_frac·n) rows (halves round up), and the
    rest is ``train``. Because a group's rank depends only on its own key, adding or removing an unrelated row
    moves no other row (unless it changes that disease's rounded target).

    `hashes` maps file name → pHash (int) or `ImageHashes`; when None, every record's image is hashed.
    `root`, `metadata` and `options` (e.g. top_k, caption column) are recorded in the saved file.
    """
    if not 0.0 < val_frac < 1.0 or not 0.0 <= test_frac < 1.0 or val_frac + test_frac >= 1.0:
        raise ValueError(
            f"need 0 < val_frac < 1, 0 <= test_frac < 1 and val_frac + test_frac < 1; got {val_frac=}, {test_frac=}"
        )
    if hash_threshold < 0:
        raise ValueError(f"hash_threshold must be >= 0 bits, got {hash_threshold}")
    duplicates = sorted({n for n, c in Counter(r.file_name for r in records).items() if c > 1}, key=natural_key)
    if duplicates:
        raise ValueError(f"file names must be unique (they are the join key); repeated: {duplicates[:5]}")
    if hashes is None:
        fingerprints = hash_records(records, progress=progress)
    else:
        missing = [r.file_name for r in records if r.file_name not in hashes]
        if missing:
            raise ValueError(f"no image hash for {len(missing)} record(s), e.g. {missing[:5]}; hash every image")
        fingerprints = {r.file_name: as_image_hashes(hashes[r.file_name]) for r in records}

    by_disease: dict[str, list[tuple[int, list[int]]]] = {}
    saved_groups: list[SplitGroup] = []
    for members, reasons in group_records(records, fingerprints, hash_threshold):
        names = sorted((records[i].file_name for i in members), key=natural_key)
        counts = Counter(records[i].disease for i in members)
        majority = min(counts, key=lambda d: (-counts[d], d))
        by_disease.setdefault(majority, []).append((_priority(seed, names[0]), members))
        if len(members) > 1:
            saved_groups.append(SplitGroup(file_names=tuple(dict.fromkeys(names)), reasons=tuple(sorted(reasons))))

    assignment: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for disease in sorted(by_disease):
        ranked = [members for _, members in sorted(by_disease[disease], key=lambda pm: (pm[0], pm[1][0]))]
        n = sum(len(m) for m in ranked)
        test = _fill(ranked, set(), _round_half_up(test_frac * n)) if test_frac > 0 else []
        val = _fill(ranked, set(test), _round_half_up(val_frac * n))
        for part, chosen in (("test", test), ("val", val)):
            assignment[part].extend(i for pos in chosen for i in ranked[pos])
        taken = set(test) | set(val)
        assignment["train"].extend(i for pos, m in enumerate(ranked) if pos not in taken for i in m)

    part_names = ["train", "val"] + (["test"] if test_frac > 0 else [])
    parts = {p: sorted((records[i] for i in assignment[p]), key=lambda r: natural_key(r.file_name)) for p in part_names}
    config: dict[str, Any] = {
        "val_frac": val_frac,
        "test_frac": test_frac,
        "seed": seed,
        "hash": f"phash{HASH_BITS}-dct",
        "hash_threshold": hash_threshold,
        **dict(sorted((options or {}).items())),
    }
    dataset = {
        "root": str(root) if root is not None else None,
        "metadata": metadata,
        "fingerprint": dataset_fingerprint(records, fingerprints),
        "n_records": len(records),
    }
    saved_groups.sort(key=lambda g: natural_key(g.file_names[0]))
    return Split(parts=parts, groups=saved_groups, config=config, dataset=dataset, hashes=fingerprints)


def select_part(
    records: Sequence[SkinCapRecord],
    split: SplitInfo,
    part: str,
    bad_images: Mapping[str, str] | None = None,
) -> list[SkinCapRecord]:
    """The records of one split part, in the split's order; raises when the data no longer matches the split.

    Fails when a file of the part is missing from `records` or (for our format) its disease changed. A file whose
    row the reader skipped for its image alone (`bad_images`: missing or unreadable, e.g. over the pixel limit) is
    left out and logged instead — it is counted in the reader's report — unless that leaves the part empty.
    """
    by_name = {r.file_name: r for r in records}
    split.file_names(part)  # raises, listing the valid parts, when `part` is absent
    wanted = split.parts[part]
    bad = {n: bad_images[n] for n in wanted if n not in by_name and bad_images and n in bad_images}
    if bad and len(bad) < len(wanted):
        for name, why in bad.items():
            logger.warning("split %s, part %r: %s left out (%s)", split.path or "<memory>", part, name, why)
        wanted = [n for n in wanted if n not in bad]
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise ValueError(
            f"split {split.path or '<memory>'}: {len(missing)} file(s) of part {part!r} are not in the data, "
            f"e.g. {missing[:5]} (wrong --data folder, or different top_k / filters?)"
        )
    changed = [n for n in wanted if n in split.labels and split.labels[n] != by_name[n].disease]
    if changed:
        n = changed[0]
        raise ValueError(
            f"split {split.path or '<memory>'}: the disease of {len(changed)} file(s) changed since the split was "
            f"made, e.g. {n}: split says {split.labels[n]!r}, data says {by_name[n].disease!r}"
        )
    return [by_name[n] for n in wanted]


# The `read_skincap` options a split of ours records: reading the data as the split was made keeps labels equal.
READER_OPTIONS: tuple[str, ...] = ("metadata", "caption_column", "exclude_flagged", "top_k", "fuzzy_threshold",
                                   "allow_outside")  # fmt: skip


class SplitRecords(NamedTuple):
    """The records of each selected split part (in split order), the dataset they were read from, and the split."""

    parts: dict[str, list[SkinCapRecord]]
    dataset: SkinCapDataset
    split: SplitInfo


def read_split_records(
    data_dir: str | Path,
    split_path: str | Path,
    parts: Sequence[str] | None = None,
    *,
    reader_options: Mapping[str, Any] | None = None,
    check_images: bool = False,
) -> SplitRecords:
    """Read a SkinCAP folder and select the records of split parts `parts` (None: every part of the split).

    This is how every stage (training, prediction, retrieval) gets a split's records. The folder is read with
    `reader_options` (`read_skincap` keywords; a training run passes its `data` section) or, when None, with the
    options the split was made with (our split files record them; the original's record none: reader defaults).
    `check_images` decodes every image while reading; otherwise files are only checked to exist, and images are
    decoded (and counted when unreadable) where they are used. Raises, naming the split file, when a file of a
    selected part is not in the data or its disease changed since the split was made.
    """
    split = load_split(split_path)
    if reader_options is None:
        reader_options = {k: split.config[k] for k in READER_OPTIONS if split.format == "hikari" and k in split.config}
    dataset = read_skincap(data_dir, check_images=check_images, **reader_options)
    bad = dataset.report.bad_images
    selected = {part: select_part(dataset.records, split, part, bad)
                for part in (split.parts if parts is None else parts)}  # fmt: skip
    return SplitRecords(selected, dataset, split)


def split_dataset(
    root: str | Path,
    *,
    top_k: int = default(DataConfig, "top_k"),
    val_frac: float = 0.1,
    test_frac: float = 0.0,
    seed: int = 42,
    hash_threshold: int = DEFAULT_HASH_THRESHOLD,
    metadata: str = default(DataConfig, "metadata"),
    caption_column: str | None = None,
    exclude_flagged: bool = default(DataConfig, "exclude_flagged"),
    fuzzy_threshold: float = FUZZY_MERGE_THRESHOLD,
    allow_outside: bool = default(DataConfig, "allow_outside"),
    progress: bool = True,
) -> tuple[Split, SkinCapDataset]:
    """Read a SkinCAP folder (`read_skincap`), hash every usable image, and split it with `make_split`."""
    reader_options: dict[str, Any] = {
        "metadata": metadata,
        "exclude_flagged": exclude_flagged,
        "top_k": top_k,
        "fuzzy_threshold": fuzzy_threshold,
        "allow_outside": allow_outside,
    }
    if caption_column is not None:
        reader_options["caption_column"] = caption_column
    dataset = read_skincap(root, **reader_options)
    split = make_split(
        dataset.records,
        val_frac=val_frac,
        test_frac=test_frac,
        seed=seed,
        hash_threshold=hash_threshold,
        root=dataset.root,
        metadata=Path(dataset.metadata_path).name,
        options={**reader_options, "caption_column": dataset.caption_column},
        progress=progress,
    )
    return split, dataset

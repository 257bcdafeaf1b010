"""Read a SkinCAP folder (real or synthetic) into validated `SkinCapRecord`s.

Layout (see the reference notes): ``skincap_v240623.csv`` (header on row 1, English caption
``caption_zh_polish_en``), ``skincap_v240715.xlsx`` (a title row, then the header on row 2, English caption
``caption_en``), images ``skincap/<id>.png`` and ``skincap/not_include/*.png`` (not in the metadata; ignored).

Metadata is joined to images by file name (``skincap_file_path``), never by row position. Disease names go
through `labels.normalise_diseases` exactly as the original preprocessing did: clean → top-K → fuzzy merge. The
top-K is counted over every metadata row with a usable disease name, before any image check, so that skipping a
broken row never changes which diseases are kept or how any other row is labelled.

A missing file or a missing required column raises `SkinCapFormatError`. A bad row (unsafe or missing image
path, undecodable image, empty caption, empty/placeholder disease, duplicate file name) is skipped with a
warning naming the file, the spreadsheet row, the column and what was expected, and counted in `ReadReport`.
"""

from __future__ import annotations

import csv
import logging
import re
import statistics
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, NamedTuple

from openpyxl import load_workbook
from openpyxl.utils.exceptions import InvalidFileException

from hikari.config import DataConfig, default
from hikari.data.images import verify_image
from hikari.data.labels import (
    DISEASE_TO_GROUP,
    FUZZY_MERGE_THRESHOLD,
    clean_disease,
    normalise_diseases,
    skin_band,
    top_k_diseases,
)
from hikari.data.records import SkinCapRecord

logger = logging.getLogger(__name__)

CSV_NAME = "skincap_v240623.csv"
XLSX_NAME = "skincap_v240715.xlsx"
IMAGE_DIR = "skincap"
NOT_INCLUDE_DIR = "not_include"

ID_COLUMN = "id"
FILE_COLUMN = "skincap_file_path"
ORI_COLUMN = "ori_file_path"
DISEASE_COLUMN = "disease"
SOURCE_COLUMN = "source"
FITZPATRICK_COLUMN = "fitzpatrick_scale"  # Fitzpatrick17k rows: 1–6, −1 unknown
SKIN_TONE_COLUMN = "skin_tone"  # DDI rows: 12 / 34 / 56
FLAG_COLUMN = "Do not consider this image"
CAPTION_COLUMN = "caption_zh_polish_en"  # the English caption in the CSV
XLSX_CAPTION_COLUMN = "caption_en"  # the same caption's column name in the XLSX
CAPTION_ALIASES: dict[str, str] = {CAPTION_COLUMN: XLSX_CAPTION_COLUMN, XLSX_CAPTION_COLUMN: CAPTION_COLUMN}

# The 48 SKINCON concept columns (0/1), in the CSV's order.
SKINCON_CONCEPTS: tuple[str, ...] = (
    "Vesicle", "Papule", "Macule", "Plaque", "Abscess", "Pustule", "Bulla", "Patch", "Nodule", "Ulcer", "Crust",
    "Erosion", "Excoriation", "Atrophy", "Exudate", "Purpura/Petechiae", "Fissure", "Induration", "Xerosis",
    "Telangiectasia", "Scale", "Scar", "Friable", "Sclerosis", "Pedunculated", "Exophytic/Fungating",
    "Warty/Papillomatous", "Dome-shaped", "Flat topped", "Brown(Hyperpigmentation)", "Translucent",
    "White(Hypopigmentation)", "Purple", "Yellow", "Black", "Erythema", "Comedo", "Lichenification", "Blue",
    "Umbilicated", "Poikiloderma", "Salmon", "Wheal", "Acuminate", "Burrow", "Gray", "Pigmented", "Cyst",
)  # fmt: skip

CSV_COLUMNS: tuple[str, ...] = (
    ID_COLUMN, FILE_COLUMN, ORI_COLUMN, "caption_zh", "caption_zh_polish", CAPTION_COLUMN, DISEASE_COLUMN,
    "remark", SOURCE_COLUMN, SKIN_TONE_COLUMN, "malignant", FITZPATRICK_COLUMN, "fitzpatrick_centaur",
    "nine_partition_label", "three_partition_label", *SKINCON_CONCEPTS, FLAG_COLUMN,
)  # fmt: skip

# Cleaned disease strings that mean "no label" (besides the empty string and strings without any letter).
_PLACEHOLDER_DISEASES = frozenset({"nan", "none", "null", "na", "n/a", "unknown", "-", "?"})
_CAPTION_COLUMNS = frozenset({"caption_zh", "caption_zh_polish", CAPTION_COLUMN, XLSX_CAPTION_COLUMN})


class SkinCapFormatError(ValueError):
    """The metadata file is missing or lacks a required column (the message names both)."""


class ReadIssue(NamedTuple):
    """One skipped row: `row` is the spreadsheet row a human sees (CSV data row i → i+2; XLSX → i+3).

    `reason` is the key it is counted under in `ReadReport.skipped` (e.g. "missing_image").
    """

    file: str
    row: int
    column: str
    message: str
    reason: str = ""


@dataclass
class ReadReport:
    """What happened to every metadata row: n_rows = n_used + n_outside_top_k + sum(skipped) + n_flagged_excluded.

    `n_flagged` counts valid top-K rows marked ``Do not consider this image`` (kept unless exclude_flagged, then
    also counted in `n_flagged_excluded`). `issues` holds one entry per skipped row, in file order.
    """

    n_rows: int = 0
    n_used: int = 0
    n_flagged: int = 0
    n_flagged_excluded: int = 0
    n_outside_top_k: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    issues: list[ReadIssue] = field(default_factory=list)
    n_not_include_ignored: int = 0
    n_images_unreferenced: int = 0
    # image file name → why it was skipped (missing, or unreadable when images are checked)
    bad_images: dict[str, str] = field(default_factory=dict)

    def add_issue(self, issue: ReadIssue) -> None:
        self.skipped[issue.reason] = self.skipped.get(issue.reason, 0) + 1
        self.issues.append(issue)
        logger.warning("%s row %d, column %r: %s — row skipped", issue.file, issue.row, issue.column, issue.message)


@dataclass
class SkinCapDataset:
    """The usable records of one SkinCAP folder plus how they were obtained."""

    records: list[SkinCapRecord]
    top_diseases: list[str]
    report: ReadReport
    root: Path
    metadata_path: Path
    caption_column: str

    def __len__(self) -> int:
        return len(self.records)

    def by_file_name(self) -> dict[str, SkinCapRecord]:
        return {r.file_name: r for r in self.records}

    def summary(self, max_issues: int | None = None) -> dict[str, Any]:
        """JSON-ready counts: rows, used, per disease/group, flagged, skipped by reason, caption word stats."""
        report = self.report
        words = [len(r.caption.split()) for r in self.records]
        per_group = Counter(r.group or "(no group)" for r in self.records)
        issues = report.issues if max_issues is None else report.issues[:max_issues]
        return {
            "root": str(self.root),
            "metadata": str(self.metadata_path),
            "caption_column": self.caption_column,
            "n_rows": report.n_rows,
            "n_used": report.n_used,
            "n_flagged": report.n_flagged,
            "n_flagged_excluded": report.n_flagged_excluded,
            "n_outside_top_k": report.n_outside_top_k,
            "n_missing_images": report.skipped.get("missing_image", 0),
            "n_skipped": sum(report.skipped.values()),
            "skipped": dict(sorted(report.skipped.items())),
            "n_not_include_ignored": report.n_not_include_ignored,
            "n_images_unreferenced": report.n_images_unreferenced,
            "top_diseases": list(self.top_diseases),
            "per_disease": dict(Counter(r.disease for r in self.records).most_common()),
            "per_group": dict(sorted(per_group.items())),
            "caption_words": {
                "mean": round(statistics.fmean(words), 2) if words else None,
                "median": statistics.median(words) if words else None,
                "min": min(words, default=None),
                "max": max(words, default=None),
            },
            "issues": [issue._asdict() for issue in issues],
        }


def resolve_metadata(root: Path, metadata: str | Path) -> Path:
    """``"csv"`` → the CSV, ``"xlsx"`` → the XLSX inside `root`; anything else is a path (relative to `root`)."""
    if isinstance(metadata, str) and metadata.lower() in ("csv", "xlsx"):
        path = root / (CSV_NAME if metadata.lower() == "csv" else XLSX_NAME)
    else:
        path = Path(metadata)
        if not path.is_absolute() and not path.exists():
            path = root / path
    if not path.is_file():
        raise SkinCapFormatError(
            f"SkinCAP metadata file {path} not found; expected {CSV_NAME} or {XLSX_NAME} inside {root} "
            "(or an explicit path to a .csv/.xlsx file)"
        )
    return path


def _cell(value: object) -> str:
    """Spreadsheet cell → string as the CSV would hold it; None/NaN → ''. Integral floats print without '.0'."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        if value.is_integer():
            return str(int(value))
    return str(value)


Rows = list[tuple[int, list[str]]]  # (spreadsheet row number, cells)


def _read_csv(path: Path) -> tuple[list[str], Rows]:
    """Header and (spreadsheet line, cells) of each non-blank data row; a quoted newline inside a cell does not
    shift the numbers of later rows (a row is numbered by the line it starts on)."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        rows: Rows = []
        try:
            header = [h.strip() for h in next(reader)]
            start = reader.line_num + 1
            for cells in reader:
                if any(c.strip() for c in cells):
                    rows.append((start, cells))
                start = reader.line_num + 1
        except StopIteration:
            raise SkinCapFormatError(f"{path} is empty; expected a header row with {FILE_COLUMN!r}") from None
        except UnicodeDecodeError as err:
            line, byte = _first_undecodable_line(path)
            raise SkinCapFormatError(f"{path} line {line}: not UTF-8 text (byte 0x{byte:02x}: {err.reason}); "
                                     "expected a UTF-8 CSV (re-save it as UTF-8)") from err
        except csv.Error as err:
            raise SkinCapFormatError(f"{path} line {reader.line_num}: malformed CSV ({err})") from err
    return header, rows


def _first_undecodable_line(path: Path) -> tuple[int, int]:
    """(1-based line number, offending byte) of the first line of `path` that is not UTF-8."""
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            return number, line[err.start]
    return 0, 0


def _read_xlsx(path: Path, max_header_row: int = 5) -> tuple[list[str], Rows]:
    """Header (the first of the top rows holding `skincap_file_path`: row 2 in SkinCAP) and the data rows."""
    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except (OSError, zipfile.BadZipFile, InvalidFileException, KeyError) as err:
        raise SkinCapFormatError(f"{path}: cannot open as an XLSX workbook: {err}") from err
    try:
        it = wb.worksheets[0].iter_rows(values_only=True)
        header: list[str] | None = None
        seen: list[list[str]] = []
        header_row = 0
        for header_row, values in enumerate(it, start=1):
            cells = [_cell(v) for v in values]
            if FILE_COLUMN in cells:
                header = cells
                break
            seen.append(cells)
            if header_row >= max_header_row:
                break
        if header is None:
            raise SkinCapFormatError(
                f"{path}: no header row with column {FILE_COLUMN!r} in the first {max_header_row} rows "
                f"(SkinCAP's XLSX has a title row, then the header on row 2); first rows found: {seen[:2]}"
            )
        rows: Rows = []
        for row_no, values in enumerate(it, start=header_row + 1):
            cells = [_cell(v) for v in values]
            if any(c.strip() for c in cells):
                rows.append((row_no, cells))
    finally:
        wb.close()
    return header, rows


def _require(path: Path, header: Sequence[str], column: str, why: str) -> int:
    if column not in header:
        found = ", ".join(repr(h) for h in header if h)
        raise SkinCapFormatError(f"{path}: required column {column!r} is missing ({why}); columns found: {found}")
    return list(header).index(column)


def unsafe_file_name_reason(name: str) -> str | None:
    """None when `name` is a plain ``<name>.png`` file name; otherwise why it is refused.

    SkinCAP's `skincap_file_path` is a bare file name inside ``skincap/``; anything with a directory part could
    escape the dataset folder or point into ``not_include/``.
    """
    if not name:
        return "empty file name"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        return f"absolute path {name!r}"
    if any(ord(c) < 32 for c in name):
        return f"control characters in {name!r}"
    if "/" in name or "\\" in name:
        return f"path separators in {name!r}"
    if name in (".", "..") or name.startswith(".."):
        return f"parent-directory reference in {name!r}"
    if not name.lower().endswith(".png"):
        return f"not a .png file name: {name!r}"
    return None


def _disease_problem(raw: str) -> str | None:
    cleaned = clean_disease(raw)
    if not cleaned:
        return "empty disease name"
    if cleaned in _PLACEHOLDER_DISEASES or not re.search(r"[a-z]", cleaned):
        return f"placeholder/nonsense disease name {raw!r}"
    return None


def read_skincap(
    root: Path | str,
    *,
    metadata: str | Path = default(DataConfig, "metadata"),
    caption_column: str = CAPTION_COLUMN,
    exclude_flagged: bool = default(DataConfig, "exclude_flagged"),
    top_k: int | None = default(DataConfig, "top_k"),
    fuzzy_threshold: float = FUZZY_MERGE_THRESHOLD,
    check_images: bool = True,
    allow_outside: bool = default(DataConfig, "allow_outside"),
) -> SkinCapDataset:
    """Read, validate and normalise a SkinCAP folder.

    Args:
        root: folder holding the metadata file(s) and ``skincap/``.
        metadata: ``"csv"`` (skincap_v240623.csv), ``"xlsx"`` (skincap_v240715.xlsx) or a path.
        caption_column: column used as `SkinCapRecord.caption`; ``caption_zh_polish_en`` and ``caption_en``
            stand for each other, so the default works on both metadata files.
        exclude_flagged: drop rows whose ``Do not consider this image`` is 1 (counted in the report).
        top_k: keep the K most frequent diseases (after cleaning) and fuzzy-merge rarer spellings into them;
            None keeps every disease as cleaned, without fuzzy merging.
        fuzzy_threshold: token-sort ratio (0–100) for the fuzzy merge.
        check_images: decode every image (catches truncated files); False only checks that files exist.
        allow_outside: follow an image that is a link to a file outside the image folder (refused by default,
            like a '../' file name; a link to the whole ``skincap/`` folder is always fine).
    """
    root = Path(root)
    meta_path = resolve_metadata(root, metadata)
    header, raw_rows = (_read_xlsx if meta_path.suffix.lower() in (".xlsx", ".xlsm") else _read_csv)(meta_path)
    file_label = meta_path.name

    if caption_column not in header and CAPTION_ALIASES.get(caption_column) in header:
        caption_column = CAPTION_ALIASES[caption_column]
    col_id = _require(meta_path, header, ID_COLUMN, "row identifier")
    col_file = _require(meta_path, header, FILE_COLUMN, "image file name '<id>.png' inside skincap/")
    col_disease = _require(meta_path, header, DISEASE_COLUMN, "diagnosis label")
    col_caption = _require(meta_path, header, caption_column, "caption text requested by caption_column")
    col_flag = (
        _require(meta_path, header, FLAG_COLUMN, "needed by exclude_flagged")
        if exclude_flagged
        else (header.index(FLAG_COLUMN) if FLAG_COLUMN in header else None)
    )
    own = {ID_COLUMN, FILE_COLUMN, DISEASE_COLUMN, ORI_COLUMN, SOURCE_COLUMN, FLAG_COLUMN, *_CAPTION_COLUMNS}
    extra_cols = [(i, h) for i, h in enumerate(header) if h and h not in own]
    col_ori = header.index(ORI_COLUMN) if ORI_COLUMN in header else None
    col_source = header.index(SOURCE_COLUMN) if SOURCE_COLUMN in header else None

    # Short rows are padded; every cell but the disease is stripped (the disease stays raw for audits).
    def tidy(cells: list[str]) -> list[str]:
        cells = cells + [""] * (len(header) - len(cells))
        return [c if j == col_disease else c.strip() for j, c in enumerate(cells)]

    rows = [(row_no, tidy(cells)) for row_no, cells in raw_rows]
    report = ReadReport(n_rows=len(rows))
    # A row that ends before a column we need is broken (a cut line, a stray newline), not a row with empty cells.
    needed = max(col_file, col_disease, col_caption) + 1
    short = {row_no: len(cells) for row_no, cells in raw_rows if len(cells) < needed}

    # Disease normalisation over every row with a usable disease name (see the module docstring for why).
    usable = [i for i, (_, cells) in enumerate(rows) if _disease_problem(cells[col_disease]) is None]
    if top_k is None:
        norm_usable: list[str | None] = [clean_disease(rows[i][1][col_disease]) for i in usable]
        top = top_k_diseases([n for n in norm_usable if n], len(usable))
    else:
        norm_usable, top = normalise_diseases([rows[i][1][col_disease] for i in usable], top_k, fuzzy_threshold)
    normalised: dict[int, str | None] = dict(zip(usable, norm_usable, strict=True))

    image_dir = root / IMAGE_DIR
    image_home = image_dir.resolve()
    records: list[SkinCapRecord] = []
    seen_files: dict[str, int] = {}
    seen_ids: dict[str, int] = {}

    def skip(row_no: int, reason: str, column: str, message: str) -> None:
        report.add_issue(ReadIssue(file_label, row_no, column, message, reason))

    for i, (row_no, cells) in enumerate(rows):
        if row_no in short:
            skip(row_no, "short_row", header[short[row_no]] if short[row_no] < len(header) else FILE_COLUMN,
                 f"the row has {short[row_no]} of {len(header)} cells (a cut or broken line?); expected every "
                 "column of the header")  # fmt: skip
            continue
        file_name, raw_disease = cells[col_file], cells[col_disease]
        flagged = col_flag is not None and cells[col_flag] in ("1", "1.0", "True", "true")
        if (problem := unsafe_file_name_reason(file_name)) is not None:
            skip(row_no, "unsafe_path", FILE_COLUMN, f"{problem}; expected a bare '<id>.png' inside {IMAGE_DIR}/")
            continue
        if (problem := _disease_problem(raw_disease)) is not None:
            skip(row_no, "unknown_disease", DISEASE_COLUMN, f"{problem}; expected a disease name")
            continue
        disease = normalised[i]
        if disease is None:
            report.n_outside_top_k += 1
            continue
        if not cells[col_caption]:
            skip(row_no, "empty_caption", caption_column, "empty caption; expected the English caption text")
            continue
        if file_name in seen_files:
            skip(row_no, "duplicate_file_name", FILE_COLUMN,
                 f"{file_name!r} already used on row {seen_files[file_name]}; expected each image once")  # fmt: skip
            continue
        row_id = cells[col_id]
        if not row_id or row_id in seen_ids:
            what = "empty id" if not row_id else f"id {row_id!r} already used on row {seen_ids[row_id]}"
            skip(row_no, "bad_id", ID_COLUMN, f"{what}; expected a unique id")
            continue
        # Recorded before the image checks, so duplicate detection does not depend on the image files.
        seen_files[file_name] = row_no
        seen_ids[row_id] = row_no
        image_path = image_dir / file_name
        if not allow_outside and image_path.is_symlink():
            target = image_path.resolve()
            if not target.is_relative_to(image_home):
                skip(row_no, "unsafe_path", FILE_COLUMN, f"{IMAGE_DIR}/{file_name} is a link to {target}, outside "
                     f"the image folder; expected the image itself (allow_outside / --allow-outside follows "
                     "such links)")  # fmt: skip
                report.bad_images[file_name] = f"a link to {target}, outside the image folder"
                continue
        if not image_path.is_file():
            what = "is a directory, not an image file" if image_path.is_dir() else "not found"
            skip(row_no, "missing_image", FILE_COLUMN, f"image {IMAGE_DIR}/{file_name} {what}; expected a PNG there")
            report.bad_images[file_name] = "a directory" if image_path.is_dir() else "missing file"
            continue
        if check_images and (problem := verify_image(image_path)) is not None:
            message = f"image {IMAGE_DIR}/{file_name}: {problem}; expected a valid PNG"
            skip(row_no, "unreadable_image", FILE_COLUMN, message)
            report.bad_images[file_name] = problem
            continue
        if flagged:
            report.n_flagged += 1
            if exclude_flagged:
                report.n_flagged_excluded += 1
                continue
        records.append(
            SkinCapRecord(
                id=row_id,
                file_name=file_name,
                image_path=image_path,
                disease=disease,
                group=DISEASE_TO_GROUP.get(disease),
                caption=cells[col_caption],
                ori_file_path=cells[col_ori] if col_ori is not None else "",
                source=cells[col_source] if col_source is not None else "",
                raw_disease=raw_disease,
                flagged=flagged,
                extra={h: cells[j] for j, h in extra_cols if cells[j]},
            )
        )
    report.n_used = len(records)

    not_include = image_dir / NOT_INCLUDE_DIR
    if not_include.is_dir():
        report.n_not_include_ignored = sum(1 for p in not_include.iterdir() if p.is_file())
    if image_dir.is_dir():
        referenced = {cells[col_file] for _, cells in rows}
        report.n_images_unreferenced = sum(
            1 for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png" and p.name not in referenced
        )
    if report.skipped:
        logger.warning("%s: skipped %d of %d rows: %s", file_label, sum(report.skipped.values()), report.n_rows,
                       ", ".join(f"{k}={v}" for k, v in sorted(report.skipped.items())))  # fmt: skip
    return SkinCapDataset(
        records=records,
        top_diseases=list(top),
        report=report,
        root=root,
        metadata_path=meta_path,
        caption_column=caption_column,
    )


def record_skin_band(record: SkinCapRecord) -> str:
    """The skin band of a record (`labels.skin_band` of its ``fitzpatrick_scale`` / ``skin_tone`` cells, kept in
    `SkinCapRecord.extra`); "unknown" when the metadata has neither column. A bad cell raises naming the file."""
    try:
        return skin_band(record.extra.get(FITZPATRICK_COLUMN), record.extra.get(SKIN_TONE_COLUMN))
    except ValueError as err:
        raise ValueError(f"{record.file_name} (id {record.id}): {err}") from None

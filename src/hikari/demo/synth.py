"""A synthetic SkinCAP: the real on-disk layout, learnable disease-dependent images, planted leaks and traps.

`write_synthetic_skincap(out, n, seed)` writes what `hikari.data.skincap.read_skincap` reads:

* ``skincap_v240623.csv`` with every real column, ``skincap_v240715.xlsx`` (title row, header on row 2, English
  caption column ``caption_en``), ``skincap/<id>.png`` and a few ``skincap/not_include/*.png`` (not in the
  metadata; some reuse a real file name with other pixels, so a reader that globs recursively is caught).
* Disease strings that exercise normalisation: mixed case and spacing, raw "squamous cell carcinoma" (cleaned
  to "… in situ") and misspellings that fuzzy-merge at token-sort ratio ≥ 91. The 10 HIKARI diseases are the
  top 10 by count; `RARE_DISEASES` (synthetic-only) fill the classes outside it.
* Images: each disease has a visual signature (colour, shape, border, texture, size) drawn with random
  position, orientation, skin tone, illumination and noise — learnable, but colour alone does not solve it,
  and two distinct images are never near-duplicates under a 64-bit pHash.
* Leak material: rows sharing an ``ori_file_path`` (two crops of one source), a pixel-identical copy and
  slightly re-encoded copies (JPEG round trip, ±2 % brightness) under new ids and new source paths, and ~10 %
  of rows flagged ``Do not consider this image``.
* ``corrupt=True`` appends bad rows with new ids (from a separate RNG, so every good row and image is
  unchanged): missing image, truncated PNG, empty caption, empty and nonsense disease, a path-traversal file
  name, plus RGBA, greyscale and 16-bit images, which are *valid* and must be read.

Same seed → byte-identical files (the XLSX zip timestamps and document properties are pinned). The pictures
themselves are drawn by `hikari.demo.synth_images`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import random
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from openpyxl import Workbook
from openpyxl.writer.excel import ExcelWriter
from PIL import Image
from rich.progress import track

from hikari.data.labels import DISEASES, clean_disease
from hikari.data.skincap import (
    CAPTION_COLUMN,
    CSV_COLUMNS,
    CSV_NAME,
    FLAG_COLUMN,
    IMAGE_DIR,
    NOT_INCLUDE_DIR,
    SKINCON_CONCEPTS,
    XLSX_CAPTION_COLUMN,
    XLSX_NAME,
)
from hikari.demo.captions import RARE_DISEASES, synth_caption
from hikari.demo.synth_images import (
    REENCODINGS,
    SKIN_TONES,
    LesionFacts,
    crop,
    png_bytes,
    reencode,
    render_canvas,
    render_picture,
    to_image,
)
from hikari.utils.io import atomic_write_bytes

MIN_ROWS = 100  # below this the top-10 cannot be guaranteed to outnumber the rare diseases
FIXED_TIME = _dt.datetime(2024, 7, 15, 0, 0, 0)
CORRUPT_KINDS: tuple[str, ...] = (
    "missing_image", "truncated_png", "empty_caption", "empty_disease", "nonsense_disease", "path_traversal",
    "rgba", "greyscale", "sixteen_bit",
)  # fmt: skip
VALID_CORRUPT_KINDS = frozenset({"rgba", "greyscale", "sixteen_bit"})  # unusual but readable: must be kept

# Relative class weights: moderately imbalanced like the real top 10 (largest ≈ 1.7× smallest).
_TOP_WEIGHTS = dict(zip(DISEASES, (1.0, 0.9, 0.8, 0.72, 0.66, 0.6, 0.95, 0.7, 0.85, 0.62), strict=True))
_TOP_SHARE = 0.8

# Raw spellings that clean/fuzzy-merge into a top-10 disease (token-sort ratio ≥ 91; tests verify it).
MISSPELLINGS: dict[str, str] = {
    "lupus erythematosis": DISEASES[1],
    "lichen plannus": DISEASES[2],
    "photodermatosis": DISEASES[4],
    "melanocytic naevi": DISEASES[6],
    "squamous cell carcinoma insitu": DISEASES[7],
    "basal cell carcinomas": DISEASES[8],
    "acne vulgarus": DISEASES[9],
}
RAW_SCC = "squamous cell carcinoma"  # clean_disease forces it to "squamous cell carcinoma in situ"

_ZH = dict(zip((*DISEASES, *RARE_DISEASES), (
    "银屑病", "红斑狼疮", "扁平苔藓", "硬皮病", "光线性皮肤病", "结节病", "色素痣", "原位鳞状细胞癌",
    "基底细胞癌", "寻常痤疮", "湿疹", "脂溢性角化病", "白癜风", "荨麻疹", "体癣", "玫瑰痤疮", "毛囊炎", "脂肪瘤",
), strict=True))  # fmt: skip
_NINE = dict(zip((*DISEASES, *RARE_DISEASES), (
    "inflammatory", "inflammatory", "inflammatory", "inflammatory", "inflammatory", "inflammatory",
    "benign melanocyte", "malignant epidermal", "malignant epidermal", "inflammatory", "inflammatory",
    "benign epidermal", "inflammatory", "inflammatory", "inflammatory", "inflammatory", "inflammatory",
    "benign dermal",
), strict=True))  # fmt: skip
_MALIGNANT = frozenset({DISEASES[7], DISEASES[8]})


# SKINCON concepts typical of each disease (set with probability 0.6, every other concept with 0.03).
_CONCEPTS: dict[str, tuple[str, ...]] = {
    DISEASES[0]: ("Plaque", "Scale", "Erythema"), DISEASES[1]: ("Plaque", "Atrophy", "Scar", "Erythema"),
    DISEASES[2]: ("Papule", "Flat topped", "Purple"), DISEASES[3]: ("Plaque", "Sclerosis", "Induration"),
    DISEASES[4]: ("Erythema", "Papule", "Patch"), DISEASES[5]: ("Papule", "Nodule", "Plaque"),
    DISEASES[6]: ("Macule", "Papule", "Brown(Hyperpigmentation)", "Pigmented"),
    DISEASES[7]: ("Plaque", "Scale", "Crust", "Erythema"), DISEASES[8]: ("Nodule", "Translucent", "Telangiectasia"),
    DISEASES[9]: ("Papule", "Pustule", "Comedo"),
}  # fmt: skip


@dataclass
class SynthSummary:
    """What `write_synthetic_skincap` wrote. Ids are strings; disease counts are after normalisation."""

    out: Path
    seed: int
    n_rows: int  # good rows (all readable)
    n_rows_total: int  # + corrupt rows
    per_disease: dict[str, int]
    raw_spellings: dict[str, int]
    misspellings: dict[str, str]
    n_flagged: int
    flagged_ids: list[str]
    same_source_pairs: list[tuple[str, str]]  # share ori_file_path, different crops
    identical_pairs: list[tuple[str, str]]  # pixel-identical copy, different id and ori path
    reencoded_pairs: list[tuple[str, str, str]]  # (original, copy, how: "jpeg90" | "brightness+2%" | ...)
    corrupt: dict[str, list[str]] = field(default_factory=dict)
    not_include: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def _allocate(n: int) -> dict[str, int]:
    """Rows per disease by largest remainder: the top 10 share `_TOP_SHARE`, rare diseases the rest."""
    weights = {d: _TOP_WEIGHTS[d] * _TOP_SHARE / sum(_TOP_WEIGHTS.values()) for d in DISEASES}
    weights.update({d: (1 - _TOP_SHARE) / len(RARE_DISEASES) for d in RARE_DISEASES})
    exact = {d: n * w for d, w in weights.items()}
    counts = {d: int(v) for d, v in exact.items()}
    for d in sorted(exact, key=lambda d: (counts[d] - exact[d], d))[: n - sum(counts.values())]:
        counts[d] += 1
    return counts


def _raw_disease(rng: random.Random, disease: str) -> str:
    """A raw spelling of a canonical name: as is, Title Case, UPPER, or with stray spaces."""
    if disease == DISEASES[7] and rng.random() < 0.5:
        disease = RAW_SCC
    r = rng.random()
    if r < 0.6:
        return disease
    if r < 0.78:
        return disease.title()
    if r < 0.85:
        return disease.upper()
    words = disease.split()
    return " " + "  ".join(words) + " " if len(words) > 1 else f" {disease}  "


# ------------------------------------------------------------------------------------------------- metadata
# Skin types as Fitzpatrick17k has them (images of type I..VI: 2,947 / 4,808 / 3,308 / 2,781 / 1,533 / 635, and 565
# labelled -1, unknown): light skin dominates, dark skin is rare — what makes subgroup reports necessary.
FITZPATRICK_WEIGHTS = (2947, 4808, 3308, 2781, 1533, 635)
FITZPATRICK_UNKNOWN_SHARE = 565 / 16577
def _meta_row(rng: random.Random, row_id: int, disease: str, raw: str, caption: str, fitz: int,
              source: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One metadata row (all CSV columns); ints stay ints so the XLSX stores numbers.

    `source` forces the source dataset (a second crop of one picture comes from the same dataset); the draw
    still happens so that the random stream does not depend on it.
    """
    drawn = "ddi" if rng.random() < 0.25 else "fitzpatrick17k"
    ddi = (source or drawn) == "ddi"
    concepts = set(_CONCEPTS.get(disease, ()))
    row: dict[str, Any] = {c: int(rng.random() < (0.6 if c in concepts else 0.03)) for c in SKINCON_CONCEPTS}
    zh, nine = _ZH[disease], _NINE[disease]
    three = "malignant" if disease in _MALIGNANT else "benign" if nine.startswith("benign") else "non-neoplastic"
    ori = f"ddi/{row_id:06d}.png" if ddi else f"fitzpatrick17k/{rng.getrandbits(128):032x}.jpg"
    centaur = min(6, max(1, fitz + rng.choice((-1, 0, 0, 1))))
    row.update({
        "id": row_id,
        "skincap_file_path": f"{row_id}.png",
        "ori_file_path": ori,
        "caption_zh": f"图片显示{zh}样皮损。建议皮肤科就诊，必要时行活检明确诊断。",
        "caption_zh_polish": f"皮损表现符合{zh}。建议进一步行皮肤镜或组织病理检查以明确诊断。",
        CAPTION_COLUMN: caption,
        "disease": raw,
        "remark": "" if rng.random() < 0.95 else "synthetic remark",
        "source": "ddi" if ddi else "fitzpatrick17k",
        # DDI rows carry skin_tone/malignant, Fitzpatrick17k rows the Fitzpatrick type and partitions.
        "skin_tone": (12, 34, 56)[(fitz - 1) // 2] if ddi else "",
        "malignant": str(disease in _MALIGNANT) if ddi else "",
        # Fitzpatrick17k labels a few percent of its images "unknown" (-1); the picture still has a skin type.
        "fitzpatrick_scale": "" if ddi else (-1 if rng.random() < FITZPATRICK_UNKNOWN_SHARE else fitz),
        "fitzpatrick_centaur": "" if ddi else centaur,
        "nine_partition_label": "" if ddi else nine,
        "three_partition_label": "" if ddi else three,
        FLAG_COLUMN: 0,
    })  # fmt: skip
    return row


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows([[row[c] for c in CSV_COLUMNS] for row in rows])
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def _write_xlsx(path: Path, rows: list[dict[str, Any]]) -> None:
    """The XLSX as SkinCAP ships it: a title row, the header on row 2, ``caption_en`` for the English caption.

    openpyxl stamps "now" into docProps/core.xml and into every zip entry; both are pinned for byte-identical
    output (we write through `ExcelWriter` directly because `Workbook.save` overwrites `modified`).
    """
    header = [XLSX_CAPTION_COLUMN if c == CAPTION_COLUMN else c for c in CSV_COLUMNS]
    wb = Workbook()
    ws = wb.active
    ws.title = "skincap"
    ws.append(["SkinCAP (synthetic) — multi-modal dermatology captions, v240715"])
    ws.append(header)
    for row in rows:
        ws.append([None if row[c] == "" else row[c] for c in CSV_COLUMNS])
    wb.properties.created = wb.properties.modified = FIXED_TIME
    wb.properties.creator = "hikari.demo.synth"
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(wb, archive).write_data()
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(fixed, src.read(info.filename))
    atomic_write_bytes(path, out.getvalue())


# ------------------------------------------------------------------------------------------------ generator
def write_synthetic_skincap(
    out: Path | str, n: int = 600, seed: int = 0, corrupt: bool = False, *, progress: bool = False
) -> SynthSummary:
    """Write a synthetic SkinCAP with `n` good rows into `out` (created; existing files of the same names are
    overwritten). Deterministic per `seed`; ``corrupt=True`` appends bad rows without touching the good ones.
    `progress` shows a rich progress bar over the images (~100 rows/s on one core).

    Images are written first and the metadata files last (atomically), so a folder whose CSV exists is complete.
    """
    if n < MIN_ROWS:
        raise ValueError(f"n={n} is too small for a synthetic SkinCAP; use n >= {MIN_ROWS}")
    out = Path(out)
    image_dir = out / IMAGE_DIR
    (image_dir / NOT_INCLUDE_DIR).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)

    counts = _allocate(n)
    diseases = [d for d in (*DISEASES, *RARE_DISEASES) for _ in range(counts[d])]
    rng.shuffle(diseases)
    ids = list(range(1, n + 1))
    by_disease: dict[str, list[int]] = {}
    for row_id, d in zip(ids, diseases, strict=True):
        by_disease.setdefault(d, []).append(row_id)

    # Planted leak material: (source id → derived id) within one disease; every row in at most one plant.
    n_same, n_ident, n_reenc = max(2, n // 50), max(1, n // 200), max(2, n // 150)
    free = {d: rng.sample(v, len(v)) for d, v in sorted(by_disease.items()) if d in DISEASES}
    plan: list[tuple[str, int, int]] = []
    kinds = ["same_source"] * n_same + ["identical"] * n_ident + ["reencoded"] * n_reenc
    for i, kind in enumerate(kinds):
        pool = free[DISEASES[i % len(DISEASES)]]
        a, b = sorted((pool.pop(), pool.pop()))  # the source comes first in id order, so it is written first
        plan.append((kind, a, b))
    derived = {b: (kind, a) for kind, a, b in plan}
    crop_sources = {a for kind, a, _ in plan if kind == "same_source"}

    # Raw disease strings: each misspelling on 1-2 rows, the rest random spellings of the canonical name.
    raw = {row_id: _raw_disease(rng, d) for row_id, d in zip(ids, diseases, strict=True)}
    for k, (wrong, canonical) in enumerate(sorted(MISSPELLINGS.items())):
        for row_id in [r for r in by_disease[canonical] if r not in derived][: 1 + k % 2]:
            raw[row_id] = wrong

    rows: list[dict[str, Any]] = []
    canvases: dict[int, tuple[np.ndarray, int, int]] = {}
    fitz_of: dict[int, int] = {}
    facts_of: dict[int, LesionFacts] = {}  # what each picture shows (a copy or second crop shows the same)
    summary_pairs: dict[str, list[Any]] = {"same_source": [], "identical": [], "reencoded": []}
    todo: Iterable[tuple[int, str]] = zip(ids, diseases, strict=True)
    if progress:
        todo = track(list(todo), description="Synthesising images")
    for row_id, d in todo:
        src_kind, src = derived.get(row_id, (None, None))
        fitz = fitz_of[src] if src is not None else rng.choices(range(1, 7), weights=FITZPATRICK_WEIGHTS)[0]
        fitz_of[row_id] = fitz
        source = rows[src - 1]["source"] if src_kind == "same_source" else None  # one source, one dataset
        if src is None:
            canvas, h, w, facts_of[row_id] = render_picture(seed, row_id, d, SKIN_TONES[fitz - 1])
        else:
            facts_of[row_id] = facts_of[src]
        caption = synth_caption(rng, d, facts_of[row_id], fitz)
        row = _meta_row(rng, row_id, d, raw[row_id], caption, fitz, source)
        crop_rng = np.random.default_rng([seed, row_id, 11])
        if src is None:
            if row_id in crop_sources:  # keep only the canvases a second crop will need
                canvases[row_id] = (canvas, h, w)
            png = png_bytes(to_image(crop(canvas, h, w, crop_rng)))
        elif src_kind == "same_source":
            canvas, h, w = canvases.pop(src)
            png = png_bytes(to_image(crop(canvas, h, w, crop_rng)))
            row["ori_file_path"] = rows[src - 1]["ori_file_path"]
            summary_pairs["same_source"].append((str(src), str(row_id)))
        else:
            original = (image_dir / f"{src}.png").read_bytes()
            if src_kind == "identical":
                png = original
                summary_pairs["identical"].append((str(src), str(row_id)))
            else:
                how = REENCODINGS[len(summary_pairs["reencoded"]) % len(REENCODINGS)]
                png = reencode(original, how)
                summary_pairs["reencoded"].append((str(src), str(row_id), how))
        (image_dir / f"{row_id}.png").write_bytes(png)
        rows.append(row)

    flagged = sorted(rng.sample(ids, max(1, round(0.1 * n))))
    for row_id in flagged:
        rows[row_id - 1][FLAG_COLUMN] = 1

    # not_include/: images that are not in the metadata; half reuse a real file name with different pixels.
    not_include = []
    for k in range(max(3, n // 100)):
        name = f"{ids[k * 7 % n]}.png" if k % 2 == 0 else f"{n + 1000 + k}.png"
        d = (*DISEASES, *RARE_DISEASES)[k % (len(DISEASES) + len(RARE_DISEASES))]
        canvas, h, w = render_canvas(seed + 1_000_000, k + 1, d, SKIN_TONES[k % 6])
        (image_dir / NOT_INCLUDE_DIR / name).write_bytes(png_bytes(to_image(canvas[:h, :w])))
        not_include.append(name)

    corrupt_ids: dict[str, list[str]] = {}
    if corrupt:
        corrupt_ids = _append_corrupt_rows(out, rows, seed, first_id=n + 1)

    _write_csv(out / CSV_NAME, rows)
    _write_xlsx(out / XLSX_NAME, rows)

    expected = Counter(
        MISSPELLINGS.get(clean_disease(raw[i]), clean_disease(raw[i])) for i in ids
    )  # fmt: skip
    return SynthSummary(
        out=out,
        seed=seed,
        n_rows=n,
        n_rows_total=len(rows),
        per_disease=dict(sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))),
        raw_spellings=dict(sorted(Counter(raw.values()).items())),
        misspellings=dict(MISSPELLINGS),
        n_flagged=len(flagged),
        flagged_ids=[str(i) for i in flagged],
        same_source_pairs=summary_pairs["same_source"],
        identical_pairs=summary_pairs["identical"],
        reencoded_pairs=summary_pairs["reencoded"],
        corrupt=corrupt_ids,
        not_include=not_include,
    )


def _append_corrupt_rows(out: Path, rows: list[dict[str, Any]], seed: int, first_id: int) -> dict[str, list[str]]:
    """Append one row per `CORRUPT_KINDS` entry (new ids, own RNG) and write whatever file each one needs."""
    rng = random.Random(f"hikari-synth-corrupt-{seed}")
    image_dir = out / IMAGE_DIR
    ids: dict[str, list[str]] = {}
    for k, kind in enumerate(CORRUPT_KINDS):
        row_id = first_id + k
        disease = DISEASES[k % len(DISEASES)]
        fitz = rng.randint(1, 6)
        canvas, h, w, facts = render_picture(seed + 2_000_000, row_id, disease, SKIN_TONES[fitz - 1])
        row = _meta_row(rng, row_id, disease, disease, synth_caption(rng, disease, facts, fitz), fitz)
        rgb = np.rint(canvas[:h, :w] * 255).astype(np.uint8)
        path = image_dir / row["skincap_file_path"]
        if kind == "missing_image":
            path.unlink(missing_ok=True)
        elif kind == "truncated_png":
            png = png_bytes(Image.fromarray(rgb))
            path.write_bytes(png[: len(png) // 2])
        elif kind == "empty_caption":
            row[CAPTION_COLUMN] = ""
        elif kind in ("empty_disease", "nonsense_disease"):
            row["disease"] = "" if kind == "empty_disease" else "???"
        elif kind == "path_traversal":
            # The file exists (inside `out`, one level up from skincap/), so only the name check can refuse it.
            row["skincap_file_path"] = "../evil.png"
            (out / "evil.png").write_bytes(png_bytes(Image.fromarray(rgb)))
        elif kind == "rgba":
            alpha = np.full(rgb.shape[:2], 255, np.uint8)
            alpha[: h // 4, : w // 4] = 0  # a transparent corner: must come out white
            path.write_bytes(png_bytes(Image.fromarray(np.dstack([rgb, alpha]))))
        elif kind == "greyscale":
            path.write_bytes(png_bytes(Image.fromarray(rgb).convert("L")))
        elif kind == "sixteen_bit":
            grey = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16) * 257
            path.write_bytes(png_bytes(Image.fromarray(grey)))  # mode I;16
        if kind not in ("missing_image", "truncated_png", "path_traversal") and not path.exists():
            path.write_bytes(png_bytes(Image.fromarray(rgb)))
        rows.append(row)
        ids.setdefault(kind, []).append(str(row_id))
    return ids

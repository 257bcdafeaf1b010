from __future__ import annotations

import csv
import io
import itertools
import logging
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from openpyxl import load_workbook
from PIL import Image
from rapidfuzz import fuzz

from hikari.config import DEFAULT_HASH_THRESHOLD
from hikari.data.hashing import hamming, phash, pixel_sha256
from hikari.data.labels import DISEASES, FUZZY_MERGE_THRESHOLD, clean_disease, fuzzy_merge_map
from hikari.data.skincap import CSV_COLUMNS, CSV_NAME, IMAGE_DIR, NOT_INCLUDE_DIR, XLSX_NAME, read_skincap
from hikari.demo.captions import RARE_DISEASES
from hikari.demo.synth import CORRUPT_KINDS, MIN_ROWS, MISSPELLINGS, RAW_SCC, SynthSummary, write_synthetic_skincap
from hikari.demo.synth_images import STYLES


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _csv_rows(root: Path) -> list[dict[str, str]]:
    with (root / CSV_NAME).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_layout_matches_the_real_dataset(synth_dir: Path, synth_summary: SynthSummary) -> None:
    with (synth_dir / CSV_NAME).open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert tuple(header) == CSV_COLUMNS
    assert len(CSV_COLUMNS) == 15 + 48 + 1
    rows = _csv_rows(synth_dir)
    assert len(rows) == synth_summary.n_rows == 200
    assert all(row["skincap_file_path"] == f"{row['id']}.png" for row in rows)
    assert all((synth_dir / IMAGE_DIR / row["skincap_file_path"]).is_file() for row in rows)
    assert {row["source"] for row in rows} == {"fitzpatrick17k", "ddi"}
    assert all(row["skin_tone"] in {"12", "34", "56"} for row in rows if row["source"] == "ddi")
    assert sorted(p.name for p in (synth_dir / IMAGE_DIR / NOT_INCLUDE_DIR).iterdir()) == sorted(
        synth_summary.not_include
    )

    wb = load_workbook(synth_dir / XLSX_NAME, read_only=True)
    first, second, third = list(itertools.islice(wb.worksheets[0].iter_rows(values_only=True), 3))
    wb.close()
    assert "skincap_file_path" not in first  # a title row, as in skincap_v240715.xlsx
    assert "caption_en" in second and "caption_zh_polish_en" not in second
    assert list(second) == ["caption_en" if c == "caption_zh_polish_en" else c for c in CSV_COLUMNS]
    assert third[0] == 1 and third[1] == "1.png"  # ids are numbers in the spreadsheet


def test_images_are_small_rgb_pngs_of_mixed_sizes(synth_dir: Path) -> None:
    sizes = set()
    for path in sorted((synth_dir / IMAGE_DIR).glob("*.png"))[:80]:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.mode == "RGB"
            assert 64 <= min(img.size) and max(img.size) <= 112
            sizes.add(img.size)
    assert len(sizes) > 20 and any(w != h for w, h in sizes)


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path: Path) -> None:
    a = write_synthetic_skincap(tmp_path / "a", n=MIN_ROWS, seed=5, corrupt=True)
    b = write_synthetic_skincap(tmp_path / "b", n=MIN_ROWS, seed=5, corrupt=True)
    c = write_synthetic_skincap(tmp_path / "c", n=MIN_ROWS, seed=6)
    files_a, files_b, files_c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert files_a == files_b
    assert a.to_dict() | {"out": ""} == b.to_dict() | {"out": ""}
    assert files_a[CSV_NAME] != files_c[CSV_NAME] and files_a[XLSX_NAME] != files_c[XLSX_NAME]
    assert files_a["skincap/1.png"] != files_c["skincap/1.png"]
    assert a.per_disease != c.per_disease or a.flagged_ids != c.flagged_ids
    # The XLSX is deterministic by construction, not by luck within one second: every timestamp is pinned.
    with zipfile.ZipFile(io.BytesIO(files_a[XLSX_NAME])) as zf:
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        core = zf.read("docProps/core.xml").decode()
    assert "2024-07-15T00:00:00Z" in core

    # The path-traversal row never makes the generator write outside its output folder …
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]
    (bad,) = [r for r in _csv_rows(tmp_path / "a") if r["id"] in a.corrupt["path_traversal"]]
    assert bad["skincap_file_path"].startswith("..")
    # … and the file it points at exists (inside a/), so only a name check can refuse it.
    assert (tmp_path / "a" / IMAGE_DIR / bad["skincap_file_path"]).resolve().is_file()


def test_corrupt_rows_are_appended_without_touching_good_rows(
    synth_dir: Path, synth_corrupt_dir: Path, synth_corrupt_summary: SynthSummary
) -> None:
    clean_csv = (synth_dir / CSV_NAME).read_text(encoding="utf-8")
    corrupt_csv = (synth_corrupt_dir / CSV_NAME).read_text(encoding="utf-8")
    assert corrupt_csv.startswith(clean_csv)
    for name in sorted(p.name for p in (synth_dir / IMAGE_DIR).glob("*.png")):
        assert (synth_dir / IMAGE_DIR / name).read_bytes() == (synth_corrupt_dir / IMAGE_DIR / name).read_bytes()
    assert list(synth_corrupt_summary.corrupt) == list(CORRUPT_KINDS)
    new_ids = [i for ids in synth_corrupt_summary.corrupt.values() for i in ids]
    assert sorted(map(int, new_ids)) == list(range(201, 201 + len(CORRUPT_KINDS)))
    assert synth_corrupt_summary.n_rows_total == 200 + len(CORRUPT_KINDS)


def test_corrupt_image_files_have_the_promised_defects(
    synth_corrupt_dir: Path, synth_corrupt_summary: SynthSummary
) -> None:
    kinds = synth_corrupt_summary.corrupt
    image = synth_corrupt_dir / IMAGE_DIR
    assert not (image / f"{kinds['missing_image'][0]}.png").exists()
    with pytest.raises(OSError):
        with Image.open(image / f"{kinds['truncated_png'][0]}.png") as img:
            img.load()
    modes = {}
    for kind in ("rgba", "greyscale", "sixteen_bit"):
        with Image.open(image / f"{kinds[kind][0]}.png") as img:
            modes[kind] = img.mode
    assert modes["rgba"] == "RGBA" and modes["greyscale"] == "L" and modes["sixteen_bit"].startswith("I")


def test_raw_disease_strings_exercise_normalisation(synth_summary: SynthSummary) -> None:
    raw = synth_summary.raw_spellings
    assert any(r != r.strip() or "  " in r for r in raw)  # stray spaces
    assert any(r != r.lower() for r in raw)  # mixed case
    assert any(" ".join(r.lower().split()) == RAW_SCC for r in raw)  # clean_disease forces it to "… in situ"
    assert set(MISSPELLINGS) <= set(raw)


@pytest.mark.parametrize("wrong", sorted(MISSPELLINGS))
def test_misspellings_fuzzy_merge_into_the_intended_disease(wrong: str) -> None:
    assert fuzz.token_sort_ratio(wrong, MISSPELLINGS[wrong]) >= FUZZY_MERGE_THRESHOLD
    assert fuzzy_merge_map([wrong], DISEASES)[wrong] == MISSPELLINGS[wrong]


def test_rare_diseases_never_merge_into_the_top_10() -> None:
    assert fuzzy_merge_map(RARE_DISEASES, DISEASES).keys() == set(DISEASES)


def test_top_10_are_the_hikari_diseases_and_rarer_classes_are_smaller(
    synth_dir: Path, synth_summary: SynthSummary
) -> None:
    ds = read_skincap(synth_dir, top_k=10)
    assert set(ds.top_diseases) == set(DISEASES)
    counts = synth_summary.per_disease
    assert min(counts[d] for d in DISEASES) > max(counts[d] for d in RARE_DISEASES)
    assert max(counts[d] for d in DISEASES) / min(counts[d] for d in DISEASES) > 1.3  # imbalanced, moderately
    assert Counter(r.disease for r in ds.records) == Counter({d: counts[d] for d in DISEASES})


def test_flags_and_planted_pairs(synth_dir: Path, synth_summary: SynthSummary) -> None:
    rows = {r["id"]: r for r in _csv_rows(synth_dir)}
    flagged = sorted((i for i, r in rows.items() if r["Do not consider this image"] == "1"), key=int)
    assert flagged == synth_summary.flagged_ids
    assert 0.08 <= len(flagged) / len(rows) <= 0.12
    assert synth_summary.same_source_pairs and synth_summary.identical_pairs and synth_summary.reencoded_pairs
    for a, b in synth_summary.same_source_pairs:
        assert rows[a]["ori_file_path"] == rows[b]["ori_file_path"]
    for a, b in [*synth_summary.identical_pairs, *[(a, b) for a, b, _ in synth_summary.reencoded_pairs]]:
        assert rows[a]["ori_file_path"] != rows[b]["ori_file_path"]
        assert clean_disease(rows[a]["disease"]) == clean_disease(rows[b]["disease"])
    ori = Counter(r["ori_file_path"] for r in rows.values())
    assert sum(1 for c in ori.values() if c > 1) == len(synth_summary.same_source_pairs)


def test_near_duplicates_collide_and_distinct_images_do_not(synth_dir: Path, synth_summary: SynthSummary) -> None:
    image = synth_dir / IMAGE_DIR
    hashes = {p.stem: phash(p) for p in sorted(image.glob("*.png"))}
    for a, b in synth_summary.identical_pairs:
        assert pixel_sha256(image / f"{a}.png") == pixel_sha256(image / f"{b}.png")
    for a, b, _how in synth_summary.reencoded_pairs:
        assert pixel_sha256(image / f"{a}.png") != pixel_sha256(image / f"{b}.png")
        assert hamming(hashes[a], hashes[b]) <= DEFAULT_HASH_THRESHOLD // 2
    planted = {
        frozenset(p[:2])
        for p in [*synth_summary.same_source_pairs, *synth_summary.identical_pairs, *synth_summary.reencoded_pairs]
    }
    distinct = [hamming(hashes[a], hashes[b]) for a, b in itertools.combinations(sorted(hashes), 2)
                if frozenset((a, b)) not in planted]  # fmt: skip
    logging.getLogger(__name__).info("min pHash distance between distinct synthetic images: %d", min(distinct))
    assert min(distinct) > DEFAULT_HASH_THRESHOLD  # measured: 12 at n=200 and 10-12 at n=600 (threshold 8)


def _colour_stats(path: Path) -> np.ndarray:
    """Mean and std of RGB relative to the image's median (its skin): 6 numbers."""
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255.0
    rel = rgb / np.median(rgb, axis=0)
    return np.concatenate([rel.mean(0), rel.std(0)])


def test_images_depend_on_the_disease_learnable_but_not_trivially(synth_dir: Path) -> None:
    """Leave-one-out nearest centroid on 6 colour statistics: well above chance, far from perfect."""
    ds = read_skincap(synth_dir)
    x = np.array([_colour_stats(r.image_path) for r in ds.records])
    x = (x - x.mean(0)) / x.std(0)
    y = np.array([r.disease for r in ds.records])
    classes = sorted(set(y))
    correct = 0
    for i in range(len(y)):
        rest = np.arange(len(y)) != i
        centroids = np.array([x[rest & (y == c)].mean(0) for c in classes])
        correct += classes[int(np.argmin(((centroids - x[i]) ** 2).sum(1)))] == y[i]
    accuracy = correct / len(y)
    chance = 1 / len(classes)
    assert 2 * chance <= accuracy < 0.9, accuracy  # measured 0.25 (seed 0, n=200)

    shuffled = np.random.default_rng(0).permutation(y)  # the same classifier on shuffled labels is at chance
    correct = 0
    for i in range(len(y)):
        rest = np.arange(len(y)) != i
        centroids = np.array([x[rest & (shuffled == c)].mean(0) for c in classes])
        correct += classes[int(np.argmin(((centroids - x[i]) ** 2).sum(1)))] == shuffled[i]
    assert correct / len(y) < accuracy


def test_too_few_rows_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n >= 100"):
        write_synthetic_skincap(tmp_path / "x", n=MIN_ROWS - 1)


def test_every_disease_has_a_visual_signature() -> None:
    assert set(STYLES) == set(DISEASES) | set(RARE_DISEASES)


def test_skin_type_columns_follow_both_skincap_conventions(tmp_path: Path) -> None:
    from hikari.data.labels import SKIN_BANDS, UNKNOWN_SKIN_BAND
    from hikari.data.skincap import record_skin_band

    write_synthetic_skincap(tmp_path, n=1200, seed=3)
    rows = _csv_rows(tmp_path)
    ddi = [r for r in rows if r["source"] == "ddi"]
    fitz = [r for r in rows if r["source"] == "fitzpatrick17k"]
    assert ddi and fitz
    assert {r["skin_tone"] for r in ddi} <= {"12", "34", "56"} and all(not r["fitzpatrick_scale"] for r in ddi)
    scales = Counter(r["fitzpatrick_scale"] for r in fitz)
    assert set(scales) <= {"-1", "1", "2", "3", "4", "5", "6"} and all(not r["skin_tone"] for r in fitz)
    assert 0 < scales["-1"] < 0.1 * len(fitz)  # Fitzpatrick17k's few unknowns
    assert scales["2"] > scales["4"] > scales["6"] > 0  # light skin dominates, as in Fitzpatrick17k
    bands = Counter(record_skin_band(r) for r in read_skincap(tmp_path).records)
    assert set(bands) == {*SKIN_BANDS, UNKNOWN_SKIN_BAND}  # every band, unknown included

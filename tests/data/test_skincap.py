from __future__ import annotations

import csv
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hikari.data.images import load_rgb
from hikari.data.labels import DISEASE_TO_GROUP, DISEASES, clean_disease
from hikari.data.skincap import (
    CSV_NAME,
    IMAGE_DIR,
    NOT_INCLUDE_DIR,
    XLSX_NAME,
    SkinCapFormatError,
    read_skincap,
    unsafe_file_name_reason,
)
from hikari.demo.captions import MAX_WORDS
from hikari.demo.synth import MISSPELLINGS, VALID_CORRUPT_KINDS, SynthSummary


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_csv_and_xlsx_give_the_same_records(synth_dir: Path) -> None:
    from_csv = read_skincap(synth_dir, metadata="csv")
    from_xlsx = read_skincap(synth_dir, metadata="xlsx")
    assert from_csv.metadata_path.name == CSV_NAME and from_xlsx.metadata_path.name == XLSX_NAME
    assert from_xlsx.caption_column == "caption_en"  # caption_zh_polish_en was mapped to the XLSX name
    assert len(from_csv.records) > 100
    assert from_csv.records == from_xlsx.records
    assert [r.extra for r in from_csv.records] == [r.extra for r in from_xlsx.records]
    assert from_csv.top_diseases == from_xlsx.top_diseases
    assert from_csv.report.n_rows == from_xlsx.report.n_rows == 200


def test_records_are_normalised_and_grouped(synth_dir: Path, synth_summary: SynthSummary) -> None:
    ds = read_skincap(synth_dir)
    assert set(ds.top_diseases) == set(DISEASES)
    assert ds.report.n_used + ds.report.n_outside_top_k == ds.report.n_rows
    assert not ds.report.skipped
    for record in ds.records:
        assert record.disease in DISEASES
        assert record.group == DISEASE_TO_GROUP[record.disease]
        assert record.image_path == synth_dir / IMAGE_DIR / record.file_name
        assert record.file_name == f"{record.id}.png"
        assert record.caption and record.ori_file_path and record.source
    by_raw = {r.raw_disease: r.disease for r in ds.records}
    for wrong, right in MISSPELLINGS.items():
        assert by_raw[wrong] == right  # fuzzy-merged
    scc = [r for r in ds.records if " ".join(r.raw_disease.lower().split()) == "squamous cell carcinoma"]
    assert scc and {r.disease for r in scc} == {"squamous cell carcinoma in situ"}
    assert any(r.raw_disease != r.raw_disease.strip() for r in ds.records)  # raw kept raw
    assert {r.id for r in ds.records if r.flagged} == set(synth_summary.flagged_ids) & {r.id for r in ds.records}


def test_join_is_by_file_name_not_position(synth_dir: Path, tmp_path: Path) -> None:
    header, rows = _read_csv(synth_dir / CSV_NAME)
    random.Random(0).shuffle(rows)
    shuffled = _write_csv(tmp_path / "shuffled.csv", header, rows)
    original = read_skincap(synth_dir).by_file_name()
    ds = read_skincap(synth_dir, metadata=shuffled)
    assert ds.metadata_path == shuffled
    assert ds.by_file_name() == original
    assert [r.file_name for r in ds.records] != sorted(original, key=lambda n: int(n.split(".")[0]))


def test_not_include_is_ignored(synth_dir: Path, synth_summary: SynthSummary) -> None:
    ds = read_skincap(synth_dir)
    assert ds.report.n_not_include_ignored == len(synth_summary.not_include)
    assert ds.report.n_images_unreferenced == 0
    assert all(NOT_INCLUDE_DIR not in r.image_path.parts for r in ds.records)
    # Some not_include files reuse a real file name with other pixels: the record must point at skincap/<name>.
    shared = set(synth_summary.not_include) & {r.file_name for r in ds.records}
    assert shared
    for name in shared:
        inside = np.asarray(load_rgb(synth_dir / IMAGE_DIR / name))
        ignored = np.asarray(load_rgb(synth_dir / IMAGE_DIR / NOT_INCLUDE_DIR / name))
        assert inside.shape != ignored.shape or not np.array_equal(inside, ignored)


def test_every_corrupt_case(
    synth_corrupt_dir: Path, synth_corrupt_summary: SynthSummary, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kinds = synth_corrupt_summary.corrupt
    _, rows = _read_csv(synth_corrupt_dir / CSV_NAME)
    line_of = {row[0]: i + 2 for i, row in enumerate(rows)}  # the spreadsheet row a human sees
    expected = {
        "missing_image": ("missing_image", "skincap_file_path"),
        "truncated_png": ("unreadable_image", "skincap_file_path"),
        "empty_caption": ("empty_caption", "caption_zh_polish_en"),
        "empty_disease": ("unknown_disease", "disease"),
        "nonsense_disease": ("unknown_disease", "disease"),
        "path_traversal": ("unsafe_path", "skincap_file_path"),
    }
    with caplog.at_level(logging.WARNING, logger="hikari.data.skincap"):
        ds = read_skincap(synth_corrupt_dir)
    assert ds.report.skipped == {"missing_image": 1, "unreadable_image": 1, "empty_caption": 1,
                                 "unknown_disease": 2, "unsafe_path": 1}  # fmt: skip
    issues = {issue.row: issue for issue in ds.report.issues}
    for kind, (reason, column) in expected.items():
        row_no = line_of[kinds[kind][0]]
        issue = issues[row_no]
        assert (issue.file, issue.column, issue.reason) == (CSV_NAME, column, reason), (kind, issue)
        assert f"{CSV_NAME} row {row_no}, column {column!r}" in caplog.text
        assert "expected" in issue.message
    assert "truncated" in issues[line_of[kinds["truncated_png"][0]]].message
    assert "../evil.png" in issues[line_of[kinds["path_traversal"][0]]].message

    # RGBA, greyscale and 16-bit images are valid: read and converted to RGB, not skipped.
    used = ds.by_file_name()
    for kind in VALID_CORRUPT_KINDS:
        image = load_rgb(used[f"{kinds[kind][0]}.png"].image_path)
        assert image.mode == "RGB"
        arr = np.asarray(image)
        if kind == "rgba":
            assert (arr[0, 0] == 255).all()  # the transparent corner became white
        else:
            assert (arr[..., 0] == arr[..., 1]).all() and arr.max() > 100  # grey, and 16 bits were scaled

    # Skipping rows changes nothing about the others: the good rows read exactly as without the bad ones.
    clean = {r.file_name: r for r in ds.records if r.id not in {i for ids in kinds.values() for i in ids}}
    good_rows_only = read_skincap(synth_corrupt_dir, metadata=_good_rows_only(synth_corrupt_dir, tmp_path))
    assert clean == good_rows_only.by_file_name()


def _good_rows_only(root: Path, tmp_path: Path) -> Path:
    header, rows = _read_csv(root / CSV_NAME)
    return _write_csv(tmp_path / "good_rows.csv", header, rows[:200])


def test_xlsx_row_numbers_start_at_row_3(synth_corrupt_dir: Path, synth_corrupt_summary: SynthSummary) -> None:
    ds_csv = read_skincap(synth_corrupt_dir)
    ds_xlsx = read_skincap(synth_corrupt_dir, metadata="xlsx")
    assert [i.row + 1 for i in ds_csv.report.issues] == [i.row for i in ds_xlsx.report.issues]
    assert {i.file for i in ds_xlsx.report.issues} == {XLSX_NAME}
    assert "caption_en" in {i.column for i in ds_xlsx.report.issues}
    assert ds_csv.records == ds_xlsx.records


def test_missing_metadata_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SkinCapFormatError, match=CSV_NAME):
        read_skincap(tmp_path)
    with pytest.raises(SkinCapFormatError, match="nope.csv"):
        read_skincap(tmp_path, metadata=tmp_path / "nope.csv")


def test_missing_column_names_file_column_and_columns_found(synth_dir: Path, tmp_path: Path) -> None:
    header, rows = _read_csv(synth_dir / CSV_NAME)
    drop = header.index("disease")
    path = _write_csv(tmp_path / "no_disease.csv", header[:drop] + header[drop + 1 :],
                      [r[:drop] + r[drop + 1 :] for r in rows])  # fmt: skip
    with pytest.raises(SkinCapFormatError) as err:
        read_skincap(synth_dir, metadata=path)
    message = str(err.value)
    assert "no_disease.csv" in message and "'disease'" in message and "columns found" in message
    assert "'skincap_file_path'" in message  # lists what it did find
    with pytest.raises(SkinCapFormatError, match="caption_xx"):
        read_skincap(synth_dir, caption_column="caption_xx")


def test_flag_column_is_required_only_to_exclude(synth_dir: Path, tmp_path: Path) -> None:
    header, rows = _read_csv(synth_dir / CSV_NAME)
    path = _write_csv(tmp_path / "no_flag.csv", header[:-1], [r[:-1] for r in rows])
    assert not any(r.flagged for r in read_skincap(synth_dir, metadata=path).records)
    with pytest.raises(SkinCapFormatError, match="Do not consider this image"):
        read_skincap(synth_dir, metadata=path, exclude_flagged=True)


def test_xlsx_without_a_header_row(tmp_path: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    wb.active.append(["just a title"])
    wb.active.append(["a", "b"])
    wb.save(tmp_path / XLSX_NAME)
    with pytest.raises(SkinCapFormatError, match="skincap_file_path"):
        read_skincap(tmp_path, metadata="xlsx")


def test_exclude_flagged(synth_dir: Path) -> None:
    kept = read_skincap(synth_dir)
    dropped = read_skincap(synth_dir, exclude_flagged=True)
    assert kept.report.n_flagged > 0
    assert dropped.report.n_flagged_excluded == kept.report.n_flagged
    assert len(dropped.records) == len(kept.records) - kept.report.n_flagged
    assert not any(r.flagged for r in dropped.records)
    assert dropped.top_diseases == kept.top_diseases  # the top-K is counted before excluding


def test_top_k_none_keeps_everything_unmerged(synth_dir: Path) -> None:
    ds = read_skincap(synth_dir, top_k=None)
    assert ds.report.n_outside_top_k == 0 and len(ds.records) == 200
    diseases = {r.disease for r in ds.records}
    assert set(MISSPELLINGS) <= diseases  # no fuzzy merge without a top-K
    assert "eczema" in diseases
    assert all(r.group is None for r in ds.records if r.disease not in DISEASES)


def test_fuzzy_threshold_controls_the_merge(synth_dir: Path) -> None:
    default = read_skincap(synth_dir)
    strict = read_skincap(synth_dir, fuzzy_threshold=100.0)
    n_misspelled = sum(1 for r in default.records if clean_disease(r.raw_disease) in MISSPELLINGS)
    assert n_misspelled >= len(MISSPELLINGS)
    assert strict.report.n_outside_top_k == default.report.n_outside_top_k + n_misspelled


def test_small_handmade_folder(tmp_path: Path) -> None:
    """Quoted newlines keep row numbers right; duplicates and bad ids are skipped; check_images=False."""
    image_dir = tmp_path / IMAGE_DIR
    image_dir.mkdir()
    for name in ("1.png", "2.png", "3.png"):
        Image.new("RGB", (8, 8), (10, 20, 30)).save(image_dir / name)
    (image_dir / "4.png").write_bytes((image_dir / "1.png").read_bytes()[:20])  # truncated
    header = ["id", "skincap_file_path", "disease", "caption_zh_polish_en"]
    rows = [
        ["1", "1.png", "psoriasis", "line one\nline two"],  # spans lines 2-3
        ["2", "1.png", "psoriasis", "duplicate file name"],  # line 4
        ["2", "2.png", "Psoriasis", "ok"],  # line 5
        ["2", "3.png", "psoriasis", "duplicate id"],  # line 6
        ["4", "4.png", "psoriasis", "truncated image"],  # line 7
    ]
    _write_csv(tmp_path / CSV_NAME, header, rows)
    ds = read_skincap(tmp_path)
    assert [r.file_name for r in ds.records] == ["1.png", "2.png"]
    assert ds.records[0].caption == "line one\nline two"
    assert [(i.row, i.column) for i in ds.report.issues] == [
        (4, "skincap_file_path"), (6, "id"), (7, "skincap_file_path")
    ]  # fmt: skip
    assert ds.report.skipped == {"duplicate_file_name": 1, "bad_id": 1, "unreadable_image": 1}
    lenient = read_skincap(tmp_path, check_images=False)  # existence only: the truncated file passes
    assert "4.png" in lenient.by_file_name()
    shutil.rmtree(image_dir)
    assert read_skincap(tmp_path).report.skipped == {"missing_image": 3, "duplicate_file_name": 1, "bad_id": 1}


@pytest.mark.parametrize(
    "name",
    ["../evil.png", "..", "/etc/x.png", "C:\\x.png", "a/b.png", "a\\b.png", "1.jpg", "", "..evil.png", "1\x00.png"],
)
def test_unsafe_file_names_are_refused(name: str) -> None:
    assert unsafe_file_name_reason(name) is not None


@pytest.mark.parametrize("name", ["1.png", "4000.PNG", "img_01.png"])
def test_plain_file_names_are_accepted(name: str) -> None:
    assert unsafe_file_name_reason(name) is None


def test_summary_counts(synth_dir: Path) -> None:
    ds = read_skincap(synth_dir)
    s = ds.summary()
    assert s["n_used"] == len(ds.records) and sum(s["per_disease"].values()) == len(ds.records)
    assert sum(s["per_group"].values()) == len(ds.records)
    assert set(s["per_group"]) == set(DISEASE_TO_GROUP.values())
    assert 40 <= s["caption_words"]["min"] <= s["caption_words"]["median"] <= s["caption_words"]["max"] <= MAX_WORDS


def test_unparseable_metadata_files_raise_format_errors(tmp_path: Path) -> None:
    (tmp_path / XLSX_NAME).write_bytes(b"not a zip")
    with pytest.raises(SkinCapFormatError, match=XLSX_NAME):
        read_skincap(tmp_path, metadata="xlsx")
    (tmp_path / CSV_NAME).write_bytes(b"")
    with pytest.raises(SkinCapFormatError, match="empty"):
        read_skincap(tmp_path)
    (tmp_path / CSV_NAME).write_bytes(b"id,skincap_file_path,disease,caption_zh_polish_en\n1,1.png,acne,\xff\n")
    with pytest.raises(SkinCapFormatError, match="not UTF-8"):
        read_skincap(tmp_path)

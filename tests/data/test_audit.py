"""The leak audit: planted leaks of every kind are found, a clean split is clean, the original HIKARI leak is 46/104."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from hikari.config import DEFAULT_HASH_THRESHOLD
from hikari.data.audit import audit_pair, audit_split
from hikari.data.records import SkinCapRecord
from hikari.data.split import SplitInfo, hash_records, load_split, make_split


def smooth_image(seed: int, size: int = 64) -> Image.Image:
    """A photo-like test image: a random 6×6 colour grid, bicubically upsampled."""
    grid = np.random.default_rng(seed).integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    return Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)


def write_record(root: Path, idx: int, disease: str, img: Image.Image, ori: str = "") -> SkinCapRecord:
    path = root / f"{idx}.png"
    img.save(path)
    return SkinCapRecord(id=str(idx), file_name=path.name, image_path=path, disease=disease, group=None,
                         caption=f"case {idx}", ori_file_path=ori)  # fmt: skip


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> list[SkinCapRecord]:
    """40 distinct rows (ids 0–39) and three planted copies: 100/101 same source, 102/103 identical pixels,
    104/105 re-encoded (2 % brighter, JPEG q=90)."""
    root = tmp_path_factory.mktemp("leaky")
    records = [write_record(root, i, ("psoriasis", "acne vulgaris")[i % 2], smooth_image(i)) for i in range(40)]
    buf = io.BytesIO()
    ImageEnhance.Brightness(smooth_image(104, size=128)).enhance(1.02).save(buf, format="JPEG", quality=90)
    records += [
        write_record(root, 100, "psoriasis", smooth_image(100), ori="fitzpatrick17k/abc.jpg"),
        write_record(root, 101, "psoriasis", smooth_image(101), ori="Fitzpatrick17k\\ABC.jpg "),
        write_record(root, 102, "acne vulgaris", smooth_image(102)),
        write_record(root, 103, "acne vulgaris", smooth_image(102)),
        write_record(root, 104, "psoriasis", smooth_image(104, size=128)),
        write_record(root, 105, "psoriasis", Image.open(io.BytesIO(buf.getvalue())).convert("RGB")),
    ]
    return records


def test_audit_finds_every_planted_leak_with_its_kind(leaky) -> None:
    records = leaky
    distinct = [r.file_name for r in records[:40]]
    info = SplitInfo(
        format="hikari",
        path=None,
        parts={
            "train": distinct[:30] + ["100.png", "102.png", "104.png", distinct[30]],
            "val": distinct[31:] + ["101.png", "103.png", "105.png", distinct[30]],
        },
    )
    report = audit_split(info, records)
    kinds = {(o.file_a, o.file_b): o.kind for o in report.overlaps}
    assert kinds == {
        ("100.png", "101.png"): "source_image",
        ("102.png", "103.png"): "identical_pixels",
        ("104.png", "105.png"): "near_duplicate",
        (distinct[30], distinct[30]): "file_name",
    }
    by_pair = {(o.file_a, o.file_b): o for o in report.overlaps}
    assert by_pair[("100.png", "101.png")].detail == "fitzpatrick17k/abc.jpg"
    assert by_pair[("102.png", "103.png")].distance == 0
    assert 0 < by_pair[("104.png", "105.png")].distance <= DEFAULT_HASH_THRESHOLD
    assert report.counts == {"file_name": 1, "identical_pixels": 1, "source_image": 1, "near_duplicate": 1}
    assert report.n_overlapping_eval_items == 4 and not report.clean and report.notes == []
    assert report.n_eval_items == len(info.parts["val"])

    # Without the data only file names can be compared, and the report says so.
    bare = audit_split(info)
    assert [o.kind for o in bare.overlaps] == ["file_name"]
    assert bare.checked == {"file_name": True, "identical_pixels": False, "source_image": False,
                            "near_duplicate": False}  # fmt: skip
    assert any("--data" in note for note in bare.notes)
    assert json.loads(json.dumps(report.to_dict()))["counts"]["near_duplicate"] == 1


def test_audit_pair_compares_train_of_one_with_eval_of_other() -> None:
    a = SplitInfo(format="hikari", path=None, parts={"train": ["1.png", "2.png"], "val": ["3.png"]})
    b = SplitInfo(format="hikari", path=None, parts={"train": ["3.png", "4.png"], "val": ["2.png"], "test": ["5.png"]})
    report = audit_pair(a, b)
    assert [(o.part_a, o.file_a, o.part_b, o.file_b) for o in report.overlaps] == [("train", "2.png", "val", "2.png")]
    assert report.compared == [("train", "val"), ("train", "test")] and report.n_eval_items == 2
    reverse = audit_pair(b, a)
    assert [(o.file_a, o.file_b) for o in reverse.overlaps] == [("3.png", "3.png")]
    with pytest.raises(ValueError, match="no evaluation part"):
        audit_pair(a, SplitInfo(format="hikari", path=None, parts={"train": ["9.png"]}))


def test_audit_checks_val_against_test_too() -> None:
    info = SplitInfo(format="hikari", path=None, parts={"train": ["1.png"], "val": ["2.png"], "test": ["2.png"]})
    report = audit_split(info)
    assert [(o.part_a, o.part_b) for o in report.overlaps] == [("val", "test")]


def test_reference_split_leak_is_46_of_104(reference_dir: Path) -> None:
    fuzzytopk = load_split(reference_dir / "split_info_fuzzytopk.json")
    three_stage = load_split(reference_dir / "split_info_3stage.json")
    assert {p: len(v) for p, v in fuzzytopk.parts.items()} == {"train": 939, "val": 105}
    assert {p: len(v) for p, v in three_stage.parts.items()} == {"train": 934, "val": 104}
    report = audit_pair(fuzzytopk, three_stage)
    assert report.n_overlapping_eval_items == 46 and report.n_eval_items == 104
    assert report.counts["file_name"] == 46
    assert audit_pair(three_stage, fuzzytopk).n_overlapping_eval_items == 47  # the reverse direction
    assert audit_split(fuzzytopk).clean and audit_split(three_stage).clean  # each is consistent on its own


def test_a_split_made_by_make_split_audits_clean(leaky) -> None:
    hashes = hash_records(leaky)
    for seed in range(5):
        split = make_split(leaky, seed=seed, hashes=hashes)
        report = audit_split(split.info(), leaky, hashes)
        assert report.clean and report.overlaps == [] and report.n_overlapping_eval_items == 0
        assert all(report.checked.values())
        assert report.coverage["near_duplicate"] == (len(leaky), len(leaky))


def test_audit_hashes_the_records_images_when_no_hashes_are_given(leaky) -> None:
    info = SplitInfo(format="hikari", path=None, parts={"train": ["104.png", "1.png"], "val": ["105.png"]})
    report = audit_split(info, leaky)
    assert [o.kind for o in report.overlaps] == ["near_duplicate"]
    assert report.coverage["near_duplicate"] == (3, 3)
    only_some = audit_split(info, [r for r in leaky if r.file_name != "1.png"])
    assert any("covers only 2 of 3" in note for note in only_some.notes)

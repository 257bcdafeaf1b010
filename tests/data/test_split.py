"""Leak-free split: determinism, stratification, grouping of copies, stability; split files; the overlap audit."""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from hikari.config import DEFAULT_HASH_THRESHOLD
from hikari.data.audit import audit_split
from hikari.data.hashing import ImageHashes, hash_image
from hikari.data.records import SkinCapRecord
from hikari.data.split import (
    REASON_IDENTICAL,
    REASON_NEAR,
    REASON_SOURCE,
    dataset_fingerprint,
    hash_records,
    load_split,
    make_split,
    select_part,
    split_dataset,
)


def smooth_image(seed: int, size: int = 64) -> Image.Image:
    """A photo-like test image: a random 6×6 colour grid, bicubically upsampled."""
    grid = np.random.default_rng(seed).integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    return Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)


def reencoded(img: Image.Image) -> Image.Image:
    """A slightly degraded copy: 2 % brighter, then JPEG quality 90."""
    buf = io.BytesIO()
    ImageEnhance.Brightness(img).enhance(1.02).save(buf, format="JPEG", quality=90)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def write_record(root: Path, idx: int, disease: str, img: Image.Image, ori: str = "") -> SkinCapRecord:
    path = root / f"{idx}.png"
    img.save(path)
    return SkinCapRecord(
        id=str(idx), file_name=path.name, image_path=path, disease=disease, group=None, caption=f"case {idx}",
        ori_file_path=ori,
    )  # fmt: skip


def make_records(root: Path, sizes: dict[str, int], start: int = 0) -> list[SkinCapRecord]:
    """Distinct images, `sizes[d]` rows of disease d, ids numbered from `start`."""
    records, idx = [], start
    for disease, n in sizes.items():
        for _ in range(n):
            records.append(write_record(root, idx, disease, smooth_image(idx)))
            idx += 1
    return records


SIZES = {"acne vulgaris": 31, "psoriasis": 30, "lichen planus": 20, "sarcoidosis": 9, "scleroderma": 5}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[SkinCapRecord], dict[str, ImageHashes]]:
    records = make_records(tmp_path_factory.mktemp("imgs"), SIZES)
    return records, hash_records(records)


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[SkinCapRecord], dict[str, tuple[str, ...]]]:
    """Distinct rows plus three planted leak pairs: shared source, identical pixels, re-encoded copy."""
    root = tmp_path_factory.mktemp("leaky")
    records = make_records(root, {"psoriasis": 20, "basal cell carcinoma": 20})
    records += [
        write_record(root, 100, "psoriasis", smooth_image(100), ori="fitzpatrick17k/abc.jpg"),
        write_record(root, 101, "psoriasis", smooth_image(101), ori="Fitzpatrick17k\\ABC.jpg "),
        write_record(root, 102, "basal cell carcinoma", smooth_image(102)),
        write_record(root, 103, "basal cell carcinoma", smooth_image(102)),
        write_record(root, 104, "psoriasis", smooth_image(104, size=128)),
        write_record(root, 105, "psoriasis", reencoded(smooth_image(104, size=128))),
    ]
    planted = {REASON_SOURCE: ("100.png", "101.png"), REASON_IDENTICAL: ("102.png", "103.png"),
               REASON_NEAR: ("104.png", "105.png")}  # fmt: skip
    return records, planted


def part_of(split_parts: dict[str, list[SkinCapRecord]]) -> dict[str, str]:
    return {r.file_name: part for part, recs in split_parts.items() for r in recs}


def test_same_seed_gives_byte_identical_file_and_other_seed_differs(base, tmp_path: Path) -> None:
    records, hashes = base
    make_split(records, seed=42, hashes=hashes).save(tmp_path / "a.json")
    make_split(list(reversed(records)), seed=42, hashes=hashes).save(tmp_path / "b.json")
    make_split(records, seed=43, hashes=hashes).save(tmp_path / "c.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    a, c = load_split(tmp_path / "a.json"), load_split(tmp_path / "c.json")
    assert a.parts["val"] != c.parts["val"]
    assert len(a.parts["val"]) == len(c.parts["val"])


def test_hashes_none_hashes_the_images(base) -> None:
    records, hashes = base
    assert make_split(records[:20], hashes=None).to_dict() == make_split(records[:20], hashes=hashes).to_dict()


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_stratified_counts_hit_the_rounded_target(base, seed: int) -> None:
    records, hashes = base
    split = make_split(records, val_frac=0.1, test_frac=0.2, seed=seed, hashes=hashes)
    counts = split.counts()
    for disease, n in SIZES.items():
        assert counts["test"].get(disease, 0) == int(0.2 * n + 0.5), disease
        assert counts["val"].get(disease, 0) == int(0.1 * n + 0.5), disease
        assert sum(counts[p].get(disease, 0) for p in counts) == n
    assert sum(len(v) for v in split.parts.values()) == len(records)


def test_halves_round_up(base) -> None:
    records, hashes = base
    five = [r for r in records if r.disease == "scleroderma"]  # 5 rows × 0.1 = 0.5 → 1
    assert len(make_split(five, hashes=hashes).parts["val"]) == 1


def test_planted_leaks_stay_together(leaky) -> None:
    records, planted = leaky
    hashes = hash_records(records)
    for seed in range(12):
        split = make_split(records, seed=seed, hashes=hashes)
        where = part_of(split.parts)
        for a, b in planted.values():
            assert where[a] == where[b], (seed, a, b)
        assert audit_split(split.info(), records, hashes).clean
    groups = {g.file_names: g.reasons for g in split.groups}
    assert groups == {files: (reason,) for reason, files in planted.items()}


def test_threshold_zero_still_groups_identical_but_not_reencoded(leaky) -> None:
    records, planted = leaky
    split = make_split(records, hashes=hash_records(records), hash_threshold=0)
    grouped = {g.file_names for g in split.groups}
    assert planted[REASON_IDENTICAL] in grouped and planted[REASON_NEAR] not in grouped


def test_group_counts_for_its_majority_disease(tmp_path: Path) -> None:
    records = make_records(tmp_path, {"psoriasis": 10})
    records += [write_record(tmp_path, 50 + i, d, smooth_image(50 + i), ori="same/source.jpg")
                for i, d in enumerate(["acne vulgaris", "acne vulgaris", "psoriasis"])]  # fmt: skip
    split = make_split(records, val_frac=0.25, hashes=hash_records(records))
    where = part_of(split.parts)
    assert len({where[f"{50 + i}.png"] for i in range(3)}) == 1
    # psoriasis: 10 singletons → round(2.5) = 3 val rows; acne's only group (3 rows, target 1) cannot fit.
    assert split.counts()["val"] == {"psoriasis": 3}


def test_removing_an_unrelated_record_moves_no_other_record(base) -> None:
    records, hashes = base
    full = part_of(make_split(records, hashes=hashes, seed=7).parts)
    # psoriasis has 30 rows → 3 val; after removing one train row, 29 → round(2.9) = 3: same target.
    victim = next(r for r in records if r.disease == "psoriasis" and full[r.file_name] == "train")
    fewer = part_of(make_split([r for r in records if r is not victim], hashes=hashes, seed=7).parts)
    assert fewer == {k: v for k, v in full.items() if k != victim.file_name}
    # Removing a row of another disease (even one whose target changes) leaves psoriasis untouched.
    other = [r for r in records if r.disease == "sarcoidosis"][:4]
    rest = part_of(make_split([r for r in records if r not in other], hashes=hashes, seed=7).parts)
    psoriasis = [r.file_name for r in records if r.disease == "psoriasis"]
    assert [rest[name] for name in psoriasis] == [full[name] for name in psoriasis]


def test_invalid_arguments_raise(base) -> None:
    records, hashes = base
    for kwargs in ({"val_frac": 0.0}, {"val_frac": 0.6, "test_frac": 0.4}, {"test_frac": -0.1}):
        with pytest.raises(ValueError, match="val_frac"):
            make_split(records, hashes=hashes, **kwargs)
    with pytest.raises(ValueError, match="hash_threshold"):
        make_split(records, hashes=hashes, hash_threshold=-1)
    with pytest.raises(ValueError, match="unique"):
        make_split([*records, records[0]], hashes=hashes)
    with pytest.raises(ValueError, match="no image hash"):
        make_split(records, hashes={k: v for k, v in list(hashes.items())[1:]})


def test_saved_file_round_trips_through_load_split(base, tmp_path: Path) -> None:
    records, hashes = base
    split = make_split(records, test_frac=0.1, hashes=hashes, root="/data/skincap", metadata="m.csv",
                       options={"top_k": 10})  # fmt: skip
    split.save(tmp_path / "s.json")
    raw = json.loads((tmp_path / "s.json").read_text())
    assert raw["format"] == "hikari-split" and raw["version"] == 1
    assert raw["config"]["top_k"] == 10 and raw["config"]["seed"] == 42
    fingerprint = dataset_fingerprint(records, hashes)
    assert raw["dataset"] == {"root": "/data/skincap", "metadata": "m.csv", "fingerprint": fingerprint,
                              "n_records": len(records)}  # fmt: skip
    info = load_split(tmp_path / "s.json")
    assert info.format == "hikari" and info.fingerprint == raw["dataset"]["fingerprint"]
    assert info.eval_parts() == ["val", "test"]
    for part, recs in split.parts.items():
        assert info.file_names(part) == {r.file_name for r in recs}
        assert sorted(info.ids(part)) == sorted(r.id for r in recs)
    assert info.labels == {r.file_name: r.disease for r in records}
    assert info.parts == split.info().parts
    assert raw["counts"]["val"] == dict(sorted(Counter(r.disease for r in split.parts["val"]).items()))
    with pytest.raises(KeyError, match="no part 'dev'"):
        info.ids("dev")


def test_dataset_fingerprint_tracks_rows_labels_and_pixels(base) -> None:
    records, hashes = base
    fp = dataset_fingerprint(records, hashes)
    assert dataset_fingerprint(list(reversed(records)), hashes) == fp
    assert dataset_fingerprint(records[1:], hashes) != fp
    assert dataset_fingerprint([replace(records[0], disease="psoriasis"), *records[1:]], hashes) != fp
    changed = dict(hashes)
    changed[records[0].file_name] = hash_image(smooth_image(999))
    assert dataset_fingerprint(records, changed) != fp


def test_select_part_checks_the_data_still_matches(base) -> None:
    records, hashes = base
    info = make_split(records, hashes=hashes).info()
    val = select_part(records, info, "val")
    assert [r.file_name for r in val] == info.parts["val"]
    with pytest.raises(ValueError, match="not in the data"):
        select_part([r for r in records if r.file_name != val[0].file_name], info, "val")
    relabelled = [replace(r, disease="melanocytic nevi") if r.file_name == val[0].file_name else r for r in records]
    with pytest.raises(ValueError, match="disease of 1 file"):
        select_part(relabelled, info, "val")


def test_load_split_rejects_other_json(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"predictions": []}')
    with pytest.raises(ValueError, match="not a split file.*predictions"):
        load_split(tmp_path / "x.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_split(tmp_path / "bad.json")
    (tmp_path / "dup.json").write_text(json.dumps({"train_image_paths": ["a\\1.png", "b\\1.png"]}))
    with pytest.raises(ValueError, match="more than once"):
        load_split(tmp_path / "dup.json")


def test_load_split_reads_windows_and_posix_paths_of_the_original_format(tmp_path: Path) -> None:
    obj = {"train_image_paths": ["SkinCAP\\skincap\\292.png", "SkinCAP/skincap/7.png"],
           "val_image_paths": ["SkinCAP\\skincap\\10.png"], "seed": 42}  # fmt: skip
    (tmp_path / "split_info.json").write_text(json.dumps(obj))
    info = load_split(tmp_path / "split_info.json")
    assert info.format == "hikari-original"
    assert info.parts == {"train": ["292.png", "7.png"], "val": ["10.png"]}
    assert info.ids("train") == ["292", "7"] and info.config == {"seed": 42} and info.labels == {}


def test_split_dataset_on_synthetic_skincap(synth_dir: Path, synth_summary) -> None:
    split, dataset = split_dataset(synth_dir, seed=42, progress=False)
    assert split.dataset["n_records"] == len(dataset.records) and split.dataset["metadata"] == "skincap_v240623.csv"
    assert split.config["top_k"] == 10 and split.config["hash_threshold"] == DEFAULT_HASH_THRESHOLD
    group_of = {name: g for g in split.groups for name in g.file_names}
    present = {r.id for r in dataset.records}
    planted = [(a, b, REASON_SOURCE) for a, b in synth_summary.same_source_pairs]
    planted += [(a, b, REASON_IDENTICAL) for a, b in synth_summary.identical_pairs]
    planted += [(a, b, REASON_NEAR) for a, b, _ in synth_summary.reencoded_pairs]
    checked = 0
    for a, b, reason in planted:
        if a in present and b in present:  # top-10 diseases only
            group = group_of[f"{a}.png"]
            assert f"{b}.png" in group.file_names and reason in group.reasons, (a, b, reason)
            checked += 1
    assert checked >= 5
    # No group without a cause: near-duplicate groups are exactly the planted re-encoded copies.
    copies = {frozenset((f"{a}.png", f"{b}.png")) for a, b, _ in synth_summary.reencoded_pairs}
    assert {frozenset(g.file_names) for g in split.groups if REASON_NEAR in g.reasons} <= copies
    where = part_of(split.parts)
    for g in split.groups:
        assert len({where[name] for name in g.file_names}) == 1
    val = split.counts()["val"]
    assert 0.07 * len(dataset.records) <= sum(val.values()) <= 0.13 * len(dataset.records)
    assert audit_split(split.info(), dataset.records, split.hashes).clean

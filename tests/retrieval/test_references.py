"""Indexing a split's train part and retrieving references for records, leak-free, with an on-disk cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hikari.data.hashing import hamming, image_hash
from hikari.data.split import load_split, normalise_source, read_split_records
from hikari.retrieval.index import HybridIndex
from hikari.retrieval.references import (
    cached_references,
    check_index_matches_split,
    controlled_references,
    encoders_for,
    reference_triples,
    retrieve_references,
)


def test_index_holds_the_train_part_only_with_metadata(rag_index_dir: Path, synth_split: Path) -> None:
    index = HybridIndex.load(rag_index_dir)
    split = load_split(synth_split)
    assert [r.file_name for r in index.references] == split.parts["train"]
    assert index.info.split_fingerprint == split.fingerprint and index.info.alpha == 0.9
    assert index.info.encoder["name"] == "tiny-clip" and index.info.text_dim > 0
    assert all(r.phash is not None and r.caption for r in index.references)
    check_index_matches_split(index, synth_split)


def test_index_from_another_split_is_refused(rag_index_dir: Path, synth_split: Path, tmp_path: Path) -> None:
    obj = json.loads(synth_split.read_text())
    obj["parts"]["train"], obj["parts"]["val"] = obj["parts"]["val"], obj["parts"]["train"]
    other = tmp_path / "swapped.json"
    other.write_text(json.dumps(obj))
    with pytest.raises(ValueError, match="outside the train part"):
        check_index_matches_split(HybridIndex.load(rag_index_dir), other)


def test_training_references_never_include_self_source_or_near_duplicates(
    rag_index_dir: Path, synth_dir: Path, synth_split: Path, synth_summary
) -> None:
    index = HybridIndex.load(rag_index_dir)
    enc = encoders_for(index)
    train = read_split_records(synth_dir, synth_split, ["train"]).parts["train"]
    refs = retrieve_references(index, enc, train, k=3, query_texts={r.file_name: r.caption for r in train})
    by_name = {r.file_name: r for r in train}
    threshold = index.info.hash_threshold
    hashes = {r.file_name: image_hash(r.image_path) for r in train}
    planted = {(a, b) for a, b in synth_summary.same_source_pairs} | {(a, b) for a, b in synth_summary.identical_pairs}
    planted |= {(a, b) for a, b, _ in synth_summary.reencoded_pairs}
    assert any(f"{a}.png" in by_name and f"{b}.png" in by_name for a, b in planted)  # the test has teeth
    for name, hits in refs.items():
        assert len(hits) == 3
        q = by_name[name]
        for h in hits:
            assert h.reference.id != q.id
            if q.ori_file_path:
                assert h.reference.source != normalise_source(q.ori_file_path)
            assert hamming(h.reference.phash, hashes[name]) > threshold
            assert (q.id, h.reference.id) not in planted and (h.reference.id, q.id) not in planted
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_reference_triples_follow_the_text_mode(rag_index_dir: Path, synth_dir: Path, synth_split: Path) -> None:
    index = HybridIndex.load(rag_index_dir)
    val = read_split_records(synth_dir, synth_split, ["val"]).parts["val"][:2]
    hits = retrieve_references(index, encoders_for(index), val, k=3)
    triples = reference_triples(hits[val[0].file_name], "label")
    assert len(triples) == 3 and all(caption is None for _, _, caption in triples)
    assert all(Path(path).is_file() for path, _, _ in triples)
    full = reference_triples(hits[val[0].file_name], "label_description", k=2)
    assert len(full) == 2 and all(caption for _, _, caption in full)
    with pytest.raises(ValueError, match="label, label_description"):
        reference_triples(hits[val[0].file_name], "caption")


def test_reference_cache_is_reused_and_invalidated(rag_index_dir: Path, synth_dir: Path, synth_split: Path,
                                                   tmp_path: Path) -> None:
    val = read_split_records(synth_dir, synth_split, ["val"]).parts["val"][:4]
    cache = tmp_path / "refs.json"
    first = cached_references(cache, rag_index_dir, val, k=2, query_texts=None, query_kind="none")
    assert set(first) == {r.file_name for r in val} and all(len(v) == 2 for v in first.values())
    stamp = cache.stat().st_mtime_ns
    assert cached_references(cache, rag_index_dir, val, k=2, query_texts=None, query_kind="none") == first
    assert cache.stat().st_mtime_ns == stamp  # read, not recomputed
    third = cached_references(cache, rag_index_dir, val, k=3, query_texts=None, query_kind="none")
    assert all(len(v) == 3 for v in third.values())
    assert json.loads(cache.read_text())["key"]["k"] == 3


@pytest.mark.parametrize("kind", ["oracle", "noise"])
def test_controlled_references_have_the_promised_labels_and_never_leak(
    kind: str, rag_index_dir: Path, synth_dir: Path, synth_split: Path, synth_summary
) -> None:
    index = HybridIndex.load(rag_index_dir)
    train = read_split_records(synth_dir, synth_split, ["train"]).parts["train"]
    refs = controlled_references(index, train, k=3, kind=kind, seed=1)
    threshold = index.info.hash_threshold
    hashes = {r.file_name: image_hash(r.image_path) for r in train}
    by_name = {r.file_name: r for r in train}
    by_source: dict[str, set[str]] = {}
    for r in train:
        if r.ori_file_path:
            by_source.setdefault(normalise_source(r.ori_file_path), set()).add(r.file_name)
    # The planted same-source pairs inside the train part: the test would pass vacuously without them.
    assert any(len(names) > 1 for names in by_source.values())
    for name, found in refs.items():
        q = by_name[name]
        labels = {ref["label"] for ref in found}
        assert found and (labels == {q.disease} if kind == "oracle" else len(labels) == 1 and q.disease not in labels)
        for ref in found:
            assert ref["file_name"] != name
            assert not ref["source"] or ref["source"] != normalise_source(q.ori_file_path)
            assert hamming(hashes[name], hashes[ref["file_name"]]) > threshold
    # Deterministic per (seed, record), whatever else is asked for.
    again = controlled_references(index, train[:5], k=3, kind=kind, seed=1)
    assert all(again[n] == refs[n] for n in again)
    assert controlled_references(index, train[:5], k=3, kind=kind, seed=2) != again


def test_controlled_references_reject_unknown_kinds(rag_index_dir: Path, train_records) -> None:
    with pytest.raises(ValueError, match="unknown reference kind 'random'"):
        controlled_references(HybridIndex.load(rag_index_dir), train_records[:2], k=1, kind="random")  # type: ignore[arg-type]

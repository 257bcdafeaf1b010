"""HybridIndex against brute force: the hybrid score, top-k, exclusions, strategies, round trip, approximate;
the approximate index's build-time tuning (target recall, exact fallback, persistence, determinism)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from hikari.retrieval.index import Exclusion, HybridIndex, Reference

D_IMG, D_TXT = 12, 20


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _refs(n: int, *, phashes: list[int | None] | None = None, sources: list[str] | None = None) -> list[Reference]:
    return [
        Reference(id=str(i), file_name=f"{i}.png", label=f"d{i % 3}", caption=f"caption {i}", image_path=f"/x/{i}.png",
                  source=(sources[i] if sources else ""), phash=(phashes[i] if phashes else None))
        for i in range(n)
    ]  # fmt: skip


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return _unit(rng.normal(size=(n, D_IMG))), _unit(rng.normal(size=(n, D_TXT)))


def _brute(img: np.ndarray, txt: np.ndarray | None, qi: np.ndarray, qt: np.ndarray | None, alpha: float):
    """Naive hybrid scores, one query at a time, written from the definition."""
    out = np.zeros((qi.shape[0], img.shape[0]))
    for a in range(qi.shape[0]):
        for b in range(img.shape[0]):
            cos_i = float(np.dot(qi[a], img[b]) / (np.linalg.norm(qi[a]) * np.linalg.norm(img[b])))
            if qt is None:
                out[a, b] = cos_i
            else:
                cos_t = float(np.dot(qt[a], txt[b]) / (np.linalg.norm(qt[a]) * np.linalg.norm(txt[b])))
                out[a, b] = alpha * cos_i + (1 - alpha) * cos_t
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.9, 1.0])
def test_hybrid_scores_and_topk_match_brute_force(alpha: float) -> None:
    img, txt = _data(60)
    qi, qt = _data(7, seed=1)
    index = HybridIndex.from_embeddings(img, txt, _refs(60), alpha=alpha)
    hits = index.search(qi, qt, k=5)
    brute = _brute(img, txt, qi, qt, alpha)
    for a, found in enumerate(hits):
        want = np.argsort(-brute[a], kind="stable")[:5]
        assert [h.row for h in found] == want.tolist()
        for h in found:
            assert h.score == pytest.approx(brute[a, h.row], abs=1e-5)
            assert h.cos_image == pytest.approx(float(qi[a] @ img[h.row]), abs=1e-5)
            assert h.cos_text == pytest.approx(float(qt[a] @ txt[h.row]), abs=1e-5)
            assert h.reference.id == str(h.row)


def test_image_strategy_ranks_by_image_cosine_and_alpha_override_changes_ranking() -> None:
    img, txt = _data(50)
    qi, qt = _data(4, seed=2)
    index = HybridIndex.from_embeddings(img, txt, _refs(50), alpha=0.5)
    only_image = index.search(qi, None, k=4)
    brute = _brute(img, None, qi, None, 1.0)
    assert [[h.row for h in f] for f in only_image] == np.argsort(-brute, axis=1)[:, :4].tolist()
    assert all(h.cos_text is None and h.score == pytest.approx(h.cos_image, abs=1e-6) for f in only_image for h in f)
    # per-query alpha: alpha=1 with text equals the image ranking; alpha=0 is the text ranking
    assert [[h.row for h in f] for f in index.search(qi, qt, k=4, alpha=1.0)] == [
        [h.row for h in f] for f in only_image
    ]
    text_rank = np.argsort(-(qt @ txt.T), axis=1)[:, :4].tolist()
    assert [[h.row for h in f] for f in index.search(qi, qt, k=4, alpha=0.0)] == text_rank


def test_strategy_a_needs_an_aligned_encoder_pair() -> None:
    rng = np.random.default_rng(3)
    img, txt = _unit(rng.normal(size=(30, 8))), _unit(rng.normal(size=(30, 8)))
    q = _unit(rng.normal(size=(2, 8)))
    plain = HybridIndex.from_embeddings(img, txt, _refs(30), alpha=0.7, encoder={"name": "X", "aligned": False})
    with pytest.raises(ValueError, match="aligned"):
        plain.search(q, None, k=3, strategy="image_text")
    aligned = HybridIndex.from_embeddings(img, txt, _refs(30), alpha=0.7, encoder={"name": "Y", "aligned": True})
    hits = aligned.search(q, None, k=3, strategy="image_text")
    want = np.argsort(-(0.7 * q @ img.T + 0.3 * q @ txt.T), axis=1)[:, :3].tolist()
    assert [[h.row for h in f] for f in hits] == want


def test_image_only_index_rejects_text_queries() -> None:
    img, _ = _data(20)
    index = HybridIndex.from_embeddings(img, None, _refs(20), alpha=1.0)
    assert index.info.text_dim == 0
    assert len(index.search(img[:2], None, k=3)[0]) == 3
    with pytest.raises(ValueError, match="no text embeddings"):
        index.search(img[:2], img[:2], k=3, strategy="text")


def test_non_unit_embeddings_and_bad_shapes_are_rejected() -> None:
    img, txt = _data(10)
    with pytest.raises(ValueError, match="norm"):
        HybridIndex.from_embeddings(img * 2, txt, _refs(10), alpha=0.5)
    with pytest.raises(ValueError, match="references"):
        HybridIndex.from_embeddings(img, txt, _refs(9), alpha=0.5)
    index = HybridIndex.from_embeddings(img, txt, _refs(10), alpha=0.5)
    with pytest.raises(ValueError, match="dim"):
        index.search(txt[:1], None, k=1)
    with pytest.raises(ValueError, match="k must be"):
        index.search(img[:1], None, k=0)


def test_self_source_and_near_duplicates_are_never_returned() -> None:
    """Planted copies of the query sit at the very top; exclusion removes them and still returns k results."""
    rng = np.random.default_rng(4)
    n = 80
    img, txt = _data(n, seed=5)
    query_img, query_txt = img[0:1].copy(), txt[0:1].copy()
    # rows 1..24: near-identical embeddings of row 0 (a plain top-k would return only these)
    img[1:25] = _unit(img[0] + 1e-3 * rng.normal(size=(24, D_IMG)))
    txt[1:25] = _unit(txt[0] + 1e-3 * rng.normal(size=(24, D_TXT)))
    base_hash = int(rng.integers(0, 2**63)) << 100 | int(rng.integers(0, 2**63))
    far_hash = ~base_hash & ((1 << 256) - 1)
    phashes: list[int | None] = [far_hash] * n
    sources = [""] * n
    phashes[0] = base_hash  # the query itself (same id)
    for r in range(1, 9):  # near-duplicate pictures: pHash differs in 2·r bits (≤ 48)
        phashes[r] = base_hash ^ ((1 << (2 * r)) - 1)
    for r in range(9, 17):  # other crops of the query's source image
        sources[r] = "fitz/abc.jpg"
    for r in range(17, 25):  # the same embedding neighbourhood but a different picture: allowed
        phashes[r] = base_hash ^ ((1 << 120) - 1)
    index = HybridIndex.from_embeddings(img, txt, _refs(n, phashes=phashes, sources=sources), alpha=0.9)

    plain = index.search(query_img, query_txt, k=5)[0]
    assert {h.row for h in plain} <= set(range(25))

    ex = Exclusion(id="0", source="fitz/abc.jpg", phash=base_hash)
    found = index.search(query_img, query_txt, k=5, exclude=[ex])[0]
    rows = [h.row for h in found]
    assert len(rows) == 5 and set(rows) <= set(range(17, 25)), rows
    # ...and when every close row is excluded, the search keeps fetching until k allowed rows are found
    strict = Exclusion(id="0", source="fitz/abc.jpg", phash=base_hash)
    phash_far = HybridIndex.from_embeddings(img, txt, _refs(n, phashes=[base_hash] * 25 + [far_hash] * 55,
                                                            sources=sources), alpha=0.9)  # fmt: skip
    rows = [h.row for h in phash_far.search(query_img, query_txt, k=5, exclude=[strict])[0]]
    brute = _brute(img, txt, query_img, query_txt, 0.9)[0]
    allowed = [r for r in np.argsort(-brute) if r >= 25]
    assert rows == allowed[:5]


def test_exclusion_can_leave_fewer_than_k() -> None:
    img, txt = _data(6)
    index = HybridIndex.from_embeddings(img, txt, _refs(6, sources=["s"] * 5 + [""]), alpha=0.5)
    found = index.search(img[:1], txt[:1], k=3, exclude=[Exclusion(source="s")])[0]
    assert [h.row for h in found] == [5]


def test_round_trip_keeps_results_and_metadata(tmp_path: Path) -> None:
    img, txt = _data(40)
    refs = _refs(40, phashes=[i * 7919 for i in range(40)], sources=[f"s{i % 5}" for i in range(40)])
    index = HybridIndex.from_embeddings(img, txt, refs, alpha=0.8, split="/s.json", split_fingerprint="abc",
                                        encoder={"name": "tiny", "ref": "/enc"})  # fmt: skip
    out = index.save(tmp_path / "idx")
    again = HybridIndex.load(out)
    assert again.references == refs
    assert again.info == index.info and again.info.split_fingerprint == "abc"
    ex = [Exclusion(id="3", source="s1", phash=3 * 7919)] * 3
    assert index.search(img[:3], txt[:3], k=4, exclude=ex) == again.search(img[:3], txt[:3], k=4, exclude=ex)
    # saving again replaces the directory atomically (no temporary folders left behind)
    HybridIndex.from_embeddings(img[:5], txt[:5], refs[:5], alpha=0.5).save(out)
    assert len(HybridIndex.load(out).references) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    meta = json.loads((out / "index.json").read_text())
    assert meta["format"] == "hikari-rag-index" and meta["alpha"] == 0.5


def test_load_errors_name_the_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no index.json"):
        HybridIndex.load(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(ValueError, match="index.json"):
        HybridIndex.load(tmp_path)


def test_approximate_index_recall_on_clustered_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    n, clusters = 4000, 40
    centres_i, centres_t = rng.normal(size=(clusters, D_IMG)), rng.normal(size=(clusters, D_TXT))
    label = rng.integers(0, clusters, size=n)
    img = _unit(centres_i[label] + 0.3 * rng.normal(size=(n, D_IMG)))
    txt = _unit(centres_t[label] + 0.3 * rng.normal(size=(n, D_TXT)))
    index = HybridIndex.from_embeddings(img, txt, _refs(n), alpha=0.9, approximate=True, nlist=40, nprobe=8)
    ql = rng.integers(0, clusters, size=50)
    qi = _unit(centres_i[ql] + 0.3 * rng.normal(size=(50, D_IMG)))
    qt = _unit(centres_t[ql] + 0.3 * rng.normal(size=(50, D_TXT)))
    exact = index.search(qi, qt, k=10)
    approx = index.search(qi, qt, k=10, approximate=True)
    recall = np.mean([len({h.row for h in a} & {h.row for h in e}) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.9
    # refined scores are exact hybrid scores
    brute = _brute(img, txt, qi[:1], qt[:1], 0.9)[0]
    assert all(h.score == pytest.approx(brute[h.row], abs=1e-5) for h in approx[0])
    again = HybridIndex.load(index.save(tmp_path / "ivf"))
    assert again.search(qi, qt, k=10, approximate=True) == approx
    with pytest.raises(ValueError, match="without an approximate"):
        HybridIndex.from_embeddings(img[:50], txt[:50], _refs(50), alpha=0.9).search(qi, qt, k=3, approximate=True)


# -- build-time tuning of the approximate index -----------------------------------------------------------------


def _clustered(n: int, clusters: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, text, cluster label) rows: unit cluster centres plus Gaussian noise, renormalised."""
    rng = np.random.default_rng(seed)
    centres_i, centres_t = rng.normal(size=(clusters, D_IMG)), rng.normal(size=(clusters, D_TXT))
    label = rng.integers(0, clusters, size=n)
    img = _unit(centres_i[label] + noise * rng.normal(size=(n, D_IMG)))
    return img, _unit(centres_t[label] + noise * rng.normal(size=(n, D_TXT))), label


def _fresh_queries(seed: int, n_queries: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Unseen queries from the clusters of `_clustered(4000, 40, 1.0, 6)` (same centres: same generator state)."""
    rng = np.random.default_rng(6)
    centres_i, centres_t = rng.normal(size=(40, D_IMG)), rng.normal(size=(40, D_TXT))
    q = np.random.default_rng(seed)
    label = q.integers(0, 40, size=n_queries)
    return (_unit(centres_i[label] + q.normal(size=(n_queries, D_IMG))),
            _unit(centres_t[label] + q.normal(size=(n_queries, D_TXT))))  # fmt: skip


def _search_recall(index: HybridIndex, qi: np.ndarray, qt: np.ndarray) -> float:
    exact = index.search(qi, qt, k=10)
    approx = index.search(qi, qt, k=10, approximate=True)
    return float(np.mean([len({h.row for h in a} & {h.row for h in e}) / 10 for a, e in zip(approx, exact)]))


def _deterministic(tuning) -> dict:
    """The tuning record without its timings (which depend on the machine)."""
    out = {k: v for k, v in asdict(tuning).items() if "ms" not in k and k != "reason"}
    out["curve"] = [{k: v for k, v in c.items() if "ms" not in k} for c in tuning.curve]
    return out


def test_tuner_reaches_the_target_where_a_fixed_nprobe_does_not() -> None:
    """Clusters wider than the lists: nprobe=2 misses most neighbours; the tuner climbs faiss's nprobe ladder until
    recall@10 on held-out stored rows reaches the target, and unseen queries get that recall too."""
    img, txt, _ = _clustered(4000, 40, 1.0, 6)
    fixed = HybridIndex.from_embeddings(img, txt, _refs(4000), alpha=0.9, approximate=True, nprobe=2)
    tuned = HybridIndex.from_embeddings(img, txt, _refs(4000), alpha=0.9, approximate=True, max_cost_vs_exact=None)
    assert fixed.info.tuning.chosen_by == "caller" and fixed.info.tuning.nprobe == 2
    assert fixed.info.tuning.recall < 0.8  # measured and recorded, although the caller's nprobe is kept
    t = tuned.info.tuning
    assert t.search == "approximate" and t.chosen_by == "tuner" and t.target_recall == 0.95
    assert t.recall >= 0.95 and t.nprobe > 2 and tuned.info.approximate["nprobe"] == t.nprobe
    # phase 1: nprobe climbs faiss's ladder at the widest refinement and stops at the target ...
    phase1 = [c for c in t.curve if c["k_factor"] == 64]
    assert [c["nprobe"] for c in phase1] == [1, 2, 4, 8, 16, 32][: len(phase1)] and phase1[-1]["nprobe"] == t.nprobe
    assert all(c["recall"] < 0.95 for c in phase1[:-1]) and phase1[-1]["recall"] >= 0.95
    # ... phase 2: the smallest refine factor from 8 at that nprobe still reaching it
    phase2 = t.curve[len(phase1):]
    assert [c["k_factor"] for c in phase2] == [8, 16, 32][: len(phase2)] and {c["nprobe"] for c in phase2} <= {t.nprobe}
    chosen = phase2[-1] if phase2 and phase2[-1]["recall"] >= 0.95 else phase1[-1]
    assert (t.k_factor, t.recall) == (chosen["k_factor"], chosen["recall"]) == (tuned.info.approximate["k_factor"],
                                                                                t.recall)  # fmt: skip
    assert t.curve[1]["recall"] == fixed.info.tuning.recall  # the same measurement at nprobe=2
    assert set(t.curve[0]) >= {"recall_text", "recall_image", "scanned", "ms_per_query"}
    assert t.queries == 2 * min(256, 4000 // 10) and t.k == 10
    qi, qt = _fresh_queries(seed=7)
    assert _search_recall(tuned, qi, qt) >= 0.9 > _search_recall(fixed, qi, qt)


def test_tuner_is_deterministic_under_a_seed() -> None:
    img, txt, _ = _clustered(4000, 40, 1.0, 6)
    builds = [HybridIndex.from_embeddings(img, txt, _refs(4000), alpha=0.9, approximate=True, max_cost_vs_exact=None,
                                          seed=seed) for seed in (3, 3, 4)]  # fmt: skip
    a, b, c = (_deterministic(x.info.tuning) for x in builds)
    assert a == b and a["seed"] == 3 and c["seed"] == 4
    qi, qt = _fresh_queries(seed=8, n_queries=20)
    assert builds[0].search(qi, qt, k=10, approximate=True) == builds[1].search(qi, qt, k=10, approximate=True)


def test_unreachable_target_falls_back_to_exact_search(tmp_path: Path) -> None:
    """Uniform random vectors, no refinement slack (k_factor 1): even all lists miss the target; the index says so,
    keeps no IVF, and approximate searches are answered exactly — also after a round trip."""
    img, txt = _data(3000, seed=9)
    index = HybridIndex.from_embeddings(img, txt, _refs(3000), alpha=0.9, approximate=True, k_factor=1,
                                        target_recall=0.99, max_cost_vs_exact=None)  # fmt: skip
    t = index.info.tuning
    assert t.search == "exact" and t.nprobe is None and t.recall == 1.0 and index.approx is None
    assert "not reached" in t.reason and t.curve[-1]["nprobe"] == index.info.approximate["nlist"]
    assert max(c["recall"] for c in t.curve) < 0.99
    qi, qt = _data(5, seed=10)
    ex = [Exclusion(id="1")] * 5
    assert index.search(qi, qt, k=10, approximate=True, exclude=ex) == index.search(qi, qt, k=10, exclude=ex)
    again = HybridIndex.load(index.save(tmp_path / "exact"))
    assert not (tmp_path / "exact" / "approx.faiss").exists() and again.info == index.info
    assert again.search(qi, qt, k=10, approximate=True) == index.search(qi, qt, k=10)


def test_target_reached_but_slower_than_exact_falls_back_to_exact_search() -> None:
    img, txt, _ = _clustered(2000, 50, 0.02, 11)  # tight clusters of 40: nprobe 1 reaches the target
    index = HybridIndex.from_embeddings(img, txt, _refs(2000), alpha=0.9, approximate=True,
                                        max_cost_vs_exact=1e-9)  # any approximate search is "slower"  # fmt: skip
    t = index.info.tuning
    assert t.search == "exact" and index.approx is None and "slower than exact" in t.reason
    assert t.curve[0]["recall"] >= 0.95 and t.approx_ms_per_query is not None


def test_tuned_settings_round_trip_and_old_indexes_still_load(tmp_path: Path) -> None:
    img, txt, _ = _clustered(4000, 40, 1.0, 6)
    index = HybridIndex.from_embeddings(img, txt, _refs(4000), alpha=0.9, approximate=True, max_cost_vs_exact=None)
    out = index.save(tmp_path / "tuned")
    again = HybridIndex.load(out)
    assert again.info == index.info and again.info.tuning == index.info.tuning
    assert again.approx.nprobe == index.info.tuning.nprobe
    qi, qt = _fresh_queries(seed=12, n_queries=20)
    assert again.search(qi, qt, k=10, approximate=True) == index.search(qi, qt, k=10, approximate=True)
    meta = json.loads((out / "index.json").read_text())
    assert meta["version"] == 2 and meta["tuning"]["nprobe"] == index.info.tuning.nprobe
    # an index written before tuning existed (version 1: no "tuning"): loads, searches at its recorded nprobe
    meta.pop("tuning")
    meta["version"] = 1
    meta["approximate"]["nprobe"] = 2
    (out / "index.json").write_text(json.dumps(meta))
    old = HybridIndex.load(out)
    assert old.info.tuning is None and old.info.version == 1
    old.search(qi, qt, k=10, approximate=True)
    assert old.approx.nprobe == 2


def test_tuning_arguments_are_checked() -> None:
    img, txt = _data(500)
    with pytest.raises(ValueError, match="target_recall"):
        HybridIndex.from_embeddings(img, txt, _refs(500), alpha=0.9, approximate=True, target_recall=1.5)
    with pytest.raises(ValueError, match="max_cost_vs_exact"):
        HybridIndex.from_embeddings(img, txt, _refs(500), alpha=0.9, approximate=True, max_cost_vs_exact=0)
    with pytest.raises(ValueError, match="nprobe"):
        HybridIndex.from_embeddings(img, txt, _refs(500), alpha=0.9, approximate=True, nprobe=0)


def test_caller_supplied_queries_tune_for_the_queries_the_index_will_answer() -> None:
    """Indexed data with near-copies of every row (each base row 15 times, lightly jittered) and queries with none:
    held-out stored rows find their own copies and overstate recall, so the stored-row tuner stops at an nprobe that
    misses the target on fresh queries. Tuned on one sample of fresh queries (`tuning_vectors`), the index reaches
    it on another."""
    rng = np.random.default_rng(0)
    img, txt, _ = _clustered(400, 40, 1.0, 6)
    pick = np.repeat(np.arange(400), 15)
    tiled_i = _unit(img[pick] + 0.02 * rng.normal(size=(len(pick), D_IMG)))
    tiled_t = _unit(txt[pick] + 0.02 * rng.normal(size=(len(pick), D_TXT)))
    refs = _refs(len(pick))
    stored = HybridIndex.from_embeddings(tiled_i, tiled_t, refs, alpha=0.9, approximate=True, max_cost_vs_exact=None)
    tune_i, tune_t = _fresh_queries(seed=11, n_queries=200)
    tuning_vectors, _ = stored.query_vectors(tune_i, tune_t, strategy="text")
    given = HybridIndex.from_embeddings(tiled_i, tiled_t, refs, alpha=0.9, approximate=True, max_cost_vs_exact=None,
                                        tuning_vectors=tuning_vectors)  # fmt: skip
    assert stored.info.tuning.query_source == "stored rows" and given.info.tuning.query_source == "caller"
    assert given.info.tuning.queries == 200 and given.info.tuning.recall >= 0.95
    assert given.info.tuning.nprobe > stored.info.tuning.nprobe
    qi, qt = _fresh_queries(seed=12, n_queries=200)
    assert _search_recall(stored, qi, qt) < 0.95 <= _search_recall(given, qi, qt)
    with pytest.raises(ValueError, match="tuning_vectors must be"):
        HybridIndex.from_embeddings(tiled_i, tiled_t, refs, alpha=0.9, approximate=True,
                                    tuning_vectors=tuning_vectors[:, :5])  # fmt: skip

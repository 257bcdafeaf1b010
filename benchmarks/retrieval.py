"""Hybrid retrieval at scale: exact faiss vs a batched numpy baseline vs the approximate (IVF-SQ8 + refine) index.

N synthetic references drawn from C Gaussian clusters (so that approximate search is meaningful), image part
768-d and text part 1024-d, each L2-normalised, stored as HIKARI stores them: one `faiss.IndexFlatIP` over the
concatenation [e_img, e_txt], queried with [α·q_img, (1−α)·q_txt] (the hybrid score as one inner product), through
`hikari.retrieval.index.HybridIndex.search_vectors`. Queries come from the same clusters, in batches of 256.

Memory: the embeddings are generated in chunks straight into the flat index, which is the only full float32
copy; the numpy baseline reads the flat index's own storage (no copy), and the IVF index holds 8-bit codes
(¼ of the raw size), refined exactly from the flat index. It prints one JSON line:

    python benchmarks/retrieval.py                  # 1,000,000 references (about 9 GB of RAM, a few minutes)
    python benchmarks/retrieval.py --n 50000        # quick check

Targets: exact_vs_numpy (numpy / exact time) >= 1, recall_at_10 >= 0.95, approx_ms_per_query <= 2,
approx_speedup (exact / approx) >= 20, total_s <= 600.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

TARGETS = {"exact_vs_numpy": 1.0, "recall_at_10": 0.95, "approx_ms_per_query": 2.0, "approx_speedup": 20.0,
           "total_s": 600.0}  # fmt: skip


def _rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _clustered(rng: np.random.Generator, centres: np.ndarray, labels: np.ndarray, sigma: float) -> np.ndarray:
    """Unit rows: centre (unit) + isotropic noise with per-row norm ≈ sigma (same-cluster cosine ≈ 1/(1+σ²))."""
    d = centres.shape[1]
    x = rng.standard_normal((labels.size, d), dtype=np.float32)
    x *= np.float32(sigma / np.sqrt(d))
    x += centres[labels]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def numpy_topk(matrix: np.ndarray, queries: np.ndarray, k: int, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Batched matmul + argpartition over database chunks, merged: (scores (q, k), rows (q, k)), best first."""
    best_s = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
    best_i = np.full((queries.shape[0], k), -1, dtype=np.int64)
    for start in range(0, matrix.shape[0], chunk):
        s = queries @ matrix[start : start + chunk].T  # (q, chunk)
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        cand_i = np.concatenate([best_i, part + start], axis=1)
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="references")
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--d-img", type=int, default=768)
    ap.add_argument("--d-txt", type=int, default=1024)
    ap.add_argument("--sigma", type=float, default=1.0, help="noise norm relative to the unit cluster centre")
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256, help="queries per search call")
    ap.add_argument("--exact-batches", type=int, default=2, help="timed batches for exact and numpy")
    ap.add_argument("--approx-batches", type=int, default=8, help="timed batches for the approximate index")
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists (default: clusters, capped at n/39)")
    ap.add_argument("--nprobe", type=int, default=2, help="IVF lists probed (lists ≈ clusters here, so few suffice)")
    ap.add_argument("--k-factor", type=int, default=4, help="IVF candidates re-scored exactly = k_factor·k")
    ap.add_argument("--train-size", type=int, default=65536, help="IVF k-means training sample")
    ap.add_argument("--niter", type=int, default=10, help="IVF k-means iterations")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=50_000, help="rows generated/added at a time")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import faiss
    from threadpoolctl import threadpool_limits

    from hikari.retrieval.index import HybridIndex, IndexInfo, Reference

    t_start = time.perf_counter()
    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads)
    rng = np.random.default_rng(args.seed)
    n, d_img, d_txt, k = args.n, args.d_img, args.d_txt, args.k
    d = d_img + d_txt
    c_img = _clustered(rng, np.zeros((args.clusters, d_img), np.float32), np.arange(args.clusters), 1.0)
    c_txt = _clustered(rng, np.zeros((args.clusters, d_txt), np.float32), np.arange(args.clusters), 1.0)
    raw_bytes = n * d * 4
    rss_before = _rss_peak_bytes()

    # -- generate straight into the flat index (the only full float32 copy) -------------------------------------
    t0 = time.perf_counter()
    gen_s = 0.0
    exact = faiss.IndexFlatIP(d)
    for start in range(0, n, args.chunk):
        g0 = time.perf_counter()
        labels = rng.integers(0, args.clusters, size=min(args.chunk, n - start))
        block = np.concatenate([_clustered(rng, c_img, labels, args.sigma), _clustered(rng, c_txt, labels, args.sigma)],
                               axis=1)  # fmt: skip
        gen_s += time.perf_counter() - g0
        exact.add(block)
        del block
    build_exact_s = time.perf_counter() - t0 - gen_s
    matrix = faiss.rev_swig_ptr(exact.get_xb(), n * d).reshape(n, d)  # a view of the index's storage, no copy

    # -- approximate: IVF-SQ8, trained on a sample, filled chunk by chunk from the flat storage -----------------
    t0 = time.perf_counter()
    nlist = args.nlist or max(1, min(args.clusters, n // 39))
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = args.niter
    ivf.cp.seed = args.seed
    sample = matrix[np.sort(rng.choice(n, min(n, args.train_size), replace=False))]
    ivf.train(sample)
    del sample
    for start in range(0, n, 100_000):
        ivf.add(matrix[start : start + 100_000])
    build_approx_s = time.perf_counter() - t0

    references = [Reference(id=str(i), file_name="", label="", caption="", image_path="") for i in range(n)]
    info = IndexInfo(alpha=args.alpha, image_dim=d_img, text_dim=d_txt,
                     approximate={"nlist": nlist, "nprobe": args.nprobe, "k_factor": args.k_factor})  # fmt: skip
    index = HybridIndex(exact, references, info, approx=ivf)

    # -- queries: same clusters, hybrid-weighted -----------------------------------------------------------------
    n_batches = max(args.exact_batches, args.approx_batches)
    q_labels = rng.integers(0, args.clusters, size=n_batches * args.batch)
    q_img = _clustered(rng, c_img, q_labels, args.sigma)
    q_txt = _clustered(rng, c_txt, q_labels, args.sigma)
    queries, _ = index.query_vectors(q_img, q_txt, strategy="text")
    batches = [queries[i * args.batch : (i + 1) * args.batch] for i in range(n_batches)]

    def timed(fn, which: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        fn(which[0][:8])  # warm-up (page faults, thread pools)
        t = time.perf_counter()
        out = [fn(b) for b in which]
        return (time.perf_counter() - t) * 1000 / sum(b.shape[0] for b in which), out

    exact_ms, exact_rows = timed(lambda b: index.search_vectors(b, k=k)[0], batches[: args.exact_batches])
    numpy_ms, numpy_rows = timed(lambda b: numpy_topk(matrix, b, k)[1], batches[: args.exact_batches])
    approx_ms, approx_rows = timed(lambda b: index.search_vectors(b, k=k, approximate=True)[0],
                                   batches[: args.approx_batches])  # fmt: skip

    def recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
        hits = [len(set(f.tolist()) & set(t.tolist())) for fb, tb in zip(found, truth) for f, t in zip(fb, tb)]
        return float(np.mean(hits)) / k

    # the same query and data in numpy and faiss give the same top-k up to float ties
    numpy_agreement = recall(numpy_rows, exact_rows)
    recall_at_10 = recall(approx_rows[: args.exact_batches], exact_rows)
    peak = _rss_peak_bytes()
    result = {
        "n": n, "d_img": d_img, "d_txt": d_txt, "clusters": args.clusters, "alpha": args.alpha, "k": k,
        "batch": args.batch, "threads": args.threads, "nlist": nlist, "nprobe": args.nprobe,
        "k_factor": args.k_factor,
        "exact_ms_per_query": round(exact_ms, 3),
        "numpy_ms_per_query": round(numpy_ms, 3),
        "exact_vs_numpy": round(numpy_ms / exact_ms, 3),
        "numpy_agreement_at_10": round(numpy_agreement, 4),
        "approx_ms_per_query": round(approx_ms, 3),
        "recall_at_10": round(recall_at_10, 4),
        "approx_speedup": round(exact_ms / approx_ms, 2),
        "build_s": round(build_exact_s + build_approx_s, 1),
        "build_exact_s": round(build_exact_s, 1),
        "build_approx_s": round(build_approx_s, 1),
        "generate_s": round(gen_s, 1),
        "raw_embeddings_gb": round(raw_bytes / 1e9, 3),
        "peak_rss_gb": round(peak / 1e9, 3),
        "peak_memory_vs_raw": round(peak / raw_bytes, 3),
        "peak_memory_over_start_vs_raw": round((peak - rss_before) / raw_bytes, 3),
        "total_s": round(time.perf_counter() - t_start, 1),
    }  # fmt: skip
    result["targets_met"] = {
        "exact_vs_numpy": result["exact_vs_numpy"] >= TARGETS["exact_vs_numpy"],
        "recall_at_10": result["recall_at_10"] >= TARGETS["recall_at_10"],
        "approx_ms_per_query": result["approx_ms_per_query"] <= TARGETS["approx_ms_per_query"],
        "approx_speedup": result["approx_speedup"] >= TARGETS["approx_speedup"],
        "total_s": result["total_s"] <= TARGETS["total_s"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

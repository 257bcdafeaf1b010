"""Hybrid retrieval at scale: does the shipped approximate index keep its recall promise, and what does it buy?

Every workload is stored as HIKARI stores it — one `faiss.IndexFlatIP` over unit [e_img, e_txt] rows — and the
approximate index is built by the library's own `hikari.retrieval.index.build_approximate` with its defaults
(nlist √n, k_factor 8, nprobe tuned at build time to recall@10 >= 0.95 on held-out stored rows, or exact search
where that cannot be reached or is slower). Nothing here picks nlist or nprobe. Workloads (`--workloads`):

- ``sigma1``, ``sigma3``, ``sigma6``: N rows from `--clusters` Gaussian clusters (2,000 by default: not √N, so the
  lists are not fitted to the generator), image part 768-d and text part 1024-d, each row a unit centre plus noise
  of norm ≈ σ, renormalised per part (same-cluster cosine ≈ 1/(1+σ²); at σ=6 neighbours are barely above chance,
  the hard case). Noise coordinates are uniform (8x cheaper to draw than Gaussian; in 1,792 dims inner products
  are Gaussian either way). Queries: fresh draws from the same clusters.
- ``encoders``: the embeddings of the synthetic SkinCAP by the demo's retrieval encoders (`demo_encoders`, trained
  on the train part as `make demo` trains them): the train part's image and caption embeddings, tiled to N rows
  with per-part jitter whose norm is the median distance between an embedding and its nearest distinct neighbour
  (a denser sample of the same cloud). The validation part (never indexed) is split in two: the even images,
  jittered alike, are the sample of real queries the index is tuned on (`build_approximate(tuning_vectors=...)`:
  held-out stored rows overstate recall here, each having ~1,000 copies of itself), the odd ones the queries
  measured.

Queries are hybrid-weighted [α·q_img, (1−α)·q_txt] (Strategy B), in batches of 256, through
`HybridIndex.search_vectors`; recall@10 compares `approximate=True` (whatever the index chose) with exact search,
and one batch of a plain numpy matmul + argpartition over the flat index's own storage is the baseline exact search
must beat. The flat index is the only full float32 copy (filled chunk by chunk); the IVF adds 8-bit codes (¼).
Each workload runs in its own process (`--workload NAME`), so its peak RSS is its own. One JSON line:

    python benchmarks/retrieval.py                  # 1M references per workload: ~10 GB peak, 600 s on 2 busy cores
    python benchmarks/retrieval.py --n 50000        # quick check

Targets, every workload: recall_at_10 >= 0.95 on the unseen queries (1.0 where the index chose exact search, which
it does where approximate search cannot reach the target faster), exact_vs_numpy >= 1; where approximate search
was chosen, speedup (exact / approximate ms per query) >= 1; sigma1 at 1M: speedup >= 20; total_s <= 600 on 2
cores (a quiet machine).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

WORKLOADS = ("sigma1", "sigma3", "sigma6", "encoders")
SIGMAS = {"sigma1": 1.0, "sigma3": 3.0, "sigma6": 6.0}
# Encoder workload: tuning queries drawn (jittered) from half of the validation images; the other half is measured.
TUNING_QUERIES = 512
TARGETS = {"recall_at_10": 0.95, "speedup": 1.0, "exact_vs_numpy": 1.0, "sigma1_speedup_at_1m": 20.0,
           "total_s": 600.0}  # fmt: skip


def _rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _noise(rng: np.random.Generator, rows: int, d: int, norm: float) -> np.ndarray:
    """(rows, d) float32 noise with i.i.d. zero-mean uniform coordinates and expected squared norm `norm`²."""
    x = rng.random((rows, d), dtype=np.float32)
    x -= np.float32(0.5)
    x *= np.float32(norm * np.sqrt(12.0 / d))  # uniform(-½, ½) has variance 1/12
    return x


def _clustered(rng: np.random.Generator, centres: np.ndarray, labels: np.ndarray, sigma: float) -> np.ndarray:
    """Unit rows: centre (unit) + noise of norm ≈ sigma (same-cluster cosine ≈ 1/(1+σ²))."""
    x = _noise(rng, labels.size, centres.shape[1], sigma)
    x += centres[labels]
    return _unit(x)


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


# -- the encoder workload ---------------------------------------------------------------------------------------


def demo_encoders(work_dir: Path, data_dir: Path, split_path: Path, seed: int, steps: int | None = None) -> Any:
    """The demo's retrieval encoders (`hikari.retrieval.encoders.Encoders`), made as `hikari.demo.pipeline.run_demo`
    makes them: trained on the train part of `split_path` for the demo's `ENCODER_STEPS` (`steps` overrides, for
    tiny test runs). When the demo changes encoders, change the one line that builds them below.
    """
    from hikari.demo.encoders import train_tiny_encoders
    from hikari.demo.pipeline import ENCODER_STEPS
    from hikari.retrieval.encoders import load_encoders

    built = train_tiny_encoders(work_dir / "encoders", data_dir, split_path, steps=steps or ENCODER_STEPS, seed=seed,
                                overwrite=True)  # fmt: skip
    return load_encoders(built["path"])


def encoder_embeddings(work_dir: Path, *, rows: int, seed: int, steps: int | None = None) -> dict[str, np.ndarray]:
    """{"train_img", "train_txt", "val_img", "val_txt"}: unit embeddings of a fresh synthetic SkinCAP of `rows`
    rows, split as the demo splits it, by `demo_encoders`, at the demo's image size."""
    from hikari.data.split import read_split_records, split_dataset
    from hikari.demo.pipeline import DEMO_IMAGE_SIZE
    from hikari.demo.synth import write_synthetic_skincap

    data_dir, split_path = work_dir / "data", work_dir / "split.json"
    write_synthetic_skincap(data_dir, n=rows, seed=seed)
    split, _ = split_dataset(data_dir, seed=42, progress=False)  # the demo's split seed
    split.save(split_path)
    encoders = demo_encoders(work_dir, data_dir, split_path, seed, steps)
    parts = read_split_records(data_dir, split_path, ["train", "val"]).parts
    out = {}
    for part in ("train", "val"):
        records = parts[part]
        out[f"{part}_img"] = encoders.encode_images([r.image_path for r in records], max_size=DEMO_IMAGE_SIZE)
        out[f"{part}_txt"] = encoders.encode_texts([r.caption for r in records])
    return out


def _jitter_norm(emb: np.ndarray) -> float:
    """Median distance from an embedding to its nearest *distinct* other embedding (identical captions repeat)."""
    dist = np.sqrt(np.clip(2.0 - 2.0 * (emb @ emb.T), 0.0, None))
    dist[dist < 1e-4] = np.inf  # itself and exact repeats
    nearest = dist.min(axis=1)
    return float(np.median(nearest[np.isfinite(nearest)]))


def _tiled(rng: np.random.Generator, base: np.ndarray, rows: np.ndarray, norm: float) -> np.ndarray:
    x = _noise(rng, rows.size, base.shape[1], norm)
    x += base[rows]
    return _unit(x)


# -- one workload -----------------------------------------------------------------------------------------------


def run_workload(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build the flat index of workload `name` chunk by chunk, the approximate index with the library's defaults,
    then time exact / numpy / approximate search and measure recall@10 on unseen queries."""
    import faiss
    from threadpoolctl import threadpool_limits

    from hikari.retrieval.index import HybridIndex, IndexInfo, Reference, build_approximate, flat_vectors

    t_start = time.perf_counter()
    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads)
    rng = np.random.default_rng(args.seed)
    n, k = args.n, args.k
    n_queries = args.batch * max(args.exact_batches, args.approx_batches)
    rss_before = _rss_peak_bytes()
    t0 = time.perf_counter()
    details: dict[str, Any] = {}
    make_tuning: Any = None  # None: the index tunes on held-out stored rows (the library's default)
    if name in SIGMAS:
        sigma = SIGMAS[name]
        d_img, d_txt = args.d_img, args.d_txt
        c_img = _unit(rng.standard_normal((args.clusters, d_img), dtype=np.float32))
        c_txt = _unit(rng.standard_normal((args.clusters, d_txt), dtype=np.float32))

        def block(rows: int) -> tuple[np.ndarray, np.ndarray]:
            labels = rng.integers(0, args.clusters, size=rows)
            return _clustered(rng, c_img, labels, sigma), _clustered(rng, c_txt, labels, sigma)

        details = {"sigma": sigma, "clusters": args.clusters}
        make_rows, make_queries = block, lambda: block(n_queries)
    elif name == "encoders":
        if args.synth_rows is None:
            from hikari.demo.pipeline import DEMO_ROWS

            args.synth_rows = DEMO_ROWS
        with tempfile.TemporaryDirectory(prefix="hikari-retrieval-bench-") as work:
            emb = encoder_embeddings(Path(work), rows=args.synth_rows, seed=args.seed, steps=args.encoder_steps)
        # The validation images split in two: the even ones are the sample of real queries the index is tuned on
        # (`tuning_vectors`), the odd ones the unseen queries it is measured on.
        for kind in ("img", "txt"):
            emb[f"tune_{kind}"], emb[f"val_{kind}"] = emb[f"val_{kind}"][0::2], emb[f"val_{kind}"][1::2]
        d_img, d_txt = emb["train_img"].shape[1], emb["train_txt"].shape[1]
        jitter = {"img": _jitter_norm(emb["train_img"]), "txt": _jitter_norm(emb["train_txt"])}
        details = {"synth_rows": args.synth_rows, "base_train": len(emb["train_img"]), "val": len(emb["val_img"]),
                   "jitter_norm": {p: round(v, 4) for p, v in jitter.items()}}  # fmt: skip

        def tiles(base: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
            pick = rng.integers(0, len(emb[f"{base}_img"]), size=rows)
            return (_tiled(rng, emb[f"{base}_img"], pick, jitter["img"]),
                    _tiled(rng, emb[f"{base}_txt"], pick, jitter["txt"]))  # fmt: skip

        make_rows, make_queries = (lambda rows: tiles("train", rows)), (lambda: tiles("val", n_queries))
        make_tuning = lambda: tiles("tune", TUNING_QUERIES)  # noqa: E731
    else:
        raise ValueError(f"unknown workload {name!r}; valid: {', '.join(WORKLOADS)}")
    prepare_s = time.perf_counter() - t0

    # -- the flat index: the only full float32 copy, filled chunk by chunk ----------------------------------------
    d = d_img + d_txt
    raw_bytes = n * d * 4
    exact = faiss.IndexFlatIP(d)
    gen_s = 0.0
    t0 = time.perf_counter()
    # One allocation, written in place: `add` chunk by chunk would grow the storage by doubling, copying it each
    # time and briefly holding two copies (the library's `from_embeddings` adds once, so never grows it).
    exact.codes.resize(n * d * 4)
    exact.ntotal = n
    matrix = flat_vectors(exact)
    for start in range(0, n, args.chunk):
        g0 = time.perf_counter()
        img, txt = make_rows(min(args.chunk, n - start))
        gen_s += time.perf_counter() - g0
        matrix[start : start + len(img), :d_img] = img
        matrix[start : start + len(img), d_img:] = txt
        del img, txt
    build_exact_s = time.perf_counter() - t0 - gen_s

    # -- the approximate index: the library's builder, its defaults -----------------------------------------------
    t0 = time.perf_counter()
    references = [Reference(id=str(i), file_name="", label="", caption="", image_path="") for i in range(n)]
    info = IndexInfo(alpha=args.alpha, image_dim=d_img, text_dim=d_txt)
    index = HybridIndex(exact, references, info)
    tuning_vectors = None
    if make_tuning is not None:  # a sample of real queries (other images than the measured ones)
        tuning_vectors, _ = index.query_vectors(*make_tuning(), strategy="text")
    approx, params, tuning = build_approximate(exact, alpha=args.alpha, image_dim=d_img, seed=args.seed,
                                               tuning_vectors=tuning_vectors)  # fmt: skip
    build_approx_s = time.perf_counter() - t0
    info.approximate, info.tuning = params, tuning
    index = HybridIndex(exact, references, info, approx=approx)

    # -- unseen queries, hybrid-weighted ---------------------------------------------------------------------------
    q_img, q_txt = make_queries()
    queries, _ = index.query_vectors(q_img, q_txt, strategy="text")
    batches = [queries[i * args.batch : (i + 1) * args.batch] for i in range(n_queries // args.batch)]

    def timed(fn: Any, which: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        fn(which[0][:8])  # warm-up (page faults, thread pools)
        t = time.perf_counter()
        out = [fn(b) for b in which]
        return (time.perf_counter() - t) * 1000 / sum(b.shape[0] for b in which), out

    exact_ms, exact_rows = timed(lambda b: index.search_vectors(b, k=k)[0], batches[: args.exact_batches])
    numpy_ms, numpy_rows = timed(lambda b: numpy_topk(matrix, b, k)[1], batches[:1])
    # where the index chose exact search, "approximate" is the same exact search: no need to time more of it
    n_approx = args.approx_batches if tuning.search == "approximate" else args.exact_batches
    approx_ms, approx_rows = timed(lambda b: index.search_vectors(b, k=k, approximate=True)[0],
                                   batches[:n_approx])  # fmt: skip

    def recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
        hits = [len(set(f.tolist()) & set(t.tolist())) for fb, tb in zip(found, truth) for f, t in zip(fb, tb)]
        return float(np.mean(hits)) / k

    peak = _rss_peak_bytes()
    return {
        "workload": name, **details, "n": n, "d_img": d_img, "d_txt": d_txt, "alpha": args.alpha, "k": k,
        "search": tuning.search, "tuned_on": tuning.query_source, "nlist": params["nlist"], "nprobe": tuning.nprobe,
        "k_factor": params["k_factor"],
        "tuned_recall_at_10": tuning.recall if tuning.search == "approximate" else None,
        "tuning_reason": tuning.reason,
        "tuning_curve": [{key: c[key] for key in ("nprobe", "k_factor", "recall", "scanned", "ms_per_query")}
                         for c in tuning.curve],  # fmt: skip
        "recall_at_10": round(recall(approx_rows[: args.exact_batches], exact_rows), 4),
        "exact_ms_per_query": round(exact_ms, 3),
        "approx_ms_per_query": round(approx_ms, 3),
        "speedup": round(exact_ms / approx_ms, 2),
        "numpy_ms_per_query": round(numpy_ms, 3),
        "exact_vs_numpy": round(numpy_ms / exact_ms, 3),
        "numpy_agreement_at_10": round(recall(numpy_rows, exact_rows[:1]), 4),
        "build_exact_s": round(build_exact_s, 1),
        "build_approx_s": round(build_approx_s, 1),
        "generate_s": round(gen_s + prepare_s, 1),
        "raw_embeddings_gb": round(raw_bytes / 1e9, 3),
        "peak_rss_gb": round(peak / 1e9, 3),
        "peak_memory_over_start_vs_raw": round((peak - rss_before) / raw_bytes, 3),
        "total_s": round(time.perf_counter() - t_start, 1),
    }  # fmt: skip


def targets_met(row: dict[str, Any]) -> dict[str, bool]:
    """Per workload; `speedup` only where the index chose approximate search (else both paths are exact search)."""
    met = {"recall_at_10": row["recall_at_10"] >= TARGETS["recall_at_10"],
           "exact_vs_numpy": row["exact_vs_numpy"] >= TARGETS["exact_vs_numpy"]}  # fmt: skip
    if row["search"] == "approximate":
        met["speedup"] = row["speedup"] >= TARGETS["speedup"]
    if row["workload"] == "sigma1" and row["n"] >= 1_000_000:
        met["sigma1_speedup_at_1m"] = row["speedup"] >= TARGETS["sigma1_speedup_at_1m"]
    return met


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="references per workload")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    ap.add_argument("--workload", default=None, help="run one workload in this process (what the parent calls)")
    ap.add_argument("--clusters", type=int, default=2000, help="clusters of the sigma workloads")
    ap.add_argument("--d-img", type=int, default=768, help="image dims of the sigma workloads")
    ap.add_argument("--d-txt", type=int, default=1024, help="text dims of the sigma workloads")
    ap.add_argument("--synth-rows", type=int, default=None, help="synthetic SkinCAP rows (default: the demo's)")
    ap.add_argument("--encoder-steps", type=int, default=None, help="encoder training steps (default: the demo's)")
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256, help="queries per search call")
    ap.add_argument("--exact-batches", type=int, default=2, help="timed batches for exact search (and recall)")
    ap.add_argument("--approx-batches", type=int, default=8, help="timed batches for approximate search")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=50_000, help="rows generated/added at a time")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.workload is not None:
        print(json.dumps(run_workload(args.workload, args)))
        return

    t_start = time.perf_counter()
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; valid: {', '.join(WORKLOADS)}")
    rows: dict[str, Any] = {}
    for name in names:  # one process each: its memory is returned, its peak RSS is its own
        cmd = [sys.executable, __file__, *sys.argv[1:], "--workload", name]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"workload {name} failed:\n{done.stderr[-3000:]}")
        [line] = [line for line in done.stdout.splitlines() if line.startswith("{")]
        row = json.loads(line)
        row["targets_met"] = targets_met(row)
        rows[name] = row
    total = round(time.perf_counter() - t_start, 1)
    result = {"n": args.n, "threads": args.threads, "workloads": rows, "total_s": total,
              "all_targets_met": all(all(r["targets_met"].values()) for r in rows.values())
              and total <= TARGETS["total_s"]}  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()

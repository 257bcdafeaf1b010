"""The hybrid reference index: score = α·cos(img_q, img_i) + (1−α)·cos(txt_q, txt_i), on faiss.

With unit-norm embeddings the hybrid score is one inner product of concatenations,

    [α·q_img, (1−α)·q_txt] · [e_img, e_txt] = α·cos_img + (1−α)·cos_txt,

so a single `faiss.IndexFlatIP` over [e_img, e_txt] gives the exact hybrid top-k (the weights live in the query,
so α can even change per query). Query modes (`strategy`):

- ``"text"`` (Strategy B): a query text embedding is given (user text, or the model's own Stage 3 caption —
  never the ground-truth caption of an evaluated image);
- ``"image_text"`` (Strategy A): no query text; the *image* embedding is compared with the reference texts. Only
  for aligned encoder pairs (one embedding space, e.g. R4), else an error;
- ``"image"``: no query text; the score is cos_img alone (the ranking α·cos_img would give).

For large collections an approximate index is added: IVF with 8-bit scalar-quantised vectors, whose candidates
(`k_factor`·k of them) are re-scored exactly against the flat index (`faiss.IndexRefine`, sharing the flat
index's vectors, so no extra full copy is kept). `nprobe` and `k_factor` trade speed for recall, and the right
values depend on the data, so they are measured at build time rather than fixed (`tune_nprobe`): the smallest
`nprobe`, then `k_factor`, whose recall@10 against exact search reaches `target_recall` (default 0.95) on held-out
stored vectors is kept; where nothing reaches it, or reaching it is slower than exact search, the index records
why and answers approximate searches exactly (`IndexInfo.tuning`).

Exclusions: a query never gets back its own id, a reference from its source image (same normalised
`ori_file_path`) or a near-duplicate picture (pHash within the split's threshold). Search over-fetches k + margin
candidates, drops excluded ones and fetches more (×4) for the queries that were left short.

On disk (`save`, atomic: written to a sibling temporary directory, then renamed into place):
    index.json          metadata: encoders, α, split path + fingerprint, dims, counts, format version
    references.json     per reference: id, file name, label, caption, source, pHash, image path
    exact.faiss         IndexFlatIP over [e_img, e_txt] (the embeddings themselves)
    approx.faiss        (optional) the IVF-SQ8 first stage (absent when the tuner chose exact search)
Version 2 added `tuning` to index.json; version-1 directories (no tuning) still load.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from hikari.config import DEFAULT_HASH_THRESHOLD, DEFAULT_TARGET_RECALL
from hikari.data.hashing import popcount
from hikari.utils.io import atomic_directory

logger = logging.getLogger(__name__)

INDEX_FORMAT = "hikari-rag-index"
INDEX_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: before build-time tuning (no `tuning` in index.json)
Strategy = Literal["text", "image_text", "image"]
_HASH_WORDS = 4  # 256-bit pHash as four uint64 words
BLAS_DATABASE_BLOCK = 16_384
# Build-time tuning of the approximate index (see `tune_nprobe`; target: hikari.config.DEFAULT_TARGET_RECALL).
TUNE_K = 10  # recall@10, the promise the benchmark checks
TUNE_QUERIES = 256  # held-out rows, each queried as every kind (`tuning_queries`)
# The smallest refine factor the tuner picks: below 8 candidates per neighbour the re-scoring saves little (the list
# scan dominates) and leaves no slack for queries unlike the tuning sample. 8 was the fixed value before tuning.
MIN_K_FACTOR = 8
KMEANS_ITERATIONS = 10  # faiss's default 25 costs 2.5x the training time for lists the tuner compensates anyway


@dataclass(frozen=True)
class Reference:
    """One indexed training case. `source` is the normalised ori_file_path ("" if none), `phash` a 256-bit int."""

    id: str
    file_name: str
    label: str
    caption: str
    image_path: str
    source: str = ""
    phash: int | None = None


@dataclass(frozen=True)
class Exclusion:
    """What a query must not get back: its own id, references of its source image, near-duplicates of its image."""

    id: str | None = None
    source: str = ""
    phash: int | None = None


@dataclass(frozen=True)
class Hit:
    """A returned reference with its hybrid score and the two cosine terms (cos_txt None without text)."""

    row: int
    reference: Reference
    score: float
    cos_image: float
    cos_text: float | None

    def to_dict(self) -> dict[str, Any]:
        ref = asdict(self.reference)
        ref.pop("phash")
        return {"score": round(self.score, 6), "cos_image": round(self.cos_image, 6),
                "cos_text": None if self.cos_text is None else round(self.cos_text, 6), **ref}  # fmt: skip


def phash_words(hashes: Sequence[int | None]) -> np.ndarray:
    """(n, 4) uint64 words of 256-bit hashes (a missing hash: zeros, masked out by the caller)."""
    mask = (1 << 64) - 1
    out = np.zeros((len(hashes), _HASH_WORDS), dtype=np.uint64)
    for i, h in enumerate(hashes):
        if h is not None:
            out[i] = [(int(h) >> (64 * k)) & mask for k in range(_HASH_WORDS)]
    return out


@dataclass(frozen=True)
class IvfTuning:
    """What the build measured of the approximate index and what `search(approximate=True)` therefore does.

    Recall is recall@`k` (|approximate top-k ∩ exact top-k| / k, averaged over queries; the minimum over the query
    kinds, see `tune_nprobe`). Times are milliseconds per query in one batch of `queries`, on the build machine.

    Attributes:
        search: ``"approximate"`` (IVF at `nprobe`) or ``"exact"`` (the flat index answers approximate searches).
        chosen_by: ``"tuner"`` (smallest nprobe reaching `target_recall`) or ``"caller"`` (a fixed nprobe).
        nprobe: the nprobe approximate search uses; None when `search` is exact.
        recall: recall of what approximate search does (1.0 when exact).
        reason: one sentence on why this setting was chosen.
        k_factor: the refine factor approximate search uses (candidates re-scored exactly = k_factor·k).
        curve: per setting tried, in order, {"nprobe", "k_factor", "recall", "recall_<kind>", "scanned" (fraction
            of the references whose codes were compared, per query), "ms_per_query"}.
        query_source: ``"stored rows"`` (held-out rows of the index, the default) or ``"caller"`` (query vectors
            the builder was given: a sample of the queries the index will really answer).
    """

    target_recall: float
    k: int
    queries: int
    seed: int
    k_factor: int
    search: Literal["approximate", "exact"]
    chosen_by: Literal["tuner", "caller"]
    nprobe: int | None
    recall: float
    reason: str
    exact_ms_per_query: float
    approx_ms_per_query: float | None
    curve: list[dict[str, float]] = field(default_factory=list)
    query_source: str = "stored rows"


@dataclass
class IndexInfo:
    """The metadata of an index (index.json)."""

    alpha: float
    image_dim: int
    text_dim: int
    encoder: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    split_fingerprint: str | None = None
    data_dir: str | None = None
    hash_threshold: int = DEFAULT_HASH_THRESHOLD
    approximate: dict[str, Any] | None = None  # {"nlist", "nprobe", "k_factor"} when an IVF index was built
    # train images left out because they could not be read: {"file_name", "error"} each
    skipped: list[dict[str, str]] = field(default_factory=list)
    tuning: IvfTuning | None = None  # what the build measured and chose for approximate search (version >= 2)
    format: str = INDEX_FORMAT
    version: int = INDEX_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.tuning, dict):  # read back from index.json
            self.tuning = IvfTuning(**self.tuning)


class HybridIndex:
    """Exact (and optionally approximate) hybrid image/text search over reference cases.

    Args:
        image_emb: (n, d_img) unit rows.
        text_emb: (n, d_txt) unit rows, or None for an image-only index (R0).
        references: n references, aligned with the rows.
        info: metadata; `alpha`, dims are checked against the arrays.
    """

    def __init__(self, exact: Any, references: Sequence[Reference], info: IndexInfo, approx: Any = None) -> None:
        if exact.ntotal != len(references):
            raise ValueError(f"index holds {exact.ntotal} vectors but {len(references)} references")
        if exact.d != info.image_dim + info.text_dim:
            raise ValueError(f"index dimension {exact.d} != image_dim {info.image_dim} + text_dim {info.text_dim}")
        if not 0.0 <= info.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {info.alpha}")
        self.exact = exact
        self.approx = approx
        self.references = list(references)
        self.info = info
        self._ids = np.asarray([r.id for r in self.references], dtype=object)
        self._sources = np.asarray([r.source for r in self.references], dtype=object)
        self._has_hash = np.asarray([r.phash is not None for r in self.references], dtype=bool)
        self._hash_words = phash_words([r.phash for r in self.references])

    # -- building ---------------------------------------------------------------------------------------------

    @classmethod
    def from_embeddings(
        cls,
        image_emb: np.ndarray,
        text_emb: np.ndarray | None,
        references: Sequence[Reference],
        *,
        alpha: float,
        approximate: bool = False,
        nlist: int | None = None,
        nprobe: int | None = None,
        k_factor: int | None = None,
        train_size: int = 100_000,
        seed: int = 0,
        target_recall: float = DEFAULT_TARGET_RECALL,
        max_cost_vs_exact: float | None = 1.0,
        tune_queries: int = TUNE_QUERIES,
        tuning_vectors: np.ndarray | None = None,
        **info: Any,
    ) -> HybridIndex:
        """Build the index from unit-norm embeddings (checked); `info` fills the remaining `IndexInfo` fields.

        With `approximate`, an IVF-SQ8 index is built and tuned (`build_approximate`): `nprobe` / `k_factor` None
        pick the smallest values reaching `target_recall`, an int fixes one (its recall is still measured and
        recorded); where the target cannot be reached faster than exact search, approximate searches run exactly.
        """
        image_emb = np.ascontiguousarray(image_emb, dtype=np.float32)
        n, d_img = image_emb.shape
        parts = [image_emb]
        if text_emb is not None:
            text_emb = np.ascontiguousarray(text_emb, dtype=np.float32)
            if text_emb.shape[0] != n:
                raise ValueError(f"{n} image embeddings but {text_emb.shape[0]} text embeddings")
            parts.append(text_emb)
        for name, arr in zip(("image", "text"), parts, strict=False):
            norms = np.linalg.norm(arr, axis=1)
            if n and not np.allclose(norms, 1.0, atol=1e-3):
                bad = int(np.argmax(np.abs(norms - 1.0)))
                raise ValueError(f"{name} embedding row {bad} has norm {norms[bad]:.4f}; embeddings must be unit")
        if len(references) != n:
            raise ValueError(f"{n} embeddings but {len(references)} references")
        matrix = np.concatenate(parts, axis=1) if len(parts) > 1 else image_emb
        d_txt = 0 if text_emb is None else text_emb.shape[1]
        exact = faiss.IndexFlatIP(matrix.shape[1])
        exact.add(matrix)
        del matrix  # the flat index holds the only copy the approximate build reads
        meta = IndexInfo(alpha=float(alpha), image_dim=d_img, text_dim=d_txt, **info)
        approx = None
        if approximate:
            approx, meta.approximate, meta.tuning = build_approximate(
                exact, alpha=meta.alpha, image_dim=d_img, nlist=nlist, nprobe=nprobe, k_factor=k_factor,
                target_recall=target_recall, max_cost_vs_exact=max_cost_vs_exact, tune_queries=tune_queries,
                train_size=train_size, seed=seed, tuning_vectors=tuning_vectors,
            )  # fmt: skip
        return cls(exact, references, meta, approx)

    # -- querying ---------------------------------------------------------------------------------------------

    def query_vectors(
        self, image_q: np.ndarray, text_q: np.ndarray | None = None, *, strategy: Strategy | None = None,
        alpha: float | None = None,
    ) -> tuple[np.ndarray, Strategy]:
        """(q, d) weighted query vectors [α·q_img, (1−α)·q_txt] and the strategy used (see module docstring)."""
        a = self.info.alpha if alpha is None else float(alpha)
        image_q = np.atleast_2d(np.asarray(image_q, dtype=np.float32))
        if image_q.shape[1] != self.info.image_dim:
            raise ValueError(f"query image embeddings have dim {image_q.shape[1]}, index {self.info.image_dim}")
        if strategy is None:
            strategy = "text" if text_q is not None else "image"
        if self.info.text_dim == 0:
            if strategy != "image":
                raise ValueError("this index has no text embeddings (image-only encoder); use strategy 'image'")
            return image_q, "image"
        if strategy == "text":
            if text_q is None:
                raise ValueError("strategy 'text' needs query text embeddings")
            text_q = np.atleast_2d(np.asarray(text_q, dtype=np.float32))
            if text_q.shape != (image_q.shape[0], self.info.text_dim):
                raise ValueError(f"query text embeddings have shape {text_q.shape}, expected "
                                 f"({image_q.shape[0]}, {self.info.text_dim})")  # fmt: skip
            return np.concatenate([a * image_q, (1 - a) * text_q], axis=1), strategy
        if text_q is not None:
            raise ValueError(f"strategy {strategy!r} takes no query text (use 'text')")
        if strategy == "image_text":
            if not self.info.encoder.get("aligned") or self.info.text_dim != self.info.image_dim:
                raise ValueError(f"strategy 'image_text' (A) needs an aligned encoder pair; "
                                 f"{self.info.encoder.get('name')} is not one. Give a query text or use 'image'")
            return np.concatenate([a * image_q, (1 - a) * image_q], axis=1), strategy
        if strategy == "image":
            return np.concatenate([image_q, np.zeros((image_q.shape[0], self.info.text_dim), np.float32)], 1), strategy
        raise ValueError(f"unknown strategy {strategy!r}; valid: text, image_text, image")

    def search(
        self,
        image_q: np.ndarray,
        text_q: np.ndarray | None = None,
        *,
        k: int,
        exclude: Sequence[Exclusion | None] | None = None,
        strategy: Strategy | None = None,
        alpha: float | None = None,
        approximate: bool = False,
    ) -> list[list[Hit]]:
        """Top-k references per query, best first, after exclusions.

        Args:
            image_q: (q, d_img) unit query image embeddings.
            text_q: (q, d_txt) unit query text embeddings (Strategy B), or None.
            k: references per query (fewer only when the index runs out of allowed references).
            exclude: per query, what must not be returned (None: nothing).
            strategy, alpha: see `query_vectors`; alpha defaults to the index's.
            approximate: use the IVF index (must have been built).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        vectors, used = self.query_vectors(image_q, text_q, strategy=strategy, alpha=alpha)
        rows, scores = self.search_vectors(vectors, k=k, exclude=exclude, approximate=approximate)
        d_img = self.info.image_dim
        q_img = np.atleast_2d(np.asarray(image_q, dtype=np.float32))
        q_txt = {"text": None if text_q is None else np.atleast_2d(text_q), "image_text": q_img}.get(used)
        out: list[list[Hit]] = []
        for qi in range(vectors.shape[0]):
            hits = []
            for row, score in zip(rows[qi], scores[qi], strict=True):
                if row < 0:
                    continue
                stored = self.exact.reconstruct(int(row))  # [e_img, e_txt] of the reference
                cos_txt = None if q_txt is None else float(q_txt[qi] @ stored[d_img:])
                hits.append(Hit(int(row), self.references[int(row)], float(score), float(q_img[qi] @ stored[:d_img]),
                                cos_txt))  # fmt: skip
            out.append(hits)
        return out

    def search_vectors(
        self,
        vectors: np.ndarray,
        *,
        k: int,
        exclude: Sequence[Exclusion | None] | None = None,
        approximate: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows (q, k), scores (q, k)) for weighted query vectors; row −1 where fewer than k remain."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        nq, n = vectors.shape[0], self.exact.ntotal
        if exclude is not None and len(exclude) != nq:
            raise ValueError(f"{nq} queries but {len(exclude)} exclusions")
        index, approximate = self._searcher(approximate)
        rows_out = np.full((nq, k), -1, dtype=np.int64)
        scores_out = np.full((nq, k), -np.inf, dtype=np.float32)
        todo = np.arange(nq)
        fetch = min(n, k + (max(8, k) if exclude is not None else 0))
        while todo.size and fetch > 0:
            scores, rows = self._run(index, vectors[todo], fetch, approximate)
            short = []
            for j, qi in enumerate(todo):
                keep = rows[j] >= 0
                if exclude is not None and exclude[qi] is not None:
                    keep &= ~self._excluded(rows[j], exclude[qi])
                kept = rows[j][keep][:k]
                rows_out[qi, : kept.size] = kept
                scores_out[qi, : kept.size] = scores[j][keep][:k]
                if kept.size < k and fetch < n:
                    short.append(qi)
            todo = np.asarray(short, dtype=np.int64)
            fetch = min(n, fetch * 4)
        return rows_out, scores_out

    def _searcher(self, approximate: bool) -> tuple[Any, bool]:
        """(faiss index to search, whether it is the approximate one)."""
        if not approximate:
            return self.exact, False
        if self.approx is None:
            if self.info.tuning is not None and self.info.tuning.search == "exact":
                return self.exact, False  # measured at build time: approximate search cannot keep its promise here
            raise ValueError("this index was built without an approximate (IVF) index; rebuild with approximate")
        refine = faiss.IndexRefine(self.approx, self.exact)
        refine.k_factor = float(self.info.approximate["k_factor"] if self.info.approximate else 8)
        self._keep_alive = refine  # the refine wrapper does not own its sub-indexes; keep the pair together
        return refine, True

    def _run(self, index: Any, vectors: np.ndarray, fetch: int, approximate: bool) -> tuple[np.ndarray, np.ndarray]:
        if approximate:
            nprobe = self.info.approximate.get("nprobe") if self.info.approximate else None
            self.approx.nprobe = int(nprobe or 16)  # 16: what indexes saved before tuning were built with
        return _search(index, vectors, fetch)

    def allowed(self, exclusion: Exclusion) -> np.ndarray:
        """Boolean mask over every reference: True where `exclusion` does not forbid it (the rule `search` applies)."""
        return ~self._excluded(np.arange(len(self.references)), exclusion)

    def _excluded(self, rows: np.ndarray, ex: Exclusion) -> np.ndarray:
        """Mask over candidate `rows` (−1 allowed) of references the exclusion forbids."""
        valid = np.clip(rows, 0, None)
        mask = np.zeros(rows.shape, dtype=bool)
        if ex.id is not None:
            mask |= self._ids[valid] == ex.id
        if ex.source:
            mask |= self._sources[valid] == ex.source
        if ex.phash is not None:
            q = phash_words([ex.phash])[0]
            dist = popcount(self._hash_words[valid] ^ q).sum(axis=1)
            mask |= self._has_hash[valid] & (dist <= self.info.hash_threshold)
        return mask

    # -- persistence ------------------------------------------------------------------------------------------

    def save(self, out: Path, *, overwrite: bool = True) -> Path:
        """Write the index directory atomically (sibling temporary folder, then rename)."""
        out = Path(out)
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
        with atomic_directory(out) as staging:
            faiss.write_index(self.exact, str(staging / "exact.faiss"))
            if self.approx is not None:
                faiss.write_index(self.approx, str(staging / "approx.faiss"))
            refs = [{**asdict(r), "phash": None if r.phash is None else f"{r.phash:064x}"} for r in self.references]
            (staging / "references.json").write_text(json.dumps(refs, ensure_ascii=False), encoding="utf-8")
            # Written last: a directory with index.json is complete.
            (staging / "index.json").write_text(json.dumps(asdict(self.info), indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: Path) -> HybridIndex:
        """Read an index directory written by `save`; errors name the directory and the missing/bad file."""
        path = Path(path)
        meta_path = path / "index.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path} is not a HIKARI retrieval index (no index.json); "
                                    "build one with `hikari retrieve build`")  # fmt: skip
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
        if raw.get("format") != INDEX_FORMAT or raw.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"{meta_path}: format {raw.get('format')!r} v{raw.get('version')!r} is not "
                             f"{INDEX_FORMAT!r} v{'/'.join(map(str, READABLE_VERSIONS))}")  # fmt: skip
        try:
            info = IndexInfo(**raw)
        except TypeError as err:
            raise ValueError(f"{meta_path}: {err}") from None
        refs_raw = json.loads((path / "references.json").read_text(encoding="utf-8"))
        refs = []
        for i, r in enumerate(refs_raw):
            try:
                refs.append(Reference(**{**r, "phash": None if r["phash"] is None else int(r["phash"], 16)}))
            except (TypeError, KeyError, ValueError) as err:
                raise ValueError(f"{path / 'references.json'}: entry {i}: {err}") from None
        exact = faiss.read_index(str(path / "exact.faiss"))
        approx = faiss.read_index(str(path / "approx.faiss")) if (path / "approx.faiss").is_file() else None
        return cls(exact, refs, info, approx)


def _search(index: Any, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`index.search(vectors, k)` with the wide BLAS database block for exact search (restored after)."""
    # Exact search multiplies query blocks by database blocks of this many rows (BLAS), then updates the top-k
    # heaps; faiss's default of 1,024 rows makes the heap updates dominate for wide (1,792-d) vectors, 16,384
    # rows measured ~1.9x faster (benchmarks/retrieval.py), on par with a plain numpy matmul.
    previous = faiss.cvar.distance_compute_blas_database_bs
    faiss.cvar.distance_compute_blas_database_bs = max(previous, BLAS_DATABASE_BLOCK)
    try:
        return index.search(vectors, k)
    finally:
        faiss.cvar.distance_compute_blas_database_bs = previous


def flat_vectors(exact: Any) -> np.ndarray:
    """(n, d) float32 view of a `faiss.IndexFlat`'s own storage (no copy; valid while `exact` lives)."""
    return faiss.rev_swig_ptr(exact.get_xb(), exact.ntotal * exact.d).reshape(exact.ntotal, exact.d)


def default_nlist(n: int) -> int:
    """√n lists, but at least 39 training points per list (faiss's minimum for a sensible k-means)."""
    return max(1, min(int(np.sqrt(n)), n // 39))


def build_ivf(
    matrix: np.ndarray,
    *,
    nlist: int | None,
    nprobe: int,
    k_factor: int,
    train_size: int,
    seed: int,
    holdout: np.ndarray | None = None,
) -> tuple[Any, dict[str, Any]]:
    """IVF-SQ8 (inner product) over `matrix` rows (n, d), trained on a seeded sample; returns (index, params).

    Rows in `holdout` (indices) are stored but left out of the k-means sample, so that queries made of them
    measure the lists as unseen queries would. k-means runs `KMEANS_ITERATIONS` iterations, seeded by `seed`.
    """
    n, d = matrix.shape
    nlist = nlist or default_nlist(n)
    if nlist < 1 or nlist > n:
        raise ValueError(f"nlist must be in [1, {n}], got {nlist}")
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    ivf.own_fields = True
    quantizer.this.disown()
    rng = np.random.default_rng(seed)
    pool = np.arange(n) if holdout is None or holdout.size == 0 else np.setdiff1d(np.arange(n), holdout)
    if pool.size < nlist:
        pool = np.arange(n)  # too few rows left to train nlist centroids; train on everything
    rows = pool if pool.size <= train_size else np.sort(rng.choice(pool, train_size, replace=False))
    ivf.cp.seed = seed
    ivf.cp.niter = KMEANS_ITERATIONS
    ivf.train(matrix if rows.size == n else matrix[rows])
    step = 100_000
    for start in range(0, n, step):
        ivf.add(matrix[start : start + step])
    ivf.nprobe = nprobe
    return ivf, {"nlist": nlist, "nprobe": nprobe, "k_factor": k_factor}


def tuning_queries(
    matrix: np.ndarray, rows: np.ndarray, *, alpha: float, image_dim: int
) -> dict[str, np.ndarray]:
    """Query kind → (len(rows), d) query vectors made of stored rows, as `HybridIndex.query_vectors` forms them.

    ``"text"`` (Strategy B): [α·e_img, (1−α)·e_txt] — a training sample querying with its own image and caption;
    ``"image"``: [e_img, 0]. An image-only index (no text part) has only ``"image"``.
    """
    stored = matrix[rows]
    image = stored.copy()
    image[:, image_dim:] = 0.0
    if stored.shape[1] == image_dim:
        return {"image": image}
    text = stored.copy()
    text[:, :image_dim] *= np.float32(alpha)
    text[:, image_dim:] *= np.float32(1.0 - alpha)
    return {"text": text, "image": image}


def _topk_without_self(rows: np.ndarray, self_rows: np.ndarray, k: int) -> np.ndarray:
    """(q, k) of (q, k+1) result rows with each query's own row removed (the last one dropped where absent)."""
    keep = rows != self_rows[:, None]
    out = np.full((rows.shape[0], k), -1, dtype=np.int64)
    for i in range(rows.shape[0]):
        kept = rows[i][keep[i]][:k]
        out[i, : kept.size] = kept
    return out


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (−1 entries ignored)."""
    hits = [len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, int((t >= 0).sum()))
            for f, t in zip(found, truth, strict=True)]  # fmt: skip
    return float(np.mean(hits))


def tune_nprobe(
    ivf: Any,
    exact: Any,
    queries: dict[str, np.ndarray],
    self_rows: np.ndarray,
    *,
    recall_at: int = TUNE_K,
    k_factor: int | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    nprobe: int | None = None,
    max_cost_vs_exact: float | None = 1.0,
    seed: int = 0,
) -> IvfTuning:
    """Measure recall@k (k = `recall_at`) of IVF + exact refinement against exact search; pick the smallest
    sufficient nprobe, then the smallest sufficient refine factor (`k_factor`: candidates re-scored exactly =
    k_factor·k).

    Queries are *stored* vectors (`self_rows`, held out of the k-means sample by `build_approximate`), each kind
    formed as the index forms real queries (`tuning_queries`); both searches fetch k + 1 and drop the query's own
    row, so recall is over its k true neighbours. Why stored vectors and not perturbed copies: a training sample
    querying with its own image and caption, itself excluded, is exactly how RAG-in-Training queries the index,
    and held-out rows of the data come from the data's own distribution, whereas any perturbation would be an
    invented noise level the tuner could be tuned to. (Held-out rows lie where the data lies: queries farther from
    the data than its rows lie from each other can see a lower recall; the benchmark checks unseen queries.)

    Both ladders are faiss's `ParameterSpace` ranges for the index: nprobe 1, 2, 4, … below nlist, plus nlist
    itself; k_factor 1, 2, 4, … 64. Recall is the minimum over the query kinds. Phase 1 climbs nprobe at the
    largest k_factor (so that the 8-bit codes' ranking does not hide what probing finds) and stops at the first
    nprobe reaching `target_recall`; with `max_cost_vs_exact` set, it also stops once the next rung, costing about
    nprobe-proportionally more, would be slower than that multiple of exact search. Phase 2 keeps that nprobe and
    takes the smallest k_factor (from `MIN_K_FACTOR`) still reaching the target. Exact search is chosen when no
    rung reached the target, or the chosen setting (best of three timings) is slower than `max_cost_vs_exact` ×
    exact. `max_cost_vs_exact=None` skips the time comparisons, so the choice depends only on the data and `seed`
    (timings are still recorded). A fixed `nprobe` / `k_factor` is kept as given and measured (a warning when
    it misses the target). `seed` is recorded only (it drew `self_rows` and seeded k-means).
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    if max_cost_vs_exact is not None and max_cost_vs_exact <= 0:
        raise ValueError(f"max_cost_vs_exact must be > 0 or None, got {max_cost_vs_exact}")
    for name, value in (("nprobe", nprobe), ("k_factor", k_factor)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    nq = int(self_rows.size)
    fetch = min(recall_at + 1, exact.ntotal)
    kinds = list(queries)

    def timed(index: Any) -> tuple[float, dict[str, np.ndarray]]:
        start = time.perf_counter()
        rows = {kind: _search(index, queries[kind], fetch)[1] for kind in kinds}
        ms = (time.perf_counter() - start) * 1000 / (nq * len(kinds))
        return ms, {kind: _topk_without_self(r, self_rows, recall_at) for kind, r in rows.items()}

    exact_ms, truth = timed(exact)
    if exact_ms * nq * len(kinds) < 1000:  # a cheap search is timed twice (noise); a long one is stable enough
        exact_ms = min(exact_ms, timed(exact)[0])
    refine = faiss.IndexRefine(ivf, exact)
    space = faiss.ParameterSpace()
    space.initialize(refine)
    ranges = {}
    for r in range(space.parameter_ranges.size()):
        pr = space.parameter_ranges.at(r)  # a copy whose `values` dies with it: read them now
        ranges[pr.name] = [int(v) for v in faiss.vector_to_array(pr.values)]
    probes, factors = sorted({*ranges["nprobe"], ivf.nlist}), ranges["k_factor_rf"]
    curve: list[dict[str, float]] = []

    def measure(p: int, kf: int) -> dict[str, float]:
        space.set_index_parameter(refine, "nprobe", p)
        space.set_index_parameter(refine, "k_factor_rf", kf)
        faiss.cvar.indexIVF_stats.reset()
        ms, found = timed(refine)
        point = {"nprobe": p, "k_factor": kf, "ms_per_query": round(ms, 4),
                 "scanned": round(faiss.cvar.indexIVF_stats.ndis / (nq * len(kinds) * max(1, exact.ntotal)), 4)}
        recalls = {kind: _recall(found[kind], truth[kind]) for kind in kinds}
        point.update({f"recall_{kind}": round(r, 4) for kind, r in recalls.items()})
        point["recall"] = round(min(recalls.values()), 4)
        curve.append(point)
        return point

    # phase 1: the smallest nprobe, at the widest refinement
    wide = k_factor or max(factors)
    chosen: dict[str, float] | None = None
    for i, p in enumerate([min(nprobe, ivf.nlist)] if nprobe is not None else probes):
        point = measure(p, wide)
        if point["recall"] >= target_recall or nprobe is not None:
            chosen = point
            break
        following = probes[i + 1] if i + 1 < len(probes) else None
        if max_cost_vs_exact is not None and following is not None and \
                point["ms_per_query"] * following / p > max_cost_vs_exact * exact_ms:
            break
    # phase 2: the smallest k_factor at that nprobe
    if chosen is not None and chosen["recall"] >= target_recall and k_factor is None:
        for kf in (f for f in factors if MIN_K_FACTOR <= f < wide):
            point = measure(int(chosen["nprobe"]), kf)
            if point["recall"] >= target_recall:
                chosen = point
                break
    best = max(curve, key=lambda c: c["recall"])
    common = dict(target_recall=float(target_recall), k=recall_at, queries=nq * len(kinds), seed=seed,
                  exact_ms_per_query=round(exact_ms, 4), curve=curve)  # fmt: skip
    if chosen is None:
        return IvfTuning(search="exact", chosen_by="tuner", nprobe=None, k_factor=int(best["k_factor"]), recall=1.0,
                         approx_ms_per_query=None,
                         reason=(f"recall@{recall_at} {target_recall} not reached: best {best['recall']} at nprobe "
                                 f"{best['nprobe']} of {ivf.nlist} lists, k_factor {best['k_factor']}"
                                 + ("" if best["nprobe"] == ivf.nlist else
                                    f" ({best['ms_per_query']} ms/query; more lists would be slower than exact "
                                    f"search's {round(exact_ms, 4)})")),
                         **common)  # fmt: skip
    setting = f"nprobe {chosen['nprobe']} of {ivf.nlist} lists, k_factor {chosen['k_factor']}"
    space.set_index_parameter(refine, "nprobe", int(chosen["nprobe"]))
    space.set_index_parameter(refine, "k_factor_rf", int(chosen["k_factor"]))
    approx_ms = min([chosen["ms_per_query"], *(timed(refine)[0] for _ in range(2))])
    found = dict(nprobe=int(chosen["nprobe"]), k_factor=int(chosen["k_factor"]), recall=chosen["recall"],
                 approx_ms_per_query=round(approx_ms, 4))  # fmt: skip
    if nprobe is not None or k_factor is not None:
        if chosen["recall"] < target_recall:
            logger.warning("approximate index at the given %s: recall@%d %.3f is below the target %.3f", setting,
                           recall_at, chosen["recall"], target_recall)  # fmt: skip
        if nprobe is not None:
            return IvfTuning(search="approximate", chosen_by="caller", reason=f"{setting} (nprobe given by the caller)",
                             **found, **common)  # fmt: skip
    if max_cost_vs_exact is not None and approx_ms > max_cost_vs_exact * exact_ms:
        return IvfTuning(search="exact", chosen_by="tuner", **{**found, "nprobe": None, "recall": 1.0},
                         reason=(f"recall@{recall_at} {chosen['recall']} needs {setting}, {round(approx_ms, 4)} "
                                 f"ms/query: slower than exact search's {round(exact_ms, 4)}"), **common)  # fmt: skip
    return IvfTuning(search="approximate", chosen_by="tuner", **found,
                     reason=(f"smallest setting with recall@{recall_at} >= {target_recall}: {setting}, recall "
                             f"{chosen['recall']}, {round(approx_ms, 4)} vs exact {round(exact_ms, 4)} ms/query"),
                     **common)  # fmt: skip


def build_approximate(
    exact: Any,
    *,
    alpha: float,
    image_dim: int,
    nlist: int | None = None,
    nprobe: int | None = None,
    k_factor: int | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    max_cost_vs_exact: float | None = 1.0,
    tune_queries: int = TUNE_QUERIES,
    train_size: int = 100_000,
    seed: int = 0,
    tuning_vectors: np.ndarray | None = None,
) -> tuple[Any | None, dict[str, Any], IvfTuning]:
    """The approximate half of `HybridIndex.from_embeddings`: IVF-SQ8 over the flat index `exact`, tuned.

    `tuning_vectors` (q, d), when given, are the tuning queries instead of held-out stored rows: query vectors
    formed as the index forms them (`HybridIndex.query_vectors`) from images *not* in the index — a sample of the
    queries it will answer. Held-out stored rows can overstate recall where the indexed data has near-copies of
    every row (each row's neighbours are then its own copies) and real queries have none: measured on the demo
    encoders' embeddings tiled to 1M, 0.973 on stored rows against 0.904 on validation images at the same setting.

    Picks `tune_queries` stored rows (seeded by `seed`, at most a tenth of the index), builds the IVF on the flat
    index's own storage with those rows left out of k-means (`build_ivf`), then measures it (`tune_nprobe`).
    Returns (IVF index, or None when exact search was chosen — its memory is freed; the `IndexInfo.approximate`
    params, nprobe None when exact; the tuning record).
    """
    n = exact.ntotal
    if n < 2:
        raise ValueError(f"an approximate index needs at least 2 references, got {n}")
    if tune_queries < 1:
        raise ValueError(f"tune_queries must be >= 1, got {tune_queries}")
    matrix = flat_vectors(exact)
    rng = np.random.default_rng(seed)
    held_out = np.sort(rng.choice(n, min(tune_queries, max(1, n // 10)), replace=False))
    ivf, params = build_ivf(matrix, nlist=nlist, nprobe=nprobe or 1, k_factor=k_factor or 0, train_size=train_size,
                            seed=seed, holdout=held_out)  # fmt: skip
    if tuning_vectors is None:
        queries, self_rows = tuning_queries(matrix, held_out, alpha=alpha, image_dim=image_dim), held_out
    else:
        given = np.ascontiguousarray(tuning_vectors, dtype=np.float32)
        if given.ndim != 2 or given.shape[1] != matrix.shape[1] or not len(given):
            raise ValueError(f"tuning_vectors must be (q >= 1, {matrix.shape[1]}) query vectors, got {given.shape}")
        queries, self_rows = {"given": given}, np.full(len(given), -1, dtype=np.int64)  # no own row to drop
    tuning = tune_nprobe(ivf, exact, queries, self_rows, k_factor=k_factor, target_recall=target_recall,
                         nprobe=nprobe, max_cost_vs_exact=max_cost_vs_exact, seed=seed)  # fmt: skip
    if tuning_vectors is not None:
        tuning = replace(tuning, query_source="caller")
    params.update(nprobe=tuning.nprobe, k_factor=tuning.k_factor)
    if tuning.search == "exact":
        logger.info("approximate index not kept: %s", tuning.reason)
        return None, params, tuning
    ivf.nprobe = tuning.nprobe
    return ivf, params, tuning

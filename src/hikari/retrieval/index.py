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
index's vectors, so no extra full copy is kept). `nprobe` trades speed for recall.

Exclusions: a query never gets back its own id, a reference from its source image (same normalised
`ori_file_path`) or a near-duplicate picture (pHash within the split's threshold). Search over-fetches k + margin
candidates, drops excluded ones and fetches more (×4) for the queries that were left short.

On disk (`save`, atomic: written to a sibling temporary directory, then renamed into place):
    index.json          metadata: encoders, α, split path + fingerprint, dims, counts, format version
    references.json     per reference: id, file name, label, caption, source, pHash, image path
    exact.faiss         IndexFlatIP over [e_img, e_txt] (the embeddings themselves)
    approx.faiss        (optional) the IVF-SQ8 first stage
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from hikari.config import DEFAULT_HASH_THRESHOLD
from hikari.data.hashing import popcount
from hikari.utils.io import atomic_directory

INDEX_FORMAT = "hikari-rag-index"
INDEX_VERSION = 1
Strategy = Literal["text", "image_text", "image"]
_HASH_WORDS = 4  # 256-bit pHash as four uint64 words
BLAS_DATABASE_BLOCK = 16_384


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
    approximate: dict[str, Any] | None = None  # {"nlist", "nprobe", "k_factor"} when an IVF index exists
    # train images left out because they could not be read: {"file_name", "error"} each
    skipped: list[dict[str, str]] = field(default_factory=list)
    format: str = INDEX_FORMAT
    version: int = INDEX_VERSION


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
        nprobe: int = 16,
        k_factor: int = 8,
        train_size: int = 100_000,
        seed: int = 0,
        **info: Any,
    ) -> HybridIndex:
        """Build the index from unit-norm embeddings (checked); `info` fills the remaining `IndexInfo` fields."""
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
        meta = IndexInfo(alpha=float(alpha), image_dim=d_img, text_dim=d_txt, **info)
        approx = None
        if approximate:
            approx, meta.approximate = build_ivf(matrix, nlist=nlist, nprobe=nprobe, k_factor=k_factor,
                                                 train_size=train_size, seed=seed)  # fmt: skip
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
        index = self._searcher(approximate)
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

    def _searcher(self, approximate: bool) -> Any:
        if not approximate:
            return self.exact
        if self.approx is None:
            raise ValueError("this index was built without an approximate (IVF) index; rebuild with approximate")
        refine = faiss.IndexRefine(self.approx, self.exact)
        refine.k_factor = float(self.info.approximate["k_factor"] if self.info.approximate else 8)
        self._keep_alive = refine  # the refine wrapper does not own its sub-indexes; keep the pair together
        return refine

    def _run(self, index: Any, vectors: np.ndarray, fetch: int, approximate: bool) -> tuple[np.ndarray, np.ndarray]:
        if approximate:
            self.approx.nprobe = int(self.info.approximate["nprobe"]) if self.info.approximate else 16
        # Exact search multiplies query blocks by database blocks of this many rows (BLAS), then updates the top-k
        # heaps; faiss's default of 1,024 rows makes the heap updates dominate for wide (1,792-d) vectors, 16,384
        # rows measured ~1.9x faster (benchmarks/retrieval.py), on par with a plain numpy matmul. Restored after.
        previous = faiss.cvar.distance_compute_blas_database_bs
        faiss.cvar.distance_compute_blas_database_bs = max(previous, BLAS_DATABASE_BLOCK)
        try:
            return index.search(vectors, fetch)
        finally:
            faiss.cvar.distance_compute_blas_database_bs = previous

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
        if raw.get("format") != INDEX_FORMAT or raw.get("version") != INDEX_VERSION:
            raise ValueError(f"{meta_path}: format {raw.get('format')!r} v{raw.get('version')!r} is not "
                             f"{INDEX_FORMAT!r} v{INDEX_VERSION}")  # fmt: skip
        info = IndexInfo(**raw)
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


def default_nlist(n: int) -> int:
    """√n lists, but at least 39 training points per list (faiss's minimum for a sensible k-means)."""
    return max(1, min(int(np.sqrt(n)), n // 39))


def build_ivf(
    matrix: np.ndarray, *, nlist: int | None, nprobe: int, k_factor: int, train_size: int, seed: int
) -> tuple[Any, dict[str, Any]]:
    """IVF-SQ8 (inner product) over `matrix` rows (n, d), trained on a seeded sample; returns (index, params)."""
    n, d = matrix.shape
    nlist = nlist or default_nlist(n)
    if nlist < 1 or nlist > n:
        raise ValueError(f"nlist must be in [1, {n}], got {nlist}")
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    ivf.own_fields = True
    quantizer.this.disown()
    rng = np.random.default_rng(seed)
    sample = matrix if n <= train_size else matrix[np.sort(rng.choice(n, train_size, replace=False))]
    ivf.cp.seed = seed
    ivf.train(sample)
    step = 100_000
    for start in range(0, n, step):
        ivf.add(matrix[start : start + step])
    ivf.nprobe = nprobe
    return ivf, {"nlist": nlist, "nprobe": nprobe, "k_factor": k_factor}

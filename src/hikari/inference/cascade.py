"""The full HIKARI cascade on new images: Stage 1 group → Stage 2 diagnosis (with reference cases) → Stage 3
guided caption.

    results = run_cascade(["lesion.png"], stage1="runs/subaru", stage2="runs/sirius", stage3="runs/vega",
                          refs="runs/rag-r2", k=3)
    print(render_summary(results))          # or json.dumps([r.to_dict() for r in results])

Per image:
1. Stage 1 answers the disease group.
2. With `refs`, the K most similar training cases are retrieved (the query picture itself and near-duplicates
   by pHash are never returned). The query *text* of the hybrid score is the user's text when given, else — with
   `query_text="caption"` — the model's own unguided Stage 3 caption, generated first; never a ground truth.
3. Stage 2 answers the disease, shown the references (image + "Reference i: {label}" [+ description]).
4. Stage 3 writes the caption guided by the diagnosis ("Stage 2 diagnosis: {label}.\n\n" prefix, as the
   original's guided evaluation).

A stage directory is a merged model (or hub id), or a training run directory (base + LoRA adapter from its
run_info.json). Stages are loaded one at a time and released after use, so only one VLM is in memory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from hikari.config import DataConfig, RagConfig, default
from hikari.data import prompts as P
from hikari.data.hashing import image_hash
from hikari.data.images import load_rgb
from hikari.data.labels import DISEASES, GROUPS
from hikari.evaluation.parsing import parse_caption, parse_diagnosis
from hikari.inference.engines import DEFAULT_MAX_NEW_TOKENS, Engine, TransformersEngine
from hikari.inference.predict import resolve_prompt
from hikari.models.load import load_model, load_processor
from hikari.models.lora import load_adapter
from hikari.retrieval.index import Exclusion, HybridIndex
from hikari.retrieval.references import encoders_for, reference_triples

QueryText = Literal["caption", "none"]


@dataclass
class CascadeResult:
    """One image through the cascade; raw outputs are kept next to the parsed answers."""

    image: str
    group: str
    diagnosis: str
    caption: str
    references: list[dict[str, Any]] = field(default_factory=list)
    query_text: str | None = None  # the retrieval query text (user text or unguided Stage 3 caption)
    query_text_source: str = "none"  # "user" | "stage3_caption" | "none"
    raw: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_stage_engine(path: str | Path, *, dtype: str = "auto", device: str | None = None,
                      batch_size: int = 4) -> Engine:  # fmt: skip
    """A transformers engine for a merged model / hub id, or for a run directory (base + adapter, unmerged)."""
    run_info = Path(path) / "run_info.json"
    if not run_info.is_file():
        return TransformersEngine(path, dtype=dtype, device=device, batch_size=batch_size)
    info = json.loads(run_info.read_text(encoding="utf-8"))
    adapter = Path(path) / info["adapter"]
    model = load_model(info["base_model"], dtype=dtype, device_map={"": device} if device else None)
    model = load_adapter(model, adapter, trainable=False).eval()
    processor = load_processor(adapter if (adapter / "preprocessor_config.json").is_file() else info["base_model"],
                               padding_side="left")  # fmt: skip
    return TransformersEngine.from_model(model, processor, batch_size=batch_size)


def _generate(stage: str | Path, batch: list[list[dict[str, Any]]], max_new_tokens: int, engine_kw: dict[str, Any]
              ) -> list[str]:  # fmt: skip
    with load_stage_engine(stage, **engine_kw) as engine:
        return engine.generate(batch, max_new_tokens=max_new_tokens)


def run_cascade(
    images: Sequence[str | Path],
    *,
    stage1: str | Path,
    stage2: str | Path,
    stage3: str | Path,
    refs: str | Path | None = None,
    k: int = default(RagConfig, "k_eval"),
    texts: Sequence[str | None] | None = None,
    query_text: QueryText = "caption",
    reference_text: str = "label_description",
    stage2_prompt: str = "P0",
    dtype: str = "auto",
    device: str | None = None,
    batch_size: int = 4,
    image_max_size: int | None = default(DataConfig, "max_image_size"),
    encoder_device: str = "cpu",
    trust_remote_code: bool = False,
    alpha: float | None = None,
) -> list[CascadeResult]:
    """Run the cascade on image files and return one `CascadeResult` per image, in order.

    Args:
        images: image files.
        stage1, stage2, stage3: merged model dirs / hub ids, or run directories (base + adapter).
        refs: retrieval index directory for Stage 2 references (None: no references).
        k: references per image.
        texts: optional user text per image (the retrieval query text; overrides the Stage 3 caption).
        query_text: without user text, "caption" uses the model's own unguided Stage 3 caption as the query
            text (one extra Stage 3 pass), "none" queries with the image alone.
        reference_text: "label" or "label_description" (the original's inference format).
        stage2_prompt: P0..P3 or T0..T2 (see `hikari.inference.predict.resolve_prompt`).
    """
    if not images:
        return []
    if texts is not None and len(texts) != len(images):
        raise ValueError(f"{len(images)} images but {len(texts)} texts")
    if query_text not in ("caption", "none"):
        raise ValueError(f"query_text must be 'caption' or 'none', got {query_text!r}")
    _, stage2_builder = resolve_prompt("disease", stage2_prompt)
    question = stage2_builder(None)[0]["content"][-1]["text"]
    pil = [load_rgb(Path(p), max_size=image_max_size) for p in images]  # fails early, naming the file
    engine_kw = {"dtype": dtype, "device": device, "batch_size": batch_size}
    results = [CascadeResult(image=str(p), group="", diagnosis="", caption="") for p in images]

    raw1 = _generate(stage1, [P.stage1_messages(im, 0) for im in pil], DEFAULT_MAX_NEW_TOKENS["group"], engine_kw)
    for r, raw in zip(results, raw1, strict=True):
        r.group, r.raw["stage1"] = parse_diagnosis(raw, GROUPS).label, raw

    references: list[list[tuple[Any, str, str | None]]] | None = None
    if refs is not None:
        user = list(texts) if texts is not None else [None] * len(images)
        need_caption = [i for i, t in enumerate(user) if not t and query_text == "caption"]
        if need_caption:
            raw3 = _generate(stage3, [P.stage3_messages(pil[i], 0) for i in need_caption],
                             DEFAULT_MAX_NEW_TOKENS["caption"], engine_kw)  # fmt: skip
            for i, raw in zip(need_caption, raw3, strict=True):
                results[i].raw["stage3_unguided"] = raw
                user[i] = parse_caption(raw).text or None
        for i, t in enumerate(user):
            results[i].query_text = t
            results[i].query_text_source = "none" if not t else ("user" if texts and texts[i] else "stage3_caption")
        references = _retrieve(Path(refs), images, pil, user, k=k, reference_text=reference_text, alpha=alpha,
                               device=encoder_device, trust_remote_code=trust_remote_code, results=results)  # fmt: skip

    batch2 = [P.rag_messages(im, question, [(load_rgb(p, max_size=image_max_size), lab, cap) for p, lab, cap in rs])
              if references is not None else stage2_builder(im)
              for im, rs in zip(pil, references or [[]] * len(pil), strict=True)]  # fmt: skip
    raw2 = _generate(stage2, batch2, DEFAULT_MAX_NEW_TOKENS["disease"], engine_kw)
    for r, raw in zip(results, raw2, strict=True):
        r.diagnosis, r.raw["stage2"] = parse_diagnosis(raw, DISEASES).label, raw

    batch3 = [P.stage3_messages(im, 0, guided_label=r.diagnosis) for im, r in zip(pil, results, strict=True)]
    raw3 = _generate(stage3, batch3, DEFAULT_MAX_NEW_TOKENS["caption"], engine_kw)
    for r, raw in zip(results, raw3, strict=True):
        r.caption, r.raw["stage3"] = parse_caption(raw).text, raw
    return results


def _retrieve(
    index_dir: Path, paths: Sequence[str | Path], pil: list[Any], query_texts: list[str | None], *, k: int,
    reference_text: str, alpha: float | None, device: str, trust_remote_code: bool, results: list[CascadeResult],
) -> list[list[tuple[Any, str, str | None]]]:  # fmt: skip
    """Top-k references per image (the picture itself and near-duplicates excluded), as prompt triples."""
    index = HybridIndex.load(index_dir)
    encoders = encoders_for(index, device=device, trust_remote_code=trust_remote_code)
    image_emb = encoders.encode_images(pil)
    exclusions = [Exclusion(phash=image_hash(Path(p))) for p in paths]
    out: list[list[tuple[Any, str, str | None]]] = [[] for _ in paths]
    with_text = [i for i, t in enumerate(query_texts) if t and encoders.has_text]
    without = [i for i in range(len(paths)) if i not in set(with_text)]
    for rows, text in ((with_text, True), (without, False)):
        if not rows:
            continue
        text_emb = encoders.encode_texts([query_texts[i] or "" for i in rows], query=True) if text else None
        strategy = "text" if text else ("image_text" if index.info.encoder.get("aligned") and index.info.text_dim
                                        else "image")  # fmt: skip
        hits = index.search(image_emb[rows], text_emb, k=k, exclude=[exclusions[i] for i in rows],
                            strategy=strategy, alpha=alpha)  # fmt: skip
        for i, found in zip(rows, hits, strict=True):
            results[i].references = [{key: h.to_dict()[key] for key in
                                      ("file_name", "label", "score", "cos_image", "cos_text", "caption")}
                                     for h in found]  # fmt: skip
            out[i] = reference_triples(found, reference_text)
    return out


def render_summary(results: Sequence[CascadeResult]) -> str:
    """A readable text summary: per image the group, the diagnosis with its references, and the caption."""
    lines: list[str] = []
    for r in results:
        lines += [f"== {r.image}", f"Stage 1 group:     {r.group}", f"Stage 2 diagnosis: {r.diagnosis}"]
        if r.references:
            how = {"user": "image + your text", "stage3_caption": "image + the model's own caption"}.get(
                r.query_text_source, "image only")
            lines.append(f"  references ({how}):")
            lines += [f"    {i}. {ref['label']} (score {ref['score']:.3f}, {ref['file_name']})"
                      for i, ref in enumerate(r.references, 1)]  # fmt: skip
        lines += [f"Stage 3 caption:   {r.caption}", ""]
    return "\n".join(lines)

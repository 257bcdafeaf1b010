"""The full HIKARI cascade on new images: Stage 1 group → Stage 2 diagnosis (with reference cases) → Stage 3
guided caption.

    results = run_cascade(["lesion.png"], stage1="runs/subaru", stage2="runs/sirius", stage3="runs/vega",
                          refs="runs/rag-r2", k=3)
    print(render_summary(results))          # or json.dumps([r.to_dict() for r in results])

Per image:
1. Stage 1 answers the disease group.
2. With references, the K most similar training cases are retrieved (the query picture itself and near-duplicates
   by pHash are never returned). The query *text* of the hybrid score is the user's text when given, else — with
   `query_text="caption"` — the model's own unguided Stage 3 caption, generated first; never a ground truth.
3. Stage 2 answers the disease, shown the references (image + "Reference i: {label}" [+ description]).
4. Stage 3 writes the caption guided by the diagnosis ("Stage 2 diagnosis: {label}.\\n\\n" prefix, as the
   original's guided evaluation) — with one or several Stage 3 models (side by side: Vega and Antares).

With a transformers engine the exact probability of every group and every disease is scored too (teacher-forced
answer log-likelihoods, as `hikari predict --group-probabilities`).

`cascade_images` runs the cascade on decoded images with any `StageRunner`: `StagesInMemory` keeps every stage's
engine loaded (the server), `StagesOneAtATime` loads each stage, uses it and releases it, so only one VLM is in
memory (`run_cascade`, `hikari cascade`). A stage is a merged model (or hub id), or a training run directory
(base + LoRA adapter from its run_info.json).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from PIL import Image

from hikari.config import DataConfig, RagConfig, default
from hikari.data import prompts as P
from hikari.data.hashing import image_hash
from hikari.data.images import load_rgb
from hikari.data.labels import DISEASES, GROUPS
from hikari.evaluation.parsing import parse_caption, parse_diagnosis
from hikari.inference.engines import DEFAULT_MAX_NEW_TOKENS, Engine, TransformersEngine, make_engine
from hikari.inference.predict import resolve_prompt
from hikari.inference.scoring import choice_probabilities
from hikari.models.load import load_model, load_processor
from hikari.models.lora import load_adapter
from hikari.retrieval.encoders import Encoders
from hikari.retrieval.index import Exclusion, Hit, HybridIndex
from hikari.retrieval.references import encoders_for, load_reference_images, reference_triples

QueryText = Literal["caption", "none"]
logger = logging.getLogger(__name__)

Messages = list[dict[str, Any]]


@dataclass
class CascadeResult:
    """One image through the cascade; raw outputs are kept next to the parsed answers.

    `caption` is the first Stage 3 model's; `captions` holds every Stage 3 model's by name. Probabilities are over
    the 4 groups / 10 diseases (None when the stage's engine cannot score answers); `timings_ms` is each stage's
    time for the batch this image was in."""

    image: str
    group: str
    diagnosis: str
    caption: str
    references: list[dict[str, Any]] = field(default_factory=list)
    query_text: str | None = None  # the retrieval query text (user text or unguided Stage 3 caption)
    query_text_source: str = "none"  # "user" | "stage3_caption" | "none"
    raw: dict[str, str] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    group_probabilities: dict[str, float] | None = None
    disease_probabilities: dict[str, float] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # set (and the answers empty) when the image could not be read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------------------------
def load_stage_engine(
    path: str | Path,
    *,
    dtype: str = "auto",
    device: str | None = None,
    batch_size: int = 4,
    engine: str = "transformers",
    engine_options: Mapping[str, Any] | None = None,
) -> Engine:
    """An engine for a merged model / hub id, or for a run directory (base + adapter, unmerged; transformers only:
    vLLM and SGLang serve merged models — `hikari merge` first)."""
    run_info = Path(path) / "run_info.json"
    if engine != "transformers":
        if run_info.is_file():
            raise ValueError(f"{path} is a training run (base + adapter); the {engine} engine serves merged models: "
                             f"`hikari merge {path} --out DIR` and give DIR")  # fmt: skip
        return make_engine(engine, path, **dict(engine_options or {}))
    options = {"dtype": dtype, "device": device, "batch_size": batch_size, **dict(engine_options or {})}
    if not run_info.is_file():
        return TransformersEngine(path, **options)
    info = json.loads(run_info.read_text(encoding="utf-8"))
    adapter = Path(path) / info["adapter"]
    model = load_model(info["base_model"], dtype=options["dtype"],
                       device_map={"": options["device"]} if options["device"] else None)  # fmt: skip
    model = load_adapter(model, adapter, trainable=False).eval()
    processor = load_processor(adapter if (adapter / "preprocessor_config.json").is_file() else info["base_model"],
                               padding_side="left")  # fmt: skip
    return TransformersEngine.from_model(model, processor, batch_size=options["batch_size"])


def stage_fingerprint(path: str | Path) -> dict[str, Any]:
    """What identifies the weights behind a stage: a run's name, base, split fingerprint and adapter hash; a merged
    directory's config hash and weight files; a hub id or a server URL (the openai engine) as given."""
    if str(path).startswith(("http://", "https://")):
        return {"kind": "remote", "url": str(path)}
    path = Path(path)
    if (path / "run_info.json").is_file():
        info = json.loads((path / "run_info.json").read_text(encoding="utf-8"))
        adapter = path / info["adapter"] / "adapter_model.safetensors"
        digest = hashlib.sha256(adapter.read_bytes()).hexdigest()[:16] if adapter.is_file() else None
        return {"kind": "run", "path": str(path), "name": info.get("name"), "base_model": info.get("base_model"),
                "split_fingerprint": info.get("split_fingerprint"), "adapter_sha256": digest}  # fmt: skip
    if (path / "config.json").is_file():
        h = hashlib.sha256((path / "config.json").read_bytes())
        for shard in sorted(path.glob("*.safetensors")):
            h.update(f"{shard.name}:{shard.stat().st_size}".encode())
        return {"kind": "model", "path": str(path), "sha256": h.hexdigest()[:16]}
    return {"kind": "hub", "id": str(path)}


def _scorable(engine: Engine) -> tuple[Any, Any] | None:
    model, processor = getattr(engine, "model", None), getattr(engine, "processor", None)
    return (model, processor) if model is not None and processor is not None and hasattr(model, "forward") else None


def _run(engine: Engine, batch: list[Messages], max_new_tokens: int, choices: Sequence[str] | None
         ) -> tuple[list[str], torch.Tensor | None]:  # fmt: skip
    texts = engine.generate(batch, max_new_tokens=max_new_tokens)
    scorer = _scorable(engine) if choices else None
    probs = choice_probabilities(scorer[0], scorer[1], batch, choices) if scorer and choices else None
    return texts, probs


class StageRunner(Protocol):
    """Generates with the model of a stage; with `choices`, also P(choice | conversation) when it can score."""

    def run(self, stage: str, batch: list[Messages], max_new_tokens: int, choices: Sequence[str] | None = None
            ) -> tuple[list[str], torch.Tensor | None]: ...  # fmt: skip


class StagesInMemory:
    """Every stage's engine, loaded once (the server)."""

    def __init__(self, engines: Mapping[str, Engine]) -> None:
        self.engines = dict(engines)

    def run(self, stage: str, batch: list[Messages], max_new_tokens: int, choices: Sequence[str] | None = None
            ) -> tuple[list[str], torch.Tensor | None]:  # fmt: skip
        return _run(self.engines[stage], batch, max_new_tokens, choices)


class StagesOneAtATime:
    """Loads a stage's engine for each call and releases it after (one VLM in memory at a time)."""

    def __init__(self, paths: Mapping[str, str | Path], **engine_kw: Any) -> None:
        self.paths, self.engine_kw = dict(paths), engine_kw

    def run(self, stage: str, batch: list[Messages], max_new_tokens: int, choices: Sequence[str] | None = None
            ) -> tuple[list[str], torch.Tensor | None]:  # fmt: skip
        with load_stage_engine(self.paths[stage], **self.engine_kw) as engine:
            return _run(engine, batch, max_new_tokens, choices)


# ---------------------------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------------------------
class ReferenceSearch:
    """A reference index and the very encoders it was built with, loaded once."""

    def __init__(self, index_dir: str | Path, *, device: str = "cpu", trust_remote_code: bool = False) -> None:
        self.index = HybridIndex.load(Path(index_dir))
        self.encoders: Encoders = encoders_for(self.index, device=device, trust_remote_code=trust_remote_code)
        self.by_file_name = {r.file_name: r for r in self.index.references}

    def search(self, images: Sequence[Image.Image], query_texts: Sequence[str | None], *, k: int,
               alpha: float | None = None) -> list[list[Hit]]:  # fmt: skip
        """Top-k references per image; the picture itself and its near-duplicates (pHash) are never returned."""
        image_emb = self.encoders.encode_images(list(images))
        exclusions = [Exclusion(phash=image_hash(im)) for im in images]
        out: list[list[Hit]] = [[] for _ in images]
        with_text = [i for i, t in enumerate(query_texts) if t and self.encoders.has_text]
        without = [i for i in range(len(images)) if i not in set(with_text)]
        for rows, text in ((with_text, True), (without, False)):
            if not rows:
                continue
            text_emb = self.encoders.encode_texts([query_texts[i] or "" for i in rows], query=True) if text else None
            aligned = self.index.info.encoder.get("aligned") and self.index.info.text_dim
            strategy = "text" if text else ("image_text" if aligned else "image")
            hits = self.index.search(image_emb[rows], text_emb, k=k, exclude=[exclusions[i] for i in rows],
                                     strategy=strategy, alpha=alpha)  # fmt: skip
            for i, found in zip(rows, hits, strict=True):
                out[i] = found
        return out


# ---------------------------------------------------------------------------------------------------------------
# The cascade
# ---------------------------------------------------------------------------------------------------------------
def _probabilities(row: torch.Tensor | None, labels: Sequence[str]) -> dict[str, float] | None:
    return None if row is None else {label: round(float(p), 6) for label, p in zip(labels, row, strict=True)}


def cascade_images(
    images: Sequence[Image.Image],
    names: Sequence[str],
    stages: StageRunner,
    *,
    stage3: Sequence[str] = ("stage3",),
    references: ReferenceSearch | None = None,
    k: int = default(RagConfig, "k_eval"),
    texts: Sequence[str | None] | None = None,
    query_text: QueryText = "caption",
    reference_text: str = "label_description",
    reference_max_size: int | None = default(DataConfig, "max_image_size"),
    stage2_prompt: str = "P0",
    max_new_tokens: Mapping[str, int] | None = None,
    probabilities: bool = True,
    alpha: float | None = None,
) -> list[CascadeResult]:
    """The cascade for decoded RGB `images` (named `names` in the results), with the stages `stages` runs:
    "stage1", "stage2" and each of `stage3` (the first writes the unguided query caption). `max_new_tokens`
    overrides `DEFAULT_MAX_NEW_TOKENS` per task ("group", "disease", "caption")."""
    if texts is not None and len(texts) != len(images):
        raise ValueError(f"{len(images)} images but {len(texts)} texts")
    if query_text not in ("caption", "none"):
        raise ValueError(f"query_text must be 'caption' or 'none', got {query_text!r}")
    if not stage3:
        raise ValueError("the cascade needs at least one Stage 3 model")
    budget = {**DEFAULT_MAX_NEW_TOKENS, **dict(max_new_tokens or {})}
    _, stage2_builder = resolve_prompt("disease", stage2_prompt)
    question = stage2_builder(None)[0]["content"][-1]["text"]
    results = [CascadeResult(image=str(n), group="", diagnosis="", caption="") for n in names]
    if not images:
        return results
    timings: dict[str, float] = {}

    def timed(key: str, stage: str, batch: list[Messages], task: str, choices: Sequence[str] | None = None
              ) -> tuple[list[str], torch.Tensor | None]:  # fmt: skip
        start = time.perf_counter()
        out = stages.run(stage, batch, budget[task], choices if probabilities else None)
        timings[key] = round(1000 * (time.perf_counter() - start), 1)
        return out

    raw1, probs1 = timed("stage1", "stage1", [P.stage1_messages(im, 0) for im in images], "group", GROUPS)
    for i, (r, raw) in enumerate(zip(results, raw1, strict=True)):
        r.group, r.raw["stage1"] = parse_diagnosis(raw, GROUPS).label, raw
        r.group_probabilities = _probabilities(probs1[i] if probs1 is not None else None, GROUPS)

    refs: list[list[Hit]] | None = None
    if references is not None:
        user = list(texts) if texts is not None else [None] * len(images)
        need_caption = [i for i, t in enumerate(user) if not t and query_text == "caption"]
        if need_caption:
            raw3, _ = timed("stage3_query", stage3[0], [P.stage3_messages(images[i], 0) for i in need_caption],
                            "caption")  # fmt: skip
            for i, raw in zip(need_caption, raw3, strict=True):
                results[i].raw["stage3_unguided"] = raw
                user[i] = parse_caption(raw).text or None
        for i, t in enumerate(user):
            results[i].query_text = t
            results[i].query_text_source = "none" if not t else ("user" if texts and texts[i] else "stage3_caption")
        start = time.perf_counter()
        refs = references.search(images, user, k=k, alpha=alpha)
        timings["retrieval"] = round(1000 * (time.perf_counter() - start), 1)
        for r, found in zip(results, refs, strict=True):
            r.references = [{key: h.to_dict()[key] for key in ("id", "file_name", "label", "score", "cos_image",
                                                                "cos_text", "caption")} for h in found]  # fmt: skip

    batch2: list[Messages] = []
    for i, im in enumerate(images):
        if refs is None:
            batch2.append(stage2_builder(im))
        else:
            shown = load_reference_images(reference_triples(refs[i], reference_text), max_size=reference_max_size)
            batch2.append(P.rag_messages(im, question, shown))
    targets = [P.stage2_target(d) for d in DISEASES]
    raw2, probs2 = timed("stage2", "stage2", batch2, "disease", targets)
    for i, (r, raw) in enumerate(zip(results, raw2, strict=True)):
        r.diagnosis, r.raw["stage2"] = parse_diagnosis(raw, DISEASES).label, raw
        r.disease_probabilities = _probabilities(probs2[i] if probs2 is not None else None, DISEASES)

    batch3 = [P.stage3_messages(im, 0, guided_label=r.diagnosis) for im, r in zip(images, results, strict=True)]
    for name in stage3:
        raw3, _ = timed(f"stage3:{name}" if len(stage3) > 1 else "stage3", name, batch3, "caption")
        for r, raw in zip(results, raw3, strict=True):
            r.captions[name] = parse_caption(raw).text
            r.raw[f"stage3:{name}" if len(stage3) > 1 else "stage3"] = raw
    for r in results:
        r.caption = r.captions[stage3[0]]
        r.timings_ms = dict(timings)
    return results


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
    probabilities: bool = True,
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
        probabilities: also score P(group) and P(disease) exactly (transformers engine).
    """
    if not images:
        return []
    if texts is not None and len(texts) != len(images):
        raise ValueError(f"{len(images)} images but {len(texts)} texts")
    # An unreadable image (missing, damaged, over the pixel limit) gets a result with its error; the rest run.
    pil: dict[int, Any] = {}
    failed: dict[int, str] = {}
    for i, p in enumerate(images):
        try:
            pil[i] = load_rgb(Path(p), max_size=image_max_size)
        except OSError as err:
            failed[i] = str(err)
            logger.warning("%s", err)
    done: dict[int, CascadeResult] = {}
    if pil:
        stages = StagesOneAtATime({"stage1": stage1, "stage2": stage2, "stage3": stage3}, dtype=dtype,
                                  device=device, batch_size=batch_size)  # fmt: skip
        search = (ReferenceSearch(refs, device=encoder_device, trust_remote_code=trust_remote_code)
                  if refs is not None else None)  # fmt: skip
        order = sorted(pil)
        results = cascade_images([pil[i] for i in order], [str(images[i]) for i in order], stages,
                                 references=search, k=k, texts=[texts[i] for i in order] if texts else None,
                                 query_text=query_text, reference_text=reference_text,
                                 reference_max_size=image_max_size, stage2_prompt=stage2_prompt, alpha=alpha,
                                 probabilities=probabilities)  # fmt: skip
        done = dict(zip(order, results, strict=True))
    for i, message in failed.items():
        done[i] = CascadeResult(image=str(images[i]), group="", diagnosis="", caption="", error=message)
    return [done[i] for i in range(len(images))]


def render_summary(results: Sequence[CascadeResult]) -> str:
    """A readable text summary: per image the group, the diagnosis with its references, and the caption(s)."""
    lines: list[str] = []
    for r in results:
        lines += [f"== {r.image}", f"Stage 1 group:     {r.group}", f"Stage 2 diagnosis: {r.diagnosis}"]
        if r.disease_probabilities:
            top = sorted(r.disease_probabilities.items(), key=lambda kv: -kv[1])[:3]
            lines.append("  " + ", ".join(f"{d} {100 * p:.1f}%" for d, p in top))
        if r.references:
            how = {"user": "image + your text", "stage3_caption": "image + the model's own caption"}.get(
                r.query_text_source, "image only")
            lines.append(f"  references ({how}):")
            lines += [f"    {i}. {ref['label']} (score {ref['score']:.3f}, {ref['file_name']})"
                      for i, ref in enumerate(r.references, 1)]  # fmt: skip
        if len(r.captions) > 1:
            lines += [f"Stage 3 caption ({name}): {text}" for name, text in r.captions.items()]
        else:
            lines.append(f"Stage 3 caption:   {r.caption}")
        lines.append("")
    return "\n".join(lines)

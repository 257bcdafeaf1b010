"""What the server runs: the stage models loaded once, the reference index, and the two kinds of model work —
the cascade on images and OpenAI-style chat — each taking a whole batch of requests at once.

The models are named (`subaru`, `sirius`, `vega`, … — a run's own name, or the folder's): Stage 1 and Stage 2 one
each, Stage 3 one or more (the page compares two side by side). They are loaded through the same engine interface as
`hikari predict` (transformers, vLLM or SGLang, with their options); exact answer probabilities need the
transformers engine and are left out (None) on the others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from hikari.config import DataConfig, RagConfig, default
from hikari.data.labels import DISEASES
from hikari.inference.cascade import (
    CascadeResult,
    ReferenceSearch,
    StagesInMemory,
    cascade_images,
    load_stage_engine,
    stage_fingerprint,
)
from hikari.inference.engines import Engine, TransformersEngine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageModel:
    """One served model: its public name, the stages it serves, where it came from. One model may serve several
    stages (the same folder given for Stage 1 and Stage 2 is loaded once)."""

    name: str
    stages: tuple[str, ...]  # of "stage1", "stage2", "stage3"
    path: str
    fingerprint: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CascadeRequest:
    image: Image.Image
    filename: str
    text: str | None
    k: int
    stage3: tuple[str, ...]
    max_new_tokens: int | None
    probabilities: bool


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]  # our chat format (PIL images)
    max_tokens: int
    temperature: float


@dataclass(frozen=True)
class ChatAnswer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


def is_url(path: str | Path) -> bool:
    return str(path).startswith(("http://", "https://"))


def model_name(path: str | Path, given: str | None = None) -> str:
    """A served model's name: as given, else its run's name (run_info.json), else its folder's name; for a remote
    server (the openai engine) the name after '#' in its URL, else its host:port."""
    if given:
        return given
    if is_url(path):
        url = urlsplit(str(path))
        return url.fragment or url.netloc
    info = Path(path) / "run_info.json"
    if info.is_file():
        name = json.loads(info.read_text(encoding="utf-8")).get("name")
        if name:
            return str(name)
    return Path(str(path).rstrip("/")).name or str(path)


class HikariService:
    """The served cascade. Build it with `load`; all model work goes through `cascade` and `chat`, which the
    server's worker calls with whole batches, one at a time."""

    def __init__(self, models: Sequence[StageModel], engines: Mapping[str, Engine], references: ReferenceSearch | None,
                 *, stage2_prompt: str = "P0", reference_text: str = "label_description",
                 image_max_size: int | None = default(DataConfig, "max_image_size")) -> None:  # fmt: skip
        self.models = {m.name: m for m in models}
        self.engines = dict(engines)
        self.references = references
        self.stage2_prompt, self.reference_text, self.image_max_size = stage2_prompt, reference_text, image_max_size
        self.stage1 = next(m.name for m in models if "stage1" in m.stages)
        self.stage2 = next(m.name for m in models if "stage2" in m.stages)
        self.stage3 = [m.name for m in models if "stage3" in m.stages]

    @classmethod
    def load(
        cls,
        *,
        stage1: str | Path,
        stage2: str | Path,
        stage3: Sequence[tuple[str | None, str | Path]],
        index: str | Path | None = None,
        engine: str = "transformers",
        engine_options: Mapping[str, Any] | None = None,
        dtype: str = "auto",
        device: str | None = None,
        encoder_device: str = "cpu",
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> HikariService:
        """Load every model once. `stage3`: (name or None, path) per caption model, the first the default. The same
        folder named for several stages is loaded once and serves them all."""
        specs = [(None, stage1, "stage1"), (None, stage2, "stage2"), *((n, p, "stage3") for n, p in stage3)]
        by_path: dict[str, StageModel] = {}
        for given, path, stage in specs:
            key = str(path) if is_url(path) else str(Path(path).resolve())
            name = model_name(path, given)
            if key in by_path:
                known = by_path[key]
                if given and given != known.name:
                    raise ValueError(f"{path} is served once, as {known.name!r}; it cannot also be called {given!r}")
                by_path[key] = StageModel(known.name, (*known.stages, stage), known.path, known.fingerprint)
                continue
            if any(m.name == name for m in by_path.values()):
                raise ValueError(f"two served models are both called {name!r} ({path} and another folder); "
                                 "name them (--stage3 NAME=PATH)")  # fmt: skip
            by_path[key] = StageModel(name, (stage,), str(path), stage_fingerprint(path))
        models = list(by_path.values())
        engines: dict[str, Engine] = {}
        for m in models:
            logger.info("loading %s (%s) from %s with the %s engine", m.name, ", ".join(m.stages), m.path, engine)
            engines[m.name] = load_stage_engine(m.path, dtype=dtype, device=device, engine=engine,
                                                engine_options=engine_options)  # fmt: skip
        references = None
        if index is not None:
            references = ReferenceSearch(index, device=encoder_device, trust_remote_code=trust_remote_code)
        return cls(models, engines, references, **kwargs)

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()

    # -- model work (called in the worker thread, one batch at a time) ------------------------------------------
    def cascade(self, requests: Sequence[CascadeRequest]) -> list[CascadeResult]:
        """The cascade for requests that share k, Stage 3 models, budget and probability setting."""
        first = requests[0]
        stages = StagesInMemory({"stage1": self.engines[self.stage1], "stage2": self.engines[self.stage2],
                                 **{name: self.engines[name] for name in first.stage3}})  # fmt: skip
        budget = {"caption": first.max_new_tokens} if first.max_new_tokens else None
        return cascade_images(
            [r.image for r in requests], [r.filename for r in requests], stages, stage3=first.stage3,
            references=self.references if first.k > 0 else None, k=max(first.k, 1),
            texts=[r.text for r in requests], reference_text=self.reference_text,
            reference_max_size=self.image_max_size, stage2_prompt=self.stage2_prompt, max_new_tokens=budget,
            probabilities=first.probabilities,
        )  # fmt: skip

    def chat(self, requests: Sequence[ChatRequest]) -> list[ChatAnswer]:
        """One answer per request; the requests share model, budget and temperature. Token counts are the
        generated ids themselves on the transformers engine; on the others the answer re-tokenized (and the prompt
        count is 0: they do not expose it)."""
        first = requests[0]
        engine = self.engines[first.model]
        batch = [r.messages for r in requests]
        if isinstance(engine, TransformersEngine):
            ids = engine.generate_token_ids(batch, max_new_tokens=first.max_tokens, temperature=first.temperature)
            answers = []
            for r, sequence in zip(requests, ids, strict=True):
                prompt = int(engine.encode([r.messages])["input_ids"].shape[1])
                stopped = bool(sequence) and sequence[-1] in engine.eos_token_ids
                answers.append(ChatAnswer(engine.decode(sequence), prompt, len(sequence),
                                          "stop" if stopped else "length"))  # fmt: skip
            return answers
        texts = engine.generate(batch, max_new_tokens=first.max_tokens, temperature=first.temperature)
        tokenizer = getattr(getattr(engine, "processor", None), "tokenizer", None)
        answers = []
        for text in texts:
            completion = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer is not None else 0
            answers.append(ChatAnswer(text, 0, completion, "length" if completion >= first.max_tokens else "stop"))
        return answers

    # -- description -----------------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {
            "stage1": self.stage1, "stage2": self.stage2, "stage3": self.stage3,
            "references": self.references is not None,
            "k_default": default(RagConfig, "k_eval") if self.references is not None else 0,
            "diseases": list(DISEASES),
            "probabilities": all(hasattr(self.engines[n], "model") for n in (self.stage1, self.stage2)),
            "models": {name: {"stages": list(m.stages), "fingerprint": m.fingerprint}
                       for name, m in self.models.items()},
        }  # fmt: skip

    def thumbnail_source(self, file_name: str) -> str | None:
        """The image path of a reference of the index (only those can be served)."""
        if self.references is None:
            return None
        ref = self.references.by_file_name.get(file_name)
        return ref.image_path if ref is not None else None

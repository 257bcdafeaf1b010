"""Retrieval encoders R0–R4 (one registry) and the loader of any encoder pair saved in a directory.

An encoder pair turns reference images and texts into L2-normalised embeddings:

    enc = load_encoders("R2")                      # SigLIP image tower + BGE-M3 dense text
    img = enc.encode_images(paths)                 # (n, d_img) float32, unit rows
    txt = enc.encode_texts(captions)               # (n, d_txt) float32, unit rows  (None-less only when enc.has_text)

Names come from a registry (`ENCODERS`); an unknown name raises with the valid list, and nothing ever falls back
to another encoder (the original picked encoders by substring and silently fell back to CLIP). Besides the
registry names, `load_encoders` takes a local directory holding `hikari_encoder.json` (`ENCODER_FILE`) — what
`hikari retrieve tiny-encoders` writes — so the tiny offline encoders go through the very same `from_pretrained`
path as hub ids.

How each model is read (all in plain transformers, so no extra package is needed):
- image "projected": `get_image_features` (CLIP, SigLIP): the projected pooled output;
- image "cls": the first token of the last hidden state (nomic-embed-vision-v1.5);
- image "remote": the model's own `encode_image` (jina-clip-v2's remote code);
- text "cls": first token (BGE-M3 dense — what FlagEmbedding's `dense_vecs` computes —, MedCPT);
- text "mean": attention-masked mean over tokens (ClinicalBERT, nomic-embed-text-v1.5, the tiny text encoder).
`text_backend="sentence-transformers"` / `"flagembedding"` use those packages instead (optional extras).
jina-clip-v2 and the nomic models ship their model code on the hub: they load only with `trust_remote_code=True`
(asked for explicitly). Loading the real models needs the hub (or a local copy), so only the tiny encoders are
exercised by the offline tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rich.progress import Progress
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from hikari.config import DataConfig, default
from hikari.data.images import load_rgb, to_rgb

ImageKind = Literal["projected", "cls", "remote"]
TextKind = Literal["cls", "mean"]
TextBackend = Literal["transformers", "sentence-transformers", "flagembedding"]
TEXT_BACKENDS: tuple[str, ...] = ("transformers", "sentence-transformers", "flagembedding")
ENCODER_FILE = "hikari_encoder.json"


@dataclass(frozen=True)
class EncoderSpec:
    """One image/text encoder pair. Model fields are hub ids, or paths relative to the spec's own directory."""

    name: str
    image_model: str
    image_kind: ImageKind = "projected"
    text_model: str | None = None
    text_kind: TextKind = "cls"
    text_max_length: int = 512
    query_prefix: str = ""  # prepended to query texts (nomic: "search_query: ")
    document_prefix: str = ""  # prepended to reference texts (nomic: "search_document: ")
    aligned: bool = False  # image and text embeddings share one space: Strategy A (image query vs texts) works
    needs_remote_code: bool = False
    description: str = ""


# The published retrievers (hikari-reference.md, "Retrieval (RAG)").
ENCODERS: dict[str, EncoderSpec] = {
    "R0": EncoderSpec("R0", "openai/clip-vit-base-patch32", description="CLIP ViT-B/32, image only"),
    "R1": EncoderSpec(
        "R1", "openai/clip-vit-base-patch32", text_model="medicalai/ClinicalBERT", text_kind="mean",
        description="CLIP ViT-B/32 + ClinicalBERT (mean pooled)",
    ),
    "R2": EncoderSpec(
        "R2", "google/siglip-base-patch16-512", text_model="BAAI/bge-m3", text_kind="cls", text_max_length=256,
        description="SigLIP base 512 + BGE-M3 dense (max 256 tokens)",
    ),
    "R3": EncoderSpec(
        "R3", "jinaai/jina-clip-v2", image_kind="remote", text_model="ncbi/MedCPT-Query-Encoder", text_kind="cls",
        text_max_length=256, needs_remote_code=True, description="Jina-CLIP v2 + MedCPT query encoder",
    ),
    "R4": EncoderSpec(
        "R4", "nomic-ai/nomic-embed-vision-v1.5", image_kind="cls", text_model="nomic-ai/nomic-embed-text-v1.5",
        text_kind="mean", query_prefix="search_query: ", document_prefix="search_document: ", aligned=True,
        needs_remote_code=True, description="Nomic embed vision + text v1.5 (one aligned space)",
    ),
}  # fmt: skip


def encoder_names() -> list[str]:
    return list(ENCODERS)


def resolve_encoder(name_or_dir: str | Path) -> tuple[EncoderSpec, Path | None]:
    """The spec of a registry name (R0–R4) or of a directory with `hikari_encoder.json`; (spec, that directory).

    Raises ValueError listing the valid names otherwise: no substring matching, no fallback.
    """
    text = str(name_or_dir)
    if text in ENCODERS:
        return ENCODERS[text], None
    path = Path(text).expanduser()
    if path.is_dir():
        spec_file = path / ENCODER_FILE
        if not spec_file.is_file():
            raise ValueError(f"{path} is a directory without {ENCODER_FILE}; expected an encoder name "
                             f"({', '.join(ENCODERS)}) or a directory written by `hikari retrieve tiny-encoders`")
        raw = json.loads(spec_file.read_text(encoding="utf-8"))
        try:
            return EncoderSpec(**raw), path.resolve()
        except TypeError as err:
            raise ValueError(f"{spec_file}: invalid encoder spec ({err})") from None
    raise ValueError(
        f"unknown encoder {text!r}; valid: {', '.join(f'{k} ({v.description})' for k, v in ENCODERS.items())}, "
        "or a directory holding hikari_encoder.json"
    )


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("an encoder returned an all-zero embedding; it cannot be normalised")
    return (x / norms).astype(np.float32, copy=False)


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def projected_features(output: Any) -> Any:
    """transformers v5 returns a model output whose pooler_output is the projected feature; v4 a tensor."""
    return output if not hasattr(output, "pooler_output") else output.pooler_output


class Encoders:
    """A loaded image encoder and (optionally) text encoder; every output row has unit L2 norm.

    Use `load_encoders` to build one. `spec.name` (and the model sources) are recorded in the index metadata.
    """

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        root: Path | None = None,
        device: str = "cpu",
        trust_remote_code: bool = False,
        text_backend: TextBackend = "transformers",
        ref: str | None = None,
    ) -> None:
        if spec.needs_remote_code and not trust_remote_code:
            raise ValueError(
                f"encoder {spec.name} ({spec.image_model}"
                f"{', ' + spec.text_model if spec.text_model else ''}) runs model code from the hub; "
                "pass trust_remote_code=True (--trust-remote-code) if you trust it"
            )
        if text_backend not in TEXT_BACKENDS:
            raise ValueError(f"unknown text backend {text_backend!r}; valid: {', '.join(TEXT_BACKENDS)}")
        self.spec = spec
        self.ref = ref or (str(root) if root is not None else spec.name)  # how to load these encoders again
        self.device = device
        self.text_backend = text_backend
        self.image_source = self._source(spec.image_model, root)
        self.text_source = self._source(spec.text_model, root) if spec.text_model else None
        kw = {"trust_remote_code": trust_remote_code}
        self.text_model: Any = None
        self.tokenizer: Any = None
        with _quiet_hf_progress():
            self.image_model = AutoModel.from_pretrained(self.image_source, **kw).to(device).eval()
            self.image_processor = AutoImageProcessor.from_pretrained(self.image_source, **kw)
            self._load_text(AutoModel, AutoTokenizer, kw)

    def _load_text(self, auto_model: Any, auto_tokenizer: Any, kw: dict[str, Any]) -> None:
        device, text_backend = self.device, self.text_backend
        if self.text_source is not None:
            if text_backend == "sentence-transformers":
                from sentence_transformers import SentenceTransformer  # optional extra: hikari[rag]

                self.text_model = SentenceTransformer(self.text_source, device=device, **kw)
            elif text_backend == "flagembedding":
                from FlagEmbedding import BGEM3FlagModel  # optional extra: hikari[rag]

                self.text_model = BGEM3FlagModel(self.text_source, use_fp16=False, devices=device)
            else:
                self.text_model = auto_model.from_pretrained(self.text_source, **kw).to(device).eval()
                self.tokenizer = auto_tokenizer.from_pretrained(self.text_source, **kw)

    @staticmethod
    def _source(model: str | None, root: Path | None) -> str:
        assert model is not None
        if root is not None and not Path(model).is_absolute() and (root / model).exists():
            return str(root / model)
        return model

    @property
    def has_text(self) -> bool:
        return self.text_model is not None

    def describe(self) -> dict[str, Any]:
        """What the index metadata records about these encoders."""
        return {**asdict(self.spec), "ref": self.ref, "image_source": self.image_source,
                "text_source": self.text_source, "text_backend": self.text_backend}  # fmt: skip

    def encode_images(
        self,
        images: Sequence[Any],
        *,
        batch_size: int = 32,
        max_size: int | None = default(DataConfig, "max_image_size"),
        progress: bool = False,
    ) -> np.ndarray:
        """(n, d_img) float32 unit embeddings of PIL images or image paths (decoded with `load_rgb`)."""
        out: list[np.ndarray] = []
        with _progress(progress, len(images), f"encoding images ({self.spec.name})") as advance, torch.inference_mode():
            for part in _batches(len(images), batch_size):
                pil = [to_rgb(im) if hasattr(im, "convert") else load_rgb(im, max_size=max_size)
                       for im in images[part]]  # fmt: skip
                if self.spec.image_kind == "remote":
                    feats = self.image_model.encode_image(pil, convert_to_numpy=True)
                    out.append(np.asarray(feats, dtype=np.float32))
                else:
                    inputs = self.image_processor(images=pil, return_tensors="pt").to(self.device)
                    if self.spec.image_kind == "projected":
                        output = self.image_model.get_image_features(pixel_values=inputs["pixel_values"])
                        feats = projected_features(output)
                    else:  # cls
                        feats = self.image_model(pixel_values=inputs["pixel_values"]).last_hidden_state[:, 0]
                    out.append(feats.float().cpu().numpy())
                advance(len(pil))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return _l2_normalise(np.concatenate(out))

    def encode_texts(
        self, texts: Sequence[str], *, query: bool = False, batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        """(n, d_txt) float32 unit embeddings; `query` selects the query prefix (else the document prefix)."""
        if not self.has_text:
            raise ValueError(f"encoder {self.spec.name} has no text encoder (image only)")
        prefix = self.spec.query_prefix if query else self.spec.document_prefix
        texts = [prefix + t for t in texts]
        out: list[np.ndarray] = []
        with _progress(progress, len(texts), f"encoding texts ({self.spec.name})") as advance, torch.inference_mode():
            for part in _batches(len(texts), batch_size):
                chunk = texts[part]
                if self.text_backend == "sentence-transformers":
                    feats = np.asarray(self.text_model.encode(chunk, batch_size=batch_size), dtype=np.float32)
                elif self.text_backend == "flagembedding":
                    enc = self.text_model.encode(chunk, batch_size=batch_size, max_length=self.spec.text_max_length)
                    feats = np.asarray(enc["dense_vecs"], dtype=np.float32)
                else:
                    tok = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.spec.text_max_length,
                                         return_tensors="pt").to(self.device)  # fmt: skip
                    hidden = self.text_model(input_ids=tok["input_ids"],
                                             attention_mask=tok["attention_mask"]).last_hidden_state  # (B, L, D)
                    if self.spec.text_kind == "cls":
                        pooled = hidden[:, 0]
                    else:
                        mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                    feats = pooled.float().cpu().numpy()
                out.append(feats)
                advance(len(chunk))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return _l2_normalise(np.concatenate(out))


@contextmanager
def _quiet_hf_progress() -> Iterator[None]:
    """No transformers tqdm bars while loading (they would interleave with our output); restored afterwards."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class _progress:
    """A rich progress bar (or nothing) whose context value advances it by n items."""

    def __init__(self, enabled: bool, total: int, description: str) -> None:
        self.enabled, self.total, self.description = enabled, total, description
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda n: None
        self.bar = Progress(transient=True)
        self.bar.start()
        task = self.bar.add_task(self.description, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


def load_encoders(
    name_or_dir: str | Path,
    *,
    device: str = "cpu",
    trust_remote_code: bool = False,
    text_backend: TextBackend = "transformers",
) -> Encoders:
    """Load a registry encoder (R0–R4) by hub id, or a `hikari_encoder.json` directory (tiny encoders)."""
    spec, root = resolve_encoder(name_or_dir)
    return Encoders(spec, root=root, device=device, trust_remote_code=trust_remote_code, text_backend=text_backend)

"""One generation interface over the inference engines: transformers, vLLM (offline), SGLang (offline), and any
OpenAI-compatible server over HTTP (`vllm serve`, SGLang's server, `hikari serve`).

Every engine takes a batch of chat conversations in the Hugging Face multimodal format that
`hikari.data.prompts` builds — ``[{"role": "user", "content": [{"type": "image", "image": <PIL image>},
{"type": "text", "text": "..."}]}]`` — and returns one decoded string per conversation:

    engine = make_engine("transformers", "runs/vega/merged", batch_size=4)
    texts = engine.generate(batch, max_new_tokens=DEFAULT_MAX_NEW_TOKENS["caption"])
    engine.close()

Decoding rules shared by all engines (the answer parser in `hikari.evaluation.parsing` relies on them):

* greedy unless `temperature > 0`;
* generation stops at the model's end-of-turn token (``<|im_end|>`` for Qwen3-VL, from its generation config),
  and the stop token itself never appears in the returned text;
* special tokens (chat and vision markers, padding) are removed, **but** ``<think>``/``</think>`` are always kept:
  Qwen3 marks them as non-special added tokens, and some exports mark them special — either way the parser needs
  them to separate reasoning from the answer. Each engine therefore decodes *with* special tokens and removes
  every special token except the think tags itself, rather than trusting ``skip_special_tokens``.

vLLM and SGLang are optional extras that need a CUDA GPU; they are imported only when such an engine is built,
and a missing package or GPU raises `EngineUnavailable` saying what to install.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import io
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import torch
from PIL import Image

from hikari.data.images import load_rgb
from hikari.models.load import load_model, load_processor

logger = logging.getLogger(__name__)

Messages = list[dict[str, Any]]  # one conversation: chat messages as built by hikari.data.prompts

# Default generation budget per task (the original's settings: 64 tokens for the short Stage 1/2 answers,
# 256 for Stage 3 captions). Zero-shot *thinking* models reason before answering and need far more.
DEFAULT_MAX_NEW_TOKENS: dict[str, int] = {"group": 64, "disease": 64, "caption": 256}
THINKING_MAX_NEW_TOKENS = 1024

# The reasoning markers of Qwen3 models; kept in every decoded output.
THINK_TAGS: tuple[str, ...] = ("<think>", "</think>")


class EngineUnavailable(RuntimeError):
    """An engine cannot run here: its optional package or a CUDA GPU is missing (the message says which)."""


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers (message conversion, clean-up), shared by the engines and tested on CPU
# ---------------------------------------------------------------------------------------------------------------


def as_pil(image: Any) -> Image.Image:
    """A content item's image as an RGB PIL image; paths are decoded with `hikari.data.images.load_rgb`
    at full size (resizing is the processor's job, thumbnailing the caller's)."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        return load_rgb(Path(image), max_size=None)
    raise TypeError(f"an image content item must hold a PIL image or a file path, got {type(image).__name__}")


def _content_items(messages: Messages) -> Iterable[dict[str, Any]]:
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            yield from content


def _is_image_item(item: dict[str, Any]) -> bool:
    return item.get("type") == "image" or "image" in item


def collect_images(messages: Messages) -> list[Image.Image]:
    """The images of a conversation in order of appearance (the order the chat template places their tokens)."""
    return [as_pil(item["image"]) for item in _content_items(messages) if _is_image_item(item)]


def to_openai_messages(messages: Messages) -> list[dict[str, Any]]:
    """Convert our chat messages to the OpenAI-style content parts that `vllm.LLM.chat` takes.

    Text items become ``{"type": "text", "text": ...}``; image items become vLLM's PIL shorthand
    ``{"type": "image_pil", "image_pil": <PIL image>}`` (no base64 round trip). Plain-string content is kept.
    Unknown content item types raise, naming the type, instead of being dropped silently.
    """
    converted: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, str):
            converted.append({"role": message["role"], "content": content})
            continue
        if not isinstance(content, list):
            raise TypeError(f"message {index}: content must be a string or a list, got {type(content).__name__}")
        parts: list[dict[str, Any]] = []
        for item in content:
            if _is_image_item(item):
                parts.append({"type": "image_pil", "image_pil": as_pil(item["image"])})
            elif item.get("type") == "text":
                parts.append({"type": "text", "text": item["text"]})
            else:
                raise ValueError(f"message {index}: unsupported content item type {item.get('type')!r}")
        converted.append({"role": message["role"], "content": parts})
    return converted


def strip_special_text(text: str, special_tokens: Iterable[str], keep: Iterable[str] = THINK_TAGS) -> str:
    """Remove every occurrence of the `special_tokens` strings from `text`, except those in `keep`.

    Used on text that an engine decoded with special tokens included: it drops ``<|im_end|>``, padding and
    vision markers but keeps ``<think>``/``</think>`` whatever the tokenizer calls them. Longer tokens are removed
    first so that a token containing another is removed whole.
    """
    keep_set = set(keep)
    for token in sorted(set(special_tokens) - keep_set, key=len, reverse=True):
        if token:
            text = text.replace(token, "")
    return text


def special_tokens_of(tokenizer: Any) -> list[str]:
    """The special-token strings of a Hugging Face tokenizer (control, chat and vision markers)."""
    return [str(t) for t in getattr(tokenizer, "all_special_tokens", [])]


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def _release_cuda_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _require_cuda(engine: str, extra: str) -> None:
    if not _cuda_available():
        raise EngineUnavailable(
            f"the {engine} engine needs a CUDA GPU (torch.cuda.is_available() is False); use "
            f"--engine transformers on this machine, or run on a GPU machine with pip install '{extra}'"
        )


def _import_optional(module: str, engine: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise EngineUnavailable(
            f"the {engine} engine needs the {module!r} package ({err}); install it with pip install '{extra}' "
            "on a machine with a CUDA GPU"
        ) from err


# ---------------------------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------------------------


_EngineT = TypeVar("_EngineT", bound="Engine")


class Engine(ABC):
    """A loaded model that turns chat conversations into text. Use as a context manager or call `close()`."""

    name: str = ""

    @abstractmethod
    def generate(self, batch: Sequence[Messages], *, max_new_tokens: int, temperature: float = 0.0) -> list[str]:
        """One decoded string per conversation in `batch`, in order (greedy when `temperature` is 0)."""

    def close(self) -> None:  # noqa: B027 - not abstract: an engine without resources needs nothing here
        """Release the model and any GPU memory or worker processes it holds."""

    def __enter__(self: _EngineT) -> _EngineT:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _check_generation_args(max_new_tokens: int, temperature: float) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")


# ---------------------------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------------------------


class TransformersEngine(Engine):
    """Batched `model.generate` with left padding; runs anywhere (CPU, one GPU, or 4-bit on CUDA).

    Args:
        model_path: directory written by `save_pretrained` (merged HIKARI model, tiny model) or a Hub id.
        dtype: "auto" (the checkpoint's), "bf16", "fp16" or "fp32".
        device: "cpu", "cuda", "cuda:1", ...; None picks "cuda" when available, else "cpu".
        batch_size: conversations per forward pass; `generate` splits larger batches.
        load_in_4bit: NF4 weights (CUDA + bitsandbytes), the original's QLoRA inference setting.
        min_pixels, max_pixels: override the image processor's pixel budget.
        trust_remote_code: forwarded to `from_pretrained`.
    """

    name = "transformers"

    def __init__(
        self,
        model_path: str | Path,
        *,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int = 4,
        load_in_4bit: bool = False,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        device = device or ("cuda" if _cuda_available() else "cpu")
        # 4-bit weights are placed on the GPU by bitsandbytes itself; moving them afterwards is not allowed.
        device_map = None if load_in_4bit else {"": device}
        self.model = load_model(
            model_path, dtype=dtype, device_map=device_map, load_in_4bit=load_in_4bit,
            trust_remote_code=trust_remote_code,
        )  # fmt: skip
        # Left padding: every prompt then ends at the last position, where generation continues.
        processor = load_processor(
            model_path, padding_side="left", min_pixels=min_pixels, max_pixels=max_pixels,
            trust_remote_code=trust_remote_code,
        )  # fmt: skip
        self._setup(self.model, processor)

    @classmethod
    def from_model(cls, model: Any, processor: Any, *, batch_size: int = 4) -> TransformersEngine:
        """Wrap an already loaded model (e.g. the PEFT model a training run just trained) and its processor."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        engine = cls.__new__(cls)
        engine.batch_size = batch_size
        engine._setup(model, processor)
        return engine

    def _setup(self, model: Any, processor: Any) -> None:
        self.model = model
        self.processor = processor
        tokenizer = self.processor.tokenizer
        self.eos_token_ids = self._eos_ids(self.model.generation_config, tokenizer)
        # Ids removed from the decoded output: every special token except the think tags (see module docstring).
        think_ids = {tokenizer.convert_tokens_to_ids(t) for t in THINK_TAGS}
        self._drop_ids = set(tokenizer.all_special_ids) - think_ids
        self._pad_id = self._pad_token_id(self.model.generation_config, tokenizer)

    @staticmethod
    def _eos_ids(generation_config: Any, tokenizer: Any) -> list[int]:
        eos = generation_config.eos_token_id
        ids = [eos] if isinstance(eos, int) else list(eos or [])
        if not ids and tokenizer.eos_token_id is not None:
            ids = [tokenizer.eos_token_id]
        if not ids:
            raise ValueError("the model has no eos_token_id (generation_config.json or tokenizer); cannot stop")
        return ids

    @staticmethod
    def _pad_token_id(generation_config: Any, tokenizer: Any) -> int:
        for candidate in (generation_config.pad_token_id, tokenizer.pad_token_id):
            if candidate is not None:
                return int(candidate)
        eos = generation_config.eos_token_id
        return int(eos if isinstance(eos, int) else eos[0])

    @property
    def device(self) -> torch.device:
        return self.model.device

    def encode(self, batch: Sequence[Messages]) -> dict[str, torch.Tensor]:
        """Render and tokenize a batch: the processor output (input_ids (B, L) left-padded, attention_mask
        (B, L), pixel_values (sum of patches, C·T·P·P), image_grid_thw (n_images, 3), ...) on the model's device.

        The prompt is rendered with the model's own chat template (generation prompt appended), then the
        processor expands each image placeholder to that image's number of vision tokens, so images of different
        sizes in one batch are fine.
        """
        texts = [
            self.processor.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            for messages in batch
        ]
        images = [image for messages in batch for image in collect_images(messages)]
        self.processor.tokenizer.padding_side = "left"  # the processor may be shared with a (right-padding) collator
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        return inputs.to(self.device)

    def generate_token_ids(
        self, batch: Sequence[Messages], *, max_new_tokens: int, temperature: float = 0.0
    ) -> list[list[int]]:
        """The generated token ids per conversation, cut just after the first end-of-turn token (inclusive);
        a sequence that hit `max_new_tokens` has no end token."""
        _check_generation_args(max_new_tokens, temperature)
        results: list[list[int]] = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start : start + self.batch_size]
            inputs = self.encode(chunk)
            # Explicit do_sample overrides the sampling default a checkpoint may ship (Qwen3-VL's is do_sample=true);
            # with sampling, the checkpoint's top_k/top_p still apply, as they would in vLLM/SGLang.
            sampling: dict[str, Any] = {"do_sample": False}
            if temperature > 0:
                sampling = {"do_sample": True, "temperature": temperature}
            with torch.inference_mode():
                output = self.model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=self.eos_token_ids,
                    pad_token_id=self._pad_id,
                    **sampling,
                )
            new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()  # (B, ≤ max_new_tokens)
            for ids in new_tokens:
                results.append(self._cut_at_eos(ids))
        return results

    def _cut_at_eos(self, ids: list[int]) -> list[int]:
        for position, token in enumerate(ids):
            if token in self.eos_token_ids:
                return ids[: position + 1]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Decode generated ids without the end/pad/control tokens but with ``<think>``/``</think>`` kept."""
        kept = [i for i in ids if i not in self._drop_ids and i not in self.eos_token_ids]
        return self.processor.tokenizer.decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def generate(self, batch: Sequence[Messages], *, max_new_tokens: int, temperature: float = 0.0) -> list[str]:
        ids = self.generate_token_ids(batch, max_new_tokens=max_new_tokens, temperature=temperature)
        return [self.decode(sequence) for sequence in ids]

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        _release_cuda_memory()


# ---------------------------------------------------------------------------------------------------------------
# vLLM
# ---------------------------------------------------------------------------------------------------------------

VLLM_QUANTIZATIONS: tuple[str | None, ...] = (None, "bitsandbytes", "fp8")


class VLLMEngine(Engine):
    """vLLM's offline `LLM.chat` (continuous batching, paged attention); needs `hikari[serve]` and a CUDA GPU.

    Defaults are the original's vLLM settings except `quantization`: the authors ran bitsandbytes 4-bit
    (pass ``quantization="bitsandbytes"``); None serves the merged bf16 weights.

    Args:
        model_path: merged model directory or Hub id (vLLM cannot apply a LoRA adapter saved by PEFT to a
            vision tower; merge first with ``hikari merge``).
        dtype: vLLM dtype string ("bfloat16", "float16", "auto").
        quantization: None, "bitsandbytes" (in-flight 4-bit) or "fp8" (in-flight FP8, Hopper/Ada GPUs).
        max_model_len: context length (prompt + image tokens + answer).
        gpu_memory_utilization: fraction of GPU memory vLLM may take for weights + KV cache.
        tensor_parallel_size: GPUs to shard the model over.
        max_images_per_prompt: `limit_mm_per_prompt` for images (RAG with K=3 references needs 4).
        mm_processor_kwargs: forwarded to the HF processor inside vLLM (e.g. a pixel budget).
        trust_remote_code: forwarded to vLLM.
        seed: sampling seed (only matters when temperature > 0).
    """

    name = "vllm"

    def __init__(
        self,
        model_path: str | Path,
        *,
        dtype: str = "bfloat16",
        quantization: str | None = None,
        max_model_len: int = 2048,
        gpu_memory_utilization: float = 0.88,
        tensor_parallel_size: int = 1,
        max_images_per_prompt: int = 4,
        mm_processor_kwargs: dict[str, Any] | None = None,
        trust_remote_code: bool = False,
        seed: int = 0,
    ) -> None:
        if quantization not in VLLM_QUANTIZATIONS:
            raise ValueError(f"unknown vLLM quantization {quantization!r}; valid: {VLLM_QUANTIZATIONS}")
        vllm = _import_optional("vllm", "vllm", "hikari[serve]")
        _require_cuda("vllm", "hikari[serve]")
        self._vllm = vllm
        kwargs: dict[str, Any] = {
            "model": str(model_path),
            "dtype": dtype,
            "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size,
            "limit_mm_per_prompt": {"image": max_images_per_prompt},
            "trust_remote_code": trust_remote_code,
            "seed": seed,
        }
        if quantization is not None:
            kwargs["quantization"] = quantization
        if mm_processor_kwargs:
            kwargs["mm_processor_kwargs"] = dict(mm_processor_kwargs)
        self.llm = vllm.LLM(**kwargs)
        self._special_tokens = special_tokens_of(self.llm.get_tokenizer())

    def sampling_params(self, max_new_tokens: int, temperature: float) -> Any:
        # Special tokens are decoded and then removed by `strip_special_text`, so that the think tags survive
        # whatever the tokenizer marks them; vLLM drops the stop token itself from the text.
        return self._vllm.SamplingParams(
            temperature=temperature,
            max_tokens=max_new_tokens,
            skip_special_tokens=False,
            spaces_between_special_tokens=False,
        )

    def generate(self, batch: Sequence[Messages], *, max_new_tokens: int, temperature: float = 0.0) -> list[str]:
        _check_generation_args(max_new_tokens, temperature)
        conversations = [to_openai_messages(list(messages)) for messages in batch]
        outputs = self.llm.chat(
            conversations,
            self.sampling_params(max_new_tokens, temperature),
            use_tqdm=False,
            add_generation_prompt=True,
        )
        return [strip_special_text(output.outputs[0].text, self._special_tokens) for output in outputs]

    def close(self) -> None:
        self.llm = None
        _release_cuda_memory()


# ---------------------------------------------------------------------------------------------------------------
# SGLang
# ---------------------------------------------------------------------------------------------------------------

SGLANG_QUANTIZATIONS: tuple[str | None, ...] = (None, "fp8")


def sglang_request(processor: Any, batch: Sequence[Messages]) -> tuple[list[str], list[list[Image.Image]]]:
    """The prompt texts and per-prompt image lists for `sglang.Engine.generate`.

    Prompts are rendered with the model's own chat template (the same text the transformers engine tokenizes);
    each image placeholder in a prompt pairs with the image at the same position in its list.
    """
    texts = [processor.apply_chat_template(list(m), tokenize=False, add_generation_prompt=True) for m in batch]
    return texts, [collect_images(list(m)) for m in batch]


class SGLangEngine(Engine):
    """SGLang's offline `sglang.Engine` (RadixAttention, FP8); needs `hikari[sglang]` and a CUDA GPU.

    Defaults are the original's SGLang settings except `quantization`, which the authors set to "fp8".

    Args:
        model_path: merged model directory or Hub id.
        dtype: "bfloat16", "float16" or "auto".
        quantization: None or "fp8".
        context_length: context length (prompt + image tokens + answer).
        mem_fraction_static: fraction of GPU memory for weights + KV cache.
        tp_size: tensor-parallel GPUs.
        trust_remote_code: forwarded to SGLang.
    """

    name = "sglang"

    def __init__(
        self,
        model_path: str | Path,
        *,
        dtype: str = "bfloat16",
        quantization: str | None = None,
        context_length: int = 2048,
        mem_fraction_static: float = 0.88,
        tp_size: int = 1,
        trust_remote_code: bool = False,
    ) -> None:
        if quantization not in SGLANG_QUANTIZATIONS:
            raise ValueError(f"unknown SGLang quantization {quantization!r}; valid: {SGLANG_QUANTIZATIONS}")
        sglang = _import_optional("sglang", "sglang", "hikari[sglang]")
        _require_cuda("sglang", "hikari[sglang]")
        # Our processor renders the prompts, so SGLang sees exactly the text the transformers engine would.
        self.processor = load_processor(model_path, trust_remote_code=trust_remote_code)
        self._special_tokens = special_tokens_of(self.processor.tokenizer)
        kwargs: dict[str, Any] = {
            "model_path": str(model_path),
            "dtype": dtype,
            "context_length": context_length,
            "mem_fraction_static": mem_fraction_static,
            "tp_size": tp_size,
            "trust_remote_code": trust_remote_code,
        }
        if quantization is not None:
            kwargs["quantization"] = quantization
        self.engine = sglang.Engine(**kwargs)

    def generate(self, batch: Sequence[Messages], *, max_new_tokens: int, temperature: float = 0.0) -> list[str]:
        _check_generation_args(max_new_tokens, temperature)
        texts, images = sglang_request(self.processor, batch)
        sampling = {
            "temperature": temperature,
            "max_new_tokens": max_new_tokens,
            "skip_special_tokens": False,
            "spaces_between_special_tokens": False,
        }
        outputs = self.engine.generate(prompt=texts, image_data=images, sampling_params=sampling)
        return [strip_special_text(output["text"], self._special_tokens) for output in outputs]

    def close(self) -> None:
        if getattr(self, "engine", None) is not None:
            self.engine.shutdown()
            self.engine = None


def image_data_url(image: Image.Image) -> str:
    """A PIL image as a PNG data URI (lossless, so a remote server sees the same pixels)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def to_wire_messages(messages: Messages) -> list[dict[str, Any]]:
    """Our chat messages in the OpenAI HTTP wire format: images as ``image_url`` parts with PNG data URIs."""
    wire = []
    for message in to_openai_messages(messages):
        content = message["content"]
        if isinstance(content, list):
            content = [{"type": "image_url", "image_url": {"url": image_data_url(part["image_pil"])}}
                       if part["type"] == "image_pil" else part for part in content]  # fmt: skip
        wire.append({"role": message["role"], "content": content})
    return wire


class OpenAIEngine(Engine):
    """Generation through a running OpenAI-compatible server — `vllm serve`, SGLang's server, another
    `hikari serve` — over HTTP, so that a GPU server can do the work behind `hikari serve` or `hikari predict`.

    The model is the server's URL (``http://127.0.0.1:8001/v1``; the served model is the one it lists, or
    ``URL#name`` picks one of several) or a served model name with `base_url` given. Decoding follows the shared
    rules as far as the server does: greedy at temperature 0, stop at end of turn; a server that splits reasoning
    off (vLLM's ``--reasoning-parser``) gets it joined back as ``reasoning</think>answer`` for our parser. Exact
    answer probabilities need the weights and are not available through this engine.

    Args:
        model_path: the server URL (optionally ``#served-name``), or a served model name with `base_url`.
        base_url: the server's ``/v1`` URL when `model_path` is a name.
        api_key: sent as ``Authorization: Bearer``; default the OPENAI_API_KEY environment variable, if set.
        timeout: seconds per request.
        concurrency: requests in flight at once (the server batches them).
    """

    name = "openai"

    def __init__(
        self,
        model_path: str | Path,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 600.0,
        concurrency: int = 8,
    ) -> None:
        model = str(model_path)
        if model.startswith(("http://", "https://")):
            base_url, _, name = model.partition("#")
            model = name
        if not base_url:
            raise ValueError(f"the openai engine needs a server: give the model as its URL (http://HOST:PORT/v1) or "
                             f"set base_url (got model {model!r})")  # fmt: skip
        self.base_url = base_url.rstrip("/")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        self.client = httpx.Client(base_url=self.base_url, timeout=timeout,
                                   headers={"Authorization": f"Bearer {key}"} if key else {},
                                   limits=httpx.Limits(max_connections=concurrency))  # fmt: skip
        self.concurrency = concurrency
        served = [m["id"] for m in self._request("GET", "/models")["data"]]
        if not model:
            if len(served) != 1:
                raise ValueError(f"{self.base_url} serves {served}: pick one with {self.base_url}#NAME")
            model = served[0]
        elif model not in served:
            raise ValueError(f"{self.base_url} serves {served}, not {model!r}")
        self.model = model

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self.client.request(method, path, json=body)
        except httpx.HTTPError as err:
            raise EngineUnavailable(f"cannot reach {self.base_url}{path}: {err}") from err
        if response.status_code != 200:
            raise RuntimeError(f"{self.base_url}{path} answered {response.status_code}: {response.text[:500]}")
        return dict(response.json())

    def _one(self, messages: Messages, max_new_tokens: int, temperature: float) -> str:
        answer = self._request("POST", "/chat/completions", {
            "model": self.model, "messages": to_wire_messages(list(messages)), "max_tokens": max_new_tokens,
            "temperature": temperature, "n": 1})["choices"][0]["message"]  # fmt: skip
        content, reasoning = answer.get("content") or "", answer.get("reasoning_content") or answer.get("reasoning")
        return f"{reasoning}\n</think>\n\n{content}" if reasoning else content

    def generate(self, batch: Sequence[Messages], *, max_new_tokens: int, temperature: float = 0.0) -> list[str]:
        _check_generation_args(max_new_tokens, temperature)
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(batch)))) as pool:
            return list(pool.map(lambda m: self._one(m, max_new_tokens, temperature), batch))

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------

ENGINES: dict[str, type[Engine]] = {
    "transformers": TransformersEngine,
    "vllm": VLLMEngine,
    "sglang": SGLangEngine,
    "openai": OpenAIEngine,
}


def engine_options(name: str) -> list[str]:
    """The keyword options an engine accepts (its constructor's parameters after the model path)."""
    cls = _engine_class(name)
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # drop self, model_path
    return [p.name for p in params]


def _engine_class(name: str) -> type[Engine]:
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; valid: {', '.join(ENGINES)}")
    return ENGINES[name]


def make_engine(name: str, model: str | Path, **options: Any) -> Engine:
    """Build the engine `name` ("transformers", "vllm" or "sglang") on `model` with engine-specific options.

    Unknown engine names and options raise `ValueError` listing the valid ones.
    """
    cls = _engine_class(name)
    valid = engine_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"engine {name!r} has no option(s) {unknown}; valid: {', '.join(valid)}")
    logger.info("loading %s with the %s engine", model, name)
    return cls(model, **options)

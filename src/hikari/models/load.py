"""The one way HIKARI loads a vision-language model and its processor, for the tiny model and the 8B alike.

`load_model` and `load_processor` take a local directory or a Hugging Face Hub id and go through
`AutoModelForImageTextToText` / `AutoProcessor` with safetensors only. Nothing here knows about the tiny model:
a directory written by `hikari model tiny`, a merged HIKARI checkpoint and `Qwen/Qwen3-VL-8B-Thinking` all take
the same path, so a bug that the CPU tests catch on the tiny model is a bug in the code the 8B runs use.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig
from transformers.modeling_utils import PreTrainedModel
from transformers.processing_utils import ProcessorMixin

DTYPES: dict[str, torch.dtype | str] = {
    "auto": "auto",  # whatever the checkpoint's config.json records (bf16 for Qwen3-VL-8B, fp32 for tiny)
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
}
PADDING_SIDES = ("left", "right")

# "owner/name" as the Hub spells repository ids; anything else that is not an existing directory is an error.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_dtype(dtype: str) -> torch.dtype | str:
    """Map "auto" | "bf16" | "fp16" | "fp32" to what `from_pretrained(dtype=...)` takes."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_model_dir(path_or_id: str | Path) -> str:
    """Return a local model directory (resolved) or a Hub id unchanged; raise clearly for anything else.

    A local directory must hold `config.json`. A string that is not an existing path is accepted only if it
    looks like a Hub id (`owner/name`); a missing local path such as `runs/stage2/merged` or `/data/model`
    raises `FileNotFoundError` here instead of surfacing later as a confusing Hub lookup error.
    """
    text = str(path_or_id)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"model path {path} is a file; expected a directory holding config.json")
        if not (path / "config.json").is_file():
            present = sorted(p.name for p in path.iterdir())[:10]
            raise FileNotFoundError(
                f"model directory {path} has no config.json (found: {present or 'nothing'}); expected a "
                "save_pretrained() directory, e.g. one written by `hikari model tiny --out DIR`"
            )
        return str(path.resolve())
    if _HUB_ID.match(text) and not text.startswith((".", "~")):
        return text
    raise FileNotFoundError(
        f"model directory {text!r} does not exist (and is not a Hub id of the form 'owner/name', "
        "e.g. 'Qwen/Qwen3-VL-8B-Thinking')"
    )


def stored_dtype(name_or_path: str | Path, *, trust_remote_code: bool = False) -> torch.dtype | None:
    """The dtype a checkpoint's `config.json` says its weights are stored in (None when it says nothing)."""
    config = AutoConfig.from_pretrained(resolve_model_dir(name_or_path), trust_remote_code=trust_remote_code)
    value = getattr(config, "dtype", None) or getattr(getattr(config, "text_config", None), "dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value.removeprefix("torch."), None)
    return value if isinstance(value, torch.dtype) else None


def nf4_quantization_config() -> BitsAndBytesConfig:
    """QLoRA's 4-bit NF4 with double quantisation and bf16 compute.

    Needs bitsandbytes, and a CUDA GPU or — without one — a bitsandbytes release whose CPU backend quantises
    (0.50 does: checked by quantising a small tensor, so an older release fails here and not mid-load)."""
    try:
        bnb = importlib.import_module("bitsandbytes")  # optional extra: hikari[quant]
    except ImportError:
        raise RuntimeError("load_in_4bit=True needs the bitsandbytes package (pip install 'hikari[quant]'); load "
                           "without 4-bit instead") from None
    if not torch.cuda.is_available():
        try:
            bnb.functional.quantize_4bit(torch.ones(64, dtype=torch.bfloat16), quant_type="nf4")
        except Exception as err:  # noqa: BLE001 - any failure means: no usable CPU backend
            version = getattr(bnb, "__version__", "?")
            raise RuntimeError(f"load_in_4bit=True needs a CUDA GPU (torch.cuda.is_available() is False) or a "
                               f"bitsandbytes release with a CPU backend (installed: {version}; quantising on the "
                               f"CPU failed: {err}); load without 4-bit instead") from err
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def load_model(
    name_or_path: str | Path,
    *,
    dtype: str = "auto",
    device_map: str | dict[str, Any] | None = None,
    load_in_4bit: bool = False,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Load an image-text-to-text model (e.g. `Qwen3VLForConditionalGeneration`) from safetensors.

    Args:
        name_or_path: local directory with `config.json` or a Hub id.
        dtype: "auto" (the checkpoint's dtype), "bf16", "fp16" or "fp32". With `load_in_4bit`, "auto" means
            bf16 for the layers that stay unquantised.
        device_map: passed to `from_pretrained` ("auto", "cpu", {"": 0}, ...); `None` keeps the model on CPU,
            except that 4-bit loading places it on the current CUDA device when there is one.
        load_in_4bit: NF4 4-bit weights with double quantisation and bf16 compute (QLoRA): on a CUDA GPU, or on
            the CPU with a bitsandbytes release that has a CPU backend (see `nf4_quantization_config`).
        attn_implementation: "eager", "sdpa", "flash_attention_2", ... or `None` for the library default.
        trust_remote_code: forwarded to `from_pretrained`; Qwen3-VL does not need it.

    Returns:
        The model in eval mode (callers that train switch it to train mode themselves).
    """
    torch_dtype = parse_dtype(dtype)
    quantization_config = nf4_quantization_config() if load_in_4bit else None
    source = resolve_model_dir(name_or_path)
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype,
        "use_safetensors": True,
        "trust_remote_code": trust_remote_code,
    }
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        if torch_dtype == "auto":
            kwargs["dtype"] = torch.bfloat16
        if device_map is None and torch.cuda.is_available():
            # One full 4-bit copy per process: under `accelerate launch` each rank takes its own GPU.
            device_map = {"": int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))}
        elif device_map is None:
            device_map = {"": "cpu"}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    if load_in_4bit:
        keep_odd_4bit_layers_unpacked(model)
    return model.eval()


# bitsandbytes' CPU kernel packs weights in blocks of this many output rows.
CPU_PACK_BLOCK = 32


def keep_odd_4bit_layers_unpacked(model: torch.nn.Module) -> int:
    """Keep the 4-bit layers that bitsandbytes' CPU kernel cannot pack on its generic CPU path; returns how many.

    bitsandbytes (0.50) repacks a 4-bit weight for its AVX-512 BF16 kernel on the first forward without gradients
    in eval mode, which needs the output width to be a multiple of 32 and the input width a multiple of the
    quantisation block (64). Qwen3-VL-8B's vision MLP is 4,304 wide (4,304 = 67 × 64 + 16), so generation
    (evaluation, the collapse guard's probes) on a CPU crashed (benchmarks/real_shape.py). A no-op on CUDA, where
    that packing never happens."""
    n = 0
    for module in model.modules():
        if not getattr(module, "support_avx512bf16_for_cpu", False):
            continue
        blocksize = getattr(getattr(module.weight, "quant_state", None), "blocksize", 64)
        if module.out_features % CPU_PACK_BLOCK or module.in_features % blocksize:
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_processor(
    name_or_path: str | Path,
    *,
    padding_side: str = "right",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    trust_remote_code: bool = False,
) -> ProcessorMixin:
    """Load the multimodal processor (tokenizer + image/video processors + chat template).

    Args:
        name_or_path: local directory or Hub id.
        padding_side: "right" for training (labels line up with the prompt start), "left" for batched
            generation (every prompt ends at the last position, where generation continues).
        min_pixels, max_pixels: override the image processor's pixel budget (each image is resized so that
            height x width lies in [min_pixels, max_pixels], both multiples of patch_size x merge_size); the
            number of vision tokens per image is height x width / (patch_size x merge_size)^2.
        trust_remote_code: forwarded to `AutoProcessor.from_pretrained`.
    """
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    source = resolve_model_dir(name_or_path)
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    processor.tokenizer.padding_side = padding_side
    if min_pixels is not None or max_pixels is not None:
        image_processor = processor.image_processor
        size = dict(image_processor.size)
        if min_pixels is not None:
            size["shortest_edge"] = min_pixels
        if max_pixels is not None:
            size["longest_edge"] = max_pixels
        if size.get("shortest_edge", 0) > size.get("longest_edge", float("inf")):
            raise ValueError(f"min_pixels ({size['shortest_edge']}) must not exceed max_pixels "
                             f"({size['longest_edge']})")
        image_processor.size = type(image_processor.size)(**size)
    return processor


def safetensors_parameter_count(model_dir: str | Path) -> int:
    """Number of stored parameters, read from the safetensors headers only (no weights are loaded)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {model_dir}")
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                shape = handle.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total


def describe_model(name_or_path: str | Path) -> dict[str, Any]:
    """A config summary of a checkpoint (architecture, text/vision sizes, special ids, parameter count).

    The parameter count comes from the safetensors headers of a local directory; for a Hub id it is `None`
    (counting would need the weights' index from the network).
    """
    source = resolve_model_dir(name_or_path)
    config = AutoConfig.from_pretrained(source)
    text = getattr(config, "text_config", config)
    vision = getattr(config, "vision_config", None)
    summary: dict[str, Any] = {
        "source": source,
        "model_type": config.model_type,
        "architectures": list(getattr(config, "architectures", None) or []),
        "dtype": str(getattr(config, "dtype", None) or getattr(text, "dtype", None)).removeprefix("torch."),
        "text": {
            key: getattr(text, key, None)
            for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                        "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings")
        },
        "rope": getattr(text, "rope_parameters", None),
        "tie_word_embeddings": getattr(config, "tie_word_embeddings", None),
        "token_ids": {
            key: getattr(config, key, None)
            for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        },
        "parameters": None,
    }
    if vision is not None:
        summary["vision"] = {
            key: getattr(vision, key, None)
            for key in ("depth", "hidden_size", "num_heads", "patch_size", "spatial_merge_size",
                        "temporal_patch_size", "out_hidden_size", "deepstack_visual_indexes")
        }
    if Path(source).is_dir():
        summary["parameters"] = safetensors_parameter_count(source)
    return json.loads(json.dumps(summary, default=str))  # plain JSON types, ready to print or save

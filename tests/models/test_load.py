"""The one loading path: directories and Hub ids, dtypes, 4-bit requirements, processor options, summaries."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BitsAndBytesConfig

from hikari.data import prompts as P
from hikari.data.prompts import STAGE2_TRAIN_PROMPTS, stage2_messages
from hikari.demo.tiny import TinyDims, build_tiny_qwen3vl
from hikari.inference.engines import TransformersEngine
from hikari.models import load as load_module
from hikari.models.load import (
    DTYPES,
    describe_model,
    keep_odd_4bit_layers_unpacked,
    load_model,
    load_processor,
    nf4_quantization_config,
    parse_dtype,
    resolve_model_dir,
    safetensors_parameter_count,
)

# --- resolve_model_dir ---------------------------------------------------------------------------------------


def test_resolve_accepts_a_model_directory_and_a_hub_id(tiny_model_dir: Path) -> None:
    assert resolve_model_dir(tiny_model_dir) == str(tiny_model_dir.resolve())
    assert resolve_model_dir("Qwen/Qwen3-VL-8B-Thinking") == "Qwen/Qwen3-VL-8B-Thinking"


def test_resolve_rejects_a_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "runs" / "stage2" / "merged"
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        resolve_model_dir(missing)
    assert str(missing) in str(err.value)
    for relative in ("./merged", "runs/stage2/merged", "~/models/x"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            resolve_model_dir(relative)


def test_resolve_rejects_a_directory_without_config_json(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no config.json") as err:
        resolve_model_dir(tmp_path)
    assert "model.safetensors" in str(err.value)  # says what *is* there


def test_resolve_rejects_a_file(tmp_path: Path) -> None:
    file = tmp_path / "config.json"
    file.write_text("{}")
    with pytest.raises(NotADirectoryError, match="is a file"):
        resolve_model_dir(file)


def test_load_model_and_processor_report_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_processor(tmp_path / "nope")


# --- dtype ---------------------------------------------------------------------------------------------------


def test_bad_dtype_names_the_valid_ones(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown dtype 'fp64'; valid: auto, bf16, fp16, fp32"):
        parse_dtype("fp64")
    with pytest.raises(ValueError, match="valid: auto, bf16, fp16, fp32"):
        load_model(tiny_model_dir, dtype="float32")


@pytest.mark.parametrize(("dtype", "expected"), [("auto", torch.float32), ("bf16", torch.bfloat16),
                                                 ("fp32", torch.float32)])
def test_dtype_is_applied(tiny_model_dir: Path, dtype: str, expected: torch.dtype) -> None:
    model = load_model(tiny_model_dir, dtype=dtype)
    assert model.dtype == expected
    assert {p.dtype for p in model.parameters()} == {expected}
    assert not model.training


def test_dtype_table_covers_the_documented_names() -> None:
    assert list(DTYPES) == ["auto", "bf16", "fp16", "fp32"]
    assert parse_dtype("fp16") is torch.float16


def test_attn_implementation_and_device_map_are_forwarded(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, attn_implementation="eager", device_map="cpu")
    assert model.config._attn_implementation == "eager"
    assert {p.device.type for p in model.parameters()} == {"cpu"}


# --- 4-bit ---------------------------------------------------------------------------------------------------


BNB = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                         reason="bitsandbytes is not installed (it is in the dev extras)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU backend")
@BNB
def test_4bit_on_the_cpu_quantises_every_linear_but_the_lm_head(tiny_model_dir: Path) -> None:
    """bitsandbytes' CPU backend: the NF4 base loads on the CPU (device_map cpu) and answers."""
    import bitsandbytes as bnb  # optional extra (skipped without it)

    model = load_model(tiny_model_dir, dtype="bf16", load_in_4bit=True)
    assert getattr(model, "is_loaded_in_4bit", False)
    quantised = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    plain = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear]
    assert len(quantised) > 20 and plain == ["lm_head"]
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    with torch.no_grad():
        logits = model(input_ids=torch.arange(3, 20).reshape(1, -1), use_cache=False).logits
    assert torch.isfinite(logits.float()).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU backend")
@BNB
def test_4bit_layers_the_cpu_kernel_cannot_pack_stay_on_the_generic_path(tmp_path: Path) -> None:
    """Qwen3-VL-8B's vision MLP is 4,304 wide: bitsandbytes' CPU kernel (blocks of 32 rows, 64-wide quantisation
    blocks) cannot pack it, and generation crashed. Here the tiny model's vision MLP is 272 wide."""
    odd = build_tiny_qwen3vl(tmp_path / "odd", seed=0, dims=TinyDims(vision_intermediate=272), dtype=torch.bfloat16)
    model = load_model(odd, dtype="bf16", load_in_4bit=True)
    unpacked = [n for n, m in model.named_modules() if getattr(m, "support_avx512bf16_for_cpu", None) is False]
    assert unpacked and all("mlp.linear_fc" in n for n in unpacked)
    assert keep_odd_4bit_layers_unpacked(model) == 0  # idempotent: the loader did it already
    engine = TransformersEngine.from_model(model, load_processor(odd, padding_side="left"), batch_size=1)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    assert len(engine.generate([P.stage3_messages(image, 0)], max_new_tokens=3)) == 1


def test_4bit_without_a_cpu_backend_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module.torch.cuda, "is_available", lambda: False)
    fake = types.ModuleType("bitsandbytes")
    fake.__version__ = "0.44.0"

    def no_cpu(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no kernel for cpu")

    fake.functional = types.SimpleNamespace(quantize_4bit=no_cpu)
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    with pytest.raises(RuntimeError, match=r"needs a CUDA GPU .* or a bitsandbytes release with a CPU backend "
                                           r"\(installed: 0\.44\.0"):  # fmt: skip
        nf4_quantization_config()


def test_4bit_without_bitsandbytes_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` raise ImportError
    with pytest.raises(RuntimeError, match=r"bitsandbytes package \(pip install 'hikari\[quant\]'\)") as err:
        nf4_quantization_config()
    assert "CUDA" not in str(err.value)  # only what is actually missing


def test_4bit_config_is_nf4_double_quant_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "bitsandbytes", types.ModuleType("bitsandbytes"))
    config = nf4_quantization_config()
    assert isinstance(config, BitsAndBytesConfig)
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant is True
    assert config.bnb_4bit_compute_dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_4bit_load_on_gpu(tiny_model_dir: Path) -> None:
    pytest.importorskip("bitsandbytes")
    model = load_model(tiny_model_dir, load_in_4bit=True)
    assert getattr(model, "is_loaded_in_4bit", False)
    assert next(model.parameters()).device.type == "cuda"


# --- processor -----------------------------------------------------------------------------------------------


def test_processor_padding_side(tiny_model_dir: Path) -> None:
    assert load_processor(tiny_model_dir).tokenizer.padding_side == "right"
    assert load_processor(tiny_model_dir, padding_side="left").tokenizer.padding_side == "left"
    with pytest.raises(ValueError, match=r"padding_side must be one of \('left', 'right'\)"):
        load_processor(tiny_model_dir, padding_side="middle")


def _image_tokens(processor: Any, image: Any) -> int:
    batch = processor.apply_chat_template(stage2_messages(image, STAGE2_TRAIN_PROMPTS[0]), tokenize=True,
                                          return_dict=True, return_tensors="pt", add_generation_prompt=True)
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return int((batch["input_ids"] == image_pad).sum())


def test_pixel_budget_overrides_change_the_number_of_image_tokens(tiny_model_dir: Path, make_image: Any) -> None:
    image = make_image(128, 128)
    assert _image_tokens(load_processor(tiny_model_dir), image) == 16  # 128 px / 16 px patches / 2x2 merge
    assert _image_tokens(load_processor(tiny_model_dir, max_pixels=64 * 64), image) == 4
    assert _image_tokens(load_processor(tiny_model_dir, min_pixels=64 * 64, max_pixels=96 * 96), image) == 9
    small = make_image(32, 32)
    assert _image_tokens(load_processor(tiny_model_dir, min_pixels=96 * 96), small) == 9  # upscaled to 96x96


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_pixels": 0}, "min_pixels must be a positive int"),
    ({"max_pixels": -5}, "max_pixels must be a positive int"),
    ({"max_pixels": 1.5}, "max_pixels must be a positive int"),
    ({"min_pixels": 128 * 128, "max_pixels": 64 * 64}, "must not exceed"),
    ({"min_pixels": 10**9}, "must not exceed"),  # above the saved max_pixels
])
def test_bad_pixel_budgets_are_rejected(tiny_model_dir: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_processor(tiny_model_dir, **kwargs)


# --- summaries -----------------------------------------------------------------------------------------------


def test_describe_model_counts_parameters_from_the_safetensors_headers(tiny_model_dir: Path) -> None:
    summary = describe_model(tiny_model_dir)
    model = load_model(tiny_model_dir)
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert summary["parameters"] == safetensors_parameter_count(tiny_model_dir)
    assert summary["model_type"] == "qwen3_vl"
    assert summary["architectures"] == ["Qwen3VLForConditionalGeneration"]
    assert summary["dtype"] == "float32"
    assert summary["text"]["num_hidden_layers"] == 2
    assert summary["vision"]["patch_size"] == 16
    assert summary["token_ids"]["image_token_id"] == model.config.image_token_id


def test_parameter_count_needs_safetensors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors files"):
        safetensors_parameter_count(tmp_path)


# --- CLI -----------------------------------------------------------------------------------------------------


def test_cli_tiny_then_info(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hikari.cli import app

    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args))
        return result.exit_code, " ".join(result.output.split())  # rich wraps lines at the terminal width

    out = tmp_path / "tiny"
    code, output = run("model", "tiny", "--out", str(out), "--seed", "3")
    assert code == 0, output
    params = safetensors_parameter_count(out)
    assert f"{params:,} parameters" in output and " MB" in output

    code, output = run("model", "tiny", "--out", str(out))
    assert code == 2 and "not empty" in output

    code, output = run("model", "info", str(out), "--json")
    assert code == 0, output
    assert f'"parameters": {params}' in output

    code, output = run("model", "info", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in output

"""Inference engines: message conversion and clean-up (pure), the registry, the transformers engine on the tiny
Qwen3-VL (batching, stopping, greedy determinism, left padding), and vLLM/SGLang on a GPU machine."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hikari.data.prompts import (
    STAGE2_INFERENCE_PROMPTS,
    rag_messages,
    stage1_messages,
    stage2_messages,
    stage3_messages,
)
from hikari.inference.engines import (
    DEFAULT_MAX_NEW_TOKENS,
    ENGINES,
    EngineUnavailable,
    TransformersEngine,
    collect_images,
    make_engine,
    sglang_request,
    strip_special_text,
    to_openai_messages,
    to_wire_messages,
)
from hikari.serve.process import ServerProcess, free_port


def noise_image(seed: int, height: int, width: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def disease_batch(sizes: list[tuple[int, int]]) -> list[list[dict]]:
    return [stage2_messages(noise_image(i, h, w), STAGE2_INFERENCE_PROMPTS["P0"]) for i, (h, w) in enumerate(sizes)]


# ---------------------------------------------------------------------------------------------------- pure helpers


def test_defaults_follow_the_original_budgets() -> None:
    assert DEFAULT_MAX_NEW_TOKENS == {"group": 64, "disease": 64, "caption": 256}


def test_to_openai_messages_turns_images_into_pil_parts_in_order() -> None:
    query, ref1, ref2 = noise_image(0, 8, 8), noise_image(1, 9, 9), noise_image(2, 10, 10)
    messages = rag_messages(query, "What is it?", [(ref1, "psoriasis", None), (ref2, "acne vulgaris", "red")])
    converted = to_openai_messages(messages)
    parts = converted[0]["content"]
    assert converted[0]["role"] == "user"
    images = [p["image_pil"] for p in parts if p["type"] == "image_pil"]
    assert [im.size for im in images] == [(9, 9), (10, 10), (8, 8)]  # references first, query last
    texts = [p["text"] for p in parts if p["type"] == "text"]
    assert texts[-1] == "What is it?" and "Reference 2: acne vulgaris\nDescription: red" in texts
    assert all(set(p) == {"type", "image_pil"} or set(p) == {"type", "text"} for p in parts)
    # The input is not modified (the transformers engine still needs the HF format).
    assert messages[0]["content"][1]["type"] == "image"


def test_to_openai_messages_loads_paths_keeps_strings_and_rejects_unknown_items(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    noise_image(3, 12, 20).convert("L").save(path)
    converted = to_openai_messages(stage3_messages(str(path)))
    image = converted[0]["content"][0]["image_pil"]
    assert image.mode == "RGB" and image.size == (20, 12)
    system = to_openai_messages([{"role": "system", "content": "be brief"}])
    assert system == [{"role": "system", "content": "be brief"}]
    with pytest.raises(ValueError, match="unsupported content item type 'video'"):
        to_openai_messages([{"role": "user", "content": [{"type": "video", "video": "x.mp4"}]}])


def test_collect_images_follows_placeholder_order() -> None:
    query, ref = noise_image(0, 8, 8), noise_image(1, 16, 16)
    images = collect_images(rag_messages(query, "q", [(ref, "psoriasis", None)]))
    assert [im.size for im in images] == [(16, 16), (8, 8)]


def test_strip_special_text_keeps_think_tags() -> None:
    specials = ["<|im_end|>", "<|endoftext|>", "<|vision_start|>", "<think>", "</think>"]
    text = "<think>\nred plaque\n</think>\n\nThis image shows psoriasis.<|im_end|><|endoftext|>"
    assert strip_special_text(text, specials) == "<think>\nred plaque\n</think>\n\nThis image shows psoriasis."


# ---------------------------------------------------------------------------------------------------- registry


def test_unknown_engine_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown engine 'onnx'; valid: transformers, vllm, sglang, openai"):
        make_engine("onnx", "some/model")
    assert list(ENGINES) == ["transformers", "vllm", "sglang", "openai"]


def test_unknown_engine_option_lists_valid_options() -> None:
    with pytest.raises(ValueError, match=r"no option\(s\) \['gpu_memory_utilization'\]; valid: dtype, device"):
        make_engine("transformers", "some/model", gpu_memory_utilization=0.9)


@pytest.mark.parametrize(
    ("name", "module", "extra"), [("vllm", "vllm", "hikari[serve]"), ("sglang", "sglang", "hikari[sglang]")]
)
def test_gpu_engines_explain_what_is_missing(name: str, module: str, extra: str, tiny_model_dir: Path) -> None:
    if importlib.util.find_spec(module) is not None and torch.cuda.is_available():
        pytest.skip(f"{module} and CUDA are both present; nothing is missing here")
    with pytest.raises(EngineUnavailable, match=r"pip install '" + extra.replace("[", r"\[").replace("]", r"\]")):
        make_engine(name, tiny_model_dir)


# ---------------------------------------------------------------------------------------------------- transformers


def test_mixed_image_sizes_give_one_string_per_item(tiny_engine: TransformersEngine) -> None:
    batch = disease_batch([(64, 64), (100, 72), (128, 128), (40, 90), (70, 70)])  # 5 > batch_size 4: two chunks
    ids = tiny_engine.generate_token_ids(batch, max_new_tokens=4)
    assert len(ids) == 5 and all(1 <= len(seq) <= 4 for seq in ids)
    texts = [tiny_engine.decode(seq) for seq in ids]  # what `generate` returns
    assert all(isinstance(t, str) for t in texts)
    # Random weights: different images must not all collapse onto one output (would hint at a batching mix-up).
    assert len({tuple(seq) for seq in ids}) > 1


def test_greedy_even_when_the_checkpoint_asks_to_sample(
    tiny_engine: TransformersEngine, tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Qwen3-VL checkpoints ship do_sample=true; temperature=0 must still mean greedy and repeatable.
    sampling_dir = tmp_path / "sampling"
    shutil.copytree(tiny_model_dir, sampling_dir)
    config_path = sampling_dir / "generation_config.json"
    config = json.loads(config_path.read_text())
    config.update(do_sample=True, temperature=1.5, top_k=0, top_p=1.0)
    config_path.write_text(json.dumps(config))
    batch = disease_batch([(64, 64), (96, 80)])
    reference = tiny_engine.generate_token_ids(batch, max_new_tokens=4)  # its checkpoint says do_sample=false
    engine = TransformersEngine(sampling_dir, dtype="fp32", device="cpu", batch_size=2)
    try:
        torch.manual_seed(0)
        assert engine.generate_token_ids(batch, max_new_tokens=4) == reference
        # …and temperature > 0 really samples (near-uniform logits of a random model: repeats are ~impossible).
        torch.manual_seed(0)
        sampled_a = engine.generate_token_ids(batch[:1], max_new_tokens=4, temperature=1.0)
        torch.manual_seed(1)
        sampled_b = engine.generate_token_ids(batch[:1], max_new_tokens=4, temperature=1.0)
        assert sampled_a != sampled_b
    finally:
        engine.close()


def test_left_padding_gives_the_same_answer_alone_and_in_a_batch(tiny_engine: TransformersEngine) -> None:
    # Very different image sizes → different prompt lengths → real left padding in the batch.
    batch = disease_batch([(128, 128), (64, 64), (48, 120)])
    inputs = tiny_engine.encode(batch)
    assert (inputs["attention_mask"][:, 0] == 0).any(), "the batch should need padding"
    assert (inputs["attention_mask"][:, -1] == 1).all(), "padding must be on the left"
    together = tiny_engine.generate_token_ids(batch, max_new_tokens=4)
    alone = [tiny_engine.generate_token_ids([m], max_new_tokens=4)[0] for m in batch]
    assert together == alone

    # The same check on the first-step logits, within fp32 tolerance.
    model = tiny_engine.model
    with torch.inference_mode():
        batched_logits = model(**inputs).logits[:, -1]
        for i, messages in enumerate(batch):
            single = model(**tiny_engine.encode([messages])).logits[:, -1]
            torch.testing.assert_close(batched_logits[i : i + 1], single, rtol=1e-4, atol=1e-4)


def test_decode_drops_control_tokens_but_keeps_think_tags(tiny_engine: TransformersEngine) -> None:
    tokenizer = tiny_engine.processor.tokenizer
    ids = tokenizer.encode("<think>\nred plaque\n</think>\n\nThis image shows psoriasis.<|im_end|><|endoftext|>")
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids  # the markers really are single tokens
    assert tiny_engine.decode(ids) == "<think>\nred plaque\n</think>\n\nThis image shows psoriasis."


def test_eos_comes_from_the_generation_config(tiny_engine: TransformersEngine) -> None:
    tokenizer = tiny_engine.processor.tokenizer
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in tiny_engine.eos_token_ids


def _first_new_token_position(sequence: list[int]) -> int:
    """The first position k >= 1 whose token did not occur before it."""
    for k in range(1, len(sequence)):
        if sequence[k] not in sequence[:k]:
            return k
    raise AssertionError(f"no fresh token in {sequence}")


def test_generation_stops_at_im_end(tiny_engine: TransformersEngine, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Make the model say <|im_end|> after k tokens, by swapping two output-embedding rows, and check that the
    engine stops there, keeps the k tokens and drops the stop token from the text."""
    tokenizer = tiny_engine.processor.tokenizer
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    max_new = 12
    # Different prompts, so that some conversation never produces the token we turn into <|im_end|>.
    candidates = [
        stage2_messages(noise_image(0, 80, 80), STAGE2_INFERENCE_PROMPTS["P0"]),
        stage1_messages(noise_image(1, 64, 112)),
        stage3_messages(noise_image(2, 96, 64)),
        stage2_messages(noise_image(3, 72, 72), STAGE2_INFERENCE_PROMPTS["P2"]),
    ]
    originals = tiny_engine.generate_token_ids(candidates, max_new_tokens=max_new)
    assert all(im_end not in seq and len(seq) == max_new for seq in originals), "random models should not stop"
    target, original = candidates[0], originals[0]
    k = _first_new_token_position(original)
    # A batch mate that never emits original[k] keeps generating after the target stops, so the raw output of
    # the target is padded and the engine has to cut it at <|im_end|>.
    others = [c for c, seq in zip(candidates[1:], originals[1:], strict=True) if original[k] not in seq]
    assert others, "no batch mate avoids the swapped token; change the candidate prompts"
    other = others[0]

    # At steps < k the winning token keeps its logit and the two swapped logits were both below it, so the
    # prefix is unchanged; at step k, <|im_end|> now carries the winning logit.
    stopped_dir = tmp_path / "stops"
    shutil.copytree(tiny_model_dir, stopped_dir)
    model = tiny_engine.model
    weight = model.lm_head.weight.detach().clone()
    swapped = weight.clone()
    swapped[[original[k], im_end]] = weight[[im_end, original[k]]]
    with torch.no_grad():
        model.lm_head.weight.copy_(swapped)
    try:
        model.save_pretrained(stopped_dir)
    finally:
        with torch.no_grad():
            model.lm_head.weight.copy_(weight)

    engine = TransformersEngine(stopped_dir, dtype="fp32", device="cpu", batch_size=2)
    try:
        ids = engine.generate_token_ids([target, other], max_new_tokens=max_new)
        texts = engine.generate([target, other], max_new_tokens=max_new)
    finally:
        engine.close()
    assert len(ids[1]) == max_new and im_end not in ids[1]  # the batch mate ran on: the target was padded
    assert ids[0] == [*original[:k], im_end]  # stopped: k answer tokens, then the end of turn
    assert texts[0] == tiny_engine.decode(original[:k])
    assert "<|im_end|>" not in texts[0] and "<|endoftext|>" not in texts[0]


# ---------------------------------------------------------------------------------------------------- SGLang request


def test_sglang_request_pairs_each_prompt_with_its_images(tiny_engine: TransformersEngine) -> None:
    query, ref = noise_image(0, 64, 64), noise_image(1, 80, 80)
    batch = [stage3_messages(query), rag_messages(query, "q", [(ref, "psoriasis", None)])]
    texts, images = sglang_request(tiny_engine.processor, batch)
    assert [t.count("<|image_pad|>") for t in texts] == [1, 2]
    assert all(t.endswith("<|im_start|>assistant\n<think>\n") for t in texts)
    assert [[im.size for im in ims] for ims in images] == [[(64, 64)], [(80, 80), (64, 64)]]


# ---------------------------------------------------------------------------------------------------- openai engine


@pytest.fixture(scope="module")
def remote(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """An OpenAI-compatible server on the tiny model: `hikari serve` itself (on a GPU machine: `vllm serve`)."""
    model = str(tiny_model_dir)
    with ServerProcess(["--stage1", model, "--stage2", model, "--stage3", model, "--dtype", "fp32", "--device", "cpu"],
                       log=tmp_path_factory.mktemp("remote") / "server.log",
                       env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}) as server:  # fmt: skip
        yield server


def test_openai_engine_answers_as_the_local_engine_does(remote: ServerProcess, tiny_engine: TransformersEngine) -> None:
    """Greedy over HTTP (PNG data URIs, the server's own decoding) = greedy in process, for every stage's messages."""
    query, ref = noise_image(0, 64, 64), noise_image(1, 80, 80)
    batch = [stage1_messages(query), *disease_batch([(100, 72)]), stage3_messages(query),
             rag_messages(query, "red plaque", [(ref, "psoriasis", None), (noise_image(2, 50, 70), "acne", None)])]
    with make_engine("openai", f"{remote.url}/v1", concurrency=2) as engine:
        assert engine.model == "model"  # the one model the server lists
        remote_texts = engine.generate(batch, max_new_tokens=12)
    assert remote_texts == tiny_engine.generate(batch, max_new_tokens=12)
    assert any(remote_texts)


def test_openai_engine_says_which_server_and_model(remote: ServerProcess) -> None:
    with pytest.raises(ValueError, match=r"serves \['model'\], not 'vega'"):
        make_engine("openai", f"{remote.url}/v1#vega")
    with pytest.raises(ValueError, match="give the model as its URL"):
        make_engine("openai", "vega")
    with make_engine("openai", "model", base_url=f"{remote.url}/v1") as engine:
        assert engine.model == "model"
    closed = remote.url.rsplit(":", 1)[0] + f":{free_port()}"
    with pytest.raises(EngineUnavailable, match="cannot reach"):
        make_engine("openai", f"{closed}/v1")


def test_wire_messages_carry_the_exact_pixels() -> None:
    image = noise_image(3, 30, 40)
    wire = to_wire_messages(stage3_messages(image))
    url = wire[0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert np.array_equal(np.asarray(decoded), np.asarray(image))


# ---------------------------------------------------------------------------------------------------- GPU engines


def _gpu_engine_or_skip(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (GPU machines: pip install the hikari extra)")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["vllm", "sglang"])
def test_gpu_engine_matches_transformers_on_the_tiny_model(
    name: str, tiny_model_dir: Path, tiny_engine: TransformersEngine
) -> None:
    _gpu_engine_or_skip(name)
    batch = disease_batch([(64, 64), (128, 96)])
    options = {"vllm": {"dtype": "float32", "gpu_memory_utilization": 0.3},
               "sglang": {"dtype": "float32", "mem_fraction_static": 0.3}}[name]  # fmt: skip
    with make_engine(name, tiny_model_dir, **options) as engine:
        texts = engine.generate(batch, max_new_tokens=8)
    assert len(texts) == 2 and all("<|im_end|>" not in t for t in texts)
    # Same weights, same prompt rendering, greedy: the first tokens agree with the reference implementation.
    reference = tiny_engine.generate(batch, max_new_tokens=8)
    assert [t[:4] for t in texts] == [r[:4] for r in reference]

"""The tiny offline Qwen3-VL: what it saves, its tokenizer and chat template, and that it trains and stops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

from hikari.data.labels import DISEASES
from hikari.data.prompts import STAGE2_TRAIN_PROMPTS, stage2_messages, stage2_target, with_answer
from hikari.demo.chat_template import QWEN3_VL_THINKING_CHAT_TEMPLATE, THINKING_GENERATION_PROMPT
from hikari.demo.tiny import (
    MAX_PIXELS,
    MERGE_SIZE,
    PATCH_SIZE,
    QWEN_ADDED_TOKENS,
    VOCAB_MULTIPLE,
    build_tiny_qwen3vl,
    directory_size,
)
from hikari.models.load import load_model, load_processor

MAX_SAVED_BYTES = 5 * 1024 * 1024


def _prompt_batch(processor: Any, messages: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True
    )


# --- what is saved -------------------------------------------------------------------------------------------


def test_saved_folder_is_complete_and_small(tiny_model_dir: Path) -> None:
    names = {p.name for p in tiny_model_dir.iterdir()}
    for required in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json", "processor_config.json"):
        assert required in names, f"{required} missing from {sorted(names)}"
    assert not any(name.endswith((".bin", ".pt")) for name in names), "weights must be safetensors only"
    assert directory_size(tiny_model_dir) <= MAX_SAVED_BYTES


def test_config_is_a_scaled_qwen3vl_whose_token_ids_match_the_tokenizer(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    tokenizer = load_processor(tiny_model_dir).tokenizer
    config = model.config
    assert isinstance(model, Qwen3VLForConditionalGeneration)
    assert model.dtype == torch.float32
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert config.vision_end_token_id == tokenizer.convert_tokens_to_ids("<|vision_end|>")

    text, vision = config.text_config, config.vision_config
    assert len(tokenizer) <= text.vocab_size < len(tokenizer) + VOCAB_MULTIPLE
    assert text.vocab_size % VOCAB_MULTIPLE == 0
    assert text.num_hidden_layers == 2
    assert text.num_attention_heads > text.num_key_value_heads  # grouped-query attention
    assert sum(text.rope_parameters["mrope_section"]) == text.head_dim // 2
    assert text.rope_parameters["mrope_interleaved"] is True
    assert vision.depth == 2 and vision.patch_size == 16
    assert vision.spatial_merge_size == 2 and vision.temporal_patch_size == 2
    assert vision.out_hidden_size == text.hidden_size
    assert all(0 <= i < vision.depth for i in vision.deepstack_visual_indexes)
    assert not config.tie_word_embeddings  # like Qwen3-VL-8B: lm_head is its own matrix
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()


def test_generation_config_stops_at_im_end_or_endoftext_and_is_greedy(tiny_model_dir: Path) -> None:
    generation = GenerationConfig.from_pretrained(tiny_model_dir)
    tokenizer = load_processor(tiny_model_dir).tokenizer
    assert generation.eos_token_id == [tokenizer.convert_tokens_to_ids("<|im_end|>"),
                                       tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    assert generation.pad_token_id == tokenizer.pad_token_id
    assert generation.do_sample is False


# --- tokenizer -----------------------------------------------------------------------------------------------


def test_tokenizer_class_pad_eos_and_padding_side(tiny_processor: Any) -> None:
    tokenizer = tiny_processor.tokenizer
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"  # transformers v5's name for Qwen2TokenizerFast
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.padding_side == "right"


@pytest.mark.parametrize(("token", "special"), QWEN_ADDED_TOKENS)
def test_added_tokens_are_single_ids_that_round_trip(tiny_processor: Any, token: str, special: bool) -> None:
    tokenizer = tiny_processor.tokenizer
    ids = tokenizer.encode(f"a{token}b", add_special_tokens=False)
    token_id = tokenizer.convert_tokens_to_ids(token)
    assert token_id in ids and ids.count(token_id) == 1
    assert tokenizer.encode(token, add_special_tokens=False) == [token_id]
    assert tokenizer.decode([token_id]) == token
    # Qwen3 marks chat/vision markers special (skip_special_tokens drops them) but not the think/tool tags.
    assert (token in tokenizer.all_special_tokens) is special
    assert (tokenizer.decode([token_id], skip_special_tokens=True) == "") is special


def test_tokenizer_is_lossless_and_compact_on_hikari_text(tiny_processor: Any) -> None:
    tokenizer = tiny_processor.tokenizer
    for text in ("This image shows squamous cell carcinoma in situ.", "Dermoscopy — naïve 皮肤 \t\n  x"):
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    # Trained on HIKARI's labels: every disease name costs at most one token per word (plus a space merge).
    for disease in DISEASES:
        assert len(tokenizer.tokenize(" " + disease)) <= len(disease.split()) + 1, disease
    assert len(tokenizer.tokenize(stage2_target("psoriasis"))) <= 6
    for role in ("system", "user", "assistant"):
        assert len(tokenizer.tokenize(role)) == 1


# --- chat template and processor -----------------------------------------------------------------------------


def test_chat_template_renders_the_thinking_generation_prompt(tiny_processor: Any, make_image: Any) -> None:
    messages = stage2_messages(make_image(64, 64), STAGE2_TRAIN_PROMPTS[0])
    prompt = tiny_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        f"{STAGE2_TRAIN_PROMPTS[0]}<|im_end|>\n" + THINKING_GENERATION_PROMPT
    )
    assert tiny_processor.chat_template == QWEN3_VL_THINKING_CHAT_TEMPLATE
    assert tiny_processor.tokenizer.chat_template == QWEN3_VL_THINKING_CHAT_TEMPLATE

    # A training target: the final assistant turn gets an (empty) think block, then the answer and <|im_end|>.
    full = tiny_processor.apply_chat_template(with_answer(messages, stage2_target("psoriasis")), tokenize=False)
    assert full == prompt + "\n</think>\n\nThis image shows psoriasis.<|im_end|>\n"


def test_chat_template_keeps_reasoning_only_after_the_last_user_query(tiny_processor: Any) -> None:
    messages = [
        {"role": "system", "content": "You are a dermatologist."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q1"}]},
        {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "<think>\nR2\n</think>\n\nA2"},
    ]
    rendered = tiny_processor.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are a dermatologist.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Q1<|im_end|>\n"
        "<|im_start|>assistant\nA1<|im_end|>\n"  # before the last query: reasoning dropped
        "<|im_start|>user\nQ2<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nR2\n</think>\n\nA2<|im_end|>\n"  # reasoning split out of content, kept
    )


def test_processor_expands_one_image_pad_per_merged_vision_token(tiny_processor: Any, make_image: Any) -> None:
    batch = _prompt_batch(tiny_processor, stage2_messages(make_image(96, 128), STAGE2_TRAIN_PROMPTS[1]))
    grid = batch["image_grid_thw"]
    assert grid.tolist() == [[1, 96 // PATCH_SIZE, 128 // PATCH_SIZE]]
    image_pad = tiny_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((batch["input_ids"] == image_pad).sum()) == int(grid.prod()) // MERGE_SIZE**2
    assert batch["pixel_values"].shape == (int(grid.prod()), 3 * 2 * PATCH_SIZE * PATCH_SIZE)
    # Large images are shrunk to the pixel budget, which bounds the sequence length.
    big = _prompt_batch(tiny_processor, stage2_messages(make_image(600, 800), STAGE2_TRAIN_PROMPTS[1]))
    assert int(big["image_grid_thw"].prod()) * PATCH_SIZE**2 <= MAX_PIXELS


def test_video_input_runs_through_processor_and_model(tiny_model_dir: Path, tiny_processor: Any) -> None:
    from transformers.video_utils import VideoMetadata

    frames = np.random.default_rng(0).integers(0, 256, size=(4, 64, 64, 3), dtype=np.uint8)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe."}]}]
    text = tiny_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    metadata = VideoMetadata(total_num_frames=4, fps=2.0, frames_indices=list(range(4)))
    batch = tiny_processor(text=[text], videos=[frames], return_tensors="pt",
                           videos_kwargs={"video_metadata": [metadata], "do_sample_frames": False})
    assert batch["video_grid_thw"].tolist() == [[2, 4, 4]]  # 4 frames / temporal patch 2; 64 px / 16
    with torch.no_grad():
        loss = load_model(tiny_model_dir)(**batch, labels=batch["input_ids"]).loss
    assert torch.isfinite(loss)


# --- determinism ---------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tiny_model_dir: Path, tmp_path: Path) -> None:
    reference = load_file(tiny_model_dir / "model.safetensors")
    again = load_file(build_tiny_qwen3vl(tmp_path / "again", seed=0) / "model.safetensors")
    other = load_file(build_tiny_qwen3vl(tmp_path / "other", seed=1) / "model.safetensors")
    assert reference.keys() == again.keys() == other.keys()
    assert all(torch.equal(reference[k], again[k]) for k in reference)
    assert not all(torch.equal(reference[k], other[k]) for k in reference)
    # The vocabulary depends on the training text only, so models of any seed share a tokenizer.
    assert (tmp_path / "other" / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()


def test_build_refuses_to_clobber_a_non_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        build_tiny_qwen3vl(out)
    assert (out / "notes.txt").read_text() == "keep me"
    build_tiny_qwen3vl(out, overwrite=True)
    assert (out / "config.json").is_file() and not (out / "notes.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folder left behind


def test_custom_corpus_changes_the_vocabulary(tmp_path: Path) -> None:
    out = build_tiny_qwen3vl(tmp_path / "m", corpus=["zebra quokka " * 5] * 20)
    tokenizer = load_processor(out).tokenizer
    assert tokenizer.tokenize(" quokka") == ["Ġquokka"]


# --- training and generation ---------------------------------------------------------------------------------


def test_forward_with_labels_gives_finite_loss_and_gradients(tiny_model_dir: Path, tiny_processor: Any,
                                                             make_image: Any) -> None:
    model = load_model(tiny_model_dir).train()
    batch = _prompt_batch(tiny_processor, stage2_messages(make_image(64, 80), STAGE2_TRAIN_PROMPTS[2]))
    out = model(**batch, labels=batch["input_ids"])
    assert out.logits.shape == (1, batch["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    out.loss.backward()
    vision_grad = model.model.visual.patch_embed.proj.weight.grad
    assert vision_grad is not None and torch.isfinite(vision_grad).all() and vision_grad.abs().sum() > 0


@pytest.fixture(scope="module")
def overfit(tiny_model_dir: Path) -> dict[str, Any]:
    """The tiny model after overfitting one image -> "This image shows psoriasis." pair (a few seconds on CPU)."""
    processor = load_processor(tiny_model_dir)
    tokenizer = processor.tokenizer
    rng = np.random.default_rng(7)
    from PIL import Image

    image = Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8), mode="RGB")
    messages = stage2_messages(image, STAGE2_TRAIN_PROMPTS[0])
    prompt_text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full_text = processor.apply_chat_template(with_answer(messages, stage2_target("psoriasis")), tokenize=False)
    assert full_text.startswith(prompt_text)
    # Tokenise prompt and answer separately, as generation sees them ("\n\n" could merge across the boundary).
    # "\n</think>\n\nThis image shows psoriasis.<|im_end|>": the empty think block, the answer, end of turn.
    answer_text = full_text[len(prompt_text):].removesuffix("\n")
    answer_ids = tokenizer(answer_text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    prompt = _prompt_batch(processor, messages)
    n_prompt = prompt["input_ids"].shape[1]

    model = load_model(tiny_model_dir)
    with torch.no_grad():
        before = model.generate(**prompt, max_new_tokens=answer_ids.shape[1])[0, n_prompt:].tolist()

    batch = dict(prompt)
    batch["input_ids"] = torch.cat([prompt["input_ids"], answer_ids], dim=1)
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["mm_token_type_ids"] = torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(answer_ids)], dim=1)
    labels = batch["input_ids"].clone()
    labels[:, :n_prompt] = -100  # learn the answer only
    torch.manual_seed(0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if loss.item() < 0.03:  # comfortably past the point where greedy decoding reproduces the answer
            break
    model.eval()
    return {"model": model, "processor": processor, "prompt": prompt, "answer_ids": answer_ids[0].tolist(),
            "before": before, "losses": losses}


def test_overfit_model_answers_and_stops_at_im_end(overfit: dict[str, Any]) -> None:
    model, processor, prompt = overfit["model"], overfit["processor"], overfit["prompt"]
    tokenizer = processor.tokenizer
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    answer_ids = overfit["answer_ids"]
    assert answer_ids[-1] == im_end
    assert overfit["before"] != answer_ids  # the random model does not already say it
    assert overfit["losses"][-1] < 0.03 < overfit["losses"][0]

    max_new_tokens = 32
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=max_new_tokens)[0, prompt["input_ids"].shape[1]:]
    assert generated.tolist() == answer_ids
    assert len(generated) < max_new_tokens  # stopped by <|im_end|>, not by the length limit
    assert tokenizer.decode(generated, skip_special_tokens=True) == "\n</think>\n\nThis image shows psoriasis."


def test_left_padded_batch_of_two_image_sizes_matches_single_examples(tiny_model_dir: Path,
                                                                      make_image: Any) -> None:
    processor = load_processor(tiny_model_dir, padding_side="left")
    model = load_model(tiny_model_dir)
    conversations = [
        stage2_messages(make_image(64, 64, seed=1), STAGE2_TRAIN_PROMPTS[0]),
        stage2_messages(make_image(96, 128, seed=2), STAGE2_TRAIN_PROMPTS[0]),
    ]
    batch = processor.apply_chat_template(conversations, tokenize=True, return_dict=True, return_tensors="pt",
                                          add_generation_prompt=True, padding=True)
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4], [1, 6, 8]]
    mask = batch["attention_mask"]
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()  # the short prompt is padded on the left
    assert int((1 - mask[0]).sum()) == (48 - 16) // MERGE_SIZE**2  # the difference in image tokens

    singles = [_prompt_batch(processor, conversation) for conversation in conversations]
    with torch.no_grad():
        batch_logits = model(**batch).logits[:, -1]
        single_logits = torch.cat([model(**single).logits[:, -1] for single in singles])
        torch.testing.assert_close(batch_logits, single_logits, atol=1e-4, rtol=1e-4)

        new = 4
        batch_out = model.generate(**batch, max_new_tokens=new, min_new_tokens=new)
        assert batch_out.shape == (2, batch["input_ids"].shape[1] + new)
        for row, single in enumerate(singles):
            single_out = model.generate(**single, max_new_tokens=new, min_new_tokens=new)
            assert batch_out[row, -new:].tolist() == single_out[0, -new:].tolist()

"""Chat messages + target answers → Qwen3-VL batches, shared by training and exact answer scoring.

`VLMCollator` renders each (messages, target) pair through the processor's chat template, tokenizes prompt and
completion, and masks everything but the answer with `IGNORE_INDEX`. `supervised_positions` turns those labels
into the positions whose *next* token is supervised, which is what a loss or a scorer reads from the model.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from hikari.config import TrainConfig, default
from hikari.data import prompts as P

IGNORE_INDEX = -100


def supervised_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean mask (B, L) of positions whose *next* token is supervised, and those targets (N,)."""
    shifted = labels[:, 1:]
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = shifted != IGNORE_INDEX
    return mask, shifted[shifted != IGNORE_INDEX]


class VLMCollator:
    """Chat-template, tokenize and mask a batch; labels supervise the assistant turn up to its `<|im_end|>`.

    Prompt and completion are tokenized *separately* and concatenated (as TRL does for prompt-completion
    data): the prompt is exactly what inference feeds the model (the chat template with its generation prompt,
    ending in `<think>\n` for Thinking models), and the completion is the rest of the rendered conversation.
    Tokenizing the joined text instead would merge the boundary newlines into one token (`"\n\n"`) that the
    model never sees at inference. Images are expanded by the processor inside the prompt only.

    Returns `input_ids`/`attention_mask`/`labels`/`mm_token_type_ids` (B, L), `pixel_values` (N_patches, D),
    `image_grid_thw` (N_images, 3).
    """

    def __init__(self, processor: Any, *, max_length: int = default(TrainConfig, "max_length")) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_length = max_length
        self.pad_id = self.tokenizer.pad_token_id
        # Shared memory, not a plain int: with `train.num_workers > 0` the collator runs in DataLoader worker
        # processes, and a plain attribute would count there while the run's report read 0 in the main process.
        self._n_truncated = multiprocessing.Value("q", 0)

    @property
    def n_truncated(self) -> int:
        """Sequences whose answer tail was cut to fit `max_length`, over every process that used this collator."""
        return int(self._n_truncated.value)

    def render(self, messages: list[dict[str, Any]], target: str) -> tuple[str, str]:
        """(prompt text, completion text) of one example, from the processor's chat template."""
        prompt = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = self.processor.apply_chat_template(P.with_answer(messages, target), tokenize=False)
        if not full.startswith(prompt):
            raise ValueError(
                "chat template: the prompt with generation prompt is not a prefix of the full conversation, so "
                "the answer cannot be separated from the prompt for this template"
            )
        completion = full[len(prompt) :]
        end = completion.find("<|im_end|>")
        if end < 0:
            raise ValueError("chat template: the assistant turn has no <|im_end|>")
        # Supervise through <|im_end|> (the stop token), not the newline the template puts after it.
        return prompt, completion[: end + len("<|im_end|>")]

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        prompts, completions, images = [], [], []
        for item in items:
            prompt, completion = self.render(item["messages"], item["target"])
            prompts.append(prompt)
            completions.append(completion)
            images.extend(c["image"] for m in item["messages"] for c in m["content"] if c.get("type") == "image")
        self.tokenizer.padding_side = "right"
        enc = self.processor(text=prompts, images=images or None, padding=True, return_tensors="pt")
        prompt_lens = enc["attention_mask"].sum(-1).tolist()
        answer_ids, encoded = self.tokenize_completions(completions)
        rows, label_rows, mm_rows = [], [], []
        for b, (n_prompt, answer) in enumerate(zip(prompt_lens, answer_ids, strict=True)):
            keep = max(0, min(len(answer), self.max_length - n_prompt))
            if keep == 0:
                raise ValueError(
                    f"{items[b].get('file_name', f'batch item {b}')}: the prompt is {n_prompt} tokens, no room for "
                    f"its answer within max_length={self.max_length}: lower the image size (data.max_image_size / "
                    "model.max_pixels) or raise train.max_length"
                )
            if keep < len(answer):
                with self._n_truncated.get_lock():  # cut only answer tails: image tokens must stay whole
                    self._n_truncated.value += 1
            prompt_ids = enc["input_ids"][b, :n_prompt]
            answer_t = torch.tensor(answer[:keep], dtype=prompt_ids.dtype)
            rows.append(torch.cat([prompt_ids, answer_t]))
            label_rows.append(torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), answer_t]))
            if "mm_token_type_ids" in enc:
                mm = enc["mm_token_type_ids"][b, :n_prompt]
                mm_rows.append(torch.cat([mm, torch.zeros_like(answer_t)]))
        out: dict[str, torch.Tensor] = {
            "input_ids": _pad(rows, self.pad_id),
            "labels": _pad(label_rows, IGNORE_INDEX),
            "attention_mask": _pad([torch.ones_like(r) for r in rows], 0),
        }
        if mm_rows:
            out["mm_token_type_ids"] = _pad(mm_rows, 0)
        for key in ("pixel_values", "image_grid_thw"):
            if key in enc:
                out[key] = enc[key]
        self.finish_batch(out, items, completions, encoded)
        return out

    def tokenize_completions(self, completions: list[str]) -> tuple[list[list[int]], Any]:
        """Token ids of each completion (no special tokens added), and whatever else a subclass computes from the
        same tokenization and wants back in `finish_batch` (None here)."""
        return self.tokenizer(completions, add_special_tokens=False)["input_ids"], None

    def finish_batch(
        self, batch: dict[str, torch.Tensor], items: Sequence[Mapping[str, Any]], completions: list[str], encoded: Any
    ) -> None:
        """Hook for subclasses: add fields to a finished batch (the STS collator adds `loss_weights`)."""


def _pad(rows: Sequence[torch.Tensor], value: int) -> torch.Tensor:
    """Right-pad 1-D tensors to one (B, L_max) tensor."""
    return torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True, padding_value=value)

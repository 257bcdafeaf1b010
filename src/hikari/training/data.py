"""Training examples per stage and the collator that turns them into Qwen3-VL batches.

Stage 1 asks for the disease group (one of three prompts, sampled per image), Stage 2 for the disease
("This image shows {disease}."; one, two or three samples per image, one per training prompt), Stage 3 for
the caption. Only the assistant answer is supervised: prompt, image and padding tokens get label -100.
"""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from hikari.data import prompts as P
from hikari.data.augment import Augmenter, oversample_indices
from hikari.data.images import load_rgb
from hikari.data.records import SkinCapRecord

if TYPE_CHECKING:
    from hikari.training.sts import STSConfig

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    """One supervised sample: an image, the user's question and the assistant's target answer."""

    record: SkinCapRecord
    prompt: str
    target: str
    # Reference cases shown before the image (RAG-in-Training): (image path, label, caption or None) each.
    references: tuple[tuple[str, str, str | None], ...] = ()


def build_examples(
    records: Sequence[SkinCapRecord],
    task: str,
    *,
    seed: int,
    samples_per_image: int = 1,
    group_context: str = "none",
    stage1_groups: Mapping[str, str] | None = None,
    references: Mapping[str, Sequence[tuple[str, str, str | None]]] | None = None,
) -> list[Example]:
    """The training examples of one stage, in record order (deterministic for a seed).

    `group_context` ('none' | 'ground_truth' | 'stage1') switches Stage 2 prompts to the M-series
    group-context prompt with the true group or the Stage 1 prediction (`stage1_groups`: file name → group).
    `references` (Stage 2 only; file name → (image path, label, caption or None) per reference) wraps each
    sample's question in the RAG prompt; every record needs an entry.
    """
    if references is not None and task != "disease":
        raise ValueError(f"references apply to the disease task (Stage 2), not {task!r}")
    rng = random.Random(seed)
    examples: list[Example] = []
    for rec in records:
        if task == "group":
            if rec.group is None:
                raise ValueError(f"record {rec.file_name}: disease {rec.disease!r} has no group")
            examples.append(Example(rec, rng.choice(P.STAGE1_PROMPTS), rec.group))
        elif task == "disease":
            target = P.stage2_target(rec.disease)
            if group_context == "none":
                if samples_per_image == 1:
                    chosen = [rng.choice(P.STAGE2_TRAIN_PROMPTS)]
                else:
                    chosen = list(P.STAGE2_TRAIN_PROMPTS[:samples_per_image])
            else:
                group = _context_group(rec, group_context, stage1_groups)
                chosen = [P.GROUP_CONTEXT_PROMPT.format(group=group)] * samples_per_image
            refs: tuple[tuple[str, str, str | None], ...] = ()
            if references is not None:
                if rec.file_name not in references:
                    raise ValueError(f"record {rec.file_name}: no precomputed references (stale reference cache?)")
                refs = tuple(tuple(r) for r in references[rec.file_name])  # type: ignore[misc]
            examples.extend(Example(rec, prompt, target, refs) for prompt in chosen)
        elif task == "caption":
            if not rec.caption.strip():
                raise ValueError(f"record {rec.file_name}: empty caption")
            examples.append(Example(rec, rng.choice(P.STAGE3_PROMPTS), rec.caption))
        else:
            raise ValueError(f"unknown task {task!r}; valid: group, disease, caption")
    return examples


def _context_group(rec: SkinCapRecord, mode: str, stage1_groups: Mapping[str, str] | None) -> str:
    if mode == "ground_truth":
        if rec.group is None:
            raise ValueError(f"record {rec.file_name}: no ground-truth group for group context")
        return rec.group
    if mode == "stage1":
        if stage1_groups is None or rec.file_name not in stage1_groups:
            raise ValueError(f"record {rec.file_name}: no Stage 1 prediction for group context")
        return stage1_groups[rec.file_name]
    raise ValueError(f"unknown group context {mode!r}; valid: none, ground_truth, stage1")


class SupervisedVLMDataset(Dataset):
    """Examples with optional square-root oversampling (by target) and seeded per-epoch augmentation."""

    def __init__(
        self,
        examples: Sequence[Example],
        *,
        seed: int,
        max_image_size: int,
        oversample: bool = False,
        augment: bool = False,
    ) -> None:
        self.examples = list(examples)
        labels = [ex.record.disease for ex in self.examples]
        self.indices = oversample_indices(labels, seed=seed, enabled=oversample)
        self.augmenter = Augmenter(seed, enabled=augment)
        self.max_image_size = max_image_size
        self.epoch = 0  # set by EpochSetter (a TrainerCallback) so augmentation differs per epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self.examples[self.indices[i]]
        image = load_rgb(ex.record.image_path, max_size=self.max_image_size)
        image = self.augmenter(image, index=i, epoch=self.epoch)
        if ex.references:
            # Reference images are shown as they are (no augmentation): only the query is a training view.
            refs = [(load_rgb(path, max_size=self.max_image_size), label, caption)
                    for path, label, caption in ex.references]  # fmt: skip
            messages = P.rag_messages(image, ex.prompt, refs)
        else:
            messages = P.user_message(image, ex.prompt)
        return {"messages": messages, "target": ex.target, "file_name": ex.record.file_name}


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

    def __init__(self, processor: Any, *, max_length: int = 2048, sts: STSConfig | None = None) -> None:
        self.processor = processor
        self.sts = sts  # Selective Token Supervision: adds `loss_weights` (B, L) aligned with `labels`
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
        encoded = None
        if self.sts is not None:  # tokenized once, with the character offsets the STS weights need
            from hikari.training.sts import encode_with_offsets

            encoded = encode_with_offsets(self.tokenizer, completions)
            answer_ids = encoded[0]
        else:
            answer_ids = self.tokenizer(completions, add_special_tokens=False)["input_ids"]
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
        if self.sts is not None:
            from hikari.training.sts import batch_token_weights

            targets = [item["target"] for item in items]
            out["loss_weights"] = batch_token_weights(out["labels"], completions, targets, self.tokenizer, self.sts,
                                                      encoded=encoded)  # fmt: skip
        return out


def _pad(rows: Sequence[torch.Tensor], value: int) -> torch.Tensor:
    """Right-pad 1-D tensors to one (B, L_max) tensor."""
    return torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True, padding_value=value)

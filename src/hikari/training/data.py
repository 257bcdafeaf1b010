"""Training examples per stage, the dataset that serves them, and the collator that adds STS weights.

Stage 1 asks for the disease group (one of three prompts, sampled per image), Stage 2 for the disease
("This image shows {disease}."; one, two or three samples per image, one per training prompt), Stage 3 for
the caption. Only the assistant answer is supervised: prompt, image and padding tokens get label -100
(`hikari.models.batching.VLMCollator`); `STSCollator` adds the Selective Token Supervision weights.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from hikari.config import STSConfig, TrainConfig, default
from hikari.data import prompts as P
from hikari.data.augment import Augmenter, oversample_indices
from hikari.data.images import load_rgb
from hikari.data.records import SkinCapRecord
from hikari.models.batching import VLMCollator
from hikari.training.sts import batch_token_weights, encode_with_offsets


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


class STSCollator(VLMCollator):
    """`VLMCollator` that also returns `loss_weights` (B, L), the Selective Token Supervision weight of every label
    position (0 where the label is ignored), computed from the same tokenization of the completions."""

    def __init__(self, processor: Any, *, sts: STSConfig, max_length: int = default(TrainConfig, "max_length")) -> None:
        super().__init__(processor, max_length=max_length)
        self.sts = sts

    def tokenize_completions(self, completions: list[str]) -> tuple[list[list[int]], Any]:
        encoded = encode_with_offsets(self.tokenizer, completions)  # once, with the character offsets STS needs
        return encoded[0], encoded

    def finish_batch(
        self, batch: dict[str, torch.Tensor], items: Sequence[Mapping[str, Any]], completions: list[str], encoded: Any
    ) -> None:
        targets = [item["target"] for item in items]
        batch["loss_weights"] = batch_token_weights(batch["labels"], completions, targets, self.tokenizer, self.sts,
                                                    encoded=encoded)  # fmt: skip

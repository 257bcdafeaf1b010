"""The one source of truth for every HIKARI prompt, answer template and chat-message layout.

Strings are the original's (see hikari-reference.md). Builders return chat messages in the Hugging Face
multimodal format, ``[{"role": "user", "content": [{"type": "image", "image": ...}, {"type": "text", ...}]}]``,
which both ``processor.apply_chat_template`` and our inference engines consume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hikari.data.labels import GROUPS

_GROUP_LINES = "\n".join(GROUPS)
_STAGE1_SUFFIX = "\n\nAnswer with only the category number and name."

STAGE1_PROMPTS: tuple[str, ...] = (
    f"Classify this skin condition into one of these 4 medical categories:\n{_GROUP_LINES}{_STAGE1_SUFFIX}",
    f"What medical group does this skin lesion belong to?\n{_GROUP_LINES}{_STAGE1_SUFFIX}",
    f"Identify which medical category this skin condition belongs to:\n{_GROUP_LINES}{_STAGE1_SUFFIX}",
)

STAGE2_TRAIN_PROMPTS: tuple[str, ...] = (
    "What skin disease is shown in this image?",
    "Identify the dermatological condition in this photograph.",
    "What is the diagnosis for the skin lesion shown?",
)
STAGE2_TARGET = "This image shows {disease}."

# Stage 2 inference prompts P0..P3. P0 is verbatim; P1-P3 keep the original's structure and closing lines.
STAGE2_INFERENCE_PROMPTS: dict[str, str] = {
    "P0": (
        "Carefully examine this dermatological image. Look for: lesion morphology (papule/plaque/macule/nodule), "
        "color (red/violet/white/brown/black), scale or crust, border sharpness, and distribution. "
        "Based on these visual features, what is the specific skin disease?"
    ),
    "P1": (
        "Analyze this dermatological image step by step:\n"
        "Step 1: Describe the lesion morphology (papule, plaque, macule, nodule).\n"
        "Step 2: Describe the color (red, violet, white, brown, black).\n"
        "Step 3: Note any scale, crust or ulceration.\n"
        "Step 4: Assess border sharpness and distribution.\n"
        "Step 5: Based on these features, state the specific skin disease."
    ),
    "P2": (
        "List the 3 most likely diagnoses for the skin lesion in this image, from most to least likely, "
        "then give your answer on the last line as:\nFinal diagnosis: [Disease]"
    ),
    "P3": (
        "Examine this dermatological image and fill in:\n"
        "- Morphology:\n- Color:\n- Scale/crust:\n- Border:\n- Distribution:\n"
        "Diagnosis: [state the specific skin disease]"
    ),
}

GROUP_CONTEXT_PROMPT = (
    "This skin lesion belongs to the group '{group}'. Examine the lesion morphology (papules, plaques, macules), "
    "color (red, violet, white, brown), scale/crust, border sharpness, and distribution pattern. "
    "Based on these visual features, what is the specific skin disease?"
)
SOFT_GROUP_CONTEXT = "Primary: {g1} ({p1}%), Alternative: {g2} ({p2}%)"

RAG_INTRO = "Here are similar reference cases for context:"
RAG_REFERENCE = "Reference {i}: {label}"
RAG_REFERENCE_DESCRIPTION = "\nDescription: {caption}"
RAG_OUTRO = "\nNow, identify the disease in this new image:"

STAGE3_PROMPTS: tuple[str, ...] = (
    "Describe this skin lesion image in detail. Include information about its appearance, possible diagnosis, "
    "and recommended examinations.",
    "Provide a clinical description of the skin condition shown in this image.",
    "What are the visual characteristics of this skin lesion? Describe its morphology and suggest possible "
    "diagnoses.",
)
STAGE3_EVAL_PROMPT = STAGE3_PROMPTS[0]
GUIDED_PREFIX = "Stage 2 diagnosis: {label}.\n\n"


def user_message(image: Any, text: str) -> list[dict[str, Any]]:
    """One user turn holding an image (PIL image or path) followed by text."""
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


def with_answer(messages: list[dict[str, Any]], answer: str) -> list[dict[str, Any]]:
    """Append the assistant turn used as the training target."""
    return [*messages, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]


def stage1_messages(image: Any, prompt_index: int = 0) -> list[dict[str, Any]]:
    return user_message(image, STAGE1_PROMPTS[prompt_index])


def stage2_target(disease: str) -> str:
    return STAGE2_TARGET.format(disease=disease)


def stage2_messages(image: Any, prompt: str, group_context: str | None = None) -> list[dict[str, Any]]:
    """Stage 2 question; `group_context` (a group name) switches to the M-series group-context prompt."""
    text = GROUP_CONTEXT_PROMPT.format(group=group_context) if group_context is not None else prompt
    return user_message(image, text)


def rag_messages(
    image: Any,
    question: str,
    references: Sequence[tuple[Any, str, str | None]],
) -> list[dict[str, Any]]:
    """The RAG wrapper: intro, then per reference (image, label, optional caption), then the query image.

    Each reference contributes exactly one image; the query image comes last, right before the question.
    """
    content: list[dict[str, Any]] = [{"type": "text", "text": RAG_INTRO}]
    for i, (ref_image, label, caption) in enumerate(references, start=1):
        text = RAG_REFERENCE.format(i=i, label=label)
        if caption:
            text += RAG_REFERENCE_DESCRIPTION.format(caption=caption)
        content += [{"type": "image", "image": ref_image}, {"type": "text", "text": text}]
    content += [
        {"type": "text", "text": RAG_OUTRO},
        {"type": "image", "image": image},
        {"type": "text", "text": question},
    ]
    return [{"role": "user", "content": content}]


def stage3_messages(image: Any, prompt_index: int = 0, guided_label: str | None = None) -> list[dict[str, Any]]:
    """Stage 3 caption request; `guided_label` adds the "Stage 2 diagnosis: …" prefix of guided evaluation."""
    text = STAGE3_PROMPTS[prompt_index]
    if guided_label is not None:
        text = GUIDED_PREFIX.format(label=guided_label) + text
    return user_message(image, text)


def all_prompt_texts() -> list[str]:
    """Every fixed prompt string (used to train the tiny tokenizer so prompts tokenize compactly)."""
    texts = [*STAGE1_PROMPTS, *STAGE2_TRAIN_PROMPTS, *STAGE2_INFERENCE_PROMPTS.values(), *STAGE3_PROMPTS]
    texts += [GROUP_CONTEXT_PROMPT, SOFT_GROUP_CONTEXT, RAG_INTRO, RAG_REFERENCE, RAG_OUTRO, GUIDED_PREFIX]
    texts += list(GROUPS)
    return texts

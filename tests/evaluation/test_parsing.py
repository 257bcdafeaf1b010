from __future__ import annotations

import json
from pathlib import Path

import pytest

from hikari.data.labels import DISEASES, GROUPS, UNKNOWN
from hikari.evaluation.parsing import (
    ParsedAnswer,
    ParsedCaption,
    extract_answer,
    match_label,
    parse_caption,
    parse_diagnosis,
    strip_thinking,
)

# ---------------------------------------------------------------------------------------------------------------
# strip_thinking
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "visible", "truncated"),
    [
        ("psoriasis", "psoriasis", False),
        ("<think>maybe lichen planus</think>\n\npsoriasis", "psoriasis", False),
        ("<THINK>a</THINK>x<think>b</think>y", "xy", False),
        # Qwen3 thinking templates open <think> in the prompt: only the closing tag is generated.
        ("silvery, so psoriasis\n</think>\n\nThis image shows psoriasis.", "This image shows psoriasis.", False),
        ("first</think>second</think>third", "third", False),
        ("<think>the lesion is red and", "", True),
        ("Answer first <think>then an unfinished thought", "Answer first", True),
        ("", "", False),
    ],
)  # fmt: skip
def test_strip_thinking(raw: str, visible: str, truncated: bool) -> None:
    assert strip_thinking(raw) == (visible, truncated)


# ---------------------------------------------------------------------------------------------------------------
# extract_answer
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("This image shows melanocytic nevi.", "melanocytic nevi"),
        ("this image shows a basal cell carcinoma!", "basal cell carcinoma"),
        ("1. psoriasis\n2. lichen planus\n3. eczema\nFinal diagnosis: [Lichen planus]", "Lichen planus"),
        ("Final Diagnosis: psoriasis\nOn reflection:\nFINAL DIAGNOSIS: **Sarcoidosis**.", "Sarcoidosis"),
        ("- Morphology: plaque\n- Color: red\nDiagnosis: Scleroderma", "Scleroderma"),
        ("**Diagnosis**: acne vulgaris", "acne vulgaris"),
        ("Final diagnosis:\n\n  Lupus erythematosus  \n", "Lupus erythematosus"),
        ("Step 1: red plaques\nStep 5: the disease is psoriasis.\n\n", "Step 5: the disease is psoriasis"),
        ("Differential diagnosis: psoriasis, eczema\nMost likely lichen planus", "Most likely lichen planus"),
        ("Some text\n\n**\n", "Some text"),
        ("", ""),
        ("Final diagnosis:", ""),
    ],
)  # fmt: skip
def test_extract_answer(text: str, answer: str) -> None:
    assert extract_answer(text) == answer


# ---------------------------------------------------------------------------------------------------------------
# match_label — diseases
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        # exact (case, punctuation) and aliases
        ("Psoriasis", "psoriasis"),
        ("BASAL CELL CARCINOMA", "basal cell carcinoma"),
        ("bcc", "basal cell carcinoma"),
        ("discoid lupus", "lupus erythematosus"),
        ("melanocytic nevus", "melanocytic nevi"),
        ("squamous cell carcinoma", "squamous cell carcinoma in situ"),
        # containment: a label or alias as whole words inside a longer phrase
        ("basal cell carcinoma nodular", "basal cell carcinoma"),
        ("lupus erythematosus (SLE)", "lupus erythematosus"),
        ("psoriasis vulgaris", "psoriasis"),
        ("chronic plaque psoriasis", "psoriasis"),
        ("psoriasis, but lichen planus is possible", "psoriasis"),  # earliest mention wins
        ("lichen planus rather than psoriasis", "lichen planus"),
        # word overlap: plural, partial names
        ("basal cell carcinomas", "basal cell carcinoma"),
        ("cell carcinoma of squamous type", "squamous cell carcinoma in situ"),
        ("erythematosus", "lupus erythematosus"),
        ("planus", "lichen planus"),
        # fuzzy (token-sort ratio >= 70)
        ("psoriasiss", "psoriasis"),
        ("photodermatosis", "photodermatoses"),
        ("scleroderm", "scleroderma"),
        ("sarcoidossis", "sarcoidosis"),
        # unknowns
        ("eczema", UNKNOWN),
        ("tinea corporis", UNKNOWN),
        ("", UNKNOWN),
        ("   ", UNKNOWN),
    ],
)
def test_match_label_diseases(answer: str, label: str) -> None:
    assert match_label(answer, DISEASES) == label


def test_match_label_word_overlap_tie_prefers_the_longer_label_then_order() -> None:
    # "carcinoma" is one shared word with both carcinoma labels: the one with more content words wins.
    assert match_label("carcinoma", DISEASES) == "squamous cell carcinoma in situ"
    # equal length too → the first label in the given order
    assert match_label("alpha", ["alpha beta", "alpha gamma"]) == "alpha beta"
    assert match_label("alpha", ["alpha gamma", "alpha beta"]) == "alpha gamma"


def test_match_label_fuzzy_threshold_is_respected() -> None:
    assert match_label("psoriasiss", DISEASES, fuzzy_threshold=100) == UNKNOWN
    assert match_label("scleroderm", DISEASES, fuzzy_threshold=70) == "scleroderma"


def test_match_label_does_not_fuzzy_match_short_aliases() -> None:
    # "mold" vs the alias "mole" has a token-sort ratio of 75; only full names take part in the fuzzy step.
    assert match_label("mold", DISEASES) == UNKNOWN


def test_match_label_only_uses_the_given_labels() -> None:
    labels = ["psoriasis", "acne vulgaris"]
    assert match_label("bcc", labels) == UNKNOWN
    assert match_label("acne", labels) == "acne vulgaris"


def test_match_label_needs_labels() -> None:
    with pytest.raises(ValueError, match="at least one label"):
        match_label("psoriasis", [])


# ---------------------------------------------------------------------------------------------------------------
# match_label — groups
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "group_index"),
    [
        ("3", 2),
        ("3.", 2),
        ("3. Malignant", 2),
        ("3. Malignant Skin Tumors", 2),
        ("Malignant Skin Tumors", 2),
        ("malignant skin tumours", 2),
        ("Group 4", 3),
        ("Category 1: inflammatory", 0),
        ("1. Inflammatory and Autoimmune Diseases", 0),
        ("Benign Tumors, Nevi and Cysts", 1),
        ("acne & follicular", 3),
        ("autoimmune disease", 0),
        # the collapsed STS model answers an old group name with its number
        ("2. Raised Lesions & Tumors", 1),
    ],
)
def test_match_label_groups(answer: str, group_index: int) -> None:
    assert match_label(answer, GROUPS) == GROUPS[group_index]


def test_match_label_group_number_must_exist() -> None:
    assert match_label("7", GROUPS) == UNKNOWN
    assert match_label("skin cancer", GROUPS) == UNKNOWN


# ---------------------------------------------------------------------------------------------------------------
# parse_diagnosis / parse_caption
# ---------------------------------------------------------------------------------------------------------------


def test_parse_diagnosis_full_pipeline() -> None:
    raw = "<think>Red plaques with silvery scale… could be lichen planus</think>\nFinal diagnosis: **Psoriasis**."
    assert parse_diagnosis(raw, DISEASES) == ParsedAnswer("psoriasis", "Psoriasis", False)
    raw = "violaceous papules, so lichen planus.\n</think>\n\nThis image shows lichen planus."
    assert parse_diagnosis(raw, DISEASES) == ParsedAnswer("lichen planus", "lichen planus", False)
    assert parse_diagnosis("This image shows 3. Malignant Skin Tumors.", GROUPS).label == GROUPS[2]


def test_parse_diagnosis_truncated_thinking_is_unknown() -> None:
    # An unfinished thought mentions a disease, but it is never taken as the answer.
    assert parse_diagnosis("<think>this looks like psoriasis but", DISEASES) == ParsedAnswer(UNKNOWN, "", True)
    # A thinking model (opening tag in the prompt) that never closed its thought.
    assert parse_diagnosis("red plaques, maybe psoriasis", DISEASES, thinking=True) == ParsedAnswer(UNKNOWN, "", True)
    # The same text from a non-thinking model is an answer.
    assert parse_diagnosis("red plaques, maybe psoriasis", DISEASES).label == "psoriasis"


def test_parse_caption() -> None:
    assert parse_caption("<think>hmm</think>\nA red plaque.") == ParsedCaption("A red plaque.", False)
    assert parse_caption("reasoning</think>A red plaque.", thinking=True) == ParsedCaption("A red plaque.", False)
    assert parse_caption("still reasoning about the plaque", thinking=True) == ParsedCaption("", True)
    assert parse_caption("<think>still reasoning") == ParsedCaption("", True)
    assert parse_caption("  A red plaque.  ") == ParsedCaption("A red plaque.", False)


def test_reference_predicted_raw_maps_like_the_original(reference_dir: Path) -> None:
    """Our parser reproduces the original predicted_raw → predicted mapping on both diagnosis files, including
    "squamous cell carcinoma" → "... in situ" and "basal cell carcinoma nodular" → "basal cell carcinoma"."""
    names = [
        "results_disease_fuzzytopk_s1cascade_RAGR2_a09_val_predictions.json",
        "results_disease_fuzzytopk_s1cascade_ragR2_a09_RAGR0_a09_val_predictions.json",
    ]
    raws: set[str] = set()
    for name in names:
        items = json.loads((reference_dir / name).read_text(encoding="utf-8"))["predictions"]
        agree = sum(parse_diagnosis(p["predicted_raw"], DISEASES).label == p["predicted"] for p in items)
        assert agree == len(items) == 99, name
        raws |= {p["predicted_raw"] for p in items}
    assert {"squamous cell carcinoma", "basal cell carcinoma nodular"} <= raws

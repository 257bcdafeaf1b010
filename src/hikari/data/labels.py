"""The one source of truth for HIKARI's diseases, disease groups, aliases and disease-name normalisation.

Every other module imports from here: the data reader, prompts, parsers, metrics, the STS lexicon and the
synthetic data generator. Nothing else in the package spells a disease or group name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from rapidfuzz import fuzz

# The four Stage 1 groups, verbatim as the model is trained to answer them.
GROUPS: tuple[str, ...] = (
    "1. Inflammatory & Autoimmune Diseases",
    "2. Benign Tumors, Nevi & Cysts",
    "3. Malignant Skin Tumors",
    "4. Acne & Follicular Disorders",
)

# The 10 Stage 2 diseases (the 10 most frequent SkinCAP diseases after normalisation), by group.
DISEASES_BY_GROUP: dict[str, tuple[str, ...]] = {
    GROUPS[0]: (
        "psoriasis",
        "lupus erythematosus",
        "lichen planus",
        "scleroderma",
        "photodermatoses",
        "sarcoidosis",
    ),
    GROUPS[1]: ("melanocytic nevi",),
    GROUPS[2]: ("squamous cell carcinoma in situ", "basal cell carcinoma"),
    GROUPS[3]: ("acne vulgaris",),
}

DISEASES: tuple[str, ...] = tuple(d for ds in DISEASES_BY_GROUP.values() for d in ds)
DISEASE_TO_GROUP: dict[str, str] = {d: g for g, ds in DISEASES_BY_GROUP.items() for d in ds}

# Aliases used by the disease-mention-rate metric (and by the STS medical lexicon).
ALIASES: dict[str, tuple[str, ...]] = {
    "psoriasis": ("psoriasis", "psoriatic"),
    "lupus erythematosus": ("lupus", "lupus erythematosus", "discoid lupus"),
    "lichen planus": ("lichen planus", "lichen"),
    "scleroderma": ("scleroderma", "systemic sclerosis", "morphea"),
    "photodermatoses": (
        "photodermatosis",
        "photodermatoses",
        "photosensitivity",
        "photodermato",
        "light sensitivity",
    ),
    "sarcoidosis": ("sarcoidosis", "sarcoid"),
    "melanocytic nevi": ("melanocytic nevi", "melanocytic nevus", "nevi", "nevus", "mole", "melanocytic"),
    "squamous cell carcinoma in situ": (
        "squamous cell carcinoma in situ",
        "sccis",
        "squamous cell carcinoma",
        "squamous",
    ),
    "basal cell carcinoma": ("basal cell carcinoma", "bcc", "basal cell"),
    "acne vulgaris": ("acne vulgaris", "acne", "comedone", "comedonal"),
}

# The original's forced canonical names, applied after lowercase/strip and before counting.
CANONICAL_MAP: dict[str, str] = {
    "squamous cell carcinoma": "squamous cell carcinoma in situ",
}

# Token-sort ratio at or above which a rarer spelling is merged into a top-K disease (the original's value).
FUZZY_MERGE_THRESHOLD = 91.0

UNKNOWN = "Unknown"


def clean_disease(name: object) -> str:
    """Lowercase, strip and collapse whitespace, then apply the forced canonical map.

    >>> clean_disease("  Squamous Cell  Carcinoma ")
    'squamous cell carcinoma in situ'
    """
    text = " ".join(str(name).strip().lower().split())
    return CANONICAL_MAP.get(text, text)


def top_k_diseases(diseases: Iterable[str], k: int) -> list[str]:
    """The k most frequent (already cleaned) disease names; ties broken alphabetically for determinism."""
    counts = Counter(d for d in diseases if d)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [d for d, _ in ranked[:k]]


def fuzzy_merge_map(
    diseases: Iterable[str], targets: Iterable[str], threshold: float = FUZZY_MERGE_THRESHOLD
) -> dict[str, str]:
    """Map each name not in `targets` to the best target whose token-sort ratio is >= threshold.

    Names that reach no target are left out of the map (the caller drops them). Targets map to themselves.
    """
    target_list = list(targets)
    mapping = {t: t for t in target_list}
    for name in sorted(set(diseases)):
        if name in mapping or not name:
            continue
        best, best_score = None, -1.0
        for t in target_list:
            score = fuzz.token_sort_ratio(name, t)
            if score > best_score:
                best, best_score = t, score
        if best is not None and best_score >= threshold:
            mapping[name] = best
    return mapping


def normalise_diseases(
    raw: Iterable[object], top_k: int, threshold: float = FUZZY_MERGE_THRESHOLD
) -> tuple[list[str | None], list[str]]:
    """The original HIKARI preprocessing: clean, pick the top-K, fuzzy-merge rare spellings into them.

    Returns one normalised name per input (None when the row falls outside the top-K) and the top-K list.
    """
    cleaned = [clean_disease(r) for r in raw]
    top = top_k_diseases(cleaned, top_k)
    mapping = fuzzy_merge_map(cleaned, top, threshold)
    return [mapping.get(c) for c in cleaned], top


def group_of(disease: str, mapping: Mapping[str, str] = DISEASE_TO_GROUP) -> str:
    """The Stage 1 group of a disease; raises with the valid names when it is not one of the 10."""
    try:
        return mapping[disease]
    except KeyError:
        raise KeyError(f"unknown disease {disease!r}; valid: {', '.join(sorted(mapping))}") from None

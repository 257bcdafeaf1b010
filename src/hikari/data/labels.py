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


# Skin-type bands for subgroup reports. SkinCAP records skin type two ways: Fitzpatrick17k rows carry
# `fitzpatrick_scale` 1–6 (−1 = unknown), DDI rows carry `skin_tone` 12 / 34 / 56 (DDI's own three bands, which
# are Fitzpatrick I–II, III–IV and V–VI). Both map onto the same three bands here, and nowhere else.
SKIN_BANDS: tuple[str, ...] = ("I–II", "III–IV", "V–VI")
UNKNOWN_SKIN_BAND = "unknown"
FITZPATRICK_TO_BAND: dict[int, str] = {1: SKIN_BANDS[0], 2: SKIN_BANDS[0], 3: SKIN_BANDS[1], 4: SKIN_BANDS[1],
                                       5: SKIN_BANDS[2], 6: SKIN_BANDS[2]}  # fmt: skip
DDI_TONE_TO_BAND: dict[int, str] = {12: SKIN_BANDS[0], 34: SKIN_BANDS[1], 56: SKIN_BANDS[2]}
_MISSING_CELLS = frozenset({"", "nan", "none", "null", "na", "n/a", "-1", "-1.0"})


def _skin_code(value: object, what: str) -> int | None:
    """An integer code from a metadata cell ("3", "3.0", 3, 3.0); None for a missing or −1 cell."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip().lower()
    if text in _MISSING_CELLS:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a number") from None
    if number != int(number):
        raise ValueError(f"{what} {value!r} is not a whole number")
    return None if int(number) == -1 else int(number)


def skin_band(fitzpatrick_scale: object = None, skin_tone: object = None) -> str:
    """The skin band ("I–II", "III–IV", "V–VI" or "unknown") of a SkinCAP row from its `fitzpatrick_scale`
    (1–6; −1, empty or None = unknown) or its DDI `skin_tone` (12 / 34 / 56); Fitzpatrick wins when both are
    known. Any other value raises a ValueError naming the column and the valid values."""
    fitzpatrick = _skin_code(fitzpatrick_scale, "fitzpatrick_scale")
    if fitzpatrick is not None:
        if fitzpatrick not in FITZPATRICK_TO_BAND:
            raise ValueError(f"fitzpatrick_scale {fitzpatrick_scale!r} is not one of 1–6 or −1 (unknown)")
        return FITZPATRICK_TO_BAND[fitzpatrick]
    tone = _skin_code(skin_tone, "skin_tone")
    if tone is not None:
        if tone not in DDI_TONE_TO_BAND:
            raise ValueError(f"skin_tone {skin_tone!r} is not one of the DDI tones 12, 34, 56")
        return DDI_TONE_TO_BAND[tone]
    return UNKNOWN_SKIN_BAND

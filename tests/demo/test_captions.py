from __future__ import annotations

import random
import re

import pytest

from hikari.data.labels import ALIASES, DISEASES
from hikari.demo.captions import (
    MAX_WORDS,
    MIN_WORDS,
    RARE_DISEASES,
    RARE_VOCAB,
    caption_corpus,
    synth_caption,
    vocab_for,
)

_RECOMMENDATION = re.compile(r"recommend|advis|biopsy|dermoscop|examination|seek medical|suggested|required|should")
_DIAGNOSIS = re.compile(r"consistent with|may indicate|suggests|suggestive of|compatible with")


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


@pytest.mark.parametrize("disease", [*DISEASES, *RARE_DISEASES])
def test_caption_shape_and_content(disease: str) -> None:
    rng = random.Random(1)
    for _ in range(30):
        caption = synth_caption(rng, disease)
        assert MIN_WORDS <= len(caption.split()) <= MAX_WORDS, caption
        sentences = _sentences(caption)
        assert 3 <= len(sentences) <= 5, caption
        assert _DIAGNOSIS.search(" ".join(sentences[:2])), caption  # morphology → "consistent with X"
        assert _RECOMMENDATION.search(sentences[-1].lower()), caption  # ends with a recommendation
        lower = caption.lower()
        names = ALIASES[disease] if disease in ALIASES else RARE_VOCAB[disease].names
        assert any(name.lower() in lower for name in names), (disease, caption)


def test_captions_are_deterministic_for_an_rng_state() -> None:
    a = [synth_caption(random.Random(7), d) for d in DISEASES]
    b = [synth_caption(random.Random(7), d) for d in DISEASES]
    c = [synth_caption(random.Random(8), d) for d in DISEASES]
    assert a == b
    assert a != c


def test_corpus_is_deterministic_varied_and_covers_every_disease() -> None:
    corpus = caption_corpus(400, seed=3)
    assert len(corpus) == 400
    assert corpus == caption_corpus(400, seed=3)
    assert corpus != caption_corpus(400, seed=4)
    assert len(set(corpus)) > 0.95 * len(corpus)  # wording varies, captions are not templates stamped out
    for disease in DISEASES:
        assert any(any(a in c.lower() for a in ALIASES[disease]) for c in corpus), disease
    mean_words = sum(len(c.split()) for c in corpus) / len(corpus)
    assert 45 <= mean_words <= 65  # SkinCAP's English captions average ~61 words


def test_rare_diseases_are_synthetic_only() -> None:
    assert not set(RARE_DISEASES) & set(DISEASES)


def test_unknown_disease_lists_known_names() -> None:
    with pytest.raises(KeyError, match="psoriasis"):
        vocab_for("made-up disease")
    with pytest.raises(KeyError):
        synth_caption(random.Random(0), "made-up disease")

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
    SHADE_WORDS,
    LesionFacts,
    caption_corpus,
    facts_sentence,
    synth_caption,
    vocab_for,
)
from hikari.demo.synth_images import SKIN_TONES, render_picture, size_word

_RECOMMENDATION = re.compile(r"recommend|advis|biopsy|dermoscop|examination|seek medical|suggested|required|should")


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


@pytest.mark.parametrize("disease", [*DISEASES, *RARE_DISEASES])
def test_caption_shape_and_content(disease: str) -> None:
    rng = random.Random(1)
    for _ in range(30):
        caption = synth_caption(rng, disease)
        assert MIN_WORDS <= len(caption.split()) <= MAX_WORDS, caption
        sentences = _sentences(caption)
        assert len(sentences) == 4, caption  # diagnosis + facts, description, on this skin + advice, background
        assert sentences[0].startswith("This image shows "), caption  # the diagnosis first, as Stage 2 answers
        facts = sentences[0].split(": ", 1)[1]  # then what the picture shows, before any word that depends on it
        assert facts.startswith(("a single", *_COUNTS)), caption
        assert sentences[1].startswith(tuple(w.capitalize() for w in SHADE_WORDS)), caption
        assert sentences[2].startswith(("On fair", "On medium", "On dark")), caption
        assert _RECOMMENDATION.search(sentences[2].lower()), caption  # how it looks on this skin, with a recommendation
        lower = caption.lower()
        names = ALIASES[disease] if disease in ALIASES else RARE_VOCAB[disease].names
        assert any(name.lower() in lower for name in names), (disease, caption)


_COUNTS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen",
           "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty", "more")


def test_caption_follows_the_picture() -> None:
    """The image-determined words change with the facts of the picture and nothing else does for one rng state:
    the synthetic caption varies with the image as a real one does (the guard's distinct-2 reads that)."""
    small = LesionFacts(1, "small", 4, "upper left")
    large = LesionFacts(7, "large", 30, "centre")
    a = synth_caption(random.Random(5), DISEASES[0], small, 1)
    b = synth_caption(random.Random(5), DISEASES[0], large, 6)
    assert ": a single small lesion of 4 mm on very fair skin. Bright " in a
    assert ": seven large lesions up to 30 mm on deeply pigmented skin. Deep " in b
    assert a != b
    assert "On fair skin" in a and "On dark skin" in b  # the skin-type sentence follows the picture's skin
    assert synth_caption(random.Random(5), DISEASES[0], small, 1) == a
    assert facts_sentence(LesionFacts(25, "small", 3, "left"), 2).startswith("More than twenty small lesions")
    with pytest.raises(ValueError, match="fitzpatrick"):
        facts_sentence(small, 7)


def test_rendered_facts_follow_the_drawing() -> None:
    """The renderer's facts are what it drew: one lesion for a single-lesion style, many for scattered papules,
    and the place flips with the picture (a lesion's mass centre in the left third is reported 'left')."""
    _, _, _, nevus = render_picture(0, 3, DISEASES[6], SKIN_TONES[0])
    _, _, _, acne = render_picture(0, 3, DISEASES[9], SKIN_TONES[0])
    assert nevus.count == 1 and acne.count >= 8
    assert acne.size == "small" and nevus.diameter_mm >= 1
    places = {render_picture(0, k, DISEASES[6], SKIN_TONES[2])[3].place for k in range(40)}
    assert len(places) >= 5  # lesions land all over the picture, and the facts say where


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


def test_text_only_captions_never_contradict_their_size_word() -> None:
    """Captions without a picture (pre-training notes) pair each size word with diameters it can have, as a
    rendered picture's facts do, so a language model learns no impossible "small lesion of 40 mm"."""
    rng = random.Random(0)
    for caption in (synth_caption(rng, DISEASES[i % 10]) for i in range(300)):
        size, mm = re.search(r"(small|medium-sized|large) lesions? (?:of|up to) (\d+) mm", caption).groups()
        assert size == size_word(int(mm) / 100), caption  # diameter = 2 × radius, over a 50 mm field

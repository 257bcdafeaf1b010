"""Synthetic clinical captions in the style of SkinCAP's English captions (never copies of them).

A SkinCAP caption is ~60 words in ~3 sentences: what the lesion looks like and where it is, what it is
consistent with, one sentence of background about the disease, and a recommendation (biopsy, dermoscopy,
seeing a dermatologist). The synthetic generator, the tiny demo models and caption-metric tests all need text
with that shape, so this module writes it from per-disease vocabularies:

    This image shows <disease>: <colour> <lesion> on the <site> <detail>. <facts of the picture>. <background>.
    <advice>.

Like a real caption, a synthetic one varies with its picture (`synth_caption(..., facts, fitzpatrick)`): the
renderer reports what it drew (`LesionFacts`: how many lesions, how large, where) and the words that a picture
would decide — colour (by skin type), lesion and detail (by size and number), the facts sentence, background and
advice — are chosen from them; only the body site is a free choice. A model that reads the picture can therefore
write a caption that differs from image to image, and one that does not writes the same few captions (which is
what the collapse guard's repetition check is calibrated on).

The vocabularies cover the 10 HIKARI diseases (imported from `labels`, never re-spelled as keys by hand) and a
few *synthetic-only* rarer diseases (`RARE_DISEASES`) that the synthetic SkinCAP uses to populate the classes
outside the top 10. Those rare names are not HIKARI labels and must not be used as such anywhere else.

Everything is deterministic for a given `random.Random` state: choices are made only from tuples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hikari.data.labels import DISEASES
from hikari.demo.synth_images import FIELD_MM, PLACE_WORDS, SIZE_WORDS, LesionFacts

# Words per caption the generator aims for (the real English captions average ~61 words).
MIN_WORDS = 40
MAX_WORDS = 80


@dataclass(frozen=True)
class CaptionVocab:
    """The words a caption about one disease may use. Every field is a non-empty tuple of phrases."""

    names: tuple[str, ...]  # how the caption names the disease (first entry = the plain name)
    lesions: tuple[str, ...]  # morphology nouns, singular or plural phrases ("scaly plaques")
    colours: tuple[str, ...]
    details: tuple[str, ...]  # trailing "with …" clauses
    sites: tuple[str, ...]
    backgrounds: tuple[str, ...]  # background sentences; "{name}" is filled with the capitalised name
    advice: tuple[str, ...]  # disease-specific recommendation sentences


_S = "{name}"

VOCAB: dict[str, CaptionVocab] = {
    DISEASES[0]: CaptionVocab(  # psoriasis
        names=("psoriasis", "plaque psoriasis", "psoriasis vulgaris"),
        lesions=("well-demarcated plaques", "scaly plaques", "thick erythematous plaques", "round plaques"),
        colours=("bright red", "salmon-pink", "red", "pinkish-red"),
        details=(
            "covered by silvery-white scales",
            "with thick adherent scale on the surface",
            "with pinpoint bleeding where the scale is removed",
            "arranged symmetrically",
        ),
        sites=("extensor surfaces of the elbows", "knees", "scalp", "lower back", "shins"),
        backgrounds=(
            f"{_S} is a chronic immune-mediated skin disease in which keratinocytes proliferate too quickly, "
            "producing thickened scaly plaques that tend to relapse.",
            f"{_S} is a common inflammatory disorder associated with genetic factors and may be triggered by "
            "infection, stress or skin injury.",
        ),
        advice=(
            "Assessment of the nails and joints is advised, and topical or systemic therapy should be "
            "planned by a dermatologist.",
        ),
    ),
    DISEASES[1]: CaptionVocab(  # lupus erythematosus
        names=("lupus erythematosus", "discoid lupus erythematosus", "cutaneous lupus erythematosus"),
        lesions=("discoid plaques", "erythematous patches", "annular plaques", "atrophic plaques"),
        colours=("violaceous", "dusky red", "red", "purplish"),
        details=(
            "with central scarring and hypopigmentation",
            "with follicular plugging and fine scale",
            "with a butterfly-like distribution",
            "with atrophy at the centre",
        ),
        sites=("cheeks", "bridge of the nose", "ears", "scalp", "sun-exposed skin of the face"),
        backgrounds=(
            f"{_S} is an autoimmune disease in which the immune system attacks the skin and sometimes "
            "internal organs, and lesions often worsen after sun exposure.",
            f"{_S} is a chronic autoimmune condition that can leave permanent scarring and pigment change "
            "when left untreated.",
        ),
        advice=("Blood tests for autoantibodies and strict photoprotection are recommended.",),
    ),
    DISEASES[2]: CaptionVocab(  # lichen planus
        names=("lichen planus",),
        lesions=("flat-topped papules", "polygonal papules", "shiny papules", "small plaques"),
        colours=("violaceous", "purple", "purplish-red", "lilac"),
        details=(
            "with fine white lines on the surface",
            "with a glossy surface",
            "arranged in a linear pattern",
            "that are intensely itchy",
        ),
        sites=("inner wrists", "ankles", "lower back", "shins", "oral mucosa"),
        backgrounds=(
            f"{_S} is an inflammatory disease of the skin and mucous membranes thought to be mediated by "
            "T cells, and it may be associated with certain medications or hepatitis.",
            f"{_S} is a chronic inflammatory condition that usually resolves over months to years but can "
            "leave hyperpigmentation.",
        ),
        advice=("Examination of the mouth, nails and genital mucosa is advised.",),
    ),
    DISEASES[3]: CaptionVocab(  # scleroderma
        names=("scleroderma", "morphea", "localized scleroderma"),
        lesions=("indurated plaques", "hardened patches", "sclerotic plaques", "shiny bound-down skin"),
        colours=("ivory-white", "pale", "waxy yellow-white", "white"),
        details=(
            "surrounded by a lilac border",
            "with loss of hair and sweating",
            "with a smooth tight surface",
            "with surrounding hyperpigmentation",
        ),
        sites=("trunk", "forearms", "fingers", "abdomen", "thighs"),
        backgrounds=(
            f"{_S} is an autoimmune connective tissue disease characterised by fibrosis and thickening of "
            "the skin caused by excess collagen deposition.",
            f"{_S} may be limited to the skin or involve internal organs, and its course is often slow and "
            "progressive.",
        ),
        advice=("Screening for internal organ involvement and Raynaud phenomenon should be considered.",),
    ),
    DISEASES[4]: CaptionVocab(  # photodermatoses
        names=("a photodermatosis", "photodermatosis", "polymorphous light eruption"),
        lesions=("papules and plaques", "erythematous patches", "clustered papules", "eczematous patches"),
        colours=("red", "pink", "bright red", "erythematous"),
        details=(
            "sharply limited to sun-exposed areas",
            "sparing the skin covered by clothing",
            "appearing hours after sun exposure",
            "with mild scaling",
        ),
        sites=("face", "V of the neck", "backs of the hands", "forearms", "outer arms"),
        backgrounds=(
            "Photodermatoses are skin disorders caused or aggravated by ultraviolet or visible light, and "
            "the distribution of the rash usually mirrors the exposed skin.",
            "Photosensitivity reactions may be idiopathic or induced by drugs, chemicals or underlying "
            "metabolic disease.",
        ),
        advice=("Phototesting and a careful review of medications and sun exposure are recommended.",),
    ),
    DISEASES[5]: CaptionVocab(  # sarcoidosis
        names=("sarcoidosis", "cutaneous sarcoidosis"),
        lesions=("firm papules", "infiltrated plaques", "nodules", "annular plaques"),
        colours=("red-brown", "violaceous", "yellowish-brown", "skin-coloured"),
        details=(
            "with an apple-jelly colour on pressure",
            "without surface scale",
            "arranged around the nostrils",
            "that are painless",
        ),
        sites=("nose", "cheeks", "old scars", "lips", "forehead"),
        backgrounds=(
            f"{_S} is a multisystem granulomatous disease of unknown cause that commonly affects the lungs "
            "and lymph nodes as well as the skin.",
            f"{_S} is characterised by non-caseating granulomas, and skin lesions may be the first sign of "
            "systemic disease.",
        ),
        advice=("A chest X-ray and assessment of other organs are advised.",),
    ),
    DISEASES[6]: CaptionVocab(  # melanocytic nevi
        names=("melanocytic nevus", "a benign melanocytic nevus", "a common mole"),
        lesions=("round papule", "dome-shaped papule", "flat macule", "oval papule"),
        colours=("uniform brown", "dark brown", "light brown", "tan"),
        details=(
            "with a regular sharp border",
            "with symmetrical pigmentation",
            "with a smooth surface",
            "with a slightly darker centre",
        ),
        sites=("back", "chest", "face", "upper arm", "neck"),
        backgrounds=(
            "Melanocytic nevi are benign proliferations of melanocytes that usually appear in childhood "
            "and remain stable over time.",
            "A melanocytic nevus is a common benign skin lesion composed of nests of melanocytes in the "
            "epidermis or dermis.",
        ),
        advice=(
            "Any change in size, shape or colour should prompt dermoscopy and, if needed, excision to "
            "rule out melanoma.",
        ),
    ),
    DISEASES[7]: CaptionVocab(  # squamous cell carcinoma in situ
        names=("squamous cell carcinoma in situ", "intraepidermal squamous cell carcinoma", "squamous cell carcinoma"),
        lesions=("scaly plaque", "crusted plaque", "erythematous patch", "keratotic plaque"),
        colours=("red", "pinkish-red", "dull red", "brownish-red"),
        details=(
            "with an irregular border and surface crust",
            "with slow enlargement over months",
            "with focal erosion",
            "with a rough keratotic surface",
        ),
        sites=("lower leg", "back of the hand", "face", "scalp", "forearm"),
        backgrounds=(
            f"{_S} is an early form of skin cancer confined to the epidermis that arises from atypical "
            "keratinocytes, often on chronically sun-damaged skin.",
            f"{_S} is a malignant intraepidermal tumour that may progress to invasive carcinoma if not treated.",
        ),
        advice=("Complete excision or another destructive treatment is usually required.",),
    ),
    DISEASES[8]: CaptionVocab(  # basal cell carcinoma
        names=("basal cell carcinoma", "nodular basal cell carcinoma"),
        lesions=("pearly nodule", "translucent papule", "ulcerated nodule", "shiny plaque"),
        colours=("pink", "flesh-coloured", "pearly pink", "pigmented"),
        details=(
            "with fine telangiectasia on the surface",
            "with a rolled edge",
            "with central ulceration",
            "that bleeds easily",
        ),
        sites=("nose", "cheek", "forehead", "eyelid", "ear"),
        backgrounds=(
            f"{_S} is the most common malignant skin tumour; it grows slowly and rarely metastasises but "
            "can destroy local tissue.",
            f"{_S} arises from the basal layer of the epidermis and is strongly associated with long-term "
            "ultraviolet exposure.",
        ),
        advice=("Surgical excision with clear margins is recommended.",),
    ),
    DISEASES[9]: CaptionVocab(  # acne vulgaris
        names=("acne vulgaris", "acne", "inflammatory acne"),
        lesions=("papules and pustules", "comedones and papules", "inflammatory papules", "pustules"),
        colours=("red", "erythematous", "pink", "dark red"),
        details=(
            "with open and closed comedones",
            "with a few nodules and scars",
            "around the hair follicles",
            "with post-inflammatory pigmentation",
        ),
        sites=("face", "forehead", "cheeks", "upper back", "chest"),
        backgrounds=(
            f"{_S} is a chronic inflammatory disease of the pilosebaceous unit driven by sebum production, "
            "follicular plugging and bacteria.",
            f"{_S} is very common in adolescents and young adults and may lead to permanent scarring.",
        ),
        advice=("Topical retinoids or antibiotics are recommended depending on severity.",),
    ),
}

# Synthetic-only rarer diseases: they fill the classes outside the top 10 in the synthetic SkinCAP.
RARE_VOCAB: dict[str, CaptionVocab] = {
    "eczema": CaptionVocab(
        names=("eczema", "atopic dermatitis"),
        lesions=("ill-defined patches", "excoriated papules", "lichenified plaques"),
        colours=("red", "pink", "dull red"),
        details=("with oozing and crusting", "with dry scaly skin", "with scratch marks"),
        sites=("flexures of the elbows", "backs of the knees", "neck", "hands"),
        backgrounds=(f"{_S} is a common itchy inflammatory skin disease linked to a defective skin barrier.",),
        advice=("Emollients and avoidance of irritants are recommended.",),
    ),
    "seborrheic keratosis": CaptionVocab(
        names=("seborrheic keratosis",),
        lesions=("stuck-on papule", "warty plaque", "waxy plaque"),
        colours=("brown", "dark brown", "tan"),
        details=("with a verrucous surface", "with horn cysts", "with a greasy appearance"),
        sites=("trunk", "temple", "back", "chest"),
        backgrounds=(f"{_S} is a benign epidermal tumour that becomes more common with age.",),
        advice=("Dermoscopy can help distinguish it from pigmented malignant lesions.",),
    ),
    "vitiligo": CaptionVocab(
        names=("vitiligo",),
        lesions=("depigmented macules", "white patches", "sharply demarcated patches"),
        colours=("milk-white", "chalk-white", "white"),
        details=("with a convex border", "with white hairs", "in a symmetrical pattern"),
        sites=("hands", "face", "around the mouth", "knees"),
        backgrounds=(f"{_S} is an acquired disorder in which melanocytes are destroyed by autoimmunity.",),
        advice=("Wood lamp examination and screening for thyroid disease are advised.",),
    ),
    "urticaria": CaptionVocab(
        names=("urticaria", "hives"),
        lesions=("wheals", "raised plaques", "swollen papules"),
        colours=("pink", "pale red", "red"),
        details=("with a pale centre", "that come and go within hours", "that are very itchy"),
        sites=("trunk", "arms", "thighs", "neck"),
        backgrounds=(f"{_S} is a reaction in which mast cells release histamine into the skin.",),
        advice=("Identifying triggers and treatment with antihistamines are recommended.",),
    ),
    "tinea corporis": CaptionVocab(
        names=("tinea corporis", "ringworm"),
        lesions=("annular plaques", "ring-shaped patches", "scaly rings"),
        colours=("red", "pink", "reddish-brown"),
        details=("with central clearing", "with an active scaly edge", "that slowly expands outward"),
        sites=("trunk", "groin", "arms", "neck"),
        backgrounds=(f"{_S} is a superficial fungal infection of the skin caused by dermatophytes.",),
        advice=("A potassium hydroxide preparation of skin scrapings is recommended.",),
    ),
    "rosacea": CaptionVocab(
        names=("rosacea",),
        lesions=("papules and pustules", "persistent erythema", "flushed patches"),
        colours=("red", "pink", "deep red"),
        details=("with telangiectasia", "without comedones", "with a burning sensation"),
        sites=("central face", "nose", "cheeks", "chin"),
        backgrounds=(f"{_S} is a chronic inflammatory condition of the facial skin of middle-aged adults.",),
        advice=("Avoiding triggers such as heat and alcohol is advised.",),
    ),
    "folliculitis": CaptionVocab(
        names=("folliculitis",),
        lesions=("follicular pustules", "small papules", "perifollicular papules"),
        colours=("red", "yellowish", "pink"),
        details=("centred on hair follicles", "with surrounding erythema", "in scattered clusters"),
        sites=("thighs", "buttocks", "beard area", "scalp"),
        backgrounds=(f"{_S} is an inflammation of hair follicles, often caused by bacteria or friction.",),
        advice=("A bacterial culture is advised if the lesions persist.",),
    ),
    "lipoma": CaptionVocab(
        names=("lipoma",),
        lesions=("soft subcutaneous nodule", "rubbery mass", "dome-shaped swelling"),
        colours=("skin-coloured", "pale", "yellowish"),
        details=("that moves freely", "with normal overlying skin", "that is painless"),
        sites=("shoulder", "back", "neck", "forearm"),
        backgrounds=(f"{_S} is a benign tumour of mature fat cells that grows slowly.",),
        advice=("An ultrasound examination is recommended to confirm the diagnosis.",),
    ),
}

RARE_DISEASES: tuple[str, ...] = tuple(RARE_VOCAB)

# How a synthetic caption opens: the diagnosis, then what the picture shows.
DIAGNOSIS_OPENER = "This image shows"
_GENERIC_ADVICE = (
    "It is recommended to perform a skin biopsy and histopathological examination to confirm the diagnosis.",
    "Dermoscopy and, if necessary, a biopsy are recommended for a definitive diagnosis.",
    "It is advisable to seek medical attention from a dermatologist for further evaluation.",
    "Further examination, including dermoscopy, is needed to confirm the diagnosis.",
    "A histopathological examination is suggested to rule out other conditions.",
)


def vocab_for(disease: str) -> CaptionVocab:
    """The vocabulary of a HIKARI or synthetic-only disease; raises listing the known names otherwise."""
    if disease in VOCAB:
        return VOCAB[disease]
    if disease in RARE_VOCAB:
        return RARE_VOCAB[disease]
    known = ", ".join(sorted([*VOCAB, *RARE_VOCAB]))
    raise KeyError(f"no caption vocabulary for disease {disease!r}; known: {known}")


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


# How a caption names the skin of Fitzpatrick types I..VI (the picture's background shows it).
SKIN_WORDS = ("very fair", "fair", "light brown", "medium brown", "dark brown", "deeply pigmented")
_NUMBER_WORDS = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                 "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
                 "twenty")  # fmt: skip


def facts_sentence(facts: LesionFacts, fitzpatrick: int) -> str:
    """The sentence of a caption that states what the picture shows (how many lesions, their size, where, on which
    skin): with the description's colour and lesion words, the part of a synthetic caption that varies with the
    image, as a real caption's description does."""
    if not 1 <= fitzpatrick <= len(SKIN_WORDS):
        raise ValueError(f"fitzpatrick must be 1..{len(SKIN_WORDS)}, got {fitzpatrick}")
    skin = SKIN_WORDS[fitzpatrick - 1]
    where = f"{facts.place} of the picture, on {skin} skin"
    if facts.count == 1:
        return f"A single {facts.size} lesion of {facts.diameter_mm} mm, {where}."
    many = _NUMBER_WORDS[facts.count] if facts.count < len(_NUMBER_WORDS) else "more than twenty"
    return f"{many[:1].upper() + many[1:]} {facts.size} lesions up to {facts.diameter_mm} mm, {where}."


def _random_facts(rng: random.Random) -> tuple[LesionFacts, int]:
    """Facts for a caption without a picture (text corpora): every count, size, place and skin type occurs."""
    size = rng.choice(SIZE_WORDS)
    facts = LesionFacts(rng.randint(1, 20) if rng.random() < 0.5 else 1, size, rng.randint(1, FIELD_MM),
                        rng.choice(PLACE_WORDS))  # fmt: skip
    return facts, rng.randint(1, len(SKIN_WORDS))


def _one_caption(rng: random.Random, vocab: CaptionVocab, facts: LesionFacts, fitzpatrick: int) -> str:
    """One caption whose words follow the picture wherever a dermatologist's would: the colour word (lesions look
    darker on darker skin, as the painter draws them), the lesion word and surface detail (by size and number),
    the disease's name (its form for single or several, small or large lesions), the facts sentence, the
    background sentence (single vs several lesions) and the advice (by size: a lesion over 6 mm gets a biopsy, as
    the ABCDE rule has it). The body site and the sentence frames are not in the picture and stay free choices."""
    size = SIZE_WORDS.index(facts.size)
    several = facts.count > 1
    name = vocab.names[(size + several) % len(vocab.names)]
    colour = vocab.colours[(fitzpatrick - 1) * len(vocab.colours) // len(SKIN_WORDS)]
    lesion = vocab.lesions[(size + 2 * several) % len(vocab.lesions)]
    desc = f"{colour} {lesion} on the {rng.choice(vocab.sites)}"
    if facts.count <= 4:
        desc += f" {vocab.details[(size + facts.count) % len(vocab.details)]}"
    # The diagnosis first, in the words a Stage 2 model answers with ("This image shows <disease>"): measured on
    # the demo, Vega trained on captions that name the disease at their end mentioned the right disease for 19 % of
    # validation images (every caption nearly the same, distinct-2 0.05); naming it first, 62 % (distinct-2 0.07).
    first = [f"{DIAGNOSIS_OPENER} {name}: {desc}.", facts_sentence(facts, fitzpatrick)]
    background = vocab.backgrounds[several % len(vocab.backgrounds)].format(name=_capitalise(name))
    advice_pool = vocab.advice + _GENERIC_ADVICE
    big = facts.diameter_mm > 6
    advice = [advice_pool[0] if big else advice_pool[1 + (fitzpatrick + size) % (len(advice_pool) - 1)]]
    return " ".join([*first, background, *advice])


def synth_caption(
    rng: random.Random, disease: str, facts: LesionFacts | None = None, fitzpatrick: int | None = None
) -> str:
    """One SkinCAP-style English caption (~40-80 words, 4-6 sentences) about `disease`; its second sentence states
    the picture's `facts` on skin of type `fitzpatrick` (`facts_sentence`; drawn at random when not given).

    Draws until the word count is within [MIN_WORDS, MAX_WORDS] (a handful of draws at most), so the result
    depends only on the rng state, the disease and the facts.
    """
    vocab = vocab_for(disease)
    if facts is None or fitzpatrick is None:
        facts, fitzpatrick = _random_facts(rng)
    caption = _one_caption(rng, vocab, facts, fitzpatrick)
    for _ in range(20):
        if MIN_WORDS <= len(caption.split()) <= MAX_WORDS:
            break
        caption = _one_caption(rng, vocab, facts, fitzpatrick)
    return caption


def caption_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """`n` captions cycling over the 10 HIKARI diseases then the rare ones (for tokenizer/metric fixtures)."""
    rng = random.Random(seed)
    names = [*DISEASES, *RARE_DISEASES]
    return [synth_caption(rng, names[i % len(names)]) for i in range(n)]

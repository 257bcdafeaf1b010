"""Synthetic clinical captions in the style of SkinCAP's English captions (never copies of them).

A SkinCAP caption is ~60 words in ~3 sentences: what the lesion looks like and where it is, what it is
consistent with, one sentence of background about the disease, and a recommendation (biopsy, dermoscopy,
seeing a dermatologist). The synthetic generator, the tiny demo models and caption-metric tests all need text
with that shape, so this module writes it from per-disease vocabularies:

    This image shows <disease>: <facts of the picture>. <shade> <colour> <lesion> on the <site> <detail>.
    <how the disease looks on this skin, with a recommendation>. <background>.

Like a real caption, a synthetic one varies with its picture (`synth_caption(..., facts, fitzpatrick)`): the
renderer reports what it drew (`LesionFacts`: how many lesions, how large) and the words that a picture would
decide — the facts sentence, the shade and colour (by skin type), lesion and detail (by size and number), the
skin-of-colour sentence (by Fitzpatrick band: dermatology describes the same disease differently on fair and dark
skin) and the background — are chosen from them; only the body site is a free choice. A model that reads the
picture can therefore write a caption that differs from image to image, and one that does not writes the same few
captions (which is what the collapse guard's repetition check is calibrated on).

Two choices make that variation learnable by a small model, not only present in the references (measured on the
demo, README "The Stage 3 ablation"): the facts come first, so every later word that depends on the picture can
also be read off the caption's own words (a language model learns "on dark brown skin … dusky" from text, which
the pre-training notes teach); and the shade word is shared by every disease (one skin-to-word mapping to learn,
not one per disease). The picture's place is not stated: the stages' mirror augmentation would contradict it.

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
MAX_WORDS = 90


@dataclass(frozen=True)
class CaptionVocab:
    """The words a caption about one disease may use. Every field but `on_skin` is a non-empty tuple of phrases."""

    names: tuple[str, ...]  # how the caption names the disease (first entry = the plain name)
    lesions: tuple[str, ...]  # morphology nouns, singular or plural phrases ("scaly plaques")
    colours: tuple[str, ...]
    details: tuple[str, ...]  # trailing "with …" clauses
    sites: tuple[str, ...]
    backgrounds: tuple[str, ...]  # background sentences; "{name}" is filled with the capitalised name
    # How the disease looks on fair (Fitzpatrick I–II), medium (III–IV) and dark (V–VI) skin, each ending with a
    # recommendation; empty for the synthetic-only diseases (they use `_GENERIC_ON_SKIN`).
    on_skin: tuple[str, ...] = ()


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
            f"{_S} affects about two to three percent of people and is linked to arthritis, obesity and "
            "cardiovascular disease.",
            "Large plaques of psoriasis often merge into wide areas of scaling skin on the trunk and limbs.",
        ),
        on_skin=(
            "On fair skin the plaques look bright pink-red with sharp silvery scale, and the nails should be checked.",
            "On medium skin the plaques look salmon to red-brown, and examination of the scale and nail pits is "
            "advised.",
            "On dark skin the plaques look violet or grey-brown rather than red, and a dermatologist should "
            "confirm them.",
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
            "Lupus lesions are photosensitive, and a few patients with skin disease later develop systemic lupus.",
            f"{_S} can scar and change the pigment of large areas of the face and scalp if treatment is delayed.",
        ),
        on_skin=(
            "On fair skin the patches look red and scaly after sun exposure, and strict photoprotection is advised.",
            "On medium skin the patches look dusky red-brown, and blood tests for autoantibodies are advised.",
            "On dark skin the patches look deep purple with pale scarred centres, and scarring alopecia should "
            "be sought.",
        ),
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
            f"{_S} often appears in adults between thirty and sixty and may involve the nails and the mouth.",
            "Large plaques of lichen planus may thicken into hypertrophic lesions on the shins that itch intensely.",
        ),
        on_skin=(
            "On fair skin the papules look lilac with white Wickham striae, and the mouth should be examined.",
            "On medium skin the papules look purple-brown, and examination of the mouth and nails is advised.",
            "On dark skin the papules look grey-brown and heal with dark marks, so early treatment is advised.",
        ),
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
            "Localized forms stay confined to the skin, while systemic sclerosis also affects the lungs, kidneys "
            "and gut.",
            "Large sclerotic plaques can restrict movement of the joints beneath them and may stop growing limbs.",
        ),
        on_skin=(
            "On fair skin the plaques look ivory with a lilac ring while active, and Raynaud phenomenon should "
            "be asked about.",
            "On medium skin the plaques look pale with a brown rim, and screening for internal organ involvement "
            "is advised.",
            "On dark skin the plaques look hypopigmented or darker than the skin, and organ screening should be "
            "considered.",
        ),
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
            "Polymorphous light eruption, the commonest photodermatosis, starts in spring and improves over the "
            "summer.",
            "Widespread photodermatoses can follow drugs such as thiazides, tetracyclines or non-steroidal analgesics.",
        ),
        on_skin=(
            "On fair skin the rash looks bright red on exposed areas, and phototesting is recommended.",
            "On medium skin the rash looks pink-brown and itchy, and a review of medications and sun exposure is "
            "advised.",
            "On dark skin the rash looks skin-coloured or darker with fine papules, and a careful history of light "
            "exposure is advised.",
        ),
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
            "Cutaneous sarcoidosis may occur alone or announce involvement of the lungs, eyes and heart.",
            "Large plaques of sarcoidosis on the nose, called lupus pernio, are linked to chronic lung disease.",
        ),
        on_skin=(
            "On fair skin the papules look red-brown with an apple-jelly tint on pressure, and a chest X-ray is "
            "advised.",
            "On medium skin the papules look yellow-brown, and assessment of the lungs and eyes is recommended.",
            "On dark skin the papules look violet to dark brown, and systemic involvement should be assessed.",
        ),
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
            "Most adults have between ten and forty moles, and new moles rarely appear after the age of forty.",
            "A large congenital nevus carries a small risk of melanoma and needs regular follow-up.",
        ),
        on_skin=(
            "On fair skin the mole looks tan to brown and evenly coloured, and dermoscopy helps with any change.",
            "On medium skin the mole looks medium to dark brown, and any change in size or shape should prompt "
            "dermoscopy.",
            "On dark skin the mole looks dark brown to black, and dermoscopy of moles on the palms and soles is "
            "advised.",
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
            "Bowen disease grows slowly over years, and about three to five percent of lesions become invasive.",
            "Large patches of carcinoma in situ may be mistaken for eczema or psoriasis for a long time.",
        ),
        on_skin=(
            "On fair, sun-damaged skin the plaque looks red and scaly, and complete excision is usually required.",
            "On medium skin the plaque looks red-brown with crust, and a biopsy is needed before treatment.",
            "On dark skin the plaque may look pigmented and arise on scars or the legs, and a biopsy should not "
            "be delayed.",
        ),
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
            "Basal cell carcinoma rarely spreads, but a neglected tumour can invade cartilage and bone.",
            "Several basal cell carcinomas in one patient point to heavy sun damage or an inherited syndrome.",
        ),
        on_skin=(
            "On fair skin the nodule looks pearly pink with fine vessels, and surgical excision with clear "
            "margins is advised.",
            "On medium skin the nodule looks pearly with brown dots, and excision with clear margins is recommended.",
            "On dark skin the tumour is often pigmented and looks brown to black, and a biopsy is needed to tell "
            "it from melanoma.",
        ),
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
            f"{_S} affects most teenagers at some time, and hormonal factors play a central role.",
            "Large inflammatory acne lesions can form cysts and nodules that heal with pitted scars.",
        ),
        on_skin=(
            "On fair skin the papules look red and inflamed, and topical retinoids or antibiotics are recommended.",
            "On medium skin the papules look red-brown and may leave dark marks, and early treatment is advised.",
            "On dark skin the papules leave long-lasting dark spots and keloid scars, and early treatment is "
            "recommended.",
        ),
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
    ),
    "seborrheic keratosis": CaptionVocab(
        names=("seborrheic keratosis",),
        lesions=("stuck-on papule", "warty plaque", "waxy plaque"),
        colours=("brown", "dark brown", "tan"),
        details=("with a verrucous surface", "with horn cysts", "with a greasy appearance"),
        sites=("trunk", "temple", "back", "chest"),
        backgrounds=(f"{_S} is a benign epidermal tumour that becomes more common with age.",),
    ),
    "vitiligo": CaptionVocab(
        names=("vitiligo",),
        lesions=("depigmented macules", "white patches", "sharply demarcated patches"),
        colours=("milk-white", "chalk-white", "white"),
        details=("with a convex border", "with white hairs", "in a symmetrical pattern"),
        sites=("hands", "face", "around the mouth", "knees"),
        backgrounds=(f"{_S} is an acquired disorder in which melanocytes are destroyed by autoimmunity.",),
    ),
    "urticaria": CaptionVocab(
        names=("urticaria", "hives"),
        lesions=("wheals", "raised plaques", "swollen papules"),
        colours=("pink", "pale red", "red"),
        details=("with a pale centre", "that come and go within hours", "that are very itchy"),
        sites=("trunk", "arms", "thighs", "neck"),
        backgrounds=(f"{_S} is a reaction in which mast cells release histamine into the skin.",),
    ),
    "tinea corporis": CaptionVocab(
        names=("tinea corporis", "ringworm"),
        lesions=("annular plaques", "ring-shaped patches", "scaly rings"),
        colours=("red", "pink", "reddish-brown"),
        details=("with central clearing", "with an active scaly edge", "that slowly expands outward"),
        sites=("trunk", "groin", "arms", "neck"),
        backgrounds=(f"{_S} is a superficial fungal infection of the skin caused by dermatophytes.",),
    ),
    "rosacea": CaptionVocab(
        names=("rosacea",),
        lesions=("papules and pustules", "persistent erythema", "flushed patches"),
        colours=("red", "pink", "deep red"),
        details=("with telangiectasia", "without comedones", "with a burning sensation"),
        sites=("central face", "nose", "cheeks", "chin"),
        backgrounds=(f"{_S} is a chronic inflammatory condition of the facial skin of middle-aged adults.",),
    ),
    "folliculitis": CaptionVocab(
        names=("folliculitis",),
        lesions=("follicular pustules", "small papules", "perifollicular papules"),
        colours=("red", "yellowish", "pink"),
        details=("centred on hair follicles", "with surrounding erythema", "in scattered clusters"),
        sites=("thighs", "buttocks", "beard area", "scalp"),
        backgrounds=(f"{_S} is an inflammation of hair follicles, often caused by bacteria or friction.",),
    ),
    "lipoma": CaptionVocab(
        names=("lipoma",),
        lesions=("soft subcutaneous nodule", "rubbery mass", "dome-shaped swelling"),
        colours=("skin-coloured", "pale", "yellowish"),
        details=("that moves freely", "with normal overlying skin", "that is painless"),
        sites=("shoulder", "back", "neck", "forearm"),
        backgrounds=(f"{_S} is a benign tumour of mature fat cells that grows slowly.",),
    ),
}

RARE_DISEASES: tuple[str, ...] = tuple(RARE_VOCAB)

# How a synthetic caption opens: the diagnosis, then what the picture shows.
DIAGNOSIS_OPENER = "This image shows"
# The skin-of-colour sentence of a synthetic-only disease, per Fitzpatrick band (fair, medium, dark).
_GENERIC_ON_SKIN = (
    "On fair skin the redness of {name} is easy to see, and dermoscopy is recommended to confirm the diagnosis.",
    "On medium skin {name} looks red-brown rather than red, and a dermatologist should confirm the diagnosis.",
    "On dark skin {name} looks violet or darker than the skin, and a biopsy may be needed for a definitive diagnosis.",
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
# How a lesion's colour reads on skin of type I..VI (pigment masks erythema): shared by every disease.
SHADE_WORDS = ("bright", "clear", "warm", "muted", "dusky", "deep")
_NUMBER_WORDS = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                 "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
                 "twenty")  # fmt: skip


def facts_sentence(facts: LesionFacts, fitzpatrick: int) -> str:
    """The sentence of a caption that states what the picture shows (how many lesions, their size, on which skin):
    with the description's shade, colour and lesion words, the part of a synthetic caption that varies with the
    image, as a real caption's description does. The pre-training descriptions use the same words."""
    if not 1 <= fitzpatrick <= len(SKIN_WORDS):
        raise ValueError(f"fitzpatrick must be 1..{len(SKIN_WORDS)}, got {fitzpatrick}")
    skin = SKIN_WORDS[fitzpatrick - 1]
    if facts.count == 1:
        return f"A single {facts.size} lesion of {facts.diameter_mm} mm on {skin} skin."
    many = _NUMBER_WORDS[facts.count] if facts.count < len(_NUMBER_WORDS) else "more than twenty"
    return f"{many[:1].upper() + many[1:]} {facts.size} lesions up to {facts.diameter_mm} mm on {skin} skin."


def facts_clause(facts: LesionFacts, fitzpatrick: int) -> str:
    """`facts_sentence` as it follows a colon ("…: a single small lesion of 4 mm on fair skin."), the form both a
    caption and a pre-training description use."""
    sentence = facts_sentence(facts, fitzpatrick)
    return sentence[:1].lower() + sentence[1:]


# Diameters (mm) of the largest lesion for each size word (`size_word`'s radius bands over FIELD_MM).
_SIZE_MM = ((1, 8), (9, 19), (20, FIELD_MM))


def _random_facts(rng: random.Random) -> tuple[LesionFacts, int]:
    """Facts for a caption without a picture (text corpora): every count, size and skin type occurs, each size
    word with the diameters a rendered picture can have."""
    size = rng.randrange(len(SIZE_WORDS))
    low, high = _SIZE_MM[size]
    facts = LesionFacts(rng.randint(1, 20) if rng.random() < 0.5 else 1, SIZE_WORDS[size], rng.randint(low, high),
                        rng.choice(PLACE_WORDS))  # fmt: skip
    return facts, rng.randint(1, len(SKIN_WORDS))


def _one_caption(rng: random.Random, vocab: CaptionVocab, facts: LesionFacts, fitzpatrick: int) -> str:
    """One caption whose words follow the picture wherever a dermatologist's would: the facts sentence, the shade
    and colour words (lesions look darker on darker skin, as the painter draws them), the lesion word and surface
    detail (by size and number), the disease's name (its form for single or several, small or large lesions), how
    the disease looks on this skin (by Fitzpatrick band, with its recommendation) and the background sentence
    (single vs several lesions). The body site and the sentence frames are not in the picture and stay free
    choices."""
    size = SIZE_WORDS.index(facts.size)
    several = facts.count > 1
    name = vocab.names[(size + several) % len(vocab.names)]
    colour = vocab.colours[(fitzpatrick - 1) * len(vocab.colours) // len(SKIN_WORDS)]
    lesion = vocab.lesions[(size + 2 * several) % len(vocab.lesions)]
    desc = f"{SHADE_WORDS[fitzpatrick - 1]} {colour} {lesion} on the {rng.choice(vocab.sites)}"
    if facts.count <= 4:
        desc += f" {vocab.details[(size + facts.count) % len(vocab.details)]}"
    # The diagnosis first, in the words a Stage 2 model answers with ("This image shows <disease>"): measured on
    # the demo, Vega trained on captions that name the disease at their end mentioned the right disease for 19 % of
    # validation images (every caption nearly the same, distinct-2 0.05); naming it first, 62 % (distinct-2 0.07).
    # Then the facts, before the words that depend on them: with the description first and a per-disease colour
    # table, Vega wrote 12 different first sentences for 97 images (distinct-2 0.082); facts first with the shared
    # shade word, 41 (0.10); see the README's Stage 3 section for the final run.
    first = [f"{DIAGNOSIS_OPENER} {name}: {facts_clause(facts, fitzpatrick)}", f"{_capitalise(desc)}."]
    # Measured on the demo: this sentence (in place of a generic recommendation chosen by size) and the four
    # backgrounds lifted the references' distinct-2 over the validation part from 0.14 to 0.15; Vega's stayed at
    # 0.08-0.10 (README, "The Stage 3 ablation").
    band = (fitzpatrick - 1) // 2  # Fitzpatrick I–II, III–IV, V–VI (the bands of `hikari.data.labels.skin_band`)
    on_skin = (vocab.on_skin or _GENERIC_ON_SKIN)[band].format(name=name)
    # Background: by single vs several lesions and whether the largest is large (four sentences for a top-10 disease).
    background = vocab.backgrounds[(2 * several + (size == 2)) % len(vocab.backgrounds)].format(name=_capitalise(name))
    return " ".join([*first, on_skin, background])


def synth_caption(
    rng: random.Random, disease: str, facts: LesionFacts | None = None, fitzpatrick: int | None = None
) -> str:
    """One SkinCAP-style English caption (~40-90 words, 4 sentences) about `disease`; its second sentence states
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

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import pytest

from hikari.evaluation.captions import (
    bleu_scores,
    caption_metrics,
    disease_mention_rate,
    evaluate_captions,
    length_stats,
    mentions_disease,
    rouge_scores,
)
from hikari.evaluation.predictions import Prediction, read_disease_labels, read_predictions

# --- a from-the-definition corpus BLEU (Papineni et al. 2002, one reference, Chen & Cherry method 1) ---------------


def naive_corpus_bleu(refs: list[list[str]], hyps: list[list[str]], max_n: int) -> float:
    """Uniform weights 1/max_n over n = 1..max_n. Corpus-level modified precision: clipped n-gram matches summed
    over sentences / hypothesis n-grams summed over sentences — where, like nltk, a sentence too short to have
    any n-gram still adds 1 to the denominator. Method 1: a zero match count becomes 0.1."""
    numerators = [0] * (max_n + 1)
    denominators = [0] * (max_n + 1)
    for ref, hyp in zip(refs, hyps):
        for n in range(1, max_n + 1):
            hyp_ngrams = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
            ref_ngrams = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
            numerators[n] += sum(min(c, ref_ngrams[g]) for g, c in hyp_ngrams.items())
            denominators[n] += max(1, sum(hyp_ngrams.values()))
    if numerators[1] == 0:
        return 0.0
    c = sum(len(h) for h in hyps)
    r = sum(len(ref) for ref in refs)
    bp = 1.0 if c > r else math.exp(1 - r / c)
    log_p = 0.0
    for n in range(1, max_n + 1):
        p = (numerators[n] if numerators[n] else 0.1) / denominators[n]
        log_p += math.log(p) / max_n
    return bp * math.exp(log_p)


VOCAB = ["Red", "skin", "DARK", "cyst", "lump", "spot", "mole", "rash", "scar", "pale", "the", "a"]


def _random_caption(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(low, high)))


@pytest.mark.parametrize("seed", range(6))
def test_bleu_matches_naive_reference(seed: int) -> None:
    rng = random.Random(seed)
    # Lengths from 1 include hypotheses shorter than 4 tokens (the nltk denominator quirk above).
    refs = [_random_caption(rng, 3, 25) for _ in range(20)]
    hyps = [_random_caption(rng, 1, 25) for _ in range(20)]
    ours = bleu_scores(refs, hyps)
    ref_tokens = [r.lower().split() for r in refs]
    hyp_tokens = [h.lower().split() for h in hyps]
    for n in range(1, 5):
        assert ours[f"bleu_{n}"] == pytest.approx(100 * naive_corpus_bleu(ref_tokens, hyp_tokens, n), rel=1e-9)


def test_bleu_is_case_insensitive_and_perfect_on_identity() -> None:
    refs = ["A red scaly plaque on the elbow", "Multiple comedones on the face"]
    assert bleu_scores(refs, [r.upper() for r in refs]) == pytest.approx(dict.fromkeys(
        ("bleu_1", "bleu_2", "bleu_3", "bleu_4"), 100.0))  # fmt: skip
    assert bleu_scores(refs, ["nothing matches here", "at all"])["bleu_1"] == 0.0


# --- ROUGE against naive n-gram / LCS F1 on words whose Porter stems are themselves distinct -----------------------


def _f1(overlap: int, n_hyp: int, n_ref: int) -> float:
    if overlap == 0:
        return 0.0
    p, r = overlap / n_hyp, overlap / n_ref
    return 2 * p * r / (p + r)


def _lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


@pytest.mark.parametrize("seed", range(4))
def test_rouge_matches_naive_f1(seed: int) -> None:
    rng = random.Random(100 + seed)
    refs = [_random_caption(rng, 2, 20) for _ in range(15)]
    hyps = [_random_caption(rng, 2, 20) for _ in range(15)]
    expected = {"rouge_1": 0.0, "rouge_2": 0.0, "rouge_l": 0.0}
    for ref, hyp in zip(refs, hyps):
        r, h = ref.lower().split(), hyp.lower().split()
        for n, key in ((1, "rouge_1"), (2, "rouge_2")):
            rc = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
            hc = Counter(tuple(h[i : i + n]) for i in range(len(h) - n + 1))
            expected[key] += _f1(sum((rc & hc).values()), sum(hc.values()), sum(rc.values()))
        expected["rouge_l"] += _f1(_lcs(r, h), len(h), len(r))
    ours = rouge_scores(refs, hyps)
    for key, total in expected.items():
        assert ours[key] == pytest.approx(100 * total / len(refs)), key


def test_rouge_uses_the_stemmer() -> None:
    # "plaques"/"plaque" and "scaling"/"scale" only match after Porter stemming.
    assert rouge_scores(["scaling plaques"], ["scale plaque"])["rouge_1"] == pytest.approx(100.0)


# --- mention rate, lengths, set-level function ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caption", "disease", "expected"),
    [
        ("Consistent with PSORIATIC arthritis.", "psoriasis", True),
        ("Features of discoid lupus.", "lupus erythematosus", True),
        ("A benign mole.", "melanocytic nevi", True),
        ("Likely a BCC.", "basal cell carcinoma", True),
        ("Squamous epithelium involved.", "squamous cell carcinoma in situ", True),  # alias "squamous"
        ("Comedonal lesions.", "acne vulgaris", True),
        ("Red plaques with silvery scale.", "psoriasis", False),
        ("Basal cell carcinoma.", "squamous cell carcinoma in situ", False),
        # not in ALIASES: the words longer than 3 letters must all appear
        ("Typical granuloma annulare ring.", "granuloma annulare", True),
        ("A granuloma.", "granuloma annulare", False),
    ],
)
def test_mentions_disease(caption: str, disease: str, expected: bool) -> None:
    assert mentions_disease(caption, disease) is expected


def test_disease_mention_rate_and_lengths() -> None:
    assert disease_mention_rate(["acne here", "no", "psoriasis"], ["acne vulgaris", "psoriasis", "psoriasis"]) == (
        pytest.approx(200 / 3)
    )
    stats = length_stats(["a b c d", "a b"], ["a", "a b c"])
    assert stats == {"generated_words_mean": 2.0, "generated_words_median": 2.0,
                     "reference_words_mean": 3.0, "reference_words_median": 3.0}  # fmt: skip
    with pytest.raises(ValueError, match="2 captions but 1 diseases"):
        disease_mention_rate(["a", "b"], ["psoriasis"])


def test_caption_metrics_mention_over_known_diseases_only() -> None:
    m = caption_metrics(["acne on face", "red plaque"], ["acne", "plaque"], diseases=["acne vulgaris", None])
    assert m["n"] == 2 and m["n_mention"] == 1 and m["mention_rate"] == 100.0
    assert "mention_rate" not in caption_metrics(["a b"], ["a b"])
    with pytest.raises(ValueError, match="no captions"):
        caption_metrics([], [])


def test_evaluate_captions_skips_and_counts_truncated() -> None:
    preds = [
        Prediction("1", "1.png", "caption", "red acne", "red acne", ground_truth="red acne", disease="acne vulgaris"),
        Prediction("2", "2.png", "caption", "<think>…", "", ground_truth="a mole", truncated=True),
    ]
    m = evaluate_captions(preds)
    assert (m["n"], m["n_truncated"], m["bleu_1"], m["mention_rate"]) == (1, 1, 100.0, 100.0)
    # an explicit label map wins over the stored disease
    assert evaluate_captions(preds, {"1.png": "psoriasis"})["mention_rate"] == 0.0
    with pytest.raises(ValueError, match="none of the 1 caption"):
        evaluate_captions(preds[1:])


# --- the published numbers ------------------------------------------------------------------------------------------

VEGA = "results_caption_fuzzytopk_s1cascade_merged_init_stage3_val_predictions.json"
RIGEL = "results_caption_fuzzytopk_s1cascade_stage3_val_predictions.json"
GUIDED = "results_caption_merged_guided_val_predictions.json"
TRUTH = "results_disease_fuzzytopk_s1cascade_RAGR2_a09_val_predictions.json"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (VEGA, {"bleu_1": 42.22, "bleu_2": 35.19, "bleu_3": 31.55, "bleu_4": 29.33,
                "rouge_1": 53.55, "rouge_2": 36.33, "rouge_l": 46.10, "mention_rate": 62.63}),
        (RIGEL, {"bleu_1": 29.22, "bleu_2": 18.65, "bleu_3": 13.03, "bleu_4": 9.82,
                 "rouge_1": 38.90, "rouge_2": 15.71, "rouge_l": 27.89, "mention_rate": 47.47}),
        (GUIDED, {"mention_rate": 78.79}),
    ],
)  # fmt: skip
def test_reference_captions_reproduce_the_paper(reference_dir: Path, name: str, expected: dict[str, float]) -> None:
    m = evaluate_captions(read_predictions(reference_dir / name), read_disease_labels(reference_dir / TRUTH))
    assert m["n"] == 99 and m["n_mention"] == 99
    assert {k: round(m[k], 2) for k in expected} == expected


def test_reference_file_metrics_block_is_reproduced(reference_dir: Path) -> None:
    """Every caption file that carries the authors' own metrics block agrees with us to 0.01."""
    import json

    checked = 0
    for path in sorted(reference_dir.glob("results_caption_*.json")):
        published = json.loads(path.read_text(encoding="utf-8")).get("metrics")
        if not published:
            continue
        m = evaluate_captions(read_predictions(path))
        pairs = (("bleu_1", "bleu_1"), ("bleu_4", "bleu_4"), ("rouge_1", "rouge_1"), ("rouge_L", "rouge_l"))
        for theirs, ours in pairs:
            assert round(m[ours], 2) == published[theirs], (path.name, theirs)
        assert round(m["generated_words_mean"], 1) == published["avg_generated_length"]
        checked += 1
    assert checked == 4

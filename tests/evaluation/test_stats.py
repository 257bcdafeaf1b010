"""Bootstrap CIs: per-resample metrics equal the reference implementations (scikit-learn, nltk corpus_bleu) on
explicit resamples, and the intervals cover the true value at about the nominal rate on simulated data."""

from __future__ import annotations

import numpy as np
import pytest

from hikari.data.labels import DISEASES, UNKNOWN
from hikari.evaluation.captions import BLEU_WEIGHTS, bleu_scores, caption_metrics
from hikari.evaluation.diagnosis import diagnosis_metrics, evaluate_diagnosis
from hikari.evaluation.predictions import Prediction
from hikari.evaluation.stats import (
    bleu_from_stats,
    bleu_sentence_stats,
    bootstrap_indices,
    bootstrap_p_value,
    diagnosis_intervals,
    diagnosis_resamples,
    format_interval,
    percentile_interval,
    resample_weights,
    resampled_bleu,
)

WORDS = "red scaly plaque papule nodule on the arm with erythema consistent biopsy is recommended".split()


def _labels(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    y_true = [DISEASES[i] for i in rng.integers(0, len(DISEASES), n)]
    y_pred = [t if rng.random() < 0.6 else (UNKNOWN if rng.random() < 0.3 else DISEASES[rng.integers(0, 10)])
              for t in y_true]  # fmt: skip
    return y_true, y_pred


def test_resampled_diagnosis_metrics_equal_sklearn_on_explicit_resamples() -> None:
    y_true, y_pred = _labels(40, seed=1)
    indices = bootstrap_indices(40, 6, seed=2)
    samples = diagnosis_resamples(y_true, y_pred, DISEASES, indices)
    for b, row in enumerate(indices):
        m = diagnosis_metrics([y_true[i] for i in row], [y_pred[i] for i in row], DISEASES)
        for key, values in samples.items():
            assert values[b] == pytest.approx(m[key], abs=1e-9), key


def test_undefined_kappa_is_left_out_of_the_interval() -> None:
    samples = diagnosis_resamples(["psoriasis"] * 5, ["psoriasis"] * 5, DISEASES, bootstrap_indices(5, 3, 0))
    assert np.isnan(samples["cohen_kappa"]).all() and (samples["accuracy"] == 100).all()
    assert percentile_interval(samples["cohen_kappa"], 0.95) == (None, None)


def _captions(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    refs = [" ".join(rng.choice(WORDS, rng.integers(4, 14))) for _ in range(n)]
    hyps = [" ".join(rng.choice(WORDS, rng.integers(1, 12))) for _ in range(n)]
    hyps[0] = "x"  # shorter than every n-gram order > 1: nltk's max(1, count) denominator
    return refs, hyps


def test_vectorised_corpus_bleu_equals_nltk_on_explicit_resamples() -> None:
    refs, hyps = _captions(30, seed=4)
    stats = bleu_sentence_stats([r.lower().split() for r in refs], [h.lower().split() for h in hyps])
    whole = bleu_scores(refs, hyps)
    for key, weights in BLEU_WEIGHTS.items():
        assert float(bleu_from_stats(stats.sum(axis=0), weights)) == pytest.approx(whole[key], rel=1e-12)
    indices = bootstrap_indices(30, 4, seed=5)
    weights_matrix = resample_weights(indices, 30)
    for b, row in enumerate(indices):
        expected = bleu_scores([refs[i] for i in row], [hyps[i] for i in row])
        for key, weights in BLEU_WEIGHTS.items():
            assert resampled_bleu(weights_matrix, stats, weights)[b] == pytest.approx(expected[key], rel=1e-12)


def test_bleu_is_zero_without_unigram_matches() -> None:
    stats = bleu_sentence_stats([["a", "b"]], [["c"]])
    assert float(bleu_from_stats(stats.sum(axis=0), BLEU_WEIGHTS["bleu_4"])) == 0.0
    assert bleu_scores(["a b"], ["c"])["bleu_4"] == 0.0


def test_bootstrap_ci_covers_the_true_accuracy_at_the_nominal_rate() -> None:
    """600 simulated evaluations of a 70 %-accurate classifier on 150 images: the 95 % percentile interval holds
    the true 70 % in 95 % ± 3 % of them (binomial s.e. of the coverage ≈ 0.9 %; percentile intervals run a
    little short at this n, hence a lower tolerance of 4 points)."""
    rng = np.random.default_rng(2024)
    labels = ("a", "b", "c")
    hits = 0
    trials = 600
    for trial in range(trials):
        y_true = [labels[i] for i in rng.integers(0, 3, 150)]
        correct = rng.random(150) < 0.7
        y_pred = [t if ok else labels[(labels.index(t) + 1) % 3] for t, ok in zip(y_true, correct)]
        point = diagnosis_metrics(y_true, y_pred, labels)
        ci = diagnosis_intervals(y_true, y_pred, labels, point, n_resamples=400, seed=trial)["accuracy"]
        hits += ci["ci_low"] <= 70.0 <= ci["ci_high"]
    assert 0.91 <= hits / trials <= 0.98


def test_bootstrap_ci_covers_the_true_mean_rouge_like_score() -> None:
    """Per-image means (ROUGE, mention rate): coverage of a known population mean 0.3 (Beta(3, 7) scores)."""
    from hikari.evaluation.stats import interval, resampled_mean

    rng = np.random.default_rng(7)
    hits = 0
    for trial in range(400):
        scores = rng.beta(3, 7, 120)
        weights = resample_weights(bootstrap_indices(120, 400, trial), 120)
        entry = interval(float(scores.mean()), resampled_mean(weights, scores), 0.95, 120)
        hits += entry["ci_low"] <= 0.3 <= entry["ci_high"]
    assert 0.91 <= hits / 400 <= 0.98


def test_evaluate_diagnosis_ci_shape_and_seed() -> None:
    preds = [Prediction(str(i), f"{i}.png", "disease", "x", DISEASES[i % 3], ground_truth=DISEASES[i % 2])
             for i in range(30)]  # fmt: skip
    plain = evaluate_diagnosis(preds, DISEASES)
    assert "ci" not in plain  # existing callers: unchanged, no cost
    m = evaluate_diagnosis(preds, DISEASES, bootstrap=200, seed=3)
    assert set(m["ci"]) == {"accuracy", "balanced_accuracy", "f1_macro", "cohen_kappa", "mcc"}
    acc = m["ci"]["accuracy"]
    assert acc["value"] == m["accuracy"] and acc["n"] == 30 and acc["ci_low"] <= acc["value"] <= acc["ci_high"]
    assert evaluate_diagnosis(preds, DISEASES, bootstrap=200, seed=3)["ci"] == m["ci"]
    assert evaluate_diagnosis(preds, DISEASES, bootstrap=200, seed=4)["ci"] != m["ci"]


def test_caption_metrics_ci_for_every_metric() -> None:
    refs, hyps = _captions(20, seed=8)
    m = caption_metrics(refs, hyps, diseases=["psoriasis"] * 10 + [None] * 10, bootstrap=100)
    assert set(m["ci"]) == {*BLEU_WEIGHTS, "rouge_1", "rouge_2", "rouge_l", "mention_rate"}
    assert m["ci"]["mention_rate"]["n"] == 10 and m["ci"]["bleu_4"]["n"] == 20


def test_format_and_p_value() -> None:
    assert format_interval({"value": 81.13, "ci_low": 70.44, "ci_high": 90.56, "n": 53}) == "81.1 [70.4, 90.6]"
    assert format_interval({"value": None, "ci_low": None, "ci_high": None, "n": 3}) == "n/a"
    assert bootstrap_p_value(np.array([1.0, 2.0, 3.0]), 0.0) == 1.0
    assert bootstrap_p_value(np.full(999, 5.0), 5.0) == pytest.approx(1 / 1000)
    with pytest.raises(ValueError, match="resamples must be >= 1"):
        diagnosis_intervals(["psoriasis"], ["psoriasis"], DISEASES, {}, n_resamples=0)
    with pytest.raises(ValueError, match="CI level"):
        diagnosis_intervals(["psoriasis"], ["psoriasis"], DISEASES, {}, level=95)

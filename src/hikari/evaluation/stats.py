"""Percentile-bootstrap confidence intervals for the diagnosis and caption metrics, vectorised over resamples.

Conventions (also in ``docs/statistics.md``):

* The unit resampled is the image: every resample draws n images with replacement from the n scored ones.
  Resample b uses row b of one index matrix (`bootstrap_indices`, ``numpy.random.default_rng(seed)``), so the
  same seed gives the same intervals, and two metrics computed from one matrix are paired.
* Interval = the (1 − level)/2 and (1 + level)/2 percentiles of the resampled metric (percentile bootstrap,
  numpy's linear interpolation). Resamples where a metric is undefined (κ when every label is the same) are
  left out of its percentiles; ``n`` in every interval is the number of images, not of resamples.
* Every metric is recomputed from per-resample sufficient statistics with the same formula as the point
  estimate, never by averaging per-image scores where the metric is not a mean:
  diagnosis metrics from one confusion matrix per resample (``numpy.bincount``); corpus BLEU from the summed
  per-sentence clipped n-gram matches, n-gram totals and lengths (exactly nltk's ``corpus_bleu`` with
  ``method1`` smoothing); ROUGE and the mention rate, which *are* per-image means, from the per-image scores.
* Values are in percent (0–100), like the point estimates of `diagnosis` and `captions`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from nltk.translate.bleu_score import modified_precision

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
BLEU_EPSILON = 0.1  # nltk SmoothingFunction().method1's epsilon
MAX_ORDER = 4


def check_bootstrap_args(n_resamples: int, level: float) -> None:
    """Raise a ValueError naming the bad argument (resamples ≥ 1, 0 < level < 1)."""
    if n_resamples < 1:
        raise ValueError(f"bootstrap resamples must be >= 1, got {n_resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"CI level must be between 0 and 1 (e.g. 0.95), got {level}")


def bootstrap_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) int64 matrix of image indices drawn with replacement; row b is resample b."""
    if n < 1:
        raise ValueError("nothing to resample: no items")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n), dtype=np.int64)


def resample_weights(indices: np.ndarray, n: int) -> np.ndarray:
    """(B, n) float64 multiplicity of each image in each resample: W @ x sums x over resample b."""
    n_resamples = indices.shape[0]
    offsets = (np.arange(n_resamples, dtype=np.int64) * n)[:, None]
    counts = np.bincount((indices + offsets).ravel(), minlength=n_resamples * n)
    return counts.reshape(n_resamples, n).astype(np.float64)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """(low, high) percentiles of the finite `samples`; (None, None) when none is finite."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None, None
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def interval(value: float | None, samples: np.ndarray, level: float, n: int) -> dict[str, Any]:
    """The JSON form of one CI: ``{value, ci_low, ci_high, n}`` (bounds None when `value` is None)."""
    low, high = percentile_interval(samples, level) if value is not None else (None, None)
    return {"value": value, "ci_low": low, "ci_high": high, "n": n}


def format_interval(entry: Mapping[str, Any], digits: int = 1) -> str:
    """``"81.1 [70.4, 90.6]"`` (``"n/a"`` for an undefined value; the value alone when it has no bounds)."""
    value = entry.get("value")
    if value is None:
        return "n/a"
    if entry.get("ci_low") is None or entry.get("ci_high") is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{entry['ci_low']:.{digits}f}, {entry['ci_high']:.{digits}f}]"


# --- diagnosis -------------------------------------------------------------------------------------------------


def resampled_confusions(true_idx: np.ndarray, pred_idx: np.ndarray, n_rows: int, n_columns: int,
                         indices: np.ndarray) -> np.ndarray:  # fmt: skip
    """(B, n_rows, n_columns) confusion matrices of every resample: true class index × predicted column index."""
    codes = true_idx.astype(np.int64) * n_columns + pred_idx.astype(np.int64)
    cells = n_rows * n_columns
    offsets = (np.arange(indices.shape[0], dtype=np.int64) * cells)[:, None]
    counts = np.bincount((codes[indices] + offsets).ravel(), minlength=indices.shape[0] * cells)
    return counts.reshape(indices.shape[0], n_rows, n_columns)


def confusion_metrics(confusions: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, macro-F1, Cohen's κ and MCC (×100) of each (B, L, C) confusion matrix.

    Rows are the L true classes, columns the same L classes followed by any extra prediction-only columns
    (Unknown). The formulas are scikit-learn's (see `diagnosis.diagnosis_metrics`): balanced accuracy = mean
    recall over classes with support; macro-F1 over the L classes that are true or predicted; κ and MCC over
    all C categories. κ is NaN where undefined (expected agreement 1); MCC is 0 where sklearn returns 0.
    """
    c = confusions.astype(np.float64)
    n_labels = c.shape[1]
    n = c.sum(axis=(1, 2))
    diag = np.einsum("bii->bi", c[:, :, :n_labels])
    correct = diag.sum(axis=1)
    support = c.sum(axis=2)  # (B, L)
    predicted = c.sum(axis=1)  # (B, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, diag / support, np.nan)
        balanced = np.nanmean(recall, axis=1)
        denom = support + predicted[:, :n_labels]
        f1 = np.where(denom > 0, 2 * diag / denom, np.nan)
        f1_macro = np.nanmean(f1, axis=1)
        true_all = np.zeros_like(predicted)
        true_all[:, :n_labels] = support
        agree = correct / n
        expected = (true_all * predicted).sum(axis=1) / n**2
        kappa = np.where(expected < 1, (agree - expected) / (1 - expected), np.nan)
        cov_tp = correct * n - (true_all * predicted).sum(axis=1)
        cov_pp = n**2 - (predicted**2).sum(axis=1)
        cov_tt = n**2 - (true_all**2).sum(axis=1)
        mcc = np.where(cov_pp * cov_tt > 0, cov_tp / np.sqrt(cov_pp * cov_tt), 0.0)
    return {"accuracy": 100 * agree, "balanced_accuracy": 100 * balanced, "f1_macro": 100 * f1_macro,
            "cohen_kappa": 100 * kappa, "mcc": 100 * mcc}  # fmt: skip


def encode_labels(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes: true → index in `labels`; predicted → index in `labels`, or L + k for the k-th distinct
    value outside them (Unknown). Returns (true_idx, pred_idx, n_columns)."""
    position = {label: i for i, label in enumerate(labels)}
    extra = sorted({p for p in y_pred if p not in position})
    columns = {**position, **{value: len(labels) + k for k, value in enumerate(extra)}}
    true_idx = np.array([position[t] for t in y_true], dtype=np.int64)
    pred_idx = np.array([columns[p] for p in y_pred], dtype=np.int64)
    return true_idx, pred_idx, len(columns)


def diagnosis_resamples(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str],
                        indices: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    """Every diagnosis headline metric (×100) on every resample of `indices`: {metric: (B,) array}."""
    true_idx, pred_idx, n_columns = encode_labels(y_true, y_pred, labels)
    return confusion_metrics(resampled_confusions(true_idx, pred_idx, len(labels), n_columns, indices))


def diagnosis_intervals(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    labels: Sequence[str],
    point: Mapping[str, float | None],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, dict[str, Any]]:
    """{metric: {value, ci_low, ci_high, n}} for accuracy, balanced accuracy, macro-F1, κ and MCC; `point`
    holds the point estimates (from `diagnosis_metrics`), so the value shown is exactly the headline one."""
    check_bootstrap_args(n_resamples, level)
    samples = diagnosis_resamples(y_true, y_pred, labels, bootstrap_indices(len(y_true), n_resamples, seed))
    return {key: interval(point.get(key), values, level, len(y_true)) for key, values in samples.items()}


# --- captions --------------------------------------------------------------------------------------------------


def bleu_sentence_stats(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> np.ndarray:
    """(n, 2·4 + 2) per-sentence sufficient statistics of corpus BLEU (one reference each, tokenised):
    clipped n-gram matches for n = 1..4, n-gram totals (nltk's ``max(1, count)``), hypothesis and reference
    length. Summing rows over any multiset of sentences and calling `bleu_from_stats` gives nltk's
    ``corpus_bleu`` on that multiset."""
    stats = np.zeros((len(hypotheses), 2 * MAX_ORDER + 2), dtype=np.float64)
    for i, (reference, hypothesis) in enumerate(zip(references, hypotheses, strict=True)):
        for order in range(1, MAX_ORDER + 1):
            p = modified_precision([list(reference)], list(hypothesis), order)
            stats[i, order - 1] = p.numerator
            stats[i, MAX_ORDER + order - 1] = p.denominator
        stats[i, 2 * MAX_ORDER] = len(hypothesis)
        stats[i, 2 * MAX_ORDER + 1] = len(reference)
    return stats


def bleu_from_stats(summed: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Corpus BLEU ×100 from summed sentence statistics, (..., 10) → (...): nltk ``corpus_bleu`` with
    ``method1`` (ε = 0.1 added to zero match counts) and the brevity penalty on the summed lengths; 0 when no
    unigram matches."""
    matches, totals = summed[..., :MAX_ORDER], summed[..., MAX_ORDER : 2 * MAX_ORDER]
    hyp_len, ref_len = summed[..., 2 * MAX_ORDER], summed[..., 2 * MAX_ORDER + 1]
    precision = np.where(matches == 0, BLEU_EPSILON, matches) / totals
    log_mean = sum(w * np.log(precision[..., k]) for k, w in enumerate(weights) if w)
    with np.errstate(divide="ignore", invalid="ignore"):
        penalty = np.where(hyp_len > ref_len, 1.0, np.where(hyp_len == 0, 0.0, np.exp(1 - ref_len / hyp_len)))
    return np.where(matches[..., 0] == 0, 0.0, penalty * np.exp(log_mean)) * 100.0


def caption_intervals(
    bleu_stats: np.ndarray,
    bleu_weights: Mapping[str, Sequence[float]],
    per_image: Mapping[str, np.ndarray],
    point: Mapping[str, float | None],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, dict[str, Any]]:
    """{metric: {value, ci_low, ci_high, n}} for corpus BLEU (one entry per `bleu_weights` key, from
    `bleu_stats`) and for per-image means (`per_image`: metric → (n,) array, NaN where the image does not count,
    e.g. a mention rate with unknown disease). `point` holds the headline values."""
    check_bootstrap_args(n_resamples, level)
    n = bleu_stats.shape[0]
    weights = resample_weights(bootstrap_indices(n, n_resamples, seed), n)
    out = {key: interval(point.get(key), resampled_bleu(weights, bleu_stats, w), level, n)
           for key, w in bleu_weights.items()}  # fmt: skip
    for key, scores in per_image.items():
        out[key] = interval(point.get(key), resampled_mean(weights, scores), level, int(np.isfinite(scores).sum()))
    return out


def resampled_bleu(weights: np.ndarray, bleu_stats: np.ndarray, bleu_weights: Sequence[float]) -> np.ndarray:
    """(B,) corpus BLEU ×100 of each resample (`weights`: (B, n) multiplicities from `resample_weights`)."""
    return bleu_from_stats(weights @ bleu_stats, bleu_weights)


def resampled_mean(weights: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(B,) mean of the finite `scores` in each resample (NaN where a resample holds none)."""
    known = np.isfinite(scores)
    total = weights @ np.where(known, scores, 0.0)
    count = weights @ known.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / count, np.nan)


def bootstrap_p_value(differences: np.ndarray, observed: float) -> float:
    """Two-sided paired-bootstrap p-value of H0 "no difference": the share of resampled differences, centred on
    the observed one, at least as far from 0 as the observed difference, with the +1 correction
    ((1 + #{|δ* − δ| ≥ |δ|}) / (B + 1)), so it is never exactly 0."""
    finite = differences[np.isfinite(differences)]
    if finite.size == 0 or not math.isfinite(observed):
        return float("nan")
    extreme = np.abs(finite - observed) >= abs(observed) - 1e-12
    return float((1 + extreme.sum()) / (finite.size + 1))

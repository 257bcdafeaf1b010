"""Paired comparison of two prediction files on the same images: is B's gain over A real?

Conventions (also in ``docs/statistics.md``):

* Items are joined by ``file_name`` (the SkinCAP join key, see `predictions`); only images present in both files
  are compared, and the report says how many were matched and which were left out. Two diagnosis files must
  agree on every matched image's ground truth.
* Differences are B − A, in percentage points.
* Diagnosis: McNemar's exact test — two-sided binomial test of the discordant pairs (A right / B wrong = b,
  A wrong / B right = c) against p = ½: P = min(1, 2 · P(X ≤ min(b, c))), X ~ Bin(b + c, ½); P = 1 when no pair
  is discordant. The CI of the accuracy difference is a paired percentile bootstrap (the same resampled images
  for both models).
* Captions: paired bootstrap of the BLEU-4 (corpus BLEU recomputed per resample), ROUGE-1 and ROUGE-L
  differences: percentile CI and a two-sided bootstrap p-value (`stats.bootstrap_p_value`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hikari.evaluation.captions import BLEU_WEIGHTS, bleu_scores, rouge_per_image, scored_captions
from hikari.evaluation.diagnosis import scored_labels
from hikari.evaluation.predictions import Prediction
from hikari.evaluation.stats import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    bleu_sentence_stats,
    bootstrap_indices,
    bootstrap_p_value,
    check_bootstrap_args,
    interval,
    resample_weights,
    resampled_bleu,
    resampled_mean,
)

CAPTION_COMPARE_KEYS = ("bleu_4", "rouge_1", "rouge_l")


class UnmatchedPredictions(ValueError):
    """Two prediction files that share no (or too few) images; the message names examples of each side."""


def pair_predictions(
    a: Sequence[Prediction], b: Sequence[Prediction]
) -> tuple[list[tuple[Prediction, Prediction]], list[str], list[str]]:
    """Join two prediction lists by ``file_name``: (pairs in A's order, file names only in A, only in B).

    Raises `UnmatchedPredictions` when no image is in both, naming a few of each side."""
    by_name = {p.file_name: p for p in b}
    pairs = [(p, by_name[p.file_name]) for p in a if p.file_name in by_name]
    names_a = {p.file_name for p in a}
    only_a = [p.file_name for p in a if p.file_name not in by_name]
    only_b = [p.file_name for p in b if p.file_name not in names_a]
    if not pairs:
        raise UnmatchedPredictions(
            f"the two files share no image (joined by file name): A has {len(a)} items (e.g. "
            f"{', '.join(only_a[:3]) or 'none'}), B has {len(b)} (e.g. {', '.join(only_b[:3]) or 'none'})"
        )
    return pairs, only_a, only_b


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (A right/B wrong, A wrong/B right)."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a}, {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def _difference(value: float, samples: np.ndarray, level: float, n: int) -> dict[str, Any]:
    entry = interval(value, samples, level, n)
    entry["p_bootstrap"] = bootstrap_p_value(samples, value)
    return entry


def compare_diagnosis(
    a: Sequence[Prediction],
    b: Sequence[Prediction],
    labels: Sequence[str],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, Any]:
    """Paired comparison of two diagnosis prediction lists (scored as `evaluate_diagnosis` scores them).

    Returns ``n`` (matched images), ``n_only_a``/``n_only_b`` (+ up to 10 example file names), ``accuracy_a``,
    ``accuracy_b``, the 2×2 table ``both_correct, only_a_correct, only_b_correct, both_wrong``,
    ``mcnemar_p`` and ``accuracy_difference`` = {value (B − A), ci_low, ci_high, n, p_bootstrap}.
    """
    check_bootstrap_args(n_resamples, level)
    pairs, only_a, only_b = pair_predictions(a, b)
    for pa, pb in pairs:
        if pa.ground_truth != pb.ground_truth:
            raise ValueError(f"{pa.file_name}: the files disagree on the ground truth ({pa.ground_truth!r} in A, "
                             f"{pb.ground_truth!r} in B); compare predictions of the same labelled images")  # fmt: skip
    true_a, pred_a = scored_labels([pa for pa, _ in pairs], labels)
    _, pred_b = scored_labels([pb for _, pb in pairs], labels)
    right_a = np.array([t == p for t, p in zip(true_a, pred_a)], dtype=np.float64)
    right_b = np.array([t == p for t, p in zip(true_a, pred_b)], dtype=np.float64)
    n = len(pairs)
    only_a_correct = int(((right_a == 1) & (right_b == 0)).sum())
    only_b_correct = int(((right_a == 0) & (right_b == 1)).sum())
    weights = resample_weights(bootstrap_indices(n, n_resamples, seed), n)
    samples = (weights @ (right_b - right_a)) / n * 100.0
    difference = float((right_b.mean() - right_a.mean()) * 100.0)
    return {
        "n": n, "n_only_a": len(only_a), "n_only_b": len(only_b), "only_a": only_a[:10], "only_b": only_b[:10],
        "accuracy_a": float(right_a.mean() * 100.0), "accuracy_b": float(right_b.mean() * 100.0),
        "both_correct": int(((right_a == 1) & (right_b == 1)).sum()), "only_a_correct": only_a_correct,
        "only_b_correct": only_b_correct, "both_wrong": int(((right_a == 0) & (right_b == 0)).sum()),
        "mcnemar_p": mcnemar_exact(only_a_correct, only_b_correct),
        "accuracy_difference": _difference(difference, samples, level, n),
        "bootstrap": {"resamples": n_resamples, "seed": seed, "level": level},
    }  # fmt: skip


def compare_captions(
    a: Sequence[Prediction],
    b: Sequence[Prediction],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, Any]:
    """Paired comparison of two caption prediction lists on the images both scored (status success, not
    truncated). Each side is scored against its own reference caption (they normally agree).

    Returns ``n``, ``n_only_a``/``n_only_b`` (+ examples), and per metric of `CAPTION_COMPARE_KEYS` ``{a, b,
    difference: {value (B − A), ci_low, ci_high, n, p_bootstrap}}`` under ``metrics``.
    """
    check_bootstrap_args(n_resamples, level)
    pairs, only_a, only_b = pair_predictions(scored_captions(a), scored_captions(b))
    n = len(pairs)
    weights = resample_weights(bootstrap_indices(n, n_resamples, seed), n)
    metrics: dict[str, Any] = {}
    sides = []
    for side in (0, 1):
        refs = [pair[side].ground_truth or "" for pair in pairs]
        hyps = [pair[side].parsed for pair in pairs]
        stats = bleu_sentence_stats([r.lower().split() for r in refs], [h.lower().split() for h in hyps])
        sides.append((refs, hyps, stats, rouge_per_image(refs, hyps)))
    for key in CAPTION_COMPARE_KEYS:
        if key in BLEU_WEIGHTS:
            values = [bleu_scores(refs, hyps)[key] for refs, hyps, _, _ in sides]
            samples = [resampled_bleu(weights, stats, BLEU_WEIGHTS[key]) for _, _, stats, _ in sides]
        else:
            values = [float(np.mean(rouge[key])) for *_, rouge in sides]
            samples = [resampled_mean(weights, rouge[key]) for *_, rouge in sides]
        difference = _difference(values[1] - values[0], samples[1] - samples[0], level, n)
        metrics[key] = {"a": values[0], "b": values[1], "difference": difference}
    return {"n": n, "n_only_a": len(only_a), "n_only_b": len(only_b), "only_a": only_a[:10], "only_b": only_b[:10],
            "metrics": metrics, "bootstrap": {"resamples": n_resamples, "seed": seed, "level": level}}  # fmt: skip

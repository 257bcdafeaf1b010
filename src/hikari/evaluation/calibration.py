"""Calibration of diagnosis probabilities: ECE, Brier score, temperature scaling, selective prediction.

Conventions (also in ``docs/statistics.md``):

* Input: the exact answer probabilities `hikari predict --probabilities` stores per line (``probabilities``
  {label: p}; group files written with ``--group-probabilities`` carry ``group_probabilities``). Rows are
  renormalised to sum to 1 over the labels.
* The classifier judged is the probabilities' own: prediction = the most probable label, confidence = its
  probability. (The generated answer usually agrees; ``n_argmax_agrees`` counts how often.)
* ECE: 15 equal-width bins on the top-class confidence, bin k = (k/15, (k+1)/15] (the first also holds 0);
  ECE = Σ_k |B_k|/n · |accuracy(B_k) − mean confidence(B_k)|, ×100.
* Brier score: multi-class, mean over images of Σ_c (p_c − 1[c = truth])², in [0, 2] (not ×100).
* Temperature scaling: p_c(T) ∝ exp(log p_c / T); T > 0 minimises the mean negative log-likelihood on a
  calibration set and is then applied to a *different* evaluation set. With a separate calibration file the
  temperature is fitted on it and every image of the evaluated file is scored. Without one, cross-fitting: the
  images are split in two halves (seeded permutation), T is fitted on each half and applied to the other, and
  ECE/Brier after scaling are computed on the union of these out-of-half probabilities — no image is scored
  with a temperature fitted on itself.
* Selective prediction: images sorted by confidence (highest first); accuracy at coverage c = accuracy of the
  ⌈c·n⌉ most confident; the risk–coverage curve lists (coverage, risk = 1 − accuracy) at every k = 1..n.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from hikari.evaluation.predictions import Prediction

N_BINS = 15
COVERAGES = (0.5, 0.8, 1.0)
PROBABILITY_FIELDS = ("probabilities", "group_probabilities")
_FLOOR = 1e-12  # log(0) guard: an answer the model scored exactly 0 stays vanishingly unlikely at any T
_LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))


def probability_matrix(predictions: Sequence[Prediction], labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(probs (n, L) rows summing to 1, truth (n,) label indices) from each prediction's ``probabilities`` (or
    ``group_probabilities``) field. Raises naming the item when the field is missing, misses a label, is not a
    mapping of finite non-negative numbers, or the ground truth is not a label."""
    position = {label: i for i, label in enumerate(labels)}
    probs = np.zeros((len(predictions), len(labels)))
    truth = np.zeros(len(predictions), dtype=np.int64)
    for i, p in enumerate(predictions):
        where = f"{p.where + ', ' if p.where else ''}id {p.id} ({p.file_name})"
        field = next((f for f in PROBABILITY_FIELDS if f in p.extra), None)
        if field is None:
            raise ValueError(f"{where}: no 'probabilities' field (run `hikari predict --probabilities`)")
        values = p.extra[field]
        if not isinstance(values, Mapping):
            raise ValueError(f"{where}: field {field!r} must map label → probability, got {type(values).__name__}")
        missing = [label for label in labels if label not in values]
        if missing:
            raise ValueError(f"{where}: field {field!r} lacks labels {missing[:3]}")
        row = [values[label] for label in labels]
        if not all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in row) or sum(row) <= 0:
            raise ValueError(f"{where}: field {field!r} must hold finite probabilities >= 0, got {row}")
        probs[i] = np.asarray(row, dtype=np.float64) / sum(row)
        if p.ground_truth not in position:
            raise ValueError(f"{where}: ground truth {p.ground_truth!r} is not one of the labels")
        truth[i] = position[p.ground_truth]
    return probs, truth


def has_probabilities(predictions: Sequence[Prediction]) -> bool:
    """Whether every prediction carries answer probabilities (and there is at least one)."""
    return bool(predictions) and all(any(f in p.extra for f in PROBABILITY_FIELDS) for p in predictions)


def top_class(probs: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence (n,), correct (n,) bool) of the most probable label (ties: the first label)."""
    return probs.max(axis=1), probs.argmax(axis=1) == truth


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """Equal-width bins (k/n_bins, (k+1)/n_bins] of the confidence: ``{low, high, n, confidence, accuracy}``
    each (confidence/accuracy None for an empty bin)."""
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    bins = []
    for k in range(n_bins):
        members = index == k
        count = int(members.sum())
        bins.append({
            "low": k / n_bins, "high": (k + 1) / n_bins, "n": count,
            "confidence": float(confidence[members].mean()) if count else None,
            "accuracy": float(correct[members].mean()) if count else None,
        })  # fmt: skip
    return bins


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE ×100 over `n_bins` equal-width confidence bins (see the module docstring)."""
    if confidence.size == 0:
        raise ValueError("no predictions to calibrate")
    n = confidence.size
    return 100.0 * sum(b["n"] / n * abs(b["accuracy"] - b["confidence"])
                       for b in reliability_bins(confidence, correct, n_bins) if b["n"])  # fmt: skip


def brier_score(probs: np.ndarray, truth: np.ndarray) -> float:
    """Multi-class Brier score: mean over rows of Σ_c (p_c − onehot_c)², in [0, 2]."""
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(truth)), truth] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def scale_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities after temperature scaling: softmax(log p / T) per row."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = np.log(np.maximum(probs, _FLOOR)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def negative_log_likelihood(probs: np.ndarray, truth: np.ndarray) -> float:
    """Mean −log p(truth)."""
    return float(-np.log(np.maximum(probs[np.arange(len(truth)), truth], _FLOOR)).mean())


def fit_temperature(probs: np.ndarray, truth: np.ndarray) -> float:
    """The T in [0.05, 20] minimising the mean NLL of `scale_temperature(probs, T)` (bounded 1-D search on
    log T)."""
    if len(truth) == 0:
        raise ValueError("no calibration items to fit a temperature on")
    result = minimize_scalar(lambda log_t: negative_log_likelihood(scale_temperature(probs, math.exp(log_t)), truth),
                             bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})  # fmt: skip
    return float(math.exp(result.x))


def cross_fitted_probabilities(probs: np.ndarray, truth: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """Out-of-half temperature-scaled probabilities (two seeded halves, each scaled with the T fitted on the
    other) and the two temperatures. Needs at least 4 items."""
    if len(truth) < 4:
        raise ValueError(f"cross-fitting needs at least 4 items, got {len(truth)}; pass a calibration file")
    order = np.random.default_rng(seed).permutation(len(truth))
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    out = np.empty_like(probs)
    temperatures = []
    for fit_on, apply_to in (halves, halves[::-1]):
        t = fit_temperature(probs[fit_on], truth[fit_on])
        out[apply_to] = scale_temperature(probs[apply_to], t)
        temperatures.append(t)
    return out, temperatures


def selective_accuracy(confidence: np.ndarray, correct: np.ndarray,
                       coverages: Sequence[float] = COVERAGES) -> dict[str, float]:  # fmt: skip
    """{"50": acc ×100, …}: accuracy of the ⌈c·n⌉ most confident images for each coverage c."""
    order = np.argsort(-confidence, kind="stable")
    ranked = correct[order].astype(np.float64)
    return {f"{round(100 * c):d}": float(ranked[: max(1, math.ceil(c * len(ranked) - 1e-9))].mean() * 100.0)
            for c in coverages}  # fmt: skip


def risk_coverage_curve(confidence: np.ndarray, correct: np.ndarray) -> dict[str, list[float]]:
    """{coverage: [k/n], risk: [1 − accuracy of the k most confident] ×100, threshold: [k-th confidence]}."""
    order = np.argsort(-confidence, kind="stable")
    ranked = correct[order].astype(np.float64)
    k = np.arange(1, len(ranked) + 1)
    return {"coverage": (k / len(ranked)).tolist(), "risk": (100.0 * (1 - np.cumsum(ranked) / k)).tolist(),
            "threshold": confidence[order].tolist()}  # fmt: skip


def _summary(probs: np.ndarray, truth: np.ndarray, n_bins: int) -> dict[str, Any]:
    confidence, correct = top_class(probs, truth)
    return {"ece": expected_calibration_error(confidence, correct, n_bins), "brier": brier_score(probs, truth),
            "nll": negative_log_likelihood(probs, truth), "mean_confidence": float(confidence.mean() * 100.0),
            "bins": reliability_bins(confidence, correct, n_bins)}  # fmt: skip


def calibration_metrics(
    probs: np.ndarray,
    truth: np.ndarray,
    *,
    calibration_probs: np.ndarray | None = None,
    calibration_truth: np.ndarray | None = None,
    seed: int = 0,
    n_bins: int = N_BINS,
) -> dict[str, Any]:
    """Calibration of (n, L) `probs` against label indices `truth`, before and after temperature scaling.

    The temperature is fitted on (`calibration_probs`, `calibration_truth`) when given, else cross-fitted on
    two seeded halves of the input (see the module docstring; ``method`` says which). Returns ``n, accuracy,
    method, temperature (list: one per fit), before{ece, brier, nll, mean_confidence, bins}, after{…},
    selective{50, 80, 100}, risk_coverage{coverage, risk, threshold}`` (selective prediction ranks by the
    uncalibrated confidence; scaling with one T does not change the ranking).
    """
    if len(truth) == 0:
        raise ValueError("no predictions to calibrate")
    if calibration_probs is not None and calibration_truth is not None:
        temperatures = [fit_temperature(calibration_probs, calibration_truth)]
        after = scale_temperature(probs, temperatures[0])
        method = "calibration_file"
    else:
        after, temperatures = cross_fitted_probabilities(probs, truth, seed)
        method = "cross_fit_halves"
    confidence, correct = top_class(probs, truth)
    return {
        "n": int(len(truth)), "accuracy": float(correct.mean() * 100.0), "method": method, "seed": seed,
        "n_bins": n_bins, "temperature": temperatures,
        "before": _summary(probs, truth, n_bins), "after": _summary(after, truth, n_bins),
        "selective": selective_accuracy(confidence, correct), "risk_coverage": risk_coverage_curve(confidence, correct),
    }  # fmt: skip


def evaluate_calibration(
    predictions: Sequence[Prediction],
    labels: Sequence[str],
    *,
    calibrate_on: Sequence[Prediction] | None = None,
    seed: int = 0,
    n_bins: int = N_BINS,
) -> dict[str, Any]:
    """`calibration_metrics` of prediction lines carrying probabilities; `calibrate_on` (other images, e.g. the
    predictions on a calibration split part) fits the temperature, else halves are cross-fitted. Images in both
    raise: the temperature must never be fitted on the images it is scored on. Also ``n_argmax_agrees``: how many
    generated answers equal the most probable label."""
    probs, truth = probability_matrix(predictions, labels)
    calibration: tuple[np.ndarray, np.ndarray] | tuple[None, None] = (None, None)
    if calibrate_on is not None:
        shared = {p.file_name for p in predictions} & {p.file_name for p in calibrate_on}
        if shared:
            raise ValueError(f"{len(shared)} image(s) are both calibrated on and scored (e.g. {sorted(shared)[:3]}); "
                             "the calibration file must hold other images")  # fmt: skip
        calibration = probability_matrix(calibrate_on, labels)
    result = calibration_metrics(probs, truth, calibration_probs=calibration[0], calibration_truth=calibration[1],
                                 seed=seed, n_bins=n_bins)  # fmt: skip
    if calibrate_on is not None:
        result["n_calibration"] = len(calibrate_on)
    top = probs.argmax(axis=1)
    result["n_argmax_agrees"] = sum(p.parsed == labels[int(k)] for p, k in zip(predictions, top))
    return result

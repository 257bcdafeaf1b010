"""Calibration: ECE exact on constructed predictors, Brier by hand, temperature scaling on an over-confident
predictor, never fitted on the scored images, selective accuracy and the probability field checks."""

from __future__ import annotations

import numpy as np
import pytest

from hikari.evaluation.calibration import (
    brier_score,
    calibration_metrics,
    evaluate_calibration,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    risk_coverage_curve,
    scale_temperature,
    selective_accuracy,
)
from hikari.evaluation.predictions import Prediction

LABELS = ("a", "b", "c")


def test_ece_is_zero_for_a_perfectly_calibrated_predictor() -> None:
    # Every bin's confidence equals its accuracy: 10 items at 0.9 with 9 right, 10 at 0.6 with 6 right, 4 at 0.5
    # with 2 right.
    confidence = np.array([0.9] * 10 + [0.6] * 10 + [0.5] * 4)
    correct = np.array([1] * 9 + [0] + [1] * 6 + [0] * 4 + [1, 1, 0, 0], dtype=bool)
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.0, abs=1e-12)


def test_ece_known_value_for_a_hand_made_predictor() -> None:
    # bin (0.933, 1]: 4 items at 0.95, 2 right → |0.5 − 0.95| = 0.45, weight 4/6
    # bin (0.6, 0.667]: 2 items at 0.65, both right → |1 − 0.65| = 0.35, weight 2/6
    confidence = np.array([0.95, 0.95, 0.95, 0.95, 0.65, 0.65])
    correct = np.array([1, 1, 0, 0, 1, 1], dtype=bool)
    assert expected_calibration_error(confidence, correct) == pytest.approx(100 * (4 / 6 * 0.45 + 2 / 6 * 0.35))
    bins = reliability_bins(confidence, correct)
    assert len(bins) == 15 and sum(b["n"] for b in bins) == 6 and bins[14]["accuracy"] == 0.5


def test_bin_edges_are_right_closed() -> None:
    bins = reliability_bins(np.array([1 / 15, 0.0, 1.0]), np.array([True, True, True]))
    assert bins[0]["n"] == 2 and bins[14]["n"] == 1


def test_brier_by_hand() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    # (0.09 + 0.04 + 0.01) and (0.25 + 0.25 + 0) → mean 0.32
    assert brier_score(probs, np.array([0, 1])) == pytest.approx(0.32)


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the model reports softmax(z / 0.4): far too sure of itself."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 10)) * 1.5
    true_p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = np.array([rng.choice(10, p=row) for row in true_p])
    return scale_temperature(true_p, 0.4), truth


def test_temperature_scaling_repairs_an_overconfident_predictor() -> None:
    probs, truth = _overconfident(3000, seed=0)
    assert fit_temperature(probs, truth) == pytest.approx(2.5, rel=0.15)  # the inverse of the 0.4 applied
    m = calibration_metrics(probs, truth, seed=1)
    assert m["method"] == "cross_fit_halves" and len(m["temperature"]) == 2
    assert m["before"]["ece"] > 15 and m["after"]["ece"] < m["before"]["ece"] / 3
    assert m["after"]["nll"] < m["before"]["nll"] and m["after"]["brier"] < m["before"]["brier"]
    held_out, held_truth = _overconfident(1000, seed=9)
    separate = calibration_metrics(probs, truth, calibration_probs=held_out, calibration_truth=held_truth)
    assert separate["method"] == "calibration_file" and separate["after"]["ece"] < separate["before"]["ece"] / 3


def test_selective_accuracy_and_risk_coverage() -> None:
    # coverage c keeps the ⌈c·n⌉ most confident: 50 % of 5 → 3, 80 % → 4
    assert selective_accuracy(np.array([0.5, 0.9, 0.7, 0.8, 0.6]), np.array([False, True, True, True, False])) == {
        "50": 100.0, "80": 75.0, "100": 60.0}  # fmt: skip
    confidence = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, False, False])
    curve = risk_coverage_curve(confidence, correct)
    assert curve["coverage"] == [0.25, 0.5, 0.75, 1.0] and curve["risk"] == pytest.approx([0, 0, 100 / 3, 50])


def _pred(i: int, truth: str, probs: dict[str, float] | None, field: str = "probabilities") -> Prediction:
    extra = {field: probs} if probs is not None else {}
    return Prediction(str(i), f"{i}.png", "group", "", max(probs or {"a": 1}, key=lambda k: (probs or {"a": 1})[k]),
                      ground_truth=truth, extra=extra)  # fmt: skip


def test_evaluate_calibration_reads_both_fields_and_refuses_overlap() -> None:
    preds = [_pred(i, LABELS[i % 3], {"a": 0.6, "b": 0.3, "c": 0.1}, "probabilities" if i % 2 else
                   "group_probabilities") for i in range(12)]  # fmt: skip
    m = evaluate_calibration(preds, LABELS)
    assert m["n"] == 12 and m["n_argmax_agrees"] == 12 and m["accuracy"] == pytest.approx(100 / 3)
    with pytest.raises(ValueError, match="both calibrated on and scored"):
        evaluate_calibration(preds[:6], LABELS, calibrate_on=preds[5:])
    assert evaluate_calibration(preds[:6], LABELS, calibrate_on=preds[6:])["n_calibration"] == 6


def test_missing_or_bad_probabilities_name_the_item() -> None:
    with pytest.raises(ValueError, match=r"id 3 \(3.png\): no 'probabilities' field"):
        evaluate_calibration([_pred(3, "a", None)] * 4, LABELS)
    with pytest.raises(ValueError, match=r"lacks labels \['c'\]"):
        evaluate_calibration([_pred(1, "a", {"a": 0.5, "b": 0.5})] * 4, LABELS)

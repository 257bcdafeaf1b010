"""Diagnosis metrics for Stage 1 (4 groups) and Stage 2 (10 diseases), all in percent (0–100) except counts.

Conventions (those of the HIKARI paper, made explicit):

* ``"Unknown"`` (an answer the parser could not match) is never a true label and always counts as wrong. It is
  a column of the confusion matrix (when it occurs) and a category for Cohen's κ and MCC, but not a class whose
  F1 is averaged.
* accuracy, balanced accuracy (mean recall over the classes present in ``y_true``), Cohen's κ and MCC come from
  scikit-learn (κ is None when undefined: every true and predicted label the same); macro-F1 averages
  scikit-learn's per-class F1 over the labels that occur in ``y_true`` or ``y_pred`` (a class absent from both,
  e.g. after excluding leaked images, would otherwise add a spurious 0).
* per class: support (true count), sensitivity = recall = TP / support, PPV = precision = TP / predicted count
  (None when undefined), F1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
)

from hikari.data.labels import DISEASE_TO_GROUP, UNKNOWN
from hikari.evaluation.parsing import parse_diagnosis
from hikari.evaluation.predictions import Prediction
from hikari.evaluation.stats import DEFAULT_LEVEL, diagnosis_intervals


def _check_inputs(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    if not y_true:
        raise ValueError("no items to score")
    if UNKNOWN in labels:
        raise ValueError(f"{UNKNOWN!r} is not a label: it is the parser's no-match answer")
    allowed = set(labels)
    for i, value in enumerate(y_true):
        if value not in allowed:
            raise ValueError(f"y_true[{i}] = {value!r} is not one of the labels: {', '.join(labels)}")
    for i, value in enumerate(y_pred):
        if value not in allowed and value != UNKNOWN:
            raise ValueError(f"y_pred[{i}] = {value!r} is neither a label nor {UNKNOWN!r}")


def _pct(value: float) -> float:
    return float(value) * 100.0


def diagnosis_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, Cohen's κ, MCC, per-class sensitivity/PPV and the confusion matrix.

    `labels` are the valid classes in display order; `y_pred` may also hold ``UNKNOWN``. Returns a JSON-ready
    dict: ``n, n_unknown, accuracy, balanced_accuracy, f1_macro, cohen_kappa, mcc, per_class{label: {support,
    predicted, sensitivity, ppv, f1}}, confusion{rows, columns, matrix}`` (matrix[i][j] = count of true rows[i]
    predicted columns[j]).
    """
    y_true, y_pred, labels = list(y_true), list(y_pred), list(labels)
    _check_inputs(y_true, y_pred, labels)
    columns = labels + ([UNKNOWN] if UNKNOWN in y_pred else [])
    matrix = confusion_matrix(y_true, y_pred, labels=columns)[: len(labels)]
    present = [label for label in labels if label in set(y_true) | set(y_pred)]
    with warnings.catch_warnings():
        # Expected, not alarming: Unknown and support-less classes ("y_pred contains classes not in y_true"), and
        # single-class subsets (κ undefined → reported as None below).
        warnings.filterwarnings("ignore", message=".*y_pred contains classes not in y_true.*")
        warnings.filterwarnings("ignore", message=".*single label was found.*")
        warnings.filterwarnings("ignore", category=UndefinedMetricWarning)
        balanced = balanced_accuracy_score(y_true, y_pred)
        kappa = cohen_kappa_score(y_true, y_pred)
        mcc = matthews_corrcoef(y_true, y_pred)
    f1_per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    per_class: dict[str, dict[str, Any]] = {}
    for i, label in enumerate(labels):
        support = int(matrix[i].sum())
        predicted = int(matrix[:, i].sum())
        tp = int(matrix[i, i])
        per_class[label] = {
            "support": support,
            "predicted": predicted,
            "sensitivity": _pct(tp / support) if support else None,
            "ppv": _pct(tp / predicted) if predicted else None,
            "f1": _pct(f1_per_class[i]),
        }
    f1_macro = float(np.mean([f1_per_class[labels.index(label)] for label in present]))
    return {
        "n": len(y_true),
        "n_unknown": sum(p == UNKNOWN for p in y_pred),
        "accuracy": _pct(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _pct(balanced),
        "f1_macro": _pct(f1_macro),
        "cohen_kappa": None if math.isnan(kappa) else _pct(kappa),
        "mcc": None if math.isnan(mcc) else _pct(mcc),
        "per_class": per_class,
        "confusion": {"rows": labels, "columns": columns, "matrix": matrix.tolist()},
    }


def reparse_predictions(
    predictions: Sequence[Prediction], labels: Sequence[str], thinking: bool = False
) -> tuple[list[Prediction], int]:
    """Re-derive every label from `raw_output` with our parser; returns the new predictions and how many
    labels changed. `thinking` declares a reasoning model (see `parse_diagnosis`)."""
    out: list[Prediction] = []
    changed = 0
    for p in predictions:
        parsed = parse_diagnosis(p.raw_output, labels, thinking=thinking)
        changed += parsed.label != p.parsed
        out.append(replace(p, parsed=parsed.label, truncated=parsed.truncated))
    return out, changed


def as_group_predictions(predictions: Sequence[Prediction]) -> list[Prediction]:
    """Disease predictions seen at group level (Stage 1 accuracy implied by Stage 2): truth and prediction are
    mapped to their groups; Unknown and diseases outside the 10 stay Unknown."""
    out: list[Prediction] = []
    for p in predictions:
        if p.task != "disease":
            raise ValueError(f"prediction {p.id} ({p.file_name}) is a {p.task!r} prediction, not 'disease'")
        truth = DISEASE_TO_GROUP.get(p.ground_truth or "")
        if truth is None:
            raise ValueError(
                f"prediction {p.id} ({p.file_name}): ground truth {p.ground_truth!r} is not one of "
                f"the diseases: {', '.join(DISEASE_TO_GROUP)}"
            )
        out.append(replace(p, task="group", ground_truth=truth, parsed=DISEASE_TO_GROUP.get(p.parsed, UNKNOWN)))
    return out


def scored_labels(predictions: Sequence[Prediction], labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """(y_true, y_pred) as `evaluate_diagnosis` scores them: failed (status not "success") and truncated
    predictions, and stored labels outside `labels`, become ``UNKNOWN`` (wrong). Items without ground truth, or
    with one outside `labels`, raise naming the item: a metric over an unannounced subset would be biased."""
    allowed = set(labels)
    y_true: list[str] = []
    y_pred: list[str] = []
    for p in predictions:
        where = f"{p.where}, " if p.where else ""
        if p.ground_truth is None:
            raise ValueError(f"{where}id {p.id} ({p.file_name}): no ground truth")
        if p.ground_truth not in allowed:
            raise ValueError(f"{where}id {p.id} ({p.file_name}): ground truth {p.ground_truth!r} is not one of the "
                             f"labels: {', '.join(labels)}")  # fmt: skip
        ok = p.status == "success" and not p.truncated and p.parsed in allowed
        y_true.append(p.ground_truth)
        y_pred.append(p.parsed if ok else UNKNOWN)
    return y_true, y_pred


def evaluate_diagnosis(
    predictions: Sequence[Prediction],
    labels: Sequence[str],
    reparse: bool = False,
    thinking: bool = False,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, Any]:
    """Score diagnosis predictions against their ground truth.

    With `reparse` the labels are first re-derived from `raw_output` (`reparse_predictions`) and
    ``n_reparse_changed`` counts those that differ from the stored ones. Failed (status not "success") and
    truncated predictions count as ``UNKNOWN`` (wrong), as do stored labels outside `labels`. Items without
    ground truth raise: a metric over an unannounced subset would be silently biased.

    With `bootstrap` > 0 the result also holds ``ci`` = {metric: {value, ci_low, ci_high, n}} for the five
    headline metrics (percentile bootstrap over images, `bootstrap` resamples, `seed`, `level`; see
    `hikari.evaluation.stats`) and ``bootstrap`` = {resamples, seed, level}. The flat keys are unchanged.
    """
    n_changed = 0
    if reparse:
        predictions, n_changed = reparse_predictions(predictions, labels, thinking=thinking)
    y_true, y_pred = scored_labels(predictions, labels)
    metrics = diagnosis_metrics(y_true, y_pred, labels)
    metrics["n_truncated"] = sum(p.truncated for p in predictions)
    metrics["n_failed"] = sum(p.status != "success" for p in predictions)
    if reparse:
        metrics["n_reparse_changed"] = n_changed
    if bootstrap > 0:
        metrics["ci"] = diagnosis_intervals(y_true, y_pred, labels, metrics, n_resamples=bootstrap, seed=seed,
                                            level=level)  # fmt: skip
        metrics["bootstrap"] = {"resamples": bootstrap, "seed": seed, "level": level}
    return metrics

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score, matthews_corrcoef

from hikari.data.labels import DISEASES, GROUPS, UNKNOWN
from hikari.evaluation.diagnosis import (
    as_group_predictions,
    diagnosis_metrics,
    evaluate_diagnosis,
    reparse_predictions,
)
from hikari.evaluation.predictions import Prediction, exclude_file_names, read_predictions, train_file_names

LABELS = ["a", "b", "c"]


# --- naive references, written from the definitions -------------------------------------------------------------


def naive_kappa(y_true: list[str], y_pred: list[str]) -> float:
    cats = sorted(set(y_true) | set(y_pred))
    n = len(y_true)
    observed = sum(t == p for t, p in zip(y_true, y_pred)) / n
    expected = sum((y_true.count(c) / n) * (y_pred.count(c) / n) for c in cats)
    return (observed - expected) / (1 - expected)


def naive_mcc(y_true: list[str], y_pred: list[str]) -> float:
    # Gorodkin's multi-class MCC from the confusion matrix.
    cats = sorted(set(y_true) | set(y_pred))
    n = len(y_true)
    c = sum(t == p for t, p in zip(y_true, y_pred))
    t_k = [y_true.count(k) for k in cats]
    p_k = [y_pred.count(k) for k in cats]
    num = c * n - sum(t * p for t, p in zip(t_k, p_k))
    den = math.sqrt(n * n - sum(p * p for p in p_k)) * math.sqrt(n * n - sum(t * t for t in t_k))
    return num / den if den else 0.0


def test_hand_computed_example() -> None:
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", UNKNOWN, "c"]
    m = diagnosis_metrics(y_true, y_pred, LABELS)
    assert m["n"] == 6 and m["n_unknown"] == 1
    assert m["accuracy"] == pytest.approx(400 / 6)
    # recalls: a 2/3, b 1/2, c 1/1
    assert m["balanced_accuracy"] == pytest.approx(100 * (2 / 3 + 1 / 2 + 1) / 3)
    assert m["per_class"]["a"] == {"support": 3, "predicted": 2, "sensitivity": pytest.approx(200 / 3),
                                   "ppv": 100.0, "f1": pytest.approx(80.0)}  # fmt: skip
    assert m["per_class"]["b"]["ppv"] == pytest.approx(50.0)
    assert m["per_class"]["b"]["sensitivity"] == pytest.approx(50.0)
    # F1: a = 2·1·(2/3)/(1+2/3) = 0.8, b = 0.5, c = 1
    assert m["f1_macro"] == pytest.approx(100 * (0.8 + 0.5 + 1.0) / 3)
    assert m["confusion"]["columns"] == ["a", "b", "c", UNKNOWN]
    assert m["confusion"]["rows"] == ["a", "b", "c"]
    assert m["confusion"]["matrix"] == [[2, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]
    assert m["cohen_kappa"] == pytest.approx(100 * naive_kappa(y_true, y_pred))
    assert m["mcc"] == pytest.approx(100 * naive_mcc(y_true, y_pred))


def test_no_unknown_column_when_everything_matched() -> None:
    m = diagnosis_metrics(["a", "b"], ["a", "a"], LABELS)
    assert m["confusion"]["columns"] == LABELS
    assert m["per_class"]["c"] == {"support": 0, "predicted": 0, "sensitivity": None, "ppv": None, "f1": 0.0}
    # c is neither true nor predicted: it does not drag macro-F1 down. F1: a = 2/3, b = 0.
    assert m["f1_macro"] == pytest.approx(100 * (2 / 3 + 0) / 2)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(5))
def test_random_against_sklearn_and_naive(seed: int) -> None:
    rng = random.Random(seed)
    labels = list(DISEASES)
    y_true = [rng.choice(labels) for _ in range(60)]
    y_pred = [t if rng.random() < 0.6 else rng.choice([*labels, UNKNOWN]) for t in y_true]
    m = diagnosis_metrics(y_true, y_pred, labels)
    assert m["accuracy"] == pytest.approx(100 * sum(t == p for t, p in zip(y_true, y_pred)) / 60)
    assert m["balanced_accuracy"] == pytest.approx(100 * balanced_accuracy_score(y_true, y_pred))
    assert m["cohen_kappa"] == pytest.approx(100 * cohen_kappa_score(y_true, y_pred))
    assert m["cohen_kappa"] == pytest.approx(100 * naive_kappa(y_true, y_pred))
    assert m["mcc"] == pytest.approx(100 * matthews_corrcoef(y_true, y_pred))
    assert m["mcc"] == pytest.approx(100 * naive_mcc(y_true, y_pred))
    present = [lab for lab in labels if lab in y_true or lab in y_pred]
    assert m["f1_macro"] == pytest.approx(100 * f1_score(y_true, y_pred, labels=present, average="macro"))
    for label in labels:
        tp = sum(t == p == label for t, p in zip(y_true, y_pred))
        support, predicted = y_true.count(label), y_pred.count(label)
        row = m["per_class"][label]
        assert row["support"] == support and row["predicted"] == predicted
        assert row["sensitivity"] == (pytest.approx(100 * tp / support) if support else None)
        assert row["ppv"] == (pytest.approx(100 * tp / predicted) if predicted else None)
    matrix = m["confusion"]["matrix"]
    assert sum(map(sum, matrix)) == 60
    assert sum(matrix[i][i] for i in range(len(labels))) == sum(t == p for t, p in zip(y_true, y_pred))


def test_unknown_is_always_wrong() -> None:
    m = diagnosis_metrics(["a", "b"], [UNKNOWN, UNKNOWN], LABELS)
    assert m["accuracy"] == 0.0 and m["balanced_accuracy"] == 0.0 and m["n_unknown"] == 2


@pytest.mark.parametrize(
    ("y_true", "y_pred", "labels", "message"),
    [
        (["a"], ["a", "b"], LABELS, "1 items but y_pred has 2"),
        ([], [], LABELS, "no items"),
        (["z"], ["a"], LABELS, r"y_true\[0\] = 'z'"),
        ([UNKNOWN], ["a"], LABELS, r"y_true\[0\] = 'Unknown'"),
        (["a"], ["zz"], LABELS, r"y_pred\[0\] = 'zz'"),
        (["a"], ["a"], [*LABELS, UNKNOWN], "not a label"),
    ],
)
def test_bad_inputs_raise(y_true: list[str], y_pred: list[str], labels: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        diagnosis_metrics(y_true, y_pred, labels)


def _pred(i: int, truth: str, parsed: str, raw: str | None = None, **kw: object) -> Prediction:
    return Prediction(id=str(i), file_name=f"{i}.png", task="disease", raw_output=raw or parsed, parsed=parsed,
                      ground_truth=truth, **kw)  # type: ignore[arg-type]  # fmt: skip


def test_evaluate_diagnosis_counts_failed_truncated_and_reparses() -> None:
    preds = [
        _pred(1, "psoriasis", "psoriasis"),
        _pred(2, "acne vulgaris", "acne vulgaris", status="error"),
        _pred(3, "sarcoidosis", UNKNOWN, raw="<think>sarcoid", truncated=True),
        _pred(4, "lichen planus", "eczema"),  # a stored label outside the 10 → Unknown
        _pred(5, "basal cell carcinoma", UNKNOWN, raw="Final diagnosis: BCC"),
    ]
    m = evaluate_diagnosis(preds, DISEASES)
    assert (m["n"], m["n_failed"], m["n_truncated"], m["n_unknown"]) == (5, 1, 1, 4)
    assert m["accuracy"] == pytest.approx(20.0)
    r = evaluate_diagnosis(preds, DISEASES, reparse=True)
    # item 5 is recovered by the parser; item 2 failed and stays wrong; item 4's raw "eczema" stays Unknown.
    assert r["accuracy"] == pytest.approx(40.0)
    assert r["n_reparse_changed"] == 2  # items 4 ("eczema" → Unknown) and 5 (Unknown → basal cell carcinoma)
    reparsed, changed = reparse_predictions(preds, DISEASES)
    assert [p.parsed for p in reparsed] == ["psoriasis", "acne vulgaris", UNKNOWN, UNKNOWN, "basal cell carcinoma"]
    assert changed == sum(a.parsed != b.parsed for a, b in zip(preds, reparsed))


def test_evaluate_diagnosis_needs_ground_truth() -> None:
    with pytest.raises(ValueError, match="no ground truth"):
        evaluate_diagnosis([Prediction("1", "1.png", "disease", "x", "psoriasis")], DISEASES)


def test_as_group_predictions() -> None:
    preds = [_pred(1, "psoriasis", "lichen planus"), _pred(2, "basal cell carcinoma", UNKNOWN)]
    groups = as_group_predictions(preds)
    assert [(p.task, p.ground_truth, p.parsed) for p in groups] == [
        ("group", GROUPS[0], GROUPS[0]),
        ("group", GROUPS[2], UNKNOWN),
    ]
    with pytest.raises(ValueError, match="not one of the diseases"):
        as_group_predictions([_pred(1, "eczema", "psoriasis")])


# --- reference files -----------------------------------------------------------------------------------------------

DENEB = "results_disease_fuzzytopk_s1cascade_RAGR2_a09_val_predictions.json"
SIRIUS = "results_disease_fuzzytopk_s1cascade_ragR2_a09_RAGR0_a09_val_predictions.json"


@pytest.mark.parametrize(("name", "accuracy"), [(DENEB, 79.80), (SIRIUS, 85.86)])
def test_reference_accuracy_matches_the_paper(reference_dir: Path, name: str, accuracy: float) -> None:
    preds = read_predictions(reference_dir / name)
    for reparse in (False, True):
        m = evaluate_diagnosis(preds, DISEASES, reparse=reparse)
        assert round(m["accuracy"], 2) == accuracy
        assert m["n"] == 99 and m["n_unknown"] == 0


def test_reference_leak_explains_the_rag_in_training_gain(reference_dir: Path) -> None:
    """46 of the 99 evaluated images are in the Stage 2 training split. Sirius (RAG-in-Training, R0 references
    that can be the query's own training copy) is perfect on them and worse than Deneb on the clean rest."""
    train = train_file_names(reference_dir / "split_info_fuzzytopk.json")
    scores = {}
    for name in (DENEB, SIRIUS):
        preds = read_predictions(reference_dir / name)
        clean, dropped = exclude_file_names(preds, train)
        leaked = [p for p in preds if p.file_name in train]
        assert dropped == len(leaked) == 46 and len(clean) == 53
        scores[name] = (evaluate_diagnosis(clean, DISEASES), evaluate_diagnosis(leaked, DISEASES))
    assert round(scores[SIRIUS][1]["accuracy"], 2) == 100.0
    assert round(scores[SIRIUS][0]["accuracy"], 2) == 73.58
    assert round(scores[DENEB][0]["accuracy"], 2) == 81.13
    assert round(scores[DENEB][1]["accuracy"], 2) == 78.26


def test_single_class_subset_has_undefined_kappa() -> None:
    m = diagnosis_metrics(["a", "a"], ["a", "a"], LABELS)
    assert m["accuracy"] == 100.0 and m["cohen_kappa"] is None and m["mcc"] == 0.0

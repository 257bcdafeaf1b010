"""The retrieval-only baseline on hand-made references: the vote, precision@k and the diagnosis metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from hikari.data.labels import DISEASES, UNKNOWN
from hikari.data.records import SkinCapRecord
from hikari.retrieval.index import Hit, Reference
from hikari.retrieval.vote import evaluate_vote, reference_precision, vote_label

A, B, C = DISEASES[0], DISEASES[1], DISEASES[2]


def _ref(label: str, score: float) -> dict:
    return {"label": label, "score": score}


def _record(name: str, disease: str) -> SkinCapRecord:
    return SkinCapRecord(id=name, file_name=f"{name}.png", image_path=Path(f"{name}.png"), disease=disease,
                         group=None, caption="")  # fmt: skip


def test_vote_sums_scores_per_label() -> None:
    refs = [_ref(A, 0.9), _ref(B, 0.6), _ref(B, 0.5)]
    assert vote_label(refs, 1) == A
    assert vote_label(refs, 3) == B  # 1.1 beats 0.9
    assert vote_label(refs, 2) == A  # 0.9 beats 0.6


def test_vote_ties_go_to_the_best_single_reference_then_the_earlier() -> None:
    assert vote_label([_ref(A, 0.5), _ref(B, 0.8), _ref(A, 0.3)], 3) == B  # 0.8 each; B's best is higher
    assert vote_label([_ref(A, 0.5), _ref(B, 0.5)], 2) == A
    assert vote_label([], 3) == UNKNOWN
    with pytest.raises(ValueError, match="k must be >= 1"):
        vote_label([_ref(A, 1.0)], 0)


def test_vote_reads_hits_too() -> None:
    ref = Reference(id="9", file_name="9.png", label=C, caption="", image_path="9.png")
    assert vote_label([Hit(0, ref, 0.7, 0.7, None)], 1) == C


def test_precision_and_metrics_on_a_hand_made_case() -> None:
    records = [_record("1", A), _record("2", A), _record("3", B), _record("4", C)]
    refs = {
        "1.png": [_ref(A, 0.9), _ref(B, 0.8), _ref(A, 0.7)],  # vote@1 A, vote@3 A (1.6)
        "2.png": [_ref(B, 0.9), _ref(A, 0.5), _ref(A, 0.5)],  # vote@1 B, vote@3 A (1.0 vs 0.9)
        "3.png": [_ref(B, 0.9), _ref(B, 0.8), _ref(C, 0.1)],  # B, B
        "4.png": [],  # no references: Unknown, counts as wrong
    }
    assert reference_precision(records, refs, 1) == pytest.approx(100 * 2 / 4)
    assert reference_precision(records, refs, 3) == pytest.approx(100 * (2 / 3 + 2 / 3 + 2 / 3 + 0) / 4)
    one, three = evaluate_vote(records, refs, 1), evaluate_vote(records, refs, 3)
    assert one["accuracy"] == pytest.approx(50.0) and three["accuracy"] == pytest.approx(75.0)
    assert three["n_unknown"] == 1 and three["k"] == 3 and three["precision_at_1"] == pytest.approx(50.0)
    assert three["per_class"][A]["sensitivity"] == pytest.approx(100.0)

"""The retrieval-only baseline and the references' quality: what a Stage 2 RAG model has to beat.

A RAG model that does not beat a similarity-weighted vote of its own references has learned nothing from the image
beyond copying their labels. Given each evaluated record's top-K references (leak-free, as `retrieve_references`
returns them or as cached dicts), this module

* votes: each reference adds its hybrid score to its disease; the disease with the largest sum wins (ties: the one
  whose best single reference scores higher, then the earlier reference) — `vote_label`;
* measures the references: precision@k = mean over records of the share of the top-k references whose disease is
  the record's (precision@1 is "the first reference has the query's disease") — `reference_precision`;
* scores the vote with the same metrics as `hikari eval diagnosis` (`evaluate_vote`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hikari.data.labels import DISEASES, UNKNOWN
from hikari.data.records import SkinCapRecord
from hikari.evaluation.diagnosis import diagnosis_metrics
from hikari.retrieval.index import Hit


def _label_score(ref: Hit | Mapping[str, Any]) -> tuple[str, float]:
    if isinstance(ref, Hit):
        return ref.reference.label, float(ref.score)
    return str(ref["label"]), float(ref["score"])


def vote_label(refs: Sequence[Hit | Mapping[str, Any]], k: int) -> str:
    """The similarity-weighted vote of the first `k` references (`UNKNOWN` when there are none)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    totals: dict[str, float] = {}
    best: dict[str, float] = {}
    for ref in refs[:k]:
        label, score = _label_score(ref)
        totals[label] = totals.get(label, 0.0) + score
        best[label] = max(best.get(label, float("-inf")), score)
    if not totals:
        return UNKNOWN
    # max() keeps the first of equal keys, i.e. the label of the earlier reference.
    return max(totals, key=lambda label: (totals[label], best[label]))


def reference_precision(
    records: Sequence[SkinCapRecord], references: Mapping[str, Sequence[Hit | Mapping[str, Any]]], k: int
) -> float:
    """Mean over `records` of (references among the first `k` with the record's disease) / k, in percent; a record
    with fewer than k references counts the missing ones as wrong."""
    if not records:
        raise ValueError("no records to measure")
    total = 0.0
    for record in records:
        refs = references.get(record.file_name, [])[:k]
        total += sum(_label_score(r)[0] == record.disease for r in refs) / k
    return 100.0 * total / len(records)


def evaluate_vote(
    records: Sequence[SkinCapRecord],
    references: Mapping[str, Sequence[Hit | Mapping[str, Any]]],
    k: int,
    labels: Sequence[str] = DISEASES,
) -> dict[str, Any]:
    """`diagnosis_metrics` of the top-`k` vote for every record (a record without references: `UNKNOWN`), plus
    ``k``, ``precision_at_1`` and ``precision_at_k`` of the references themselves."""
    y_true = [r.disease for r in records]
    y_pred = [vote_label(references.get(r.file_name, []), k) for r in records]  # no references: UNKNOWN
    metrics = diagnosis_metrics(y_true, y_pred, labels)
    return {"k": k, "precision_at_1": reference_precision(records, references, 1),
            f"precision_at_{k}": reference_precision(records, references, k), **metrics}  # fmt: skip


"""Diagnosis and caption metrics broken down by skin type and by SkinCAP source, with n and a CI per cell.

Conventions (also in ``docs/statistics.md``):

* Skin type comes from the SkinCAP metadata (`hikari.data.skincap.record_skin_band`): Fitzpatrick17k
  ``fitzpatrick_scale`` and DDI ``skin_tone`` both map onto the bands I–II, III–IV, V–VI; −1, empty or a
  metadata file without these columns gives "unknown". Source is the ``source`` column ("fitzpatrick17k",
  "ddi"; "unknown" when empty). Predictions whose image is not in the metadata count as "unknown" in both and are
  counted in ``n_without_metadata``.
* Every cell is scored exactly as the whole file is (`evaluate_diagnosis` / `evaluate_captions` rules) and gets
  a percentile-bootstrap CI per metric (`hikari.evaluation.stats`; cell k of a breakdown uses seed + k).
* Largest gap: among the known bands (not "unknown") with at least `min_n` images, the two whose primary metric
  (accuracy for diagnosis, BLEU-4 for captions) differ most; its CI comes from the difference of the two bands'
  independent bootstrap resamples. None (with a ``reason``) when fewer than two bands qualify.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hikari.data.labels import SKIN_BANDS, UNKNOWN_SKIN_BAND
from hikari.data.records import SkinCapRecord
from hikari.data.skincap import record_skin_band
from hikari.evaluation.captions import BLEU_WEIGHTS, caption_metrics, mentions_disease, rouge_per_image, scored_captions
from hikari.evaluation.diagnosis import diagnosis_metrics, scored_labels
from hikari.evaluation.predictions import Prediction
from hikari.evaluation.stats import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    bleu_sentence_stats,
    bootstrap_indices,
    check_bootstrap_args,
    diagnosis_resamples,
    interval,
    resample_weights,
    resampled_bleu,
    resampled_mean,
)

DIAGNOSIS_SUBGROUP_KEYS = ("accuracy", "balanced_accuracy", "f1_macro")
CAPTION_SUBGROUP_KEYS = ("bleu_4", "rouge_1", "rouge_l", "mention_rate")
PRIMARY = {"diagnosis": "accuracy", "captions": "bleu_4"}
MIN_N = 10
UNKNOWN_SOURCE = "unknown"


def subgroup_of(
    predictions: Sequence[Prediction], records: Sequence[SkinCapRecord]
) -> tuple[dict[str, dict[str, str]], int]:
    """{file_name: {"skin_band": band, "source": source}} for every prediction, and how many predictions have no
    metadata record (both "unknown")."""
    by_name = {r.file_name: r for r in records}
    out: dict[str, dict[str, str]] = {}
    missing = 0
    for p in predictions:
        record = by_name.get(p.file_name)
        if record is None:
            missing += 1
            out[p.file_name] = {"skin_band": UNKNOWN_SKIN_BAND, "source": UNKNOWN_SOURCE}
        else:
            out[p.file_name] = {"skin_band": record_skin_band(record), "source": record.source or UNKNOWN_SOURCE}
    return out, missing


def _diagnosis_cell(cell: Sequence[Prediction], labels: Sequence[str], indices_seed: tuple[int, int]
                    ) -> tuple[dict[str, float | None], dict[str, np.ndarray]]:  # fmt: skip
    y_true, y_pred = scored_labels(cell, labels)
    point = diagnosis_metrics(y_true, y_pred, labels)
    samples = diagnosis_resamples(y_true, y_pred, labels, bootstrap_indices(len(y_true), *indices_seed))
    return {k: point[k] for k in DIAGNOSIS_SUBGROUP_KEYS}, {k: samples[k] for k in DIAGNOSIS_SUBGROUP_KEYS}


def _caption_cell(cell: Sequence[Prediction], diseases: Mapping[str, str], indices_seed: tuple[int, int]
                  ) -> tuple[dict[str, float | None], dict[str, np.ndarray]]:  # fmt: skip
    refs = [p.ground_truth or "" for p in cell]
    hyps = [p.parsed for p in cell]
    truth = [diseases.get(p.file_name) or p.disease for p in cell]
    point = caption_metrics(refs, hyps, diseases=truth if any(truth) else None)
    weights = resample_weights(bootstrap_indices(len(cell), *indices_seed), len(cell))
    stats = bleu_sentence_stats([r.lower().split() for r in refs], [h.lower().split() for h in hyps])
    rouge = rouge_per_image(refs, hyps)
    samples = {"bleu_4": resampled_bleu(weights, stats, BLEU_WEIGHTS["bleu_4"])}
    samples.update({key: resampled_mean(weights, rouge[key]) for key in ("rouge_1", "rouge_l")})
    if "mention_rate" in point:
        mention = np.array([100.0 * mentions_disease(h, d) if d else np.nan for h, d in zip(hyps, truth)])
        samples["mention_rate"] = resampled_mean(weights, mention)
    return {k: point.get(k) for k in CAPTION_SUBGROUP_KEYS if k in samples}, samples


def _largest_gap(cells: Mapping[str, Mapping[str, Any]], samples: Mapping[str, Mapping[str, np.ndarray]],
                 primary: str, level: float, min_n: int) -> dict[str, Any]:  # fmt: skip
    eligible = [b for b in SKIN_BANDS if b in cells and cells[b]["n"] >= min_n
                and cells[b]["metrics"].get(primary, {}).get("value") is not None]  # fmt: skip
    if len(eligible) < 2:
        return {"metric": primary, "bands": None, "reason": f"fewer than two known skin bands with n >= {min_n}"}
    value = {b: cells[b]["metrics"][primary]["value"] for b in eligible}
    high = max(eligible, key=lambda b: value[b])
    low = min(eligible, key=lambda b: value[b])
    gap = interval(value[high] - value[low], samples[high][primary] - samples[low][primary], level,
                   cells[high]["n"] + cells[low]["n"])  # fmt: skip
    return {"metric": primary, "bands": [high, low], "values": [value[high], value[low]],
            "n": [cells[high]["n"], cells[low]["n"]], "gap": gap}  # fmt: skip


def subgroup_report(
    predictions: Sequence[Prediction],
    records: Sequence[SkinCapRecord],
    *,
    kind: str,
    labels: Sequence[str] | None = None,
    diseases: Mapping[str, str] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    min_n: int = MIN_N,
) -> dict[str, Any]:
    """Metrics by skin band and by source for `kind` "diagnosis" (needs `labels`) or "captions" (`diseases`:
    file name → true disease for the mention rate; default each prediction's `disease`).

    Returns ``{kind, primary, min_n, n, n_without_metadata, by: {"skin_band": {band: cell}, "source": {source:
    cell}}, largest_gap}``, cell = ``{n, metrics: {metric: {value, ci_low, ci_high, n}}}``; bands in the order
    I–II, III–IV, V–VI, unknown (empty bands left out), sources sorted. Caption predictions that cannot be
    scored (failed, truncated) are left out as in `evaluate_captions`.
    """
    if kind not in PRIMARY:
        raise ValueError(f"unknown subgroup report kind {kind!r}; valid: {', '.join(PRIMARY)}")
    if kind == "diagnosis" and labels is None:
        raise ValueError("a diagnosis subgroup report needs the labels")
    check_bootstrap_args(n_resamples, level)
    scored = list(predictions) if kind == "diagnosis" else scored_captions(predictions)
    groups, missing = subgroup_of(scored, records)
    result: dict[str, Any] = {"kind": kind, "primary": PRIMARY[kind], "min_n": min_n, "n": len(scored),
                              "n_without_metadata": missing, "by": {}}  # fmt: skip
    band_samples: dict[str, dict[str, np.ndarray]] = {}
    for axis in ("skin_band", "source"):
        values = sorted({g[axis] for g in groups.values()})
        if axis == "skin_band":
            values = [b for b in (*SKIN_BANDS, UNKNOWN_SKIN_BAND) if b in values]
        cells: dict[str, Any] = {}
        for k, value in enumerate(values):
            cell = [p for p in scored if groups[p.file_name][axis] == value]
            if kind == "diagnosis":
                point, samples = _diagnosis_cell(cell, labels or (), (n_resamples, seed + k))
            else:
                point, samples = _caption_cell(cell, diseases or {}, (n_resamples, seed + k))
            metrics = {m: interval(point[m], samples[m], level, len(cell)) for m in point}
            cells[value] = {"n": len(cell), "metrics": metrics}
            if axis == "skin_band":
                band_samples[value] = samples
        result["by"][axis] = cells
    result["largest_gap"] = _largest_gap(result["by"]["skin_band"], band_samples, PRIMARY[kind], level, min_n)
    return result

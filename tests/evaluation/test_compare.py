"""Paired comparison: McNemar's exact test against hand-computed values, the join by file name, paired bootstrap
of diagnosis and caption differences, and the authors' Deneb vs Sirius / Vega vs Rigel files (skipped when
absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hikari.data.labels import DISEASES
from hikari.evaluation.compare import (
    UnmatchedPredictions,
    compare_captions,
    compare_diagnosis,
    mcnemar_exact,
    pair_predictions,
)
from hikari.evaluation.predictions import Prediction, exclude_file_names, read_predictions, train_file_names

DENEB = "results_disease_fuzzytopk_s1cascade_RAGR2_a09_val_predictions.json"
SIRIUS = "results_disease_fuzzytopk_s1cascade_ragR2_a09_RAGR0_a09_val_predictions.json"


def test_mcnemar_exact_by_hand() -> None:
    # b = 1, c = 5: P(X ≤ 1 | n=6, ½) = (1 + 6) / 64; two-sided ×2 = 14/64
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_exact(5, 1) == mcnemar_exact(1, 5)
    # b = 0, c = 3: 2 · 1/8
    assert mcnemar_exact(0, 3) == pytest.approx(0.25)
    assert mcnemar_exact(2, 2) == 1.0 and mcnemar_exact(0, 0) == 1.0  # capped at 1; no discordant pair
    # Deneb vs Sirius on the 53 clean images: 6 vs 2 → 2 · (1 + 8 + 28) / 256
    assert mcnemar_exact(6, 2) == pytest.approx(2 * 37 / 256)


def _diag(name: str, truth: str, parsed: str) -> Prediction:
    return Prediction(name.split(".")[0], name, "disease", parsed, parsed, ground_truth=truth)


def test_compare_diagnosis_counts_and_ci() -> None:
    truth = [DISEASES[i % 4] for i in range(40)]
    a = [_diag(f"{i}.png", t, t if i % 2 else DISEASES[9]) for i, t in enumerate(truth)]  # 50 %
    b = [_diag(f"{i}.png", t, t if i % 5 else DISEASES[9]) for i, t in enumerate(truth)]  # 80 %
    r = compare_diagnosis(a, b[::-1] + [_diag("x.png", DISEASES[0], DISEASES[0])], DISEASES, n_resamples=500)
    assert (r["n"], r["n_only_a"], r["n_only_b"], r["only_b"]) == (40, 0, 1, ["x.png"])
    assert (r["accuracy_a"], r["accuracy_b"]) == (50.0, 80.0)
    assert (r["both_correct"], r["only_a_correct"], r["only_b_correct"], r["both_wrong"]) == (16, 4, 16, 4)
    assert r["mcnemar_p"] == pytest.approx(mcnemar_exact(4, 16))
    diff = r["accuracy_difference"]
    assert diff["value"] == pytest.approx(30.0) and diff["ci_low"] < 30 < diff["ci_high"] and diff["ci_low"] > 0


def test_compare_refuses_disjoint_files_and_different_truths() -> None:
    with pytest.raises(UnmatchedPredictions, match="share no image.*1.png.*2.png"):
        pair_predictions([_diag("1.png", "psoriasis", "psoriasis")], [_diag("2.png", "psoriasis", "psoriasis")])
    with pytest.raises(ValueError, match="1.png: the files disagree on the ground truth"):
        compare_diagnosis([_diag("1.png", "psoriasis", "psoriasis")], [_diag("1.png", "acne vulgaris", "psoriasis")],
                          DISEASES)  # fmt: skip


def test_compare_captions_identical_files_have_no_difference() -> None:
    caps = [Prediction(str(i), f"{i}.png", "caption", "red plaque", "red scaly plaque on the arm",
                       ground_truth="a red scaly plaque on the arm") for i in range(10)]  # fmt: skip
    r = compare_captions(caps, caps, n_resamples=100)
    for key in ("bleu_4", "rouge_1", "rouge_l"):
        d = r["metrics"][key]["difference"]
        assert d["value"] == 0 and d["ci_low"] == d["ci_high"] == 0 and d["p_bootstrap"] == 1.0


def test_deneb_vs_sirius_published_gain_is_not_significant(reference_dir: Path) -> None:
    deneb, sirius = read_predictions(reference_dir / DENEB), read_predictions(reference_dir / SIRIUS)
    r = compare_diagnosis(deneb, sirius, DISEASES)
    assert (r["n"], r["only_a_correct"], r["only_b_correct"]) == (99, 6, 12)
    assert r["mcnemar_p"] == pytest.approx(mcnemar_exact(6, 12)) and r["mcnemar_p"] > 0.05
    train = train_file_names(reference_dir / "split_info_fuzzytopk.json")
    clean = compare_diagnosis(exclude_file_names(deneb, train)[0], exclude_file_names(sirius, train)[0], DISEASES)
    assert clean["n"] == 53 and clean["accuracy_difference"]["value"] == pytest.approx(-400 / 53)
    assert clean["mcnemar_p"] == pytest.approx(2 * 37 / 256)

"""Skin-type bands from both SkinCAP conventions (Fitzpatrick 1–6 / −1, DDI 12 / 34 / 56), unknowns counted, and
the per-band / per-source breakdown with its largest gap."""

from __future__ import annotations

from pathlib import Path

import pytest

from hikari.data.labels import DISEASES, SKIN_BANDS, UNKNOWN_SKIN_BAND, skin_band
from hikari.data.records import SkinCapRecord
from hikari.data.skincap import record_skin_band
from hikari.evaluation.predictions import Prediction
from hikari.evaluation.subgroups import subgroup_report


@pytest.mark.parametrize(("fitzpatrick", "tone", "band"), [
    ("1", None, "I–II"), ("2.0", None, "I–II"), (3, None, "III–IV"), ("4", "", "III–IV"), ("5", None, "V–VI"),
    (6.0, None, "V–VI"), ("-1", None, "unknown"), ("", None, "unknown"), (None, None, "unknown"),
    (None, "12", "I–II"), (None, "34", "III–IV"), ("-1", "56", "V–VI"), (None, "56.0", "V–VI"),
])  # fmt: skip
def test_both_skincap_conventions_map_to_the_same_bands(fitzpatrick: object, tone: object, band: str) -> None:
    assert skin_band(fitzpatrick, tone) == band


@pytest.mark.parametrize(("fitzpatrick", "tone", "message"), [
    ("7", None, "fitzpatrick_scale '7' is not one of 1–6"), (None, "40", "skin_tone '40' is not one of the DDI"),
    ("light", None, "not a number"),
])  # fmt: skip
def test_bad_skin_cells_are_refused(fitzpatrick: object, tone: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        skin_band(fitzpatrick, tone)


def _record(i: int, extra: dict[str, str], source: str) -> SkinCapRecord:
    return SkinCapRecord(str(i), f"{i}.png", Path(f"{i}.png"), DISEASES[i % 2], None, "cap", source=source,
                         extra=extra)  # fmt: skip


def test_record_band_without_the_columns_is_unknown_and_errors_name_the_file() -> None:
    assert record_skin_band(_record(1, {}, "")) == UNKNOWN_SKIN_BAND
    assert record_skin_band(_record(1, {"skin_tone": "34"}, "ddi")) == "III–IV"
    with pytest.raises(ValueError, match=r"9.png \(id 9\): fitzpatrick_scale"):
        record_skin_band(_record(9, {"fitzpatrick_scale": "9"}, "fitzpatrick17k"))


def _population() -> tuple[list[Prediction], list[SkinCapRecord]]:
    """60 images: 20 light (Fitzpatrick 1–2, 90 % right), 20 dark (DDI 56, 50 % right), 15 of unknown type, and
    5 predictions whose image is not in the metadata."""
    records, preds = [], []
    for i in range(55):
        if i < 20:
            extra, source = {"fitzpatrick_scale": str(1 + i % 2)}, "fitzpatrick17k"
        elif i < 40:
            extra, source = {"skin_tone": "56"}, "ddi"
        else:
            extra, source = {"fitzpatrick_scale": "-1"}, "fitzpatrick17k"
        records.append(_record(i, extra, source))
    for i in range(60):
        truth = DISEASES[i % 2]
        right = i >= 40 or (i < 20 and i % 10 != 0) or (20 <= i < 40 and i % 2 == 0)
        preds.append(Prediction(str(i), f"{i}.png", "disease", "", truth if right else DISEASES[5],
                                ground_truth=truth))  # fmt: skip
    return preds, records


def test_diagnosis_subgroups_count_unknowns_and_flag_the_gap() -> None:
    preds, records = _population()
    r = subgroup_report(preds, records, kind="diagnosis", labels=DISEASES, n_resamples=300)
    bands = r["by"]["skin_band"]
    assert list(bands) == [SKIN_BANDS[0], SKIN_BANDS[2], UNKNOWN_SKIN_BAND]
    assert (bands["I–II"]["n"], bands["V–VI"]["n"], bands["unknown"]["n"]) == (20, 20, 20)
    assert r["n_without_metadata"] == 5 and r["by"]["source"]["unknown"]["n"] == 5
    assert {k: c["n"] for k, c in r["by"]["source"].items()} == {"ddi": 20, "fitzpatrick17k": 35, "unknown": 5}
    acc = bands["I–II"]["metrics"]["accuracy"]
    assert acc["value"] == 90.0 and acc["n"] == 20 and acc["ci_low"] < 90.0 <= acc["ci_high"]
    gap = r["largest_gap"]
    assert gap["bands"] == ["I–II", "V–VI"] and gap["gap"]["value"] == pytest.approx(40.0)
    assert 0 < gap["gap"]["ci_low"] < 40 < gap["gap"]["ci_high"]


def test_no_gap_without_two_large_enough_bands() -> None:
    preds, records = _population()
    r = subgroup_report(preds, records, kind="diagnosis", labels=DISEASES, n_resamples=50, min_n=25)
    assert r["largest_gap"]["bands"] is None and "n >= 25" in r["largest_gap"]["reason"]


def test_caption_subgroups() -> None:
    preds, records = _population()
    caps = [Prediction(p.id, p.file_name, "caption", "", "red scaly plaque psoriasis", ground_truth="a red plaque",
                       disease=p.ground_truth) for p in preds]  # fmt: skip
    r = subgroup_report(caps, records, kind="captions", n_resamples=50)
    cell = r["by"]["skin_band"]["V–VI"]
    assert cell["n"] == 20 and set(cell["metrics"]) == {"bleu_4", "rouge_1", "rouge_l", "mention_rate"}
    assert r["primary"] == "bleu_4"
    with pytest.raises(ValueError, match="unknown subgroup report kind 'x'; valid: diagnosis, captions"):
        subgroup_report(caps, records, kind="x")

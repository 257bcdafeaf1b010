"""BERTScore-F (hikari.evaluation.bertscore): the optional package is called with the paper's settings, and a
missing package or an offline model gives an error that says what to do."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from hikari.evaluation.bertscore import BertScoreUnavailable, bert_score_f


def test_bertscore_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bert_score", None)  # makes `import bert_score` raise ImportError
    with pytest.raises(BertScoreUnavailable, match=r"hikari\[bertscore\]"):
        bert_score_f(["a"], ["a"])


def test_bertscore_calls_the_package_with_the_paper_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []

    def fake_score(cands: list[str], refs: list[str], **kwargs: object) -> tuple[np.ndarray, ...]:
        calls.append({"cands": cands, "refs": refs, **kwargs})
        f = np.array([0.9, 0.8])  # bert_score returns torch tensors; only .mean() is used
        return f, f, f

    monkeypatch.setitem(sys.modules, "bert_score", types.SimpleNamespace(score=fake_score))
    assert bert_score_f(["r1", "r2"], ["h1", "h2"]) == pytest.approx(85.0)
    call = calls[0]
    assert call["cands"] == ["h1", "h2"] and call["refs"] == ["r1", "r2"]
    assert (call["model_type"], call["num_layers"], call["lang"]) == ("roberta-large", 17, "en")
    assert call["rescale_with_baseline"] is False


def test_bertscore_offline_model_error_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setitem(sys.modules, "bert_score", types.SimpleNamespace(score=offline))
    with pytest.raises(BertScoreUnavailable, match="HF_HUB_OFFLINE"):
        bert_score_f(["a"], ["a"])

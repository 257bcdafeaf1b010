from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib
import pytest

from hikari.data.labels import UNKNOWN
from hikari.evaluation.captions import caption_metrics
from hikari.evaluation.diagnosis import diagnosis_metrics
from hikari.evaluation.report import render_markdown, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _diag() -> dict[str, object]:
    return diagnosis_metrics(["a", "a", "b", "c"], ["a", "b", "b", UNKNOWN], ["a", "b", "c"])


def test_diagnosis_report(tmp_path: Path) -> None:
    backend = matplotlib.get_backend()
    figures_before = sys.modules["matplotlib.pyplot"].get_fignums() if "matplotlib.pyplot" in sys.modules else []
    written = write_report(tmp_path / "out", "diagnosis", _diag(), {"predictions": "p.jsonl", "task": "disease"})
    assert [p.name for p in written] == ["report.json", "report.md", "confusion_matrix.png", "per_class.png"]
    for png in written[2:]:
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000
    report = json.loads(written[0].read_text())
    assert report["kind"] == "diagnosis" and report["meta"]["task"] == "disease"
    assert report["metrics"]["confusion"]["columns"] == ["a", "b", "c", UNKNOWN]
    md = written[1].read_text()
    assert "| Accuracy | 50.00 |" in md and "| c | 1 | 0.00 | n/a | 0.00 |" in md
    assert "![confusion matrix](confusion_matrix.png)" in md
    # no global matplotlib state touched: same backend, no pyplot figures left open, no temp files left behind
    assert matplotlib.get_backend() == backend
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == figures_before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written)


def test_caption_report(tmp_path: Path) -> None:
    refs = ["a red plaque on the elbow", "comedones on the face and back"]
    hyps = ["a red plaque", "comedones on the face"]
    metrics = caption_metrics(refs, hyps, diseases=["psoriasis", "acne vulgaris"])
    written = write_report(tmp_path, "captions", metrics, {"predictions": "x.json"},
                           generated_lengths=[3, 4], reference_lengths=[6, 6])  # fmt: skip
    assert [p.name for p in written] == ["report.json", "report.md", "length_histogram.png"]
    md = written[1].read_text()
    assert f"| BLEU-4 | {metrics['bleu_4']:.2f} |" in md and "| Disease mention % | 50.00 |" in md
    assert "| generated | 3.50 | 3.50 |" in md and "![length histogram](length_histogram.png)" in md


def test_caption_report_without_lengths_has_no_plot_link(tmp_path: Path) -> None:
    metrics = caption_metrics(["a b"], ["a b"])
    written = write_report(tmp_path, "captions", metrics, {})
    assert [p.name for p in written] == ["report.json", "report.md"]
    assert "png" not in written[1].read_text()


def test_report_overwrites_atomically_and_rejects_unknown_kinds(tmp_path: Path) -> None:
    write_report(tmp_path, "diagnosis", _diag(), {"run": 1})
    write_report(tmp_path, "diagnosis", _diag(), {"run": 2})
    assert json.loads((tmp_path / "report.json").read_text())["meta"] == {"run": 2}
    with pytest.raises(ValueError, match="valid: captions, diagnosis"):
        write_report(tmp_path, "retrieval", {}, {})


def test_render_markdown_lists_meta_and_undefined_values() -> None:
    md = render_markdown("diagnosis", {"n": 2, "accuracy": 50.0, "cohen_kappa": None}, {"split": None})
    assert "- **split**: n/a" in md and "| Cohen's κ | n/a |" in md and "| n | 2 |" in md

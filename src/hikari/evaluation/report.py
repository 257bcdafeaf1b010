"""Evaluation reports: ``report.json`` + ``report.md`` and plots, all written atomically into one folder.

Plots use matplotlib's object API on an Agg canvas (``Figure`` + ``FigureCanvasAgg``), never ``pyplot``: no
global backend switch, no figure registry to leak between calls or into a user's notebook.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hikari.evaluation.stats import format_interval
from hikari.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

CAPTION_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_1", "rouge_2", "rouge_l", "bertscore_f", "mention_rate")
DIAGNOSIS_KEYS = ("accuracy", "balanced_accuracy", "f1_macro", "cohen_kappa", "mcc")
_TITLES = {
    "bleu_1": "BLEU-1", "bleu_2": "BLEU-2", "bleu_3": "BLEU-3", "bleu_4": "BLEU-4", "rouge_1": "ROUGE-1",
    "rouge_2": "ROUGE-2", "rouge_l": "ROUGE-L", "bertscore_f": "BERTScore-F", "mention_rate": "Disease mention %",
    "accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "f1_macro": "Macro-F1",
    "cohen_kappa": "Cohen's κ", "mcc": "MCC",
}  # fmt: skip


def metric_title(key: str) -> str:
    """Human-readable name of a metric key (the key itself when unnamed)."""
    return _TITLES.get(key, key)


def _save_figure(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def plot_confusion_matrix(confusion: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Heat map of ``confusion = {rows, columns, matrix}`` (counts; true label on y, prediction on x)."""
    rows, columns, matrix = confusion["rows"], confusion["columns"], confusion["matrix"]
    size = max(4.0, 0.6 * len(columns) + 2.5)
    figure = Figure(figsize=(size, size * 0.85))
    ax = figure.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(columns)), labels=columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), labels=rows, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max((max(r) for r in matrix if r), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                colour = "white" if count > peak / 2 else "black"
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=colour)
    ax.set_title("Confusion matrix")
    return _save_figure(figure, Path(path))


def plot_per_class(per_class: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Grouped bars of per-class sensitivity and PPV (%); undefined values are drawn as 0 and marked "n/a"."""
    labels = list(per_class)
    figure = Figure(figsize=(max(5.0, 0.8 * len(labels) + 2), 4.5))
    ax = figure.add_subplot()
    width = 0.4
    for offset, key, name in ((-width / 2, "sensitivity", "sensitivity"), (width / 2, "ppv", "PPV")):
        values = [per_class[label][key] for label in labels]
        xs = [i + offset for i in range(len(labels))]
        ax.bar(xs, [v or 0.0 for v in values], width=width, label=name)
        for x, v in zip(xs, values):
            if v is None:
                ax.text(x, 1, "n/a", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(range(len(labels)), labels=labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    ax.legend()
    ax.set_title("Per-class sensitivity and PPV")
    return _save_figure(figure, Path(path))


def plot_length_histogram(
    generated_lengths: Sequence[int], reference_lengths: Sequence[int], path: str | os.PathLike[str]
) -> Path:
    """Overlaid histograms of caption length in words, generated vs reference."""
    figure = Figure(figsize=(6, 4))
    ax = figure.add_subplot()
    top = max([*generated_lengths, *reference_lengths, 1])
    bins = list(range(0, top + 6, 5))
    ax.hist(reference_lengths, bins=bins, alpha=0.6, label="reference")
    ax.hist(generated_lengths, bins=bins, alpha=0.6, label="generated")
    ax.set_xlabel("words")
    ax.set_ylabel("captions")
    ax.legend()
    ax.set_title("Caption length")
    return _save_figure(figure, Path(path))


def plot_reliability(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]] | None,
                     path: str | os.PathLike[str]) -> Path:  # fmt: skip
    """Reliability diagram: accuracy per confidence bin (bars; `calibration.reliability_bins`), before and
    (when given) after temperature scaling, against the diagonal of perfect calibration."""
    figure = Figure(figsize=(5, 5))
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for bins, name, colour in ((before, "before", "tab:red"), (after, "after temperature scaling", "tab:blue")):
        if bins is None:
            continue
        filled = [b for b in bins if b["n"]]
        ax.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], marker="o", color=colour,
                label=name)  # fmt: skip
        ax.bar([(b["low"] + b["high"]) / 2 for b in filled], [b["accuracy"] for b in filled],
               width=filled[0]["high"] - filled[0]["low"] if filled else 0.05, alpha=0.15, color=colour)  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Reliability diagram")
    return _save_figure(figure, Path(path))


def plot_risk_coverage(curve: Mapping[str, Sequence[float]], path: str | os.PathLike[str]) -> Path:
    """Risk (error %, of the most confident images kept) against coverage (share kept)."""
    figure = Figure(figsize=(5, 4))
    ax = figure.add_subplot()
    ax.plot(curve["coverage"], curve["risk"], color="tab:purple")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max([*curve["risk"], 1.0]) * 1.05)
    ax.set_xlabel("coverage (share of images answered)")
    ax.set_ylabel("risk (error %)")
    ax.set_title("Risk–coverage curve")
    return _save_figure(figure, Path(path))


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def render_markdown(kind: str, metrics: Mapping[str, Any], meta: Mapping[str, Any], images: Sequence[str] = ()) -> str:
    """The Markdown summary: provenance, headline metrics, per-class rows for diagnosis reports, and the
    `images` (file names relative to the report) embedded at the end."""
    keys = CAPTION_KEYS if kind == "captions" else DIAGNOSIS_KEYS
    lines = [f"# HIKARI {kind} evaluation", ""]
    for key, value in meta.items():
        lines.append(f"- **{key}**: {_fmt(value)}")
    lines += ["", "| metric | value |", "|---|---|"]
    intervals = metrics.get("ci") or {}
    for key in ("n", *keys):
        if key in intervals:
            lines.append(f"| {metric_title(key)} | {format_interval(intervals[key])} |")
        elif key in metrics:
            lines.append(f"| {metric_title(key)} | {_fmt(metrics[key])} |")
    if intervals and "bootstrap" in metrics:
        b = metrics["bootstrap"]
        lines += ["", f"Values: point estimate [{100 * b['level']:g} % percentile-bootstrap CI over images, "
                  f"{b['resamples']} resamples, seed {b['seed']}]."]  # fmt: skip
    for key in ("n_truncated", "n_failed", "n_unknown", "n_mention"):
        if key in metrics:
            lines.append(f"| {key} | {_fmt(metrics[key])} |")
    if kind == "captions" and "generated_words_mean" in metrics:
        lines += [
            "",
            "| words | mean | median |",
            "|---|---|---|",
            f"| generated | {_fmt(metrics['generated_words_mean'])} | {_fmt(metrics['generated_words_median'])} |",
            f"| reference | {_fmt(metrics['reference_words_mean'])} | {_fmt(metrics['reference_words_median'])} |",
        ]
    if kind == "diagnosis" and "per_class" in metrics:
        lines += ["", "| class | support | sensitivity % | PPV % | F1 % |", "|---|---|---|---|---|"]
        for label, row in metrics["per_class"].items():
            lines.append(
                f"| {label} | {row['support']} | {_fmt(row['sensitivity'])} | {_fmt(row['ppv'])} | {_fmt(row['f1'])} |"
            )
    if "calibration" in metrics:
        lines += calibration_markdown(metrics["calibration"])
    if "subgroups" in metrics:
        lines += subgroup_markdown(metrics["subgroups"])
    for image in images:
        lines += ["", f"![{Path(image).stem.replace('_', ' ')}]({image})"]
    return "\n".join(lines) + "\n"


def calibration_markdown(calibration: Mapping[str, Any]) -> list[str]:
    """Markdown lines of a `calibration.calibration_metrics` result: ECE/Brier before and after, temperature,
    selective accuracy."""
    before, after = calibration["before"], calibration["after"]
    temps = ", ".join(f"{t:.3f}" for t in calibration["temperature"])
    how = ("fitted on a separate calibration file" if calibration["method"] == "calibration_file"
           else "cross-fitted on two seeded halves (each half scaled with the other half's T)")  # fmt: skip
    selective = calibration["selective"]
    return [
        "", "## Calibration", "",
        f"{calibration['n']} images; temperature T = {temps} ({how}); {calibration['n_bins']} equal-width bins.", "",
        "| | ECE % | Brier | NLL | mean confidence % |", "|---|---|---|---|---|",
        f"| before | {before['ece']:.2f} | {before['brier']:.4f} | {before['nll']:.4f} | "
        f"{before['mean_confidence']:.1f} |",
        f"| after temperature scaling | {after['ece']:.2f} | {after['brier']:.4f} | {after['nll']:.4f} | "
        f"{after['mean_confidence']:.1f} |",
        "", "| coverage | " + " | ".join(f"{c} %" for c in selective) + " |",
        "|---|" + "---|" * len(selective),
        "| accuracy % | " + " | ".join(f"{v:.1f}" for v in selective.values()) + " |",
    ]  # fmt: skip


def subgroup_markdown(subgroups: Mapping[str, Any]) -> list[str]:
    """Markdown tables of a `subgroups.subgroup_report` result (one per breakdown) and the largest band gap."""
    lines: list[str] = []
    for axis, title in (("skin_band", "skin type (Fitzpatrick; DDI tones mapped)"), ("source", "source")):
        cells = subgroups["by"].get(axis) or {}
        keys = list(dict.fromkeys(k for cell in cells.values() for k in cell["metrics"]))
        lines += ["", f"## By {title}", "", "| group | n | " + " | ".join(metric_title(k) for k in keys) + " |",
                  "|---|---|" + "---|" * len(keys)]  # fmt: skip
        for name, cell in cells.items():
            shown = [format_interval(cell["metrics"][k]) if k in cell["metrics"] else "n/a" for k in keys]
            lines.append(f"| {name} | {cell['n']} | " + " | ".join(shown) + " |")
    gap = subgroups["largest_gap"]
    if gap.get("bands"):
        high, low = gap["bands"]
        lines += ["", f"**Largest gap between skin bands** ({metric_title(gap['metric'])}): {high} vs {low}: "
                  f"{format_interval(gap['gap'])} points (n = {gap['n'][0]} vs {gap['n'][1]})."]  # fmt: skip
    else:
        lines += ["", f"Largest gap between skin bands: not assessed ({gap.get('reason')})."]
    if subgroups.get("n_without_metadata"):
        lines.append(f"{subgroups['n_without_metadata']} image(s) not in the metadata counted as unknown.")
    return lines


def write_report(
    out_dir: str | os.PathLike[str],
    kind: str,
    metrics: Mapping[str, Any],
    meta: Mapping[str, Any],
    generated_lengths: Sequence[int] | None = None,
    reference_lengths: Sequence[int] | None = None,
) -> list[Path]:
    """Write ``report.json`` ({"kind", "meta", "metrics"}), ``report.md`` and the plots; return the paths.

    `kind` is "captions" (length histogram when lengths are given) or "diagnosis" (confusion matrix and
    per-class bars). Metrics holding ``ci`` show `81.1 [70.4, 90.6]` cells; ``calibration`` adds the
    reliability diagram and the risk–coverage curve (PNG; the curve's points are in report.json);
    ``subgroups`` adds the skin-type and source tables.
    """
    if kind not in ("captions", "diagnosis"):
        raise ValueError(f"unknown report kind {kind!r}; valid: captions, diagnosis")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots: list[Path] = []
    if kind == "diagnosis":
        plots.append(plot_confusion_matrix(metrics["confusion"], out / "confusion_matrix.png"))
        plots.append(plot_per_class(metrics["per_class"], out / "per_class.png"))
    elif generated_lengths is not None and reference_lengths is not None:
        plots.append(plot_length_histogram(generated_lengths, reference_lengths, out / "length_histogram.png"))
    if "calibration" in metrics:
        calibration = metrics["calibration"]
        plots.append(plot_reliability(calibration["before"]["bins"], calibration["after"]["bins"],
                                      out / "reliability.png"))  # fmt: skip
        plots.append(plot_risk_coverage(calibration["risk_coverage"], out / "risk_coverage.png"))
    markdown = render_markdown(kind, metrics, meta, images=[p.name for p in plots])
    return [
        atomic_write_json(out / "report.json", {"kind": kind, "meta": dict(meta), "metrics": dict(metrics)}),
        atomic_write_text(out / "report.md", markdown),
        *plots,
    ]

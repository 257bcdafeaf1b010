"""`hikari eval captions|diagnosis`: score a prediction file (ours or the original HIKARI's) — thin wrappers over
`hikari.evaluation`. With ``--json`` stdout carries exactly one JSON object; every message goes to stderr.

The metric modules (nltk, scikit-learn, matplotlib) are imported when a command runs, not when the CLI starts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hikari.data.labels import DISEASES, GROUPS
from hikari.evaluation.bertscore import BERTSCORE_LAYER, BERTSCORE_MODEL

if TYPE_CHECKING:
    from hikari.evaluation.predictions import Prediction

app = typer.Typer(no_args_is_help=True, help="Score prediction files: caption metrics or diagnosis metrics.")
console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

_PRED_HELP = "Prediction file: our JSONL (hikari predict) or an original HIKARI results_*_predictions.json."
_DEDUPE_HELP = "Keep the first line of each repeated id (default: a file with repeated ids is refused)."
_EXCLUDE_HELP = (
    "Split file (ours or the original split_info_*.json): drop every item whose image is in its TRAIN part "
    "(leaked images score far higher)."
)
_TASK_LABELS = {"disease": DISEASES, "group": GROUPS}


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(2)


def _exclude(predictions: list[Prediction], split: Path | None) -> tuple[list[Prediction], int]:
    from hikari.evaluation.predictions import exclude_file_names, train_file_names  # CLI start-up time

    if split is None:
        return predictions, 0
    kept, dropped = exclude_file_names(predictions, train_file_names(split))
    err_console.print(
        f"--exclude-train {escape(str(split))}: dropped {dropped} of {len(predictions)} items whose image is in the "
        f"TRAIN part; {len(kept)} remain."
    )
    if not kept:
        raise _fail("every item is in the training split; nothing left to evaluate")
    return kept, dropped


def _unique(predictions: list[Prediction], path: Path, dedupe: bool) -> list[Prediction]:
    from hikari.evaluation.predictions import unique_predictions  # CLI start-up time

    kept, dropped = unique_predictions(predictions, path, dedupe=dedupe)
    if dropped:
        err_console.print(f"[yellow]--dedupe:[/yellow] dropped {dropped} repeated line(s) of {escape(str(path))} "
                          "(kept the first line of each id).")  # fmt: skip
    return kept


def _metrics_table(title: str, metrics: Mapping[str, Any], keys: Sequence[str]) -> Table:
    from hikari.evaluation.report import metric_title  # CLI start-up time: matplotlib

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("n", "n_excluded", *keys, "n_mention", "n_unknown", "n_truncated", "n_failed", "n_reparse_changed"):
        if key in metrics:
            value = metrics[key]
            text = "n/a" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)
            table.add_row(metric_title(key), text)
    return table


def _print_diagnosis_tables(metrics: Mapping[str, Any]) -> None:
    per_class = Table(title="Per class (%)")
    for name, justify in (("class", "left"), ("support", "right"), ("sensitivity", "right"), ("PPV", "right"),
                          ("F1", "right")):  # fmt: skip
        per_class.add_column(name, justify=justify)  # type: ignore[arg-type]
    for label, row in metrics["per_class"].items():
        cells = [row["sensitivity"], row["ppv"], row["f1"]]
        per_class.add_row(label, str(row["support"]), *("n/a" if v is None else f"{v:.1f}" for v in cells))
    console.print(per_class)
    confusion = metrics["confusion"]
    matrix = Table(title="Confusion matrix (rows: true, columns: predicted)")
    matrix.add_column("")
    for j in range(len(confusion["columns"])):
        matrix.add_column(str(j + 1) if j < len(confusion["rows"]) else "?", justify="right")
    for i, (label, counts) in enumerate(zip(confusion["rows"], confusion["matrix"])):
        matrix.add_row(f"{i + 1} {label}", *(str(c) if c else "·" for c in counts))
    console.print(matrix)


def _emit(result: dict[str, Any], as_json: bool, title: str, keys: Sequence[str]) -> None:
    if as_json:
        # Plain print, not rich: rich would wrap long lines and style the JSON.
        print(json.dumps(result, ensure_ascii=False, allow_nan=False))
    else:
        console.print(f"[bold]{escape(result['file'])}[/bold]")
        console.print(_metrics_table(title, result, keys))


@app.command("captions")
def captions_command(
    pred: Path = typer.Argument(..., help=_PRED_HELP),
    exclude_train: Path | None = typer.Option(None, "--exclude-train", help=_EXCLUDE_HELP),
    labels: Path | None = typer.Option(
        None,
        "--labels",
        help="Ground-truth disease per image for the mention rate: a SkinCAP folder, one of our split files, or "
        "an original HIKARI diagnosis prediction file (default: the predictions' own 'disease' field).",
    ),
    bertscore: bool = typer.Option(False, "--bertscore", help="Also compute BERTScore-F (needs hikari[bertscore])."),
    bertscore_model: str = typer.Option(BERTSCORE_MODEL, help="BERTScore model: hub id or local directory."),
    bertscore_layer: int = typer.Option(BERTSCORE_LAYER, help="BERTScore hidden layer."),
    dedupe: bool = typer.Option(False, "--dedupe", help=_DEDUPE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
    report: Path | None = typer.Option(None, "--report", help="Write report.json, report.md and plots here."),
) -> None:
    """BLEU-1..4, ROUGE-1/2/L, disease mention rate, lengths (and BERTScore-F) of Stage 3 captions."""
    # CLI start-up time: the metric modules import nltk, rouge-score and matplotlib
    from hikari.evaluation.bertscore import BertScoreUnavailable
    from hikari.evaluation.captions import evaluate_captions
    from hikari.evaluation.predictions import PredictionFileError, read_disease_labels, read_predictions
    from hikari.evaluation.report import CAPTION_KEYS, write_report

    try:
        predictions = _unique(read_predictions(pred), pred, dedupe)
        captions = [p for p in predictions if p.task == "caption"]
        if not captions:
            raise _fail(f"{pred} holds no caption predictions (tasks: {sorted({p.task for p in predictions})})")
        if len(captions) < len(predictions):
            err_console.print(f"Skipped {len(predictions) - len(captions)} non-caption items of {escape(str(pred))}.")
        captions, n_excluded = _exclude(captions, exclude_train)
        diseases = read_disease_labels(labels) if labels is not None else None
        metrics = evaluate_captions(captions, diseases, bertscore, bertscore_model, bertscore_layer)
    except (PredictionFileError, ValueError, KeyError, OSError, BertScoreUnavailable) as err:
        raise _fail(str(err)) from err
    if "mention_rate" not in metrics:
        err_console.print("No ground-truth diseases known: mention rate not computed (pass --labels).")
    elif metrics["n_mention"] < metrics["n"]:
        err_console.print(f"Mention rate over the {metrics['n_mention']} of {metrics['n']} items with a known disease.")
    if metrics["n_truncated"]:
        err_console.print(f"[yellow]{metrics['n_truncated']} truncated captions (unfinished reasoning) not scored.")
    result = {"file": str(pred), "task": "caption", "n_excluded": n_excluded, **metrics}
    if report is not None:
        write_report(
            report, "captions", result,
            {"predictions": str(pred), "exclude_train": str(exclude_train) if exclude_train else None,
             "labels": str(labels) if labels else None},
            generated_lengths=[len(p.parsed.split()) for p in captions if not p.truncated],
            reference_lengths=[len((p.ground_truth or "").split()) for p in captions if not p.truncated],
        )  # fmt: skip
        err_console.print(f"Report written to {escape(str(report))}.")
    _emit(result, as_json, "Captions", CAPTION_KEYS)


@app.command("diagnosis")
def diagnosis_command(
    pred: Path = typer.Argument(..., help=_PRED_HELP),
    exclude_train: Path | None = typer.Option(None, "--exclude-train", help=_EXCLUDE_HELP),
    task: str | None = typer.Option(
        None,
        "--task",
        help="'disease' (10 classes) or 'group' (4 groups; disease predictions are mapped to their groups). "
        "Default: the file's task.",
    ),
    reparse: bool = typer.Option(False, "--reparse", help="Re-derive labels from the raw output with our parser."),
    thinking: bool = typer.Option(
        False, "--thinking", help="With --reparse: the model reasons first; an output without </think> is truncated."
    ),
    dedupe: bool = typer.Option(False, "--dedupe", help=_DEDUPE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
    report: Path | None = typer.Option(None, "--report", help="Write report.json, report.md and plots here."),
) -> None:
    """Accuracy, balanced accuracy, macro-F1, Cohen's κ, MCC, per-class sensitivity/PPV and the confusion matrix."""
    # CLI start-up time: the metric modules import scikit-learn and matplotlib
    from hikari.evaluation.diagnosis import as_group_predictions, evaluate_diagnosis, reparse_predictions
    from hikari.evaluation.predictions import PredictionFileError, infer_task, read_predictions
    from hikari.evaluation.report import DIAGNOSIS_KEYS, write_report

    if task is not None and task not in _TASK_LABELS:
        raise _fail(f"--task must be one of {', '.join(_TASK_LABELS)}, got {task!r}")
    try:
        predictions = [p for p in _unique(read_predictions(pred), pred, dedupe) if p.task != "caption"]
        if not predictions:
            raise _fail(f"{pred} holds no diagnosis predictions")
        file_tasks = {p.task for p in predictions}
        if task is None:
            task = infer_task(predictions)
        predictions, n_excluded = _exclude(predictions, exclude_train)
        n_changed: int | None = None
        if task == "group" and file_tasks == {"disease"}:
            if reparse:
                predictions, n_changed = reparse_predictions(predictions, DISEASES, thinking=thinking)
            predictions = as_group_predictions(predictions)
            metrics = evaluate_diagnosis(predictions, GROUPS)
            err_console.print("Disease predictions scored at group level (truth and prediction mapped to groups).")
        else:
            predictions = [p for p in predictions if p.task == task]
            if not predictions:
                raise _fail(f"{pred} holds no {task!r} predictions (tasks: {sorted(file_tasks)})")
            metrics = evaluate_diagnosis(predictions, _TASK_LABELS[task], reparse=reparse, thinking=thinking)
        if n_changed is not None:
            metrics["n_reparse_changed"] = n_changed
    except PredictionFileError as err:
        raise _fail(str(err)) from err
    except (ValueError, KeyError, OSError) as err:
        raise _fail(f"{pred}: {err}") from err
    if metrics.get("n_reparse_changed"):
        err_console.print(f"--reparse changed {metrics['n_reparse_changed']} stored labels.")
    result = {"file": str(pred), "task": task, "n_excluded": n_excluded, **metrics}
    if report is not None:
        write_report(
            report, "diagnosis", result,
            {"predictions": str(pred), "task": task, "exclude_train": str(exclude_train) if exclude_train else None,
             "reparse": reparse},
        )  # fmt: skip
        err_console.print(f"Report written to {escape(str(report))}.")
    _emit(result, as_json, f"Diagnosis ({task})", DIAGNOSIS_KEYS)
    if not as_json:
        _print_diagnosis_tables(result)

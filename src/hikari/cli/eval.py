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
_BOOTSTRAP_HELP = "Bootstrap resamples for the confidence intervals (percentile, over images); 0 disables."
_SEED_HELP = "Seed of the bootstrap resampling (and of the calibration halves)."
_CI_HELP = "Confidence level of the intervals."
_METADATA_HELP = (
    "SkinCAP folder (metadata + skincap/): break the metrics down by skin type (Fitzpatrick / DDI tone bands) "
    "and by source, with n and CI per cell."
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
    from hikari.evaluation.stats import format_interval

    intervals = metrics.get("ci") or {}
    table = Table(title=title)
    table.add_column("metric")
    level = metrics.get("bootstrap", {}).get("level")
    table.add_column(f"value [{100 * level:g} % CI]" if intervals and level else "value", justify="right")
    for key in ("n", "n_excluded", *keys, "n_mention", "n_unknown", "n_truncated", "n_failed", "n_reparse_changed"):
        if key in intervals:
            table.add_row(metric_title(key), format_interval(intervals[key], digits=2))
        elif key in metrics:
            value = metrics[key]
            text = "n/a" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)
            table.add_row(metric_title(key), text)
    return table


def _check_stats_options(bootstrap: int, ci: float) -> None:
    if bootstrap < 0:
        raise _fail(f"--bootstrap must be >= 0 (0 disables the intervals), got {bootstrap}")
    if not 0 < ci < 1:
        raise _fail(f"--ci must be between 0 and 1 (e.g. 0.95), got {ci}")


def _subgroups(predictions: list[Prediction], metadata: Path, kind: str, labels: Sequence[str] | None,
               diseases: Mapping[str, str] | None, bootstrap: int, seed: int, ci: float) -> dict[str, Any]:  # fmt: skip
    from hikari.data.skincap import read_skincap  # CLI start-up time
    from hikari.evaluation.subgroups import subgroup_report

    records = read_skincap(metadata, check_images=False).records
    report = subgroup_report(predictions, records, kind=kind, labels=labels, diseases=diseases,
                             n_resamples=max(bootstrap, 1), seed=seed, level=ci)  # fmt: skip
    if report["n_without_metadata"]:
        err_console.print(f"{report['n_without_metadata']} of {report['n']} images are not in {escape(str(metadata))}"
                          ": counted as unknown skin type and source.")  # fmt: skip
    return report


def _print_subgroups(subgroups: Mapping[str, Any]) -> None:
    from hikari.evaluation.report import metric_title  # CLI start-up time: matplotlib
    from hikari.evaluation.stats import format_interval

    for axis, title in (("skin_band", "By skin type (Fitzpatrick; DDI tones mapped)"), ("source", "By source")):
        cells = subgroups["by"][axis]
        keys = list(dict.fromkeys(k for cell in cells.values() for k in cell["metrics"]))
        table = Table(title=title)
        for name in ("group", "n", *(metric_title(k) for k in keys)):
            table.add_column(name, justify="left" if name == "group" else "right")
        for name, cell in cells.items():
            table.add_row(name, str(cell["n"]), *(format_interval(cell["metrics"][k]) if k in cell["metrics"] else
                                                  "n/a" for k in keys))  # fmt: skip
        console.print(table)
    gap = subgroups["largest_gap"]
    if gap.get("bands"):
        console.print(f"Largest gap between skin bands ({metric_title(gap['metric'])}): {gap['bands'][0]} vs "
                      f"{gap['bands'][1]}: {format_interval(gap['gap'])} points (n = {gap['n'][0]} vs {gap['n'][1]})")
    else:
        console.print(f"Largest gap between skin bands: not assessed ({gap.get('reason')}).")


def _print_calibration(calibration: Mapping[str, Any]) -> None:
    table = Table(title=f"Calibration ({calibration['n']} images, T = "
                        f"{', '.join(f'{t:.2f}' for t in calibration['temperature'])}, {calibration['method']})")
    for name in ("", "ECE %", "Brier", "NLL"):
        table.add_column(name, justify="left" if not name else "right")
    for name, key in (("before", "before"), ("after temperature scaling", "after")):
        row = calibration[key]
        table.add_row(name, f"{row['ece']:.2f}", f"{row['brier']:.4f}", f"{row['nll']:.4f}")
    console.print(table)
    console.print("Selective accuracy: " + ", ".join(f"{c} % coverage → {v:.1f} %"
                                                     for c, v in calibration["selective"].items()))  # fmt: skip


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
    bootstrap: int = typer.Option(2000, "--bootstrap", help=_BOOTSTRAP_HELP),
    seed: int = typer.Option(0, "--seed", help=_SEED_HELP),
    ci: float = typer.Option(0.95, "--ci", help=_CI_HELP),
    metadata: Path | None = typer.Option(
        None, "--metadata", help=_METADATA_HELP + " Default: --labels when it is a SkinCAP folder."
    ),
) -> None:
    """BLEU-1..4, ROUGE-1/2/L, disease mention rate, lengths (and BERTScore-F) of Stage 3 captions, with
    bootstrap CIs; by skin type and source with --metadata."""
    # CLI start-up time: the metric modules import nltk, rouge-score and matplotlib
    from hikari.evaluation.bertscore import BertScoreUnavailable
    from hikari.evaluation.captions import evaluate_captions
    from hikari.evaluation.predictions import PredictionFileError, read_disease_labels, read_predictions
    from hikari.evaluation.report import CAPTION_KEYS, write_report

    _check_stats_options(bootstrap, ci)

    try:
        predictions = _unique(read_predictions(pred), pred, dedupe)
        captions = [p for p in predictions if p.task == "caption"]
        if not captions:
            raise _fail(f"{pred} holds no caption predictions (tasks: {sorted({p.task for p in predictions})})")
        if len(captions) < len(predictions):
            err_console.print(f"Skipped {len(predictions) - len(captions)} non-caption items of {escape(str(pred))}.")
        captions, n_excluded = _exclude(captions, exclude_train)
        diseases = read_disease_labels(labels) if labels is not None else None
        metrics = evaluate_captions(captions, diseases, bertscore, bertscore_model, bertscore_layer,
                                    bootstrap=bootstrap, seed=seed, level=ci)  # fmt: skip
        if metadata is None and labels is not None and labels.is_dir():
            metadata = labels
        if metadata is not None:
            metrics["subgroups"] = _subgroups(captions, metadata, "captions", None, diseases, bootstrap, seed, ci)
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
             "labels": str(labels) if labels else None, "metadata": str(metadata) if metadata else None},
            generated_lengths=[len(p.parsed.split()) for p in captions if not p.truncated],
            reference_lengths=[len((p.ground_truth or "").split()) for p in captions if not p.truncated],
        )  # fmt: skip
        err_console.print(f"Report written to {escape(str(report))}.")
    _emit(result, as_json, "Captions", CAPTION_KEYS)
    if not as_json and "subgroups" in result:
        _print_subgroups(result["subgroups"])


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
    bootstrap: int = typer.Option(2000, "--bootstrap", help=_BOOTSTRAP_HELP),
    seed: int = typer.Option(0, "--seed", help=_SEED_HELP),
    ci: float = typer.Option(0.95, "--ci", help=_CI_HELP),
    metadata: Path | None = typer.Option(None, "--metadata", help=_METADATA_HELP),
) -> None:
    """Accuracy, balanced accuracy, macro-F1, Cohen's κ, MCC (with bootstrap CIs), per-class sensitivity/PPV and
    the confusion matrix; calibration when the file has answer probabilities; by skin type with --metadata."""
    # CLI start-up time: the metric modules import scikit-learn and matplotlib
    from hikari.evaluation.calibration import evaluate_calibration, has_probabilities
    from hikari.evaluation.diagnosis import as_group_predictions, evaluate_diagnosis, reparse_predictions
    from hikari.evaluation.predictions import PredictionFileError, infer_task, read_predictions
    from hikari.evaluation.report import DIAGNOSIS_KEYS, write_report

    if task is not None and task not in _TASK_LABELS:
        raise _fail(f"--task must be one of {', '.join(_TASK_LABELS)}, got {task!r}")
    _check_stats_options(bootstrap, ci)
    stats = {"bootstrap": bootstrap, "seed": seed, "level": ci}
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
            metrics = evaluate_diagnosis(predictions, GROUPS, **stats)
            err_console.print("Disease predictions scored at group level (truth and prediction mapped to groups).")
        else:
            predictions = [p for p in predictions if p.task == task]
            if not predictions:
                raise _fail(f"{pred} holds no {task!r} predictions (tasks: {sorted(file_tasks)})")
            metrics = evaluate_diagnosis(predictions, _TASK_LABELS[task], reparse=reparse, thinking=thinking,
                                         **stats)  # fmt: skip
            if has_probabilities(predictions):
                metrics["calibration"] = evaluate_calibration(predictions, _TASK_LABELS[task], seed=seed)
        if n_changed is not None:
            metrics["n_reparse_changed"] = n_changed
        if metadata is not None:
            metrics["subgroups"] = _subgroups(predictions, metadata, "diagnosis", _TASK_LABELS[task], None, bootstrap,
                                              seed, ci)  # fmt: skip
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
             "reparse": reparse, "metadata": str(metadata) if metadata else None},
        )  # fmt: skip
        err_console.print(f"Report written to {escape(str(report))}.")
    _emit(result, as_json, f"Diagnosis ({task})", DIAGNOSIS_KEYS)
    if not as_json:
        _print_diagnosis_tables(result)
        if "calibration" in result:
            _print_calibration(result["calibration"])
        if "subgroups" in result:
            _print_subgroups(result["subgroups"])


def _read_for_compare(path: Path, dedupe: bool, exclude_train: Path | None) -> list[Prediction]:
    from hikari.evaluation.predictions import read_predictions  # CLI start-up time

    predictions = _unique(read_predictions(path), path, dedupe)
    if not predictions:
        raise _fail(f"{path} holds no predictions")
    return _exclude(predictions, exclude_train)[0]


def _print_comparison(result: Mapping[str, Any]) -> None:
    from hikari.evaluation.stats import format_interval  # CLI start-up time

    console.print(f"[bold]A[/bold] {escape(result['a'])}\n[bold]B[/bold] {escape(result['b'])}")
    level = 100 * result["bootstrap"]["level"]
    if result["task"] == "caption":
        table = Table(title=f"Captions, B − A on {result['n']} paired images")
        for name in ("metric", "A", "B", f"B − A [{level:g} % CI]", "p (bootstrap)"):
            table.add_column(name, justify="left" if name == "metric" else "right")
        for key, row in result["metrics"].items():
            diff = row["difference"]
            cells = (f"{row['a']:.2f}", f"{row['b']:.2f}", format_interval(diff, 2), f"{diff['p_bootstrap']:.4f}")
            table.add_row(key, *cells)
        console.print(table)
        return
    diff = result["accuracy_difference"]
    table = Table(title=f"Diagnosis ({result['task']}), paired on {result['n']} images")
    table.add_column("")
    table.add_column("value", justify="right")
    for name, value in (
        ("accuracy A %", f"{result['accuracy_a']:.2f}"), ("accuracy B %", f"{result['accuracy_b']:.2f}"),
        (f"B − A [{level:g} % CI] (points)", format_interval(diff, 2)),
        ("both right / only A / only B / both wrong", " / ".join(
            str(result[k]) for k in ("both_correct", "only_a_correct", "only_b_correct", "both_wrong"))),
        ("McNemar exact p", f"{result['mcnemar_p']:.4f}"), ("bootstrap p", f"{diff['p_bootstrap']:.4f}"),
    ):  # fmt: skip
        table.add_row(name, value)
    console.print(table)


@app.command("compare")
def compare_command(
    pred_a: Path = typer.Argument(..., help="Prediction file A (the baseline)."),
    pred_b: Path = typer.Argument(..., help="Prediction file B (differences are B − A)."),
    exclude_train: Path | None = typer.Option(None, "--exclude-train", help=_EXCLUDE_HELP),
    task: str | None = typer.Option(
        None, "--task", help="'disease', 'group' or 'caption' (default: the files' common task)."
    ),
    bootstrap: int = typer.Option(2000, "--bootstrap", min=1, help="Paired bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help=_SEED_HELP),
    ci: float = typer.Option(0.95, "--ci", help=_CI_HELP),
    dedupe: bool = typer.Option(False, "--dedupe", help=_DEDUPE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
) -> None:
    """Paired comparison of two prediction files on the same images (joined by file name): McNemar's exact test
    and the paired-bootstrap CI of the accuracy difference, or paired-bootstrap CIs and p-values of the BLEU-4,
    ROUGE-1 and ROUGE-L differences for captions."""
    from hikari.evaluation.compare import UnmatchedPredictions, compare_captions, compare_diagnosis  # start-up time
    from hikari.evaluation.predictions import PredictionFileError, infer_task

    _check_stats_options(bootstrap, ci)
    valid = (*_TASK_LABELS, "caption")
    if task is not None and task not in valid:
        raise _fail(f"--task must be one of {', '.join(valid)}, got {task!r}")
    try:
        a = _read_for_compare(pred_a, dedupe, exclude_train)
        b = _read_for_compare(pred_b, dedupe, exclude_train)
        if task is None:
            task = infer_task(a)
            if task != infer_task(b):
                raise _fail(f"{pred_a} holds {task!r} predictions but {pred_b} holds {infer_task(b)!r}; pass --task")
        a, b = [p for p in a if p.task == task], [p for p in b if p.task == task]
        if not a or not b:
            raise _fail(f"no {task!r} predictions in {pred_a if not a else pred_b}")
        options = {"n_resamples": bootstrap, "seed": seed, "level": ci}
        if task == "caption":
            result = compare_captions(a, b, **options)
        else:
            result = compare_diagnosis(a, b, _TASK_LABELS[task], **options)
    except UnmatchedPredictions as err:
        raise _fail(f"{pred_a} vs {pred_b}: {err}") from err
    except (PredictionFileError, ValueError, KeyError, OSError) as err:
        raise _fail(str(err)) from err
    if result["n_only_a"] or result["n_only_b"]:
        err_console.print(
            f"[yellow]Compared the {result['n']} images in both files[/yellow]; left out {result['n_only_a']} only in "
            f"A (e.g. {', '.join(result['only_a'][:3]) or '-'}) and {result['n_only_b']} only in B (e.g. "
            f"{', '.join(result['only_b'][:3]) or '-'})."
        )
    else:
        err_console.print(f"Matched all {result['n']} images of both files by file name.")
    result = {"a": str(pred_a), "b": str(pred_b), "task": task,
              "exclude_train": str(exclude_train) if exclude_train else None, **result}  # fmt: skip
    if as_json:
        print(json.dumps(result, ensure_ascii=False, allow_nan=False))
    else:
        _print_comparison(result)


@app.command("calibration")
def calibration_command(
    pred: Path = typer.Argument(..., help="Diagnosis predictions with answer probabilities (hikari predict "
                                "--probabilities)."),  # fmt: skip
    calibrate_on: Path | None = typer.Option(
        None, "--calibrate-on", help="Predictions (with probabilities) on OTHER images to fit the temperature on, "
        "e.g. a calibration split part. Default: cross-fit two seeded halves of PRED."
    ),
    exclude_train: Path | None = typer.Option(None, "--exclude-train", help=_EXCLUDE_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the halves when cross-fitting."),
    dedupe: bool = typer.Option(False, "--dedupe", help=_DEDUPE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
    report: Path | None = typer.Option(
        None, "--report", help="Write calibration.json, reliability.png and risk_coverage.png here."
    ),
) -> None:
    """ECE (15 bins), Brier score, temperature scaling (ECE before/after) and selective prediction (accuracy at
    50/80/100 % coverage, risk–coverage curve) of diagnosis answer probabilities."""
    from hikari.evaluation.calibration import evaluate_calibration  # CLI start-up time: scipy, matplotlib
    from hikari.evaluation.predictions import PredictionFileError, infer_task, read_predictions
    from hikari.evaluation.report import plot_reliability, plot_risk_coverage
    from hikari.utils.io import atomic_write_json

    try:
        predictions = [p for p in _unique(read_predictions(pred), pred, dedupe) if p.task != "caption"]
        if not predictions:
            raise _fail(f"{pred} holds no diagnosis predictions")
        task = infer_task(predictions)
        predictions, n_excluded = _exclude(predictions, exclude_train)
        held_out = None
        if calibrate_on is not None:
            held_out = [p for p in _unique(read_predictions(calibrate_on), calibrate_on, dedupe) if p.task == task]
            if not held_out:
                raise _fail(f"{calibrate_on} holds no {task!r} predictions to calibrate on")
        result = evaluate_calibration(predictions, _TASK_LABELS[task], calibrate_on=held_out, seed=seed)
    except PredictionFileError as err:
        raise _fail(str(err)) from err
    except (ValueError, KeyError, OSError) as err:
        raise _fail(f"{pred}: {err}") from err
    result = {"file": str(pred), "task": task, "n_excluded": n_excluded,
              "calibrate_on": str(calibrate_on) if calibrate_on else None, **result}  # fmt: skip
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        atomic_write_json(report / "calibration.json", result)
        plot_reliability(result["before"]["bins"], result["after"]["bins"], report / "reliability.png")
        plot_risk_coverage(result["risk_coverage"], report / "risk_coverage.png")
        err_console.print(f"Calibration report written to {escape(str(report))}.")
    if as_json:
        print(json.dumps(result, ensure_ascii=False, allow_nan=False))
    else:
        console.print(f"[bold]{escape(str(pred))}[/bold] ({task}, accuracy of the most probable label "
                      f"{result['accuracy']:.1f} %)")  # fmt: skip
        _print_calibration(result)

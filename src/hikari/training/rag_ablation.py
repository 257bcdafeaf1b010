"""The Stage 2 reference-quality ablation: *when do references help, and by how much?*

From one finished Stage 2 run without references (Deneb) — its Stage 1 start, data and split — it trains Sirius
(RAG-in-Training, K = `rag.k_train` references per training sample) three times, changing only which references the
prompts show, in training and at evaluation alike:

* ``retrieved``: the index's top-K (the published method; the encoders decide their quality);
* ``noise``: K train images of one random *other* disease (labels that agree with each other and are wrong);
* ``oracle``: K train images of the query's own disease (labels that are always right);

and evaluates every model on the evaluation part without references and with K = 1 and K = 3 (its own kind of
references), Deneb without references and with the retrieved ones, and the retrieval-only baseline (a
similarity-weighted vote of the retrieved references, `hikari.retrieval.vote`). Every row records the precision@1
of the references it was shown, so the table and its plot (accuracy against precision@1) say how much of a gain is
the references' labels (copying: accuracy follows precision@1, noise drags the model down) and how much is the image
(accuracy without references, and a model that stays up under noise). All references are leak-free (no self, no
same source image, no near-duplicate; `HybridIndex.allowed`).

    rows = run_stage2_ablation("runs/deneb", "runs/ablation_stage2", encoder="R2")
    # → runs/ablation_stage2/{ablation.json, ablation.md, accuracy_vs_precision.png, sirius_<kind>/, …}
"""

from __future__ import annotations

import io
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hikari.config import RunConfig, load_config, resolve_recipe
from hikari.data.records import SkinCapRecord
from hikari.models.load import load_model, load_processor
from hikari.models.lora import load_adapter
from hikari.retrieval.references import build_reference_index, triples_from_dicts
from hikari.retrieval.vote import evaluate_vote, reference_precision
from hikari.training.ablation import stage2_inputs
from hikari.training.evaluate import evaluate_model
from hikari.training.stages import rag_reference_dicts, read_run_info, run_records, run_training
from hikari.utils.io import Stopwatch, atomic_write_bytes, atomic_write_json, atomic_write_text

REFERENCE_KINDS: tuple[str, ...] = ("retrieved", "noise", "oracle")
K_EVAL: tuple[int, ...] = (1, 3)
RAG_RECIPE = "sirius"


@dataclass(frozen=True)
class Stage2Row:
    """One evaluated (model, references at inference) pair. `trained_with`: the references the model was trained
    with (None: Deneb, trained without); `shown`: the kind shown at inference ("none" without references);
    `precision_at_1`: of the references shown (None without)."""

    name: str
    model: str
    trained_with: str | None
    shown: str
    k: int
    accuracy: float
    balanced_accuracy: float | None
    f1_macro: float | None
    n: int
    precision_at_1: float | None
    predictions: str | None = None


def _sirius_config(kind: str, *, previous: str, data_dir: str, split: str, index_dir: Path,
                   out: Path, overrides: Sequence[str], steps: int | None, k_max: int) -> RunConfig:  # fmt: skip
    return load_config(resolve_recipe(RAG_RECIPE), [
        f"data.dir={data_dir}", f"data.split={split}", f"model.previous_run={previous}",
        f"output_dir={out / f'sirius_{kind}'}", *overrides, *([f"train.max_steps={steps}"] if steps else []),
        f"rag.index={index_dir}", "rag.encoder=null", f"rag.references={kind}", f"rag.k_eval={k_max}",
    ])  # fmt: skip


def _train_in_worker(config: RunConfig) -> str:
    torch.set_num_threads(1)  # the workers share the cores
    run_training(config, evaluate=False)
    return str(config.output_dir)


def evaluate_with_references(
    run_dir: Path, config: RunConfig, records: list[SkinCapRecord], out_dir: Path,
    variants: dict[str, dict[str, list[Any]] | None],
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Load a run's base + adapter once and evaluate it on `records` once per references variant (name → file name →
    reference triples; None: without references). Predictions go to `out_dir/predictions.<name>.<part>.jsonl`
    (replaced: the models may have been retrained)."""
    info = read_run_info(run_dir)
    model = load_adapter(load_model(info["base_model"], dtype=config.model.dtype), run_dir / info["adapter"],
                         trainable=False)  # fmt: skip
    processor = load_processor(info["base_model"])
    out: dict[str, dict[str, Any]] = {}
    for name, refs in variants.items():
        pred = out_dir / f"predictions.{name}.{config.eval.part}.jsonl"
        pred.unlink(missing_ok=True)
        metrics = evaluate_model(model, processor, records, config.model_copy(update={"name": info["name"]}),
                                 out_dir, references=refs, pred_path=pred)  # fmt: skip
        out[name] = {**metrics, "predictions": str(pred)}
    return out


def run_stage2_ablation(
    stage2_run: str | Path,
    out: str | Path,
    *,
    encoder: str | Path | None = None,
    index: str | Path | None = None,
    data_dir: str | Path | None = None,
    split: str | Path | None = None,
    overrides: Sequence[str] = (),
    steps: int | None = None,
    kinds: Sequence[str] = REFERENCE_KINDS,
    ks: Sequence[int] = K_EVAL,
    workers: int = 1,
    console: Any = None,
) -> dict[str, Any]:
    """Train Sirius once per reference kind from `stage2_run`'s Stage 1 start, evaluate everything, write the table.

    Args:
        stage2_run: a finished Stage 2 run trained without references (deneb); its `previous_run` is every Sirius's
            start, its data and split are the ablation's (unless `data_dir`/`split` are given).
        out: ablation directory: `sirius_<kind>/` runs, predictions, `ablation.{json,md}` and the plot.
        encoder / index: the retrieval: an encoder (R0–R4 or an encoder directory) to index the split's train part
            with into `out/rag-index`, or an index already built from it (exactly one).
        overrides: `key=value` overrides for every Sirius alike (applied after the recipe's).
        steps: `train.max_steps` for every Sirius (None: the recipe's schedule).
        kinds: which reference kinds to train with (default: retrieved, noise, oracle).
        ks: references per evaluated image (each also evaluated without references).
        workers: Sirius models trained at once (CPU: the cores; one GPU: 1).

    Returns the report dict (also `out/ablation.json`): ``rows`` (`Stage2Row`s as dicts), ``retrieval``
    (precision@1/@3 of the retrieved references and the vote baseline's metrics per K), paths and timings.
    """
    if (encoder is None) == (index is None):
        raise ValueError("give exactly one of encoder (to build the index) or index (built from this split)")
    unknown = [k for k in kinds if k not in REFERENCE_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown reference kinds {unknown or kinds}; valid: {', '.join(REFERENCE_KINDS)}")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive reference counts, got {list(ks)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    stage2_run, out = Path(stage2_run), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stopwatch = Stopwatch()
    default_data, default_split = stage2_inputs(stage2_run)
    data_dir, split = str(data_dir or default_data), str(split or default_split)
    previous = read_run_info(stage2_run).get("previous_run")
    if not previous:
        raise ValueError(f"{stage2_run}/run_info.json names no previous_run: the ablation starts every Sirius from "
                         "the Stage 2 run's own Stage 1 start")  # fmt: skip
    k_max = max(ks)
    index_dir = Path(index) if index is not None else out / "rag-index"
    common = dict(previous=previous, data_dir=data_dir, split=split, index_dir=index_dir,
                  out=out, overrides=overrides, steps=steps, k_max=k_max)  # fmt: skip
    configs = {kind: _sirius_config(kind, **common) for kind in kinds}
    retrieved_config = configs.get("retrieved") or _sirius_config("retrieved", **common)
    if index is None:
        build_reference_index(data_dir, Path(split), str(encoder), out=index_dir, alpha=retrieved_config.rag.alpha,
                              image_max_size=retrieved_config.data.max_image_size)  # fmt: skip
    stopwatch.lap("index")

    # Training: every Sirius, from the same start (results do not depend on `workers`).
    if console is not None:
        console.rule(f"stage 2 ablation: sirius with {', '.join(kinds)} references")
    if workers == 1 or len(configs) == 1:
        for config in configs.values():
            run_training(config, evaluate=False)
    else:
        context = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
        with ProcessPoolExecutor(max_workers=min(workers, len(configs)), mp_context=context) as pool:
            for future in [pool.submit(_train_in_worker, c) for c in configs.values()]:
                future.result()  # re-raises a worker's error
    stopwatch.lap("train")

    parts = run_records(retrieved_config).parts
    evaluated = parts[retrieved_config.eval.part]
    reference_text = retrieved_config.rag.reference_text
    shown: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for kind in dict.fromkeys(["retrieved", *kinds]):
        config = configs.get(kind) or retrieved_config
        _, eval_dicts, _ = rag_reference_dicts(config, parts, Path(config.output_dir), train_part=False)
        shown[kind] = eval_dicts or {}

    rows: list[Stage2Row] = []

    def add(name: str, model: str, trained_with: str | None, kind: str, k: int, metrics: dict[str, Any]) -> None:
        precision = reference_precision(evaluated, shown[kind], 1) if k else None
        rows.append(Stage2Row(name, model, trained_with, kind if k else "none", k, metrics["accuracy"],
                              metrics.get("balanced_accuracy"), metrics.get("f1_macro"), metrics["n"], precision,
                              metrics.get("predictions")))  # fmt: skip

    def variants(kind: str) -> dict[str, dict[str, list[Any]] | None]:
        return {f"k{k}": {n: triples_from_dicts(v, reference_text, k=k) for n, v in shown[kind].items()}
                for k in ks}  # fmt: skip

    deneb = evaluate_with_references(stage2_run, retrieved_config, evaluated, out / "deneb",
                                     {"k0": None, **variants("retrieved")})  # fmt: skip
    for k in (0, *ks):
        add(f"deneb_{'none' if not k else f'retrieved_k{k}'}", "deneb", None, "retrieved", k, deneb[f"k{k}"])
    for kind, config in configs.items():
        found = evaluate_with_references(Path(config.output_dir), config, evaluated, out / f"sirius_{kind}",
                                         {"k0": None, **variants(kind)})  # fmt: skip
        for k in (0, *ks):
            add(f"sirius_{kind}_{f'k{k}' if k else 'none'}", f"sirius_{kind}", kind, kind, k, found[f"k{k}"])
    stopwatch.lap("evaluate")

    retrieval = {
        "precision_at_1": reference_precision(evaluated, shown["retrieved"], 1),
        "precision_at_3": reference_precision(evaluated, shown["retrieved"], min(3, k_max)),
        "vote": {f"k{k}": _vote_summary(evaluate_vote(evaluated, shown["retrieved"], k)) for k in ks},
        "reference_precision_at_1": {kind: reference_precision(evaluated, shown[kind], 1) for kind in shown},
    }  # fmt: skip
    report: dict[str, Any] = {
        "stage2_run": str(stage2_run), "data": data_dir, "split": split, "index": str(index_dir),
        "encoder": encoder and str(encoder), "kinds": list(kinds), "ks": list(ks),
        "k_train": retrieved_config.rag.k_train, "n": len(evaluated), "eval_query_text": "none (image only)",
        "retrieval": retrieval, "rows": [asdict(r) for r in rows], "timings_s": stopwatch.timings,
    }  # fmt: skip
    atomic_write_json(out / "ablation.json", report)
    atomic_write_text(out / "ablation.md", render_stage2_markdown(report))
    atomic_write_bytes(out / "accuracy_vs_precision.png", plot_accuracy_vs_precision(report))
    return report


def _vote_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("k", "accuracy", "balanced_accuracy", "f1_macro", "cohen_kappa", "mcc", "n", "per_class")
    return {key: metrics[key] for key in keys if key in metrics}


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def render_stage2_markdown(report: dict[str, Any]) -> str:
    """The ablation's table: one row per (model, references at inference), then the retrieval-only baseline."""
    retrieval = report["retrieval"]
    lines = [
        "# Stage 2 reference-quality ablation", "",
        f"Stage 2 run: `{report['stage2_run']}`; evaluated images: {report['n']}; references per training sample: "
        f"{report['k_train']}; evaluation queries: {report['eval_query_text']}.", "",
        "| model | trained with | shown at inference | K | precision@1 of shown | accuracy | balanced acc. | "
        "macro-F1 |", "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in report["rows"]:
        lines.append(f"| {row['model']} | {row['trained_with'] or 'no references'} | {row['shown']} | {row['k']} | "
                     f"{_cell(row['precision_at_1'])} | {_cell(row['accuracy'])} | "
                     f"{_cell(row['balanced_accuracy'])} | {_cell(row['f1_macro'])} |")  # fmt: skip
    for name, vote in retrieval["vote"].items():
        lines.append(f"| retrieval-only vote | – | retrieved | {vote['k']} | {_cell(retrieval['precision_at_1'])} | "
                     f"{_cell(vote['accuracy'])} | {_cell(vote['balanced_accuracy'])} | {_cell(vote['f1_macro'])} |")
    lines += ["", f"Retrieved references: precision@1 {retrieval['precision_at_1']:.1f} %, precision@3 "
              f"{retrieval['precision_at_3']:.1f} % (share of references with the query's disease)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_precision(report: dict[str, Any]) -> bytes:
    """PNG: Stage 2 accuracy against the precision@1 of the references shown, one series per K (and Deneb without
    references / the vote baseline as reference marks)."""
    figure = Figure(figsize=(6.4, 4.2), dpi=110)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    rows = report["rows"]
    for k in report["ks"]:
        points = sorted((r["precision_at_1"], r["accuracy"], r["model"]) for r in rows
                        if r["k"] == k and r["model"] != "deneb")  # fmt: skip
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=f"Sirius, K = {k} at inference")
        for x, y, model in points:
            ax.annotate(model.removeprefix("sirius_"), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        deneb = [r for r in rows if r["model"] == "deneb" and r["k"] == k]
        if deneb:
            ax.plot([deneb[0]["precision_at_1"]], [deneb[0]["accuracy"]], "s", label=f"Deneb, K = {k} retrieved")
        vote = report["retrieval"]["vote"].get(f"k{k}")
        if vote:
            ax.plot([report["retrieval"]["precision_at_1"]], [vote["accuracy"]], "x", markersize=9,
                    label=f"retrieval-only vote, K = {k}")  # fmt: skip
    for r in rows:
        if r["model"] == "deneb" and r["k"] == 0:
            ax.axhline(r["accuracy"], color="grey", linestyle="--", linewidth=1, label="Deneb, no references")
    ax.set_xlabel("precision@1 of the references shown (%)")
    ax.set_ylabel("Stage 2 accuracy (%)")
    ax.set_xlim(-5, 105)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

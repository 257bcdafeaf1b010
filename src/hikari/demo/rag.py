"""The demo's RAG step as a library function: Sirius (Deneb + RAG-in-Training) on the demo's data and models,
Stage 2 accuracy without references, with K=1 and with K=3 (plus Deneb with K=3 references for comparison).

    stage2_rag = run_stage2_rag(out / "sirius", data_dir, split_path, out / "deneb", base_model,
                                [*DEMO_OVERRIDES, "prompts.eval_prompt=T0"], steps=200, console=console)
    report["stage2_rag"] = stage2_rag

Everything runs offline: tiny random encoders (CLIP-style image tower + small text encoder) index the split's
train part, the real `sirius` recipe trains from the same Subaru run Deneb started from (merged-init) with K=1
reference per sample, and the trained model is evaluated on the eval part three ways through the same
`evaluate_model` path as every recipe. Evaluation queries use the image only (no caption is generated in this
step, and ground-truth captions are never queries).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from hikari.config import RagConfig, RunConfig, default, load_config, resolve_recipe
from hikari.data.records import SkinCapRecord
from hikari.demo.encoders import build_tiny_encoders
from hikari.models.load import load_model, load_processor
from hikari.models.lora import load_adapter
from hikari.retrieval.references import build_reference_index
from hikari.training.evaluate import evaluate_model
from hikari.training.stages import rag_references, read_run_info, run_records, run_training
from hikari.utils.io import Stopwatch, atomic_write_json


def run_stage2_rag(
    out_dir: Path,
    data_dir: Path,
    split_path: Path,
    deneb_run_dir: Path,
    base_model_dir: Path,
    overrides: list[str],
    steps: int,
    console: Console | None = None,
    *,
    k_train: int = default(RagConfig, "k_train"),
    alpha: float = default(RagConfig, "alpha"),
    seed: int = 0,
) -> dict[str, Any]:
    """Train Sirius into `out_dir/run`, evaluate Stage 2 with 0/1/3 references, and return the numbers.

    Args:
        out_dir: folder for the tiny encoders, the index, the Sirius run and the prediction files.
        data_dir, split_path: the demo's synthetic SkinCAP and split.
        deneb_run_dir: the finished Deneb run; Sirius starts from the same previous run (Subaru, merged-init),
            and Deneb's adapter is evaluated with K=3 references for comparison.
        base_model_dir: the demo's base model (recorded; merged-init takes the base from the previous run).
        overrides: the demo's CPU overrides (`--set` strings), including the Stage 2 eval prompt.
        steps: optimizer steps for Sirius (the demo trains Deneb for the same number).
        k_train: references per training sample (the original could fit only 1).

    Returns:
        Accuracies in percent: ``without_refs``, ``k1``, ``k3`` (Sirius) and ``deneb_k3``; the retrieval's own
        top-1 label precision on the eval part (``retrieval_top1_label_precision``), balanced accuracies, paths and
        timings. Also written to `out_dir/stage2_rag.json`.
    """
    console = console or Console()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stopwatch = Stopwatch()
    lap, timings = stopwatch.lap, stopwatch.timings

    deneb_info = read_run_info(deneb_run_dir)
    previous = deneb_info.get("previous_run")
    if not previous:
        raise ValueError(f"{deneb_run_dir}/run_info.json names no previous_run (Deneb is merged-init from Subaru)")

    console.rule("RAG: tiny encoders + hybrid index of the train part")
    encoders = build_tiny_encoders(out_dir / "tiny-encoders", seed=seed, overwrite=True)
    index_dir = out_dir / "rag-index"
    config = load_config(resolve_recipe("sirius"), [
        f"data.dir={data_dir}", f"data.split={split_path}", f"output_dir={out_dir / 'run'}", *overrides,
        f"train.max_steps={steps}", f"model.base={base_model_dir}", f"model.previous_run={previous}",
        f"rag.index={index_dir}", "rag.encoder=null", f"rag.alpha={alpha}", f"rag.k_train={k_train}", "rag.k_eval=3",
    ])  # fmt: skip
    index = build_reference_index(data_dir, split_path, encoders, out=index_dir, alpha=alpha,
                                  image_max_size=config.data.max_image_size)  # fmt: skip
    console.print(f"{index_dir}: {len(index.references)} references, α={alpha}")
    lap("index")

    console.rule(f"RAG: sirius (K={k_train} reference per training sample)")
    result = run_training(config, evaluate=False)
    lap("sirius_train")

    console.rule("RAG: Stage 2 without references, K=1, K=3; Deneb with K=3")
    parts = run_records(config).parts
    evaluated = parts[config.eval.part]
    _, refs3, _ = rag_references(config, parts, Path(config.output_dir))  # cached: computed before training
    assert refs3 is not None
    refs1 = {name: triples[:1] for name, triples in refs3.items()}
    cached = json.loads((Path(config.output_dir) / f"references.{config.eval.part}.json").read_text("utf-8"))
    by_name = {r.file_name: r for r in evaluated}
    precision = sum(
        bool(v) and v[0]["label"] == by_name[name].disease for name, v in cached["references"].items()
    ) / max(1, len(cached["references"]))

    sirius = _evaluate_run(Path(config.output_dir), config, evaluated, out_dir,
                           {"without_refs": None, "k1": refs1, "k3": refs3})  # fmt: skip
    deneb = _evaluate_run(Path(deneb_run_dir), config, evaluated, out_dir, {"deneb_k3": refs3})
    lap("evaluate")

    report: dict[str, Any] = {
        **{name: m["accuracy"] for name, m in {**sirius, **deneb}.items()},
        "balanced_accuracy": {name: m.get("balanced_accuracy") for name, m in {**sirius, **deneb}.items()},
        "n": sirius["k3"].get("n"),
        "retrieval_top1_label_precision": round(100 * precision, 2),
        "k_train": k_train,
        "alpha": alpha,
        "encoder": index.info.encoder.get("name"),
        "index": str(index_dir),
        "run": str(config.output_dir),
        "eval_query_text": "none (image only)",
        "train_steps": result.train_metrics.get("global_step"),
        "timings_s": timings,
    }
    atomic_write_json(out_dir / "stage2_rag.json", report)
    console.print({k: report[k] for k in ("without_refs", "k1", "k3", "deneb_k3", "retrieval_top1_label_precision")})
    return report


def _evaluate_run(
    run_dir: Path, config: RunConfig, records: list[SkinCapRecord], out_dir: Path, variants: dict[str, Any]
) -> dict[str, Any]:
    """Load a run's base + adapter once and evaluate each references variant (None: no references)."""
    info = read_run_info(run_dir)
    model = load_adapter(load_model(info["base_model"], dtype=config.model.dtype), run_dir / info["adapter"],
                         trainable=False)  # fmt: skip
    processor = load_processor(info["base_model"])
    out: dict[str, Any] = {}
    for name, refs in variants.items():
        pred = out_dir / f"predictions.{name}.{config.eval.part}.jsonl"
        pred.unlink(missing_ok=True)  # the models are retrained on every demo run: never resume stale lines
        out[name] = evaluate_model(model, processor, records, config.model_copy(update={"name": info["name"]}),
                                   out_dir, references=refs, pred_path=pred)  # fmt: skip
    return out

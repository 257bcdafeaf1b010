"""Evaluation at the end of a training run: generate on a split part with the in-memory model, then score.

Generation goes through the same `run_predict` journal as `hikari predict` (so the file is resumable and in
our prediction format), with the transformers engine wrapped around the model that was just trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hikari.config import RunConfig
from hikari.data.labels import DISEASES, GROUPS
from hikari.data.records import SkinCapRecord
from hikari.evaluation.captions import evaluate_captions
from hikari.evaluation.diagnosis import evaluate_diagnosis
from hikari.evaluation.predictions import read_predictions
from hikari.inference.engines import TransformersEngine
from hikari.inference.predict import run_predict


def evaluate_model(
    model: torch.nn.Module,
    processor: Any,
    records: list[SkinCapRecord],
    config: RunConfig,
    out: Path,
    *,
    stage1_groups: dict[str, str] | None = None,
    references: dict[str, list[Any]] | None = None,
    pred_path: Path | None = None,
) -> dict[str, Any]:
    """Predict `config.eval.part` with `model` and return the task's metrics (percentages).

    `references` (file name → (image path, label, caption or None) per reference) puts Stage 2 questions in the
    RAG prompt; `pred_path` overrides `<out>/predictions.<part>.jsonl`."""
    ev = config.eval
    pred_path = pred_path or out / f"predictions.{ev.part}.jsonl"
    engine = TransformersEngine.from_model(model, processor, batch_size=ev.batch_size)
    prompt = {"disease": config.prompts.eval_prompt, "group": "0", "caption": "0"}[config.task]
    was_training = model.training
    model.eval()
    try:
        run_predict(
            model=config.name,
            data=config.data.dir,
            split=config.data.split,
            task=config.task,
            out=pred_path,
            part=ev.part,
            prompt=prompt,
            engine=engine,
            batch_size=ev.batch_size,
            max_new_tokens=ev.max_new_tokens,
            limit=ev.limit,
            image_max_size=config.data.max_image_size,
            group_context=_eval_group_context(records, config, stage1_groups),
            references=references,
        )
    finally:
        model.train(was_training)
    preds = [p for p in read_predictions(pred_path) if p.model == config.name]
    if config.task == "caption":
        metrics = evaluate_captions(preds)
    else:
        metrics = evaluate_diagnosis(preds, GROUPS if config.task == "group" else DISEASES)
    return {**metrics, "part": ev.part, "predictions": str(pred_path)}


def _eval_group_context(
    records: list[SkinCapRecord], config: RunConfig, stage1_groups: dict[str, str] | None
) -> dict[str, str] | None:
    """File name → group text for the M-series evaluation prompts (None: the plain P-prompt)."""
    mode = config.prompts.eval_group_context
    if config.task != "disease" or mode == "none":
        return None
    if mode == "ground_truth":
        return {r.file_name: r.group for r in records if r.group is not None}
    if stage1_groups is None:
        raise ValueError(f"eval group context {mode!r} needs prompts.stage1_predictions")
    missing = [r.file_name for r in records if r.file_name not in stage1_groups]
    if missing:
        raise ValueError(
            f"{config.prompts.stage1_predictions}: no Stage 1 prediction for {len(missing)} evaluation image(s), "
            f"e.g. {missing[:3]}"
        )
    return {r.file_name: stage1_groups[r.file_name] for r in records}

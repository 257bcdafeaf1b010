"""`hikari predict`: run one model on one split part for one task and write resumable JSON Lines predictions.

    run_predict("runs/deneb/merged", Path("SkinCAP"), Path("split.json"), "disease", Path("pred.jsonl"))

Flow: read the SkinCAP folder with the reader options the split was made with → select the split part's records
by file name (in the split's order; ``limit`` keeps the first N) → skip ids already in the output → per batch:
load images, build the task's prompt (`hikari.data.prompts`), generate, parse (`hikari.evaluation.parsing`), append
one line per item (`hikari.evaluation.predictions`), flush and fsync.

Resuming. The output file is the run's journal. A rerun with the same arguments skips every id already in it, so
an interrupted run loses at most the batch in flight. A crash in the middle of a write can leave a final line
without its newline; it is detected, cut away (the file is truncated back to the last complete line) and
reported in the summary, never kept or silently parsed. The existing lines must come from the same task, prompt,
model and split part; anything else raises instead of mixing two runs in one file.

Unreadable images. An image that cannot be decoded at predict time is *not* a crash: the item is written as an
error line (``status: "error"``, ``error: <reason>``, empty ``raw_output``, ``parsed`` = "Unknown" or "") and
counted in the summary. The file then still has exactly one line per item, and the evaluator counts error lines
as wrong answers (never silently dropping them from the denominator). A rerun keeps error lines; pass
``retry_errors=True`` (``--retry-errors``) to drop them and try those images again. A *missing* image file is a
data error, not a bad image: the SkinCAP reader skips its row and selecting the split part then fails loudly.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hikari.config import DataConfig, default
from hikari.data.images import load_rgb
from hikari.data.labels import DISEASES, GROUPS, UNKNOWN
from hikari.data.prompts import (
    STAGE1_PROMPTS,
    STAGE2_INFERENCE_PROMPTS,
    STAGE2_TRAIN_PROMPTS,
    STAGE3_PROMPTS,
    rag_messages,
    stage1_messages,
    stage2_messages,
    stage2_target,
    stage3_messages,
)
from hikari.data.records import SkinCapRecord
from hikari.data.split import read_split_records
from hikari.evaluation.parsing import parse_caption, parse_diagnosis
from hikari.evaluation.predictions import TASKS, Prediction, append_predictions, read_predictions
from hikari.inference.engines import DEFAULT_MAX_NEW_TOKENS, THINKING_MAX_NEW_TOKENS, Engine, make_engine
from hikari.inference.engines import engine_options as engine_option_names
from hikari.inference.scoring import choice_probabilities
from hikari.retrieval.references import load_reference_images
from hikari.utils.io import atomic_write_text, exclusive_writer

logger = logging.getLogger(__name__)

STATUS_ERROR = "error"


@dataclass
class PredictSummary:
    """What one `run_predict` call did. `n_items` = items selected (after `limit`); `n_skipped_existing` were
    already in the file; `n_written` lines were appended now, `n_errors` of them error lines (unreadable images,
    ids in `error_ids`); `n_truncated` generations whose reasoning never finished. `dropped_partial_line` is the
    incomplete last line cut from the file (a crash during a write), `n_retried_errors` the error lines removed
    for `retry_errors`."""

    out: Path
    task: str
    prompt_id: str
    n_items: int = 0
    n_skipped_existing: int = 0
    n_written: int = 0
    n_errors: int = 0
    n_truncated: int = 0
    n_retried_errors: int = 0
    dropped_partial_line: str | None = None
    error_ids: list[str] = field(default_factory=list)
    # reference images that could not be read (left out of the prompts that cited them; the queries were answered)
    unreadable_references: set[str] = field(default_factory=set)
    # files of the part the reader left out (missing, a directory, a link outside the image folder): file → why
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every selected item now has a line in the file."""
        return self.n_skipped_existing + self.n_written == self.n_items


# ---------------------------------------------------------------------------------------------------------------
# Prompts per task
# ---------------------------------------------------------------------------------------------------------------


# Per task with answer probabilities: (labels, the answer text scored for each label — its training target).
SCORED_CHOICES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "group": (GROUPS, GROUPS),
    "disease": (DISEASES, tuple(stage2_target(d) for d in DISEASES)),
}


def resolve_prompt(task: str, prompt: str | None) -> tuple[str, Callable[[Any], list[dict[str, Any]]]]:
    """The prompt id written to each line and a builder image → chat messages, for `task` and `prompt`.

    - group: `prompt` is an index into ``STAGE1_PROMPTS`` (default "0"); id ``"stage1_<i>"``.
    - disease: "P0".."P3" (``STAGE2_INFERENCE_PROMPTS``, default "P0") or "T0".."T2" (the training prompts);
      id the key.
    - caption: `prompt` is an index into ``STAGE3_PROMPTS`` (default "0" = the evaluation prompt); id
      ``"stage3_<i>"``.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    if task == "disease":
        key = prompt or "P0"
        # P0..P3: the original's inference prompts; T0..T2: the three training prompts (a model that has only
        # seen those, like the tiny demo model, cannot be expected to generalise to new wording).
        choices = {**STAGE2_INFERENCE_PROMPTS, **{f"T{i}": p for i, p in enumerate(STAGE2_TRAIN_PROMPTS)}}
        if key not in choices:
            raise ValueError(f"unknown disease prompt {key!r}; valid: {', '.join(choices)}")
        text = choices[key]
        return key, lambda image: stage2_messages(image, text)
    prompts = STAGE1_PROMPTS if task == "group" else STAGE3_PROMPTS
    raw = prompt or "0"
    if not raw.isdigit() or int(raw) >= len(prompts):
        raise ValueError(f"the {task} task's prompt is an index 0..{len(prompts) - 1}, got {raw!r}")
    index = int(raw)
    if task == "group":
        return f"stage1_{index}", lambda image: stage1_messages(image, index)
    return f"stage3_{index}", lambda image: stage3_messages(image, index)


def ground_truth(record: SkinCapRecord, task: str) -> str:
    """The reference answer of `record` for `task`: group name, disease, or caption."""
    if task == "caption":
        return record.caption
    if task == "group":
        if record.group is None:
            raise ValueError(
                f"{record.file_name}: disease {record.disease!r} belongs to none of the 4 HIKARI groups; "
                "the group task needs the 10 HIKARI diseases (read the data with top_k=10)"
            )
        return record.group
    if record.disease not in DISEASES:
        raise ValueError(f"{record.file_name}: disease {record.disease!r} is not one of the 10 HIKARI diseases")
    return record.disease


# ---------------------------------------------------------------------------------------------------------------
# The output file as a journal
# ---------------------------------------------------------------------------------------------------------------


def repair_partial_line(path: Path) -> str | None:
    """Cut an incomplete last line (no trailing newline) from `path`; return it (decoded) or None.

    The file is truncated back to just after its last newline and fsynced. Complete lines are never touched.
    """
    if not path.exists():
        return None
    with path.open("rb+") as fh:
        data = fh.read()
        if not data or data.endswith(b"\n"):
            return None
        keep = data.rfind(b"\n") + 1  # 0 when the file holds only the partial line
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    fragment = data[keep:].decode("utf-8", errors="replace")
    logger.warning("%s: removed an incomplete last line (%d bytes) left by an interrupted write", path, len(fragment))
    return fragment


def drop_error_lines(path: Path) -> int:
    """Rewrite `path` (atomically) without its error lines; return how many were removed."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.strip() and json.loads(line).get("status", "success") == STATUS_ERROR:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        atomic_write_text(path, "".join(kept))
    return dropped


def existing_ids(
    path: Path,
    *,
    task: str,
    prompt_id: str,
    model: str,
    part: str,
    allowed: set[str],
    generation: Mapping[str, Any] | None = None,
    force_mixed: bool = False,
) -> set[str]:
    """Ids already predicted in `path`, after checking that every line belongs to this run.

    Raises ValueError naming the file and line when a line has another task, prompt, model or split part, an id
    outside `allowed` (the part's ids: another split or data folder), or an id twice — and, unless
    `force_mixed`, when a line was generated with other `generation` settings (budget, engine, thinking, image
    size), so that one file never silently mixes two budgets.
    """
    if not path.exists():
        return set()
    done: set[str] = set()
    expected = {"task": task, "prompt_id": prompt_id, "model": model, "split": part}
    for lineno, prediction in enumerate(read_predictions(path), start=1):
        for key, want in expected.items():
            have = getattr(prediction, key)
            if have != want:
                raise ValueError(
                    f"{path}: line {lineno} (id {prediction.id}) has {key}={have!r}, this run has {key}={want!r}; "
                    "resume with the same arguments or write to another --out file"
                )
        recorded = prediction.extra.get("generation")
        if generation is not None and not force_mixed and isinstance(recorded, dict):
            differ = {k: (recorded.get(k), v) for k, v in generation.items() if k in recorded and recorded[k] != v}
            if differ:
                key, (have, want) = next(iter(differ.items()))
                raise ValueError(
                    f"{path}: line {lineno} (id {prediction.id}) was generated with {key}={have!r}, this run has "
                    f"{key}={want!r}; resume with the same settings, write to another --out file, or pass "
                    "--force-mixed to mix them in one file"
                )
        if prediction.id not in allowed:
            raise ValueError(
                f"{path}: line {lineno}: id {prediction.id} is not in part {part!r} of this split "
                "(another split or data folder?); write to another --out file"
            )
        if prediction.id in done:
            raise ValueError(f"{path}: line {lineno}: id {prediction.id} appears twice")
        done.add(prediction.id)
    return done


# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------


def _parse(raw: str, task: str, thinking: bool) -> tuple[str, bool]:
    if task == "caption":
        caption = parse_caption(raw, thinking=thinking)
        return caption.text, caption.truncated
    answer = parse_diagnosis(raw, GROUPS if task == "group" else DISEASES, thinking=thinking)
    return answer.label, answer.truncated


def _batches(items: Sequence[SkinCapRecord], size: int) -> list[Sequence[SkinCapRecord]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_predict(
    model: str,
    data: Path,
    split: Path,
    task: str,
    out: Path,
    *,
    part: str = "val",
    prompt: str | None = None,
    engine: str | Engine = "transformers",
    batch_size: int = 4,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    engine_options: dict[str, Any] | None = None,
    thinking: bool = False,
    retry_errors: bool = False,
    force_mixed: bool = False,
    image_max_size: int | None = default(DataConfig, "max_image_size"),
    progress: bool = True,
    group_context: Mapping[str, str] | None = None,
    group_probabilities: bool = False,
    references: Mapping[str, Sequence[tuple[Any, str, str | None]]] | None = None,
    probabilities: bool = False,
) -> PredictSummary:
    """Predict `task` for every record of split part `part` and append the results to `out` (JSON Lines).

    Args:
        model: merged model directory or Hub id (recorded in every line; must match on resume).
        data: SkinCAP folder (real or synthetic).
        split: split JSON (ours or the original's ``split_info_*.json``).
        task: "group" (Stage 1), "disease" (Stage 2) or "caption" (Stage 3).
        out: the JSONL output; appended to and resumed from.
        part: split part to predict ("val", "test", "train").
        prompt: disease: "P0".."P3"; group/caption: prompt index (see `resolve_prompt`).
        engine: "transformers" | "vllm" | "sglang", or an already built `Engine` (not closed here).
        batch_size: items per generate call and per write (also the transformers engine's forward batch).
        max_new_tokens: default `DEFAULT_MAX_NEW_TOKENS[task]`, or 1024 with `thinking`.
        limit: only the first N items of the part.
        engine_options: extra options for `make_engine` (e.g. {"quantization": "fp8"}).
        thinking: the model reasons in ``<think>`` first (zero-shot Qwen3-VL-Thinking): a generation without
            ``</think>`` is marked truncated, and the default budget is 1024 tokens.
        retry_errors: drop earlier error lines (unreadable images) and try those items again.
        force_mixed: resume a file whose lines were generated with other settings (budget, engine, thinking,
            image size) — recorded in each line's ``generation`` field — instead of refusing.
        image_max_size: thumbnail images to this many pixels per side before the processor, as the original
            did (672); None keeps full size.
        progress: show a rich progress bar.
        group_context: disease task only: file name → group text; the question becomes the M-series
            group-context prompt ("This skin lesion belongs to the group '…'") and the prompt id gets "+group".
        group_probabilities: group task only: also store P(group | image) for all four groups (exact
            teacher-forced scoring, `hikari.inference.scoring`) in each line's ``group_probabilities`` field —
            the input of the M4 soft group context. Needs the transformers engine. Kept as it was; for the group
            task it is the same as `probabilities`, which also writes this field.
        references: disease task only: file name → reference cases (image path or PIL image, label, caption
            or None), shown before the query image in the RAG prompt (`prompts.rag_messages`); the prompt id
            gets "+rag{K}" (K = the most references of any item). Every selected record needs an entry.
        probabilities: group and disease tasks: also store the exact answer probabilities P(label | prompt) over
            all labels (4 groups, or the 10 diseases scored as their training answer "This image shows {disease}.";
            teacher-forced, `hikari.inference.scoring`, the same prompt as the generation) in each line's
            ``probabilities`` field {label: p}, rounded to 6 decimals — the input of `hikari eval calibration`.
            Group lines also get ``group_probabilities``. Needs the transformers engine.
    """
    if group_probabilities and task != "group":
        raise ValueError(f"group_probabilities applies to the group task, not {task!r}")
    if probabilities and task not in SCORED_CHOICES:
        raise ValueError(f"probabilities apply to the {' and '.join(SCORED_CHOICES)} tasks, not {task!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(engine, str):
        option_names = engine_option_names(engine)  # raises for an unknown engine before any data is read
    elif engine_options:
        raise ValueError("engine_options apply when the engine is built here; pass them to make_engine instead")
    prompt_id, plain_messages = resolve_prompt(task, prompt)
    if group_context is not None:
        if task != "disease":
            raise ValueError(f"group_context applies to the disease task, not {task!r}")
        prompt_id += "+group"
    if references is not None:
        if task != "disease":
            raise ValueError(f"references apply to the disease task, not {task!r}")
        prompt_id += f"+rag{max((len(v) for v in references.values()), default=0)}"

    def build_messages(record: SkinCapRecord, image: Any) -> list[dict[str, Any]]:
        if group_context is None:
            messages = plain_messages(image)
        else:
            messages = stage2_messages(image, "", group_context=group_context[record.file_name])
        if references is None:
            return messages
        question = messages[0]["content"][-1]["text"]
        shown = load_reference_images(references[record.file_name], max_size=image_max_size,
                                      unreadable=summary.unreadable_references)  # fmt: skip
        return rag_messages(image, question, shown)

    if max_new_tokens is None:
        max_new_tokens = THINKING_MAX_NEW_TOKENS if thinking else DEFAULT_MAX_NEW_TOKENS[task]
    out = Path(out)
    summary = PredictSummary(out=out, task=task, prompt_id=prompt_id)

    # Images are decoded at predict time (and counted when unreadable), not while reading the folder.
    selected = read_split_records(data, split, [part])
    part_records = selected.parts[part]
    in_part = set(selected.split.parts[part])
    summary.left_out = {n: why for n, why in selected.dataset.report.bad_images.items() if n in in_part}
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    records = part_records[:limit] if limit is not None else part_records
    truths = {r.id: ground_truth(r, task) for r in records}  # fail before loading any model
    if references is not None:
        missing = [r.file_name for r in records if r.file_name not in references]
        if missing:
            raise ValueError(f"no references for {len(missing)} item(s) of part {part!r}, e.g. {missing[:3]}")
    summary.n_items = len(records)

    out.parent.mkdir(parents=True, exist_ok=True)
    engine_label = engine if isinstance(engine, str) else engine.name
    generation = {"max_new_tokens": max_new_tokens, "engine": engine_label, "thinking": thinking,
                  "image_max_size": image_max_size}  # fmt: skip
    with exclusive_writer(out):
        summary.dropped_partial_line = repair_partial_line(out)
        if retry_errors:
            summary.n_retried_errors = drop_error_lines(out)
        # Lines beyond `limit` (from an earlier, larger run) are fine; ids outside the part are not.
        done = existing_ids(out, task=task, prompt_id=prompt_id, model=model, part=part,
                            allowed={r.id for r in part_records}, generation=generation,
                            force_mixed=force_mixed)  # fmt: skip
        todo = [r for r in records if r.id not in done]
        summary.n_skipped_existing = len(records) - len(todo)
        if todo:
            _predict_todo(todo, out, summary, model=model, engine=engine, engine_options=engine_options,
                          option_names=option_names if isinstance(engine, str) else [], batch_size=batch_size,
                          build_messages=build_messages, truths=truths, task=task, prompt_id=prompt_id, part=part,
                          max_new_tokens=max_new_tokens, thinking=thinking, image_max_size=image_max_size,
                          group_probabilities=group_probabilities or (probabilities and task == "group"),
                          generation=generation,
                          progress=progress, probabilities=probabilities)  # fmt: skip
    return summary


def _predict_todo(
    todo: Sequence[SkinCapRecord],
    out: Path,
    summary: PredictSummary,
    *,
    model: str,
    engine: str | Engine,
    engine_options: dict[str, Any] | None,
    option_names: Sequence[str],
    batch_size: int,
    build_messages: Callable[[SkinCapRecord, Any], list[dict[str, Any]]],
    truths: dict[str, str],
    task: str,
    prompt_id: str,
    part: str,
    max_new_tokens: int,
    thinking: bool,
    image_max_size: int | None,
    group_probabilities: bool,
    generation: Mapping[str, Any],
    progress: bool,
    probabilities: bool = False,
) -> None:
    """Generate and append the lines of `todo`, a batch at a time (each batch flushed and fsynced)."""
    owned = isinstance(engine, str)
    if isinstance(engine, str):
        options = dict(engine_options or {})
        if "batch_size" in option_names:
            options.setdefault("batch_size", batch_size)
        engine_obj = make_engine(engine, model, **options)
    else:
        engine_obj = engine
    engine_name = engine_obj.name
    try:
        with _progress(progress) as bar:
            bar_task = bar.add_task(f"{task} {prompt_id} ({engine_name})", total=len(todo))
            for batch in _batches(todo, batch_size):
                lines = _predict_batch(
                    batch, engine_obj, build_messages, truths, task=task, prompt_id=prompt_id, model=model,
                    engine_name=engine_name, part=part, max_new_tokens=max_new_tokens, thinking=thinking,
                    image_max_size=image_max_size, group_probabilities=group_probabilities, generation=generation,
                    probabilities=probabilities,
                )  # fmt: skip
                append_predictions(out, lines)  # flushed and fsynced before the next batch starts
                summary.n_written += len(lines)
                for line in lines:
                    if line.status == STATUS_ERROR:
                        summary.n_errors += 1
                        summary.error_ids.append(line.id)
                    summary.n_truncated += line.truncated
                bar.advance(bar_task, len(batch))
    finally:
        if owned:
            engine_obj.close()


def _predict_batch(
    batch: Sequence[SkinCapRecord],
    engine: Engine,
    build_messages: Callable[[SkinCapRecord, Any], list[dict[str, Any]]],
    truths: dict[str, str],
    *,
    task: str,
    prompt_id: str,
    model: str,
    engine_name: str,
    part: str,
    max_new_tokens: int,
    thinking: bool,
    image_max_size: int | None,
    group_probabilities: bool = False,
    generation: Mapping[str, Any] | None = None,
    probabilities: bool = False,
) -> list[Prediction]:
    """Predictions for one batch, in batch order; unreadable images become error lines. `group_probabilities`
    writes ``group_probabilities`` (group task), `probabilities` writes ``probabilities`` (group/disease)."""
    common = {"task": task, "prompt_id": prompt_id, "model": model, "engine": engine_name, "split": part}
    recorded = {"generation": dict(generation)} if generation is not None else {}
    readable: list[tuple[SkinCapRecord, list[dict[str, Any]]]] = []
    errors: dict[str, str] = {}
    for record in batch:
        try:
            image = load_rgb(record.image_path, max_size=image_max_size)
            messages = build_messages(record, image)  # reads reference images too
        except OSError as err:
            logger.warning("%s: %s — written as an error line", record.file_name, err)
            errors[record.id] = str(err)
            continue
        readable.append((record, messages))

    outputs: dict[str, str] = {}
    if readable:
        texts = engine.generate([m for _, m in readable], max_new_tokens=max_new_tokens)
        if len(texts) != len(readable):
            raise RuntimeError(f"engine {engine_name} returned {len(texts)} outputs for {len(readable)} inputs")
        outputs = {record.id: text for (record, _), text in zip(readable, texts, strict=True)}
    scores: dict[str, dict[str, float]] = {}
    if (group_probabilities or probabilities) and readable:
        if not hasattr(engine, "model") or not hasattr(engine, "processor"):
            raise ValueError(f"answer probabilities need the transformers engine, not {engine_name!r}")
        labels, answers = SCORED_CHOICES[task]
        probs = choice_probabilities(engine.model, engine.processor, [m for _, m in readable], answers)
        scores = {
            record.id: {label: round(float(p), 6) for label, p in zip(labels, row, strict=True)}
            for (record, _), row in zip(readable, probs, strict=True)
        }
    fields = (["group_probabilities"] if group_probabilities else []) + (["probabilities"] if probabilities else [])

    lines: list[Prediction] = []
    for record in batch:
        base = {"id": record.id, "file_name": record.file_name, "ground_truth": truths[record.id],
                "disease": record.disease, **common}  # fmt: skip
        if record.id in errors:
            lines.append(Prediction(
                raw_output="", parsed="" if task == "caption" else UNKNOWN, status=STATUS_ERROR,
                extra={"error": errors[record.id], **recorded}, **base,
            ))  # fmt: skip
            continue
        raw = outputs[record.id]
        parsed, truncated = _parse(raw, task, thinking)
        extra: dict[str, Any] = {name: scores[record.id] for name in fields} if record.id in scores else {}
        extra.update(recorded)
        lines.append(Prediction(raw_output=raw, parsed=parsed, truncated=truncated, extra=extra, **base))
    return lines


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )

"""Prediction files: our JSON Lines format and the original HIKARI JSON, both read into one list of `Prediction`.

Our format (written by ``hikari predict``, read here)
-----------------------------------------------------
JSON Lines, UTF-8, one object per line and per (image, task); the writer appends and flushes line by line, so
an interrupted run resumes by skipping the ids already present. Fields:

=============== ======== ==============================================================================
field           required meaning
=============== ======== ==============================================================================
id              yes      SkinCAP id (string; integers are accepted and converted)
file_name       yes      ``"<id>.png"``, the join key to splits and label files
task            yes      ``"group"`` (Stage 1), ``"disease"`` (Stage 2) or ``"caption"`` (Stage 3)
raw_output      yes      the generation exactly as decoded (thinking included)
parsed          yes      the parsed label (group/disease; ``"Unknown"`` when unmatched) or the caption text
ground_truth    no       true group/disease label, or the reference caption; null when unknown
truncated       no       true when the reasoning never finished (default false)
disease         no       the image's true disease (caption files: enables the disease-mention rate)
prompt_id       no       e.g. ``"P0"`` or ``"stage3_eval"``
model           no       model path / hub id / recipe name
engine          no       ``"transformers"``, ``"vllm"``, ``"sglang"`` …
split           no       the split part the item came from (``"val"``, ``"test"`` …)
status          no       ``"success"`` (default, not written) or a failure such as ``"error"``
=============== ======== ==============================================================================

Any other key (e.g. ``"error"``, a latency) is kept in `Prediction.extra` and written back unchanged.

Original format (``results_*_val_predictions.json`` of the HIKARI authors)
--------------------------------------------------------------------------
``{"predictions": [...], "metrics": {...}}``; caption items ``id, file_name, image_path, ground_truth_caption,
generated_caption, status`` (+ ``stage2_disease`` in the guided file — the *predicted* disease, kept in
`extra`, never used as ground truth); diagnosis items ``id, file_name, image_path, ground_truth, disease_group,
predicted_raw, predicted, status``.

Every malformed line or item raises `PredictionFileError` naming the file, the line (JSONL) or item index
(original) and the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

from hikari.config import Task
from hikari.data.labels import GROUPS
from hikari.data.skincap import read_skincap
from hikari.data.split import load_split

TASKS: tuple[str, ...] = get_args(Task)
_REQUIRED = ("id", "file_name", "task", "raw_output", "parsed")
_OPTIONAL_STR = ("ground_truth", "disease", "prompt_id", "model", "engine", "split")


class PredictionFileError(ValueError):
    """A prediction or label file that cannot be read; the message names the file, line/item and field."""


@dataclass(frozen=True)
class Prediction:
    """One model output for one image and task, normalised from either file format.

    `parsed` is the label (group/disease tasks) or the caption (caption task); `ground_truth` is the true label
    or the reference caption; `disease` the image's true disease when known (used by the mention rate).
    `status` is "success" unless the original file recorded a failure; `extra` keeps unrecognised fields.
    """

    id: str
    file_name: str
    task: str
    raw_output: str
    parsed: str
    ground_truth: str | None = None
    truncated: bool = False
    disease: str | None = None
    prompt_id: str | None = None
    model: str | None = None
    engine: str | None = None
    split: str | None = None
    status: str = "success"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # where it was read from ("line 12" of a JSONL file, "predictions[3]" of an original file), for error messages
    where: str | None = field(default=None, compare=False, hash=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The JSONL object for this prediction (our format; `status`/`extra` only when informative)."""
        obj = {k: v for k, v in asdict(self).items() if k not in ("status", "extra", "where")}
        if self.status != "success":
            obj["status"] = self.status
        obj.update(self.extra)
        return obj


def _fail(path: Path, where: str, message: str) -> PredictionFileError:
    return PredictionFileError(f"{path}: {where}: {message}")


def _require_str(obj: Mapping[str, Any], key: str, path: Path, where: str, allow_int: bool = False) -> str:
    if key not in obj:
        raise _fail(path, where, f"missing field {key!r}")
    value = obj[key]
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise _fail(path, where, f"field {key!r} must be a string, got {type(value).__name__} {value!r}")
    return value


def _optional_str(obj: Mapping[str, Any], key: str, path: Path, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(path, where, f"field {key!r} must be a string or null, got {type(value).__name__} {value!r}")
    return value


def _ours_from_object(obj: Any, path: Path, where: str) -> Prediction:
    if not isinstance(obj, dict):
        raise _fail(path, where, f"expected a JSON object, got {type(obj).__name__}")
    values = {key: _require_str(obj, key, path, where, allow_int=key == "id") for key in _REQUIRED}
    if values["task"] not in TASKS:
        raise _fail(path, where, f"field 'task' must be one of {', '.join(TASKS)}, got {values['task']!r}")
    optional = {key: _optional_str(obj, key, path, where) for key in _OPTIONAL_STR}
    truncated = obj.get("truncated", False)
    if not isinstance(truncated, bool):
        raise _fail(path, where, f"field 'truncated' must be true or false, got {truncated!r}")
    status = obj.get("status", "success")
    if not isinstance(status, str):
        raise _fail(path, where, f"field 'status' must be a string, got {status!r}")
    known = set(_REQUIRED) | set(_OPTIONAL_STR) | {"truncated", "status"}
    extra = {k: v for k, v in obj.items() if k not in known}
    return Prediction(**values, **optional, truncated=truncated, status=status, extra=extra, where=where)


def _read_jsonl(path: Path, text: str) -> list[Prediction]:
    predictions: list[Prediction] = []
    lines = text.splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            hint = ""
            if lineno == len(lines) and not text.endswith("\n"):
                hint = " (an interrupted write? delete this last line and resume)"
            raise _fail(path, f"line {lineno}", f"invalid JSON: {err.msg}{hint}") from None
        predictions.append(_ours_from_object(obj, path, f"line {lineno}"))
    return predictions


def _original_item(item: Any, path: Path, index: int) -> Prediction:
    where = f"predictions[{index}]"
    if not isinstance(item, dict):
        raise _fail(path, where, f"expected a JSON object, got {type(item).__name__}")
    id_ = _require_str(item, "id", path, where, allow_int=True)
    file_name = _require_str(item, "file_name", path, where)
    status = item.get("status", "success")
    status = status if isinstance(status, str) else str(status)
    if "generated_caption" in item or "ground_truth_caption" in item:
        generated = _require_str(item, "generated_caption", path, where)
        reference = _require_str(item, "ground_truth_caption", path, where)
        known = {"id", "file_name", "generated_caption", "ground_truth_caption", "status"}
        extra = {k: v for k, v in item.items() if k not in known}
        return Prediction(
            id=id_, file_name=file_name, task="caption", raw_output=generated, parsed=generated,
            ground_truth=reference, status=status, extra=extra, where=where,
        )  # fmt: skip
    if "predicted" in item or "predicted_raw" in item:
        truth = _require_str(item, "ground_truth", path, where)
        predicted = _require_str(item, "predicted", path, where)
        raw = _require_str(item, "predicted_raw", path, where)
        known = {"id", "file_name", "ground_truth", "predicted", "predicted_raw", "status"}
        extra = {k: v for k, v in item.items() if k not in known}
        return Prediction(
            id=id_, file_name=file_name, task="group" if truth in GROUPS else "disease", raw_output=raw,
            parsed=predicted, ground_truth=truth, status=status, extra=extra, where=where,
        )  # fmt: skip
    raise _fail(
        path, where, "neither a caption item (generated_caption, ground_truth_caption) nor a diagnosis item "
        f"(predicted, predicted_raw, ground_truth); fields: {', '.join(sorted(item))}",
    )  # fmt: skip


def read_predictions(path: str | os.PathLike[str]) -> list[Prediction]:
    """Read our JSONL or an original HIKARI ``{"predictions": [...]}`` file into `Prediction` objects.

    The format is detected from the content: a file that parses as one JSON object with a "predictions" list
    is the original format; anything else is read as JSON Lines.
    """
    path = Path(path)
    if not path.is_file():
        raise PredictionFileError(f"{path}: prediction file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a BOM (Windows editors) is fine
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise _fail(path, f"line {line}", f"not UTF-8 text (byte 0x{data[err.start]:02x}: {err.reason})") from None
    whole: Any = None
    if path.suffix != ".jsonl":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
    if isinstance(whole, dict) and "predictions" in whole:
        items = whole["predictions"]
        if not isinstance(items, list):
            raise _fail(path, "predictions", f"expected a list, got {type(items).__name__}")
        return [_original_item(item, path, i) for i, item in enumerate(items)]
    # A one-line JSONL file also parses as one JSON object; a multi-line document without "predictions" is
    # neither format.
    if whole is not None and (not isinstance(whole, dict) or "\n" in text.strip()):
        raise _fail(path, "top level", "a JSON document without a 'predictions' list (not a prediction file)")
    return _read_jsonl(path, text)


def unique_predictions(
    predictions: Sequence[Prediction], path: str | os.PathLike[str], *, dedupe: bool = False
) -> tuple[list[Prediction], int]:
    """The predictions with one item per (id, task), and how many repeats were dropped.

    A prediction file holds one line per id and task; a repeat (two writers on one file, files concatenated)
    would be scored twice. Without `dedupe` a repeat raises `PredictionFileError` naming the file and the ids;
    with it the first item of each id is kept.
    """
    seen: dict[tuple[str, str], int] = {}
    counts: dict[tuple[str, str], int] = {}
    for prediction in predictions:
        key = (prediction.id, prediction.task)
        counts[key] = counts.get(key, 0) + 1
        seen.setdefault(key, len(seen))
    repeated = [(key, n) for key, n in counts.items() if n > 1]
    if not repeated:
        return list(predictions), 0
    if not dedupe:
        shown = ", ".join(f"{i!r} ×{n}" for (i, _), n in repeated[:8]) + (" …" if len(repeated) > 8 else "")
        raise _fail(Path(path), "ids", f"{len(repeated)} id(s) appear more than once ({shown}); a prediction file "
                    "holds one line per id. Pass --dedupe to keep the first line of each")  # fmt: skip
    kept, taken = [], set()
    for prediction in predictions:
        key = (prediction.id, prediction.task)
        if key not in taken:
            taken.add(key)
            kept.append(prediction)
    return kept, len(predictions) - len(kept)


def append_predictions(path: str | os.PathLike[str], predictions: Iterable[Prediction]) -> int:
    """Append predictions to a JSONL file, one flushed and fsynced line each; returns how many were written.

    Writing line by line keeps an interrupted run readable and resumable (see `completed_ids`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("a", encoding="utf-8") as fh:
        for prediction in predictions:
            fh.write(json.dumps(prediction.to_json(), ensure_ascii=False) + "\n")
            fh.flush()
            count += 1
        os.fsync(fh.fileno())
    return count


def completed_ids(path: str | os.PathLike[str]) -> set[tuple[str, str]]:
    """The ``(id, task)`` pairs already in a JSONL file (empty when it does not exist), for resuming."""
    path = Path(path)
    if not path.exists():
        return set()
    return {(p.id, p.task) for p in read_predictions(path)}


def infer_task(predictions: Sequence[Prediction]) -> str:
    """The single task of a prediction list; raises when it is empty or mixes tasks."""
    tasks = sorted({p.task for p in predictions})
    if not tasks:
        raise ValueError("no predictions")
    if len(tasks) > 1:
        raise ValueError(f"predictions mix tasks {tasks}; evaluate one task per file (or pass --task)")
    return tasks[0]


def exclude_file_names(predictions: Sequence[Prediction], file_names: Iterable[str]) -> tuple[list[Prediction], int]:
    """Drop predictions whose file name is in `file_names` (e.g. a training split); returns (kept, n_dropped)."""
    excluded = set(file_names)
    kept = [p for p in predictions if p.file_name not in excluded]
    return kept, len(predictions) - len(kept)


def train_file_names(split_path: str | os.PathLike[str]) -> set[str]:
    """File names in the TRAIN part of a split file (ours or the original's), via `hikari.data.split`."""
    return load_split(split_path).file_names("train")


def read_disease_labels(path: str | os.PathLike[str]) -> dict[str, str]:
    """Ground-truth disease per file name from a SkinCAP data folder, a split file (ours; the original's carries
    no labels), or an original HIKARI *diagnosis* prediction file (its ``ground_truth``)."""
    path = Path(path)
    if path.is_dir():
        return {record.file_name: record.disease for record in read_skincap(path, check_images=False).records}
    if not path.is_file():
        raise PredictionFileError(f"{path}: label source not found (expected a SkinCAP folder or a JSON file)")
    try:
        whole = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and "predictions" in whole:
        labels: dict[str, str] = {}
        for prediction in read_predictions(path):
            if prediction.task == "caption" or prediction.ground_truth is None:
                raise PredictionFileError(
                    f"{path}: item {prediction.id}: a caption prediction file has no ground-truth disease "
                    "(its stage2_disease is a prediction); pass a diagnosis prediction file, a split or SkinCAP"
                )
            labels[prediction.file_name] = prediction.ground_truth
        return labels
    if isinstance(whole, dict):
        split_labels = dict(load_split(path).labels)
        if not split_labels:
            raise PredictionFileError(
                f"{path}: this split file records no diseases (the original split format lists image paths "
                "only); pass a SkinCAP folder, one of our split files or an original diagnosis prediction file"
            )
        return split_labels
    # JSONL: our predictions carry ground truth for the diagnosis tasks and `disease` for captions.
    labels = {}
    for prediction in read_predictions(path):
        truth = prediction.disease or (prediction.ground_truth if prediction.task == "disease" else None)
        if truth is not None:
            labels[prediction.file_name] = truth
    if not labels:
        raise PredictionFileError(f"{path}: no ground-truth diseases in this prediction file")
    return labels

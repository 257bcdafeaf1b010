"""Resuming a run safely: only complete checkpoints, only settings that can still take effect, the train loss over
every step, and a finished run's files set aside (never overwritten) when a new run takes its folder.

A Trainer checkpoint is written file by file (weights, optimizer, scheduler, RNG, then `trainer_state.json`), so a
kill during a save leaves a folder that looks like the newest checkpoint but cannot be loaded. `last_checkpoint`
picks the newest *complete* one (its `trainer_state.json` parses and its adapter weights exist) and moves newer
incomplete ones aside, so `--resume` continues from the last good state instead of failing for ever.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hikari.config import ConfigError, RunConfig, dump_config

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Settings a resumed run may change: they act after training (eval), on logging and saving, or on how long to
# train. Every other setting is baked into the checkpoint (optimizer, schedule, data order, adapter, loss).
RESUMABLE = ("eval.", "guard.", "description", "train.epochs", "train.max_steps", "train.save_steps",
             "train.save_total_limit", "train.logging_steps", "train.num_workers", "data.max_pixels")  # fmt: skip
# What a finished run leaves in its folder (moved aside, not overwritten, when a new run starts there).
FINISHED_RUN_FILES = ("run_info.json", "metrics.json", "adapter", "config.resolved.yaml")


def is_complete(checkpoint: Path) -> bool:
    """A checkpoint the Trainer can resume from: its trainer_state.json (written last) parses and it holds
    adapter (or model) weights."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(checkpoint.glob("*.safetensors"))


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest complete checkpoint under `output_dir/checkpoints`, or None. Newer incomplete ones (a kill during
    a save) are renamed `incomplete-checkpoint-N-<time>` — kept for inspection, invisible to the Trainer."""
    ckpt_dir = Path(output_dir) / CHECKPOINTS
    if not ckpt_dir.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in ckpt_dir.iterdir()
                    if p.is_dir() and (m := _CHECKPOINT.match(p.name))), reverse=True)  # fmt: skip
    for step, path in found:
        if is_complete(path):
            return str(path)
        aside = path.with_name(f"incomplete-{path.name}-{time.strftime('%Y%m%dT%H%M%S')}")
        path.rename(aside)
        logger.warning("%s is incomplete (interrupted while saving step %d); moved to %s — resuming from the "
                       "previous checkpoint", path, step, aside.name)  # fmt: skip
    return None


def checkpoint_step(checkpoint: str | None) -> int:
    match = _CHECKPOINT.match(Path(checkpoint).name) if checkpoint else None
    return int(match.group(1)) if match else 0


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: obj}


def config_changes(previous_yaml: str, config: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted key → (before, now) for every setting that differs between a saved config and `config`."""
    before = _flatten(yaml.safe_load(previous_yaml) or {})
    now = _flatten(yaml.safe_load(dump_config(config)) or {})
    return {k: (before.get(k), now.get(k)) for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)}


def check_resume(output_dir: Path, config: RunConfig) -> dict[str, tuple[Any, Any]]:
    """The changes a resumed run applies (recorded in run_info.json); raises ConfigError naming every changed
    setting that a resumed run cannot apply (it would write one config and train with another)."""
    saved = Path(output_dir) / "config.resolved.yaml"
    if not saved.is_file():
        return {}
    changes = config_changes(saved.read_text(encoding="utf-8"), config)
    refused = {k: v for k, v in changes.items() if not k.startswith(RESUMABLE)}
    if refused:
        shown = "; ".join(f"{k}: {before!r} → {now!r}" for k, (before, now) in refused.items())
        raise ConfigError(f"--resume: {shown} changed since {saved} was written, and a resumed run cannot apply "
                          f"{'it' if len(refused) == 1 else 'them'} (the checkpoint holds the old optimizer, "
                          "schedule and data order). Resume with the old settings, or train into another "
                          "output_dir")  # fmt: skip
    return changes


def set_aside_finished_run(output_dir: Path) -> Path | None:
    """Move a finished run's files (run_info.json, metrics, adapter, config) into `replaced-<time>/`, so that a new
    run in the same folder never leaves a mix of old and new; returns that folder (None when there was nothing)."""
    out = Path(output_dir)
    present = [out / name for name in FINISHED_RUN_FILES if (out / name).exists()]
    if not (out / "run_info.json").exists() or not present:
        return None
    aside = out / f"replaced-{time.strftime('%Y%m%dT%H%M%S')}"
    aside.mkdir()
    for path in present:
        path.rename(aside / path.name)
    logger.warning("%s held a finished run; its files are now in %s", out, aside)
    return aside


class LogAtSave(TrainerCallback):
    """Log whenever a checkpoint is saved, so the checkpoint's log history covers every step before it (the train
    loss over all steps of a resumed run is then exact)."""

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> TrainerControl:  # fmt: skip
        if control.should_save:
            control.should_log = True
        return control

    on_epoch_end = on_step_end


def train_loss_over_all_steps(log_history: Sequence[Mapping[str, Any]], training_loss: float, initial_step: int,
                              global_step: int) -> float:  # fmt: skip
    """The mean loss over steps 1..global_step of a run resumed at `initial_step` — the Trainer's own
    `training_loss` averages only the steps since the resume.

    Each logged "loss" is the mean over the steps since the previous log; this call's steps not covered by a log
    are what `training_loss` (its mean over global_step - initial_step steps) holds beyond its logged ones."""
    if global_step <= 0:
        return training_loss
    total, previous, logged_now = 0.0, 0, 0.0
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue
        step = int(entry["step"])
        part = float(entry["loss"]) * (step - previous)
        total += part
        if step > initial_step:
            logged_now += part
        previous = step
    this_call = training_loss * (global_step - initial_step)
    return (total + this_call - logged_now) / global_step

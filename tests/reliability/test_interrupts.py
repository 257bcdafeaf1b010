"""Interrupted and concurrent runs: `predict` killed with -9 mid-run resumes to exactly the uninterrupted file; a
second `predict` on the same output fails at once; `train` killed inside a checkpoint save resumes from the
previous checkpoint to the same adapter as a run that never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hikari.evaluation.predictions import read_predictions

from .conftest import ONE_THREAD, ROOT, Damaged, assert_clean_failure, hikari


def predict_args(model: Path, damaged: Damaged, out: Path) -> list[str]:
    return ["predict", "--model", str(model), "--data", str(damaged.root), "--split", str(damaged.split), "--task",
            "caption", "--out", str(out), "--max-new-tokens", "24", "--batch-size", "2"]  # fmt: skip


def comparable(path: Path) -> list[tuple]:
    return sorted((p.id, p.status, p.raw_output, p.parsed) for p in read_predictions(path))


SLOW = """
import sys, time
from hikari.inference import predict
batch = predict._predict_batch
calls = [0]
def slow(*args, **kwargs):
    calls[0] += 1
    while calls[0] > 2:  # two batches written: hold the file (and its lock) until killed
        time.sleep(1.0)
    return batch(*args, **kwargs)
predict._predict_batch = slow
from hikari.cli import main
sys.argv = ["hikari", *{args!r}]
main()
"""


def test_predict_killed_mid_run_resumes_to_the_same_file_and_a_second_writer_fails_at_once(
    damaged: Damaged, tiny_model_dir: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "whole.jsonl"
    assert hikari(*predict_args(tiny_model_dir, damaged, whole)).returncode == 0

    out = tmp_path / "killed.jsonl"
    # The first writer stops after two batches and holds the file until it is killed, so that it is surely still
    # writing while the second one starts up, however slowly (a loaded machine).
    proc = subprocess.Popen([sys.executable, "-c", SLOW.format(args=predict_args(tiny_model_dir, damaged, out))],
                            cwd=ROOT, env={**os.environ, **ONE_THREAD}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while (not out.exists() or out.read_text().count("\n") < 4) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            time.sleep(0.05)
        second = hikari(*predict_args(tiny_model_dir, damaged, out))  # while the first one writes
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert_clean_failure(second, str(out), "being written by another process", f"pid {proc.pid}")
    done = out.read_text().count("\n")
    assert 4 <= done < len(comparable(whole))  # really killed mid-run

    resumed = hikari(*predict_args(tiny_model_dir, damaged, out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert comparable(out) == comparable(whole)  # greedy: the same lines, each once


def test_resuming_with_another_budget_is_refused_unless_forced(damaged: Damaged, tiny_model_dir: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "p.jsonl"
    args = predict_args(tiny_model_dir, damaged, out)
    first = hikari(*args[:-4], "--max-new-tokens", "4", "--limit", "3")
    assert first.returncode == 0, first.stderr[-2000:]
    assert_clean_failure(hikari(*args[:-4], "--max-new-tokens", "8", "--limit", "6"), "max_new_tokens=4",
                         "max_new_tokens=8", "--force-mixed")  # fmt: skip
    forced = hikari(*args[:-4], "--max-new-tokens", "8", "--limit", "6", "--force-mixed")
    assert forced.returncode == 0, forced.stderr[-2000:]
    budgets = [p.extra["generation"]["max_new_tokens"] for p in read_predictions(out)]
    assert budgets == [4, 4, 4, 8, 8, 8]  # each line says how it was made


KILLER = """
import os, signal, sys
import transformers
save_rng = transformers.Trainer._save_rng_state
def dying(self, output_dir):  # the weights and optimizer of this checkpoint are written; trainer_state.json is not
    if self.state.global_step == {step}:
        os.kill(os.getpid(), signal.SIGKILL)
    return save_rng(self, output_dir)
transformers.Trainer._save_rng_state = dying
from hikari.cli import main
sys.argv = ["hikari", *{args!r}]
main()
"""


def test_train_killed_inside_a_checkpoint_save_resumes_to_the_uninterrupted_adapter(
    damaged: Damaged, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tests.training.conftest import CPU_OVERRIDES

    def args(out: Path) -> list[str]:
        sets = [f"data.dir={damaged.root}", f"data.split={damaged.split}", f"output_dir={out}",
                f"model.base={tiny_model_dir}", *CPU_OVERRIDES, "train.max_steps=6", "train.save_steps=2",
                "train.learning_rate=3e-3", "train.lr_scheduler=constant", "guard.policy=off"]  # fmt: skip
        return ["train", "subaru", *(a for s in sets for a in ("--set", s))]

    whole = hikari(*args(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]

    run = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", KILLER.format(step=4, args=args(run))], cwd=ROOT,
                            env={**os.environ, **ONE_THREAD}, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    partial = run / "checkpoints" / "checkpoint-4"
    assert partial.is_dir() and not (partial / "trainer_state.json").exists()  # what the kill left

    resumed = hikari(*args(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint-4 is incomplete" in resumed.stderr
    info = json.loads((run / "run_info.json").read_text())
    assert info["resume"]["checkpoint"].endswith("checkpoint-2")
    final = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    reference = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    assert final.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(final[key], reference[key], atol=1e-6, rtol=1e-5)
    metrics = [json.loads((d / "metrics.json").read_text())["train"] for d in (run, tmp_path / "whole")]
    assert metrics[0]["global_step"] == metrics[1]["global_step"] == 6
    assert metrics[0]["train_loss"] == pytest.approx(metrics[1]["train_loss"], abs=1e-5)

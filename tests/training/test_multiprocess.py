"""Multi-process training through `accelerate launch` and the shipped launcher configs (configs/accelerate/).

Two CPU processes (gloo) with configs/accelerate/ddp.yaml must train exactly like one process with the same
global batch: same step-1 loss, same parameters after two plain-SGD steps (which needs HikariTrainer's loss to
be normalised by the token count of *all* processes and multiplied back by the process count that DDP divides
by), and identical parameters on both ranks. Both runs carry the original IBR penalty: the two processes add
its closed-form gradient after DDP's all-reduce, the single process back-propagates it, so equal updates also
show the penalty applied once per step across processes. The DeepSpeed configs cannot run here (no GPU, no
deepspeed); they are checked for what they hand the Trainer: every batch/accumulation/clipping value left to the
recipe.
"""

from __future__ import annotations

import json
import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hikari.config import RECIPE_DIR, load_config, resolve_recipe

from .conftest import step_losses, tiny_overrides, train_captured

ACCELERATE_DIR = RECIPE_DIR / "accelerate"
WORKER = Path(__file__).with_name("ddp_worker.py")
SGD = [
    "train.optim=sgd",  # the update is -lr * gradient, so a wrongly scaled gradient shows
    "train.learning_rate=0.5",
    "train.lr_scheduler=constant",
    "train.weight_decay=0",
    "train.max_grad_norm=0",
    "data.augment=false",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(
    tmp_path: Path, tiny_model_dir: Path, synth_dir: Path, synth_split: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def overrides(out: Path, batch_size: int, grad_accum: int, penalty_path: str = "auto") -> list[str]:
        extra = [f"model.base={tiny_model_dir}", *SGD, f"train.batch_size={batch_size}",
                 f"train.grad_accum={grad_accum}", "loss.penalty=ibr_ab", "loss.beta=0.2",
                 f"loss.penalty_path={penalty_path}"]  # fmt: skip
        return tiny_overrides(data_dir=synth_dir, split=synth_split, output_dir=out, steps=2, extra=extra)

    # 2 processes x batch 1 x accumulation 2 = the global batch of 4 that one process sees at batch 4.
    ddp_out, dump = tmp_path / "ddp", tmp_path / "dump"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ACCELERATE_DIR / "ddp.yaml"),
        "--num_processes", "2",
        "--main_process_ip", "127.0.0.1",
        "--main_process_port", str(_free_port()),
        str(WORKER), "altair", str(dump),
        *[arg for item in overrides(ddp_out, 1, 2) for arg in ("--set", item)],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the reference runs on CPU like the workers
    single = train_captured(
        load_config(resolve_recipe("altair"), overrides(tmp_path / "single", 4, 1, "autograd")),
        tmp_path / "single_capture",
    )
    ddp_metrics = json.loads((ddp_out / "metrics.json").read_text(encoding="utf-8"))["train"]
    ddp_losses = step_losses(ddp_metrics["log_history"])
    assert ddp_metrics["global_step"] == 2
    assert ddp_losses[1] == pytest.approx(single.losses[0], abs=1e-5)
    assert ddp_losses[2] == pytest.approx(single.losses[1], abs=1e-4)

    ranks = [load_file(str(dump / f"rank{r}.safetensors")) for r in (0, 1)]
    assert set(ranks[0]) == set(ranks[1]) == set(single.trainable)
    assert all(torch.equal(ranks[0][n], ranks[1][n]) for n in ranks[0])  # the replicas never drift apart
    ddp_update = torch.cat([(ranks[0][n] - single.initial[n]).flatten() for n in sorted(single.trainable)])
    one_update = torch.cat([(single.final[n] - single.initial[n]).flatten() for n in sorted(single.trainable)])
    assert one_update.norm() > 0
    assert float((ddp_update - one_update).norm() / one_update.norm()) < 1e-4
    saved = load_file(str(ddp_out / "adapter" / "adapter_model.safetensors"))  # rank 0 wrote the run's adapter
    assert all(torch.equal(saved[n.replace(".default.", ".")], ranks[0][n]) for n in ranks[0])


def test_python_m_hikari_cli_is_the_launch_entry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`accelerate launch ... -m hikari.cli train <recipe>` runs the package's __main__; here in-process."""
    monkeypatch.setattr(sys, "argv", ["hikari", "train", "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("hikari.cli", run_name="__main__")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--set" in out and "--resume" in out


@pytest.mark.parametrize(
    ("name", "distributed_type"),
    [("ddp", "MULTI_GPU"), ("deepspeed_zero2", "DEEPSPEED"), ("deepspeed_zero3", "DEEPSPEED")],
)
def test_launcher_configs_parse_and_document_their_use(name: str, distributed_type: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    path = ACCELERATE_DIR / f"{name}.yaml"
    header = path.read_text(encoding="utf-8").split("\ncompute_environment")[0]
    assert f"accelerate launch --config_file configs/accelerate/{name}.yaml" in header
    assert "-m hikari.cli train" in header
    cluster = load_config_from_file(str(path))
    assert str(cluster.distributed_type).rsplit(".", 1)[-1] == distributed_type
    assert cluster.mixed_precision == "no"  # bf16 follows model.dtype through the Trainer
    assert cluster.num_machines == 1 and not cluster.use_cpu
    assert bool(cluster.deepspeed_config) == (distributed_type == "DEEPSPEED")


def _deepspeed_config(name: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The DeepSpeed config `accelerate launch` builds from a launcher file (a DeepSpeedPlugin of its fields)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin

    for var in list(os.environ):
        if var.startswith("ACCELERATE_"):  # only the file's fields count
            monkeypatch.delenv(var)
    fields = dict(load_config_from_file(str(ACCELERATE_DIR / f"{name}.yaml")).deepspeed_config)
    # Fields the file sets would override the recipe (or clash with it): none of these may be set.
    assert not {"gradient_accumulation_steps", "gradient_clipping", "deepspeed_config_file"} & set(fields)
    return DeepSpeedPlugin(**fields).deepspeed_config


@pytest.mark.parametrize(("name", "zero_stage"), [("deepspeed_zero2", 2), ("deepspeed_zero3", 3)])
def test_deepspeed_configs_leave_batch_and_accumulation_to_the_recipe(
    name: str, zero_stage: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = _deepspeed_config(name, monkeypatch)
    assert ds["zero_optimization"]["stage"] == zero_stage
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert ds[key] == "auto", key  # the Trainer fills these from the recipe
    if zero_stage == 3:  # checkpoints must gather the partitioned LoRA tensors, or they hold empty ones
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.parametrize("name", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_configs_pass_the_trainers_consistency_check(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("deepspeed", reason="the Trainer's DeepSpeed config check needs the deepspeed package")
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from hikari.training.stages import training_arguments

    config = load_config(resolve_recipe("deneb"))
    hf = HfTrainerDeepSpeedConfig(_deepspeed_config(name, monkeypatch))
    hf.trainer_config_process(training_arguments(config, Path("unused")))
    assert hf.mismatches == []
    assert hf.config["gradient_accumulation_steps"] == config.train.grad_accum

"""Fixtures for the training tests: CPU overrides for the recipes, real batches, and one trained stage chain.

The chain is the demo's: subaru (init=base) → deneb (merged from subaru) → rigel (checkpoint from deneb) and
vega (merged from deneb), plus altair (init=base) and polaris_m0/m1 (merged from subaru). Each run trains a few
steps of the *real* recipe on the synthetic SkinCAP and the tiny Qwen3-VL through `run_training`, and records
what a run does not save itself: every parameter right after the model was prepared (before step 1) and after
training, which parameters were trainable, and the training examples. Runs are built on first use, once per
session even under pytest-xdist (a file lock in the session's shared temporary folder), and are read-only.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from hikari.config import RunConfig, load_config, resolve_recipe

# CPU settings for every test run (the recipes' values are for the 8B model on a GPU): fp32, no 4-bit, plain
# AdamW, small images, one sample per image, no warmup, a loss logged at every optimizer step, no evaluation.
CPU_OVERRIDES: tuple[str, ...] = (
    "model.dtype=fp32",
    "model.load_in_4bit=false",
    "model.gradient_checkpointing=false",
    "train.optim=adamw_torch",
    "train.batch_size=2",
    "train.grad_accum=1",
    "train.warmup_steps=0",
    "train.logging_steps=1",
    "train.save_steps=100000",
    "train.save_total_limit=1",
    "data.max_image_size=96",
    "data.samples_per_image=1",
    "eval.enabled=false",
)
CHAIN_STEPS = 6
CHAIN_LR = 3e-3  # the tiny model's 64-wide layers learn visibly in 6 steps at this rate (the 8B recipes use 2e-4)
# Recipe → the recipe whose run it starts from (model.previous_run); None: init=base on the tiny model.
PREVIOUS: dict[str, str | None] = {
    "subaru": None,
    "altair": None,
    "deneb": "subaru",
    "polaris_m0": "subaru",
    "polaris_m1": "subaru",
    "rigel": "deneb",
    "vega": "deneb",
    "antares": "deneb",
    "antares_ckpt": "deneb",
    "antares_as_run": "deneb",
}


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: the tiny model's ops gain nothing from more, and two xdist workers share 2 cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_overrides(
    *, data_dir: Path, split: Path, output_dir: Path, steps: int, extra: Sequence[str] = ()
) -> list[str]:
    """`--set` overrides that turn a built-in recipe into a short CPU run on synthetic data (later ones win)."""
    return [
        f"data.dir={data_dir}",
        f"data.split={split}",
        f"output_dir={output_dir}",
        *CPU_OVERRIDES,
        f"train.max_steps={steps}",
        *extra,
    ]


def adapter_key(parameter_name: str) -> str:
    """PEFT parameter name → its key in adapter_model.safetensors (the adapter name is dropped on save)."""
    return parameter_name.replace(".default.", ".")


@dataclass(frozen=True)
class CapturedRun:
    """A finished `run_training` run plus what the test harness saw in memory while it ran."""

    config: RunConfig
    out: Path
    losses: list[float]  # logged training loss of optimizer steps 1..N
    initial: dict[str, torch.Tensor]  # every parameter right after prepare_model (PEFT names)
    final: dict[str, torch.Tensor]  # every parameter after training
    trainable: frozenset[str]
    examples: list[dict[str, Any]]  # file_name, disease, group, prompt, target of each training example
    micro_batches: int  # training_step calls of this invocation (a resumed run only runs the remaining ones)

    @property
    def run_info(self) -> dict[str, Any]:
        return json.loads((self.out / "run_info.json").read_text(encoding="utf-8"))

    @classmethod
    def load(cls, capture_dir: Path, out: Path) -> CapturedRun:
        meta = json.loads((capture_dir / "capture.json").read_text(encoding="utf-8"))
        return cls(
            config=load_config(out / "config.resolved.yaml"),
            out=out,
            losses=meta["losses"],
            initial=load_file(str(capture_dir / "initial.safetensors")),
            final=load_file(str(capture_dir / "final.safetensors")),
            trainable=frozenset(meta["trainable"]),
            examples=meta["examples"],
            micro_batches=meta["micro_batches"],
        )


def step_losses(log_history: Sequence[dict[str, Any]]) -> dict[int, float]:
    """Optimizer step → logged training loss (the Trainer's per-step log entries, not the final summary)."""
    return {int(h["step"]): float(h["loss"]) for h in log_history if "loss" in h}


def train_captured(
    config: RunConfig, capture_dir: Path, *, resume: bool = False, trainer_class: type | None = None
) -> CapturedRun:
    """`run_training(config, evaluate=False)`, snapshotting parameters before step 1 and after the last step.

    `trainer_class` replaces `HikariTrainer` for this run (to compare against a deliberately wrong loss).
    """
    from hikari.training import stages

    seen: dict[str, Any] = {"micro_batches": 0}
    base_trainer = trainer_class or stages.HikariTrainer

    class CountingTrainer(base_trainer):  # type: ignore[misc, valid-type]
        def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            seen["micro_batches"] += 1
            return super().training_step(*args, **kwargs)
    prepare_model = stages.prepare_model
    build_examples = stages.build_examples

    def capturing_prepare(*args: Any, **kwargs: Any) -> Any:
        model, processor, base = prepare_model(*args, **kwargs)
        seen["model"] = model
        seen["initial"] = _snapshot(model)
        return model, processor, base

    def capturing_examples(*args: Any, **kwargs: Any) -> Any:
        examples = build_examples(*args, **kwargs)
        seen["examples"] = [
            {"file_name": ex.record.file_name, "disease": ex.record.disease, "group": ex.record.group,
             "prompt": ex.prompt, "target": ex.target}
            for ex in examples
        ]
        return examples

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stages, "prepare_model", capturing_prepare)
        # run_training looks these names up in `hikari.training.stages`: patch them there.
        patch.setattr(stages, "build_examples", capturing_examples)
        patch.setattr(stages, "HikariTrainer", CountingTrainer)
        result = stages.run_training(config, resume=resume, evaluate=False)

    model = seen["model"]
    losses = step_losses(result.train_metrics["log_history"])
    capture_dir.mkdir(parents=True, exist_ok=True)
    save_file(seen["initial"], str(capture_dir / "initial.safetensors"))
    save_file(_snapshot(model), str(capture_dir / "final.safetensors"))
    meta = {
        "losses": [losses[s] for s in sorted(losses)],
        "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
        "examples": seen["examples"],
        "micro_batches": seen["micro_batches"],
    }
    (capture_dir / "capture.json").write_text(json.dumps(meta), encoding="utf-8")  # written last: "done" marker
    return CapturedRun.load(capture_dir, Path(config.output_dir))


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu", copy=True).contiguous() for name, p in model.named_parameters()}


def session_shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shared by every xdist worker of this session (the workers' common parent), else the basetemp."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


class StageChain:
    """Trains the chained recipes on demand, each once per session (across xdist workers), in dependency order."""

    def __init__(self, root: Path, *, base_model: Path, data_dir: Path, split: Path) -> None:
        self.root = root
        self.base_model = base_model
        self.data_dir = data_dir
        self.split = split
        self._cache: dict[str, CapturedRun] = {}

    def overrides(self, name: str) -> list[str]:
        previous = PREVIOUS[name]
        start = f"model.previous_run={self.root / previous}" if previous else f"model.base={self.base_model}"
        return tiny_overrides(
            data_dir=self.data_dir,
            split=self.split,
            output_dir=self.root / name,
            steps=CHAIN_STEPS,
            extra=[f"train.learning_rate={CHAIN_LR}", start],
        )

    def get(self, name: str) -> CapturedRun:
        if name in self._cache:
            return self._cache[name]
        previous = PREVIOUS[name]
        if previous is not None:
            self.get(previous)
        out = self.root / name
        capture_dir = self.root / "_capture" / name
        with FileLock(str(self.root / f"{name}.lock")):
            if not (capture_dir / "capture.json").is_file():
                shutil.rmtree(out, ignore_errors=True)  # leftovers of an attempt that failed
                train_captured(load_config(resolve_recipe(name), self.overrides(name)), capture_dir)
        run = CapturedRun.load(capture_dir, out)
        self._cache[name] = run
        return run


@pytest.fixture(scope="session")
def stage_chain(tmp_path_factory: pytest.TempPathFactory) -> StageChain:
    """The chain's runs are shared by the xdist workers, so its inputs are too: the tiny model, the synthetic
    SkinCAP and its split are built once in the shared folder (the per-worker `tiny_model_dir` / `synth_dir` have
    the same content under other paths, and a run's resolved config, which names them, would differ from the
    config another worker expects)."""
    from hikari.data.split import split_dataset
    from hikari.demo.synth import write_synthetic_skincap
    from hikari.demo.tiny import build_tiny_qwen3vl

    from ..conftest import SYNTH_N, SYNTH_SEED

    root = session_shared_dir(tmp_path_factory) / "hikari-stage-chain"
    inputs = root / "_inputs"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / "inputs.lock")):
        if not (inputs / "complete").is_file():
            shutil.rmtree(inputs, ignore_errors=True)  # leftovers of an attempt that failed
            build_tiny_qwen3vl(inputs / "model", seed=0)
            write_synthetic_skincap(inputs / "skincap", n=SYNTH_N, seed=SYNTH_SEED)
            split_dataset(inputs / "skincap", seed=42, progress=False)[0].save(inputs / "split.json")
            (inputs / "complete").touch()
    return StageChain(root, base_model=inputs / "model", data_dir=inputs / "skincap", split=inputs / "split.json")

"""How hard a LoRA penalty pulls, relative to the cross-entropy, measured — and the β that gives another model the
same relative strength.

HIKARI-Antares's L2 penalty (`ibr_ab`, β = 0.01) collapsed Qwen3-VL-8B; the same β barely touches a 128-wide model.
β alone does not say how strong a penalty is: its gradient β·p/σ² is set by the size of the LoRA elements p (PEFT
draws A uniformly in ±1/√in, so it shrinks with the layer's width) while the cross-entropy's gradient on the same
elements depends on the width, the loss, the learning rate (B grows from zero at about the learning rate per step
under Adam, and the CE gradient on A is proportional to B) and the batch.

What decides the outcome under Adam is the penalty's share of each element's update. Adam divides each element's
averaged gradient by the root of its averaged square, so with a CE gradient that fluctuates with RMS σ_e and a
steady penalty gradient g_e the penalty moves the element towards zero by about lr · g_e / √(σ_e² + g_e²) per step —
a function of r_e = |g_e| / σ_e alone, whatever the gradients' absolute size. The gradient-norm ratio
‖∇penalty‖ / ‖∇CE‖ (what the collapse guard logs) is dominated by the few largest CE gradients and says little about
that; r_e is what Adam sees.

**Relative strength** (`PenaltyStrength.strength`): the median over the lora_A elements of r_e, with |g_e| averaged
and σ_e the root-mean-square of the CE gradient over the first `steps` optimizer steps (the step's whole
accumulated gradient, before clipping) of a run with its own settings. lora_A is where the published collapse
starts: B starts at zero (and stays there for the first two steps under a linear warm-up, whose first learning
rate is 0), so for the first steps the CE gradient on A is zero or near it while the penalty on the random A is
not. r_e describes how hard the penalty steers each element while a collapse would start; where Adam eventually
settles is set by the mean gradients. The penalty gradient is linear in β and, over a handful of steps, the CE
gradients depend on it only a little, so the strength is *nearly* linear in β (10× β gave 10-13×): a run at β gives
the first estimate

    β_equivalent = β · strength_reference / strength_measured

(`equivalent_beta`), which `match_beta` refines by measuring again. `PenaltyStrengthProbe` measures it
inside `HikariTrainer` (which hands over the CE-only gradients at the end of each step's backward passes) and stops
the run after `steps` steps; `measure_penalty_strength` runs a recipe for that long.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from hikari.config import load_config, resolve_recipe
from hikari.training.penalties import LoraFactor
from hikari.training.stages import run_training

# Optimizer steps the strength is measured over (the demo and the 8B reference use the same number).
STRENGTH_STEPS = 8


@dataclass(frozen=True)
class PenaltyStrength:
    """A run's penalty strength relative to the CE, over its first `steps` optimizer steps.

    `strength`: median over lora_A elements of mean|∇penalty| / RMS(∇CE) (see the module docstring; elements
    with neither gradient are left out, those with a penalty gradient and no CE gradient count as infinite);
    `strength_b`: the same over lora_B elements; `share_a_dominated`: share of lora_A elements whose r_e > 1 (the
    penalty decides their update direction); `norm_ratios`: ‖∇penalty‖ / ‖∇CE‖ over all LoRA tensors per step (the
    guard's measure, for comparison); `norm_ratio`: their median over steps 2.. (at step 1 B = 0);
    `learning_rates`: the learning rate each measured step ran with."""

    penalty: str
    beta: float
    steps: int
    strength: float
    strength_b: float
    share_a_dominated: float
    quantiles_a: tuple[float, float, float]  # 25th, 50th, 75th percentile of r_e over lora_A elements
    norm_ratios: list[float]
    norm_ratio: float
    elements_a: int
    elements_b: int
    learning_rates: list[float] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PenaltyStrength:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["quantiles_a"] = tuple(known.get("quantiles_a", (math.nan,) * 3))
        return cls(**known)


def equivalent_beta(beta: float, reference: PenaltyStrength, measured: PenaltyStrength) -> float:
    """The β at which the run behind `measured` (measured at `beta`) has the relative strength of `reference`."""
    if measured.beta != beta:
        raise ValueError(f"the measurement ran at beta {measured.beta}, not {beta}")
    if not (measured.strength > 0 and math.isfinite(measured.strength)):
        raise ValueError(f"cannot scale from a strength of {measured.strength}: the penalty must be on")
    return beta * reference.strength / measured.strength


class PenaltyStrengthProbe(TrainerCallback):
    """Measures a run's `PenaltyStrength` over its first `steps` optimizer steps, then stops the run.

    `HikariTrainer` calls `observe_gradients` at the end of each measured step's backward passes, when the LoRA
    gradients hold the CE part alone, with the penalty's closed-form gradient (which it adds afterwards). Runs whose
    penalty goes through autograd (DeepSpeed, FSDP, fp16 loss scaling) cannot be measured: `result()` says so.
    """

    def __init__(self, steps: int = STRENGTH_STEPS, *, stop: bool = True) -> None:
        if steps < 2:
            raise ValueError(f"the strength needs at least 2 steps (B = 0 at the first), got {steps}")
        self.steps = steps
        self.stop = stop
        self._sums: dict[int, list[torch.Tensor]] = {}  # id(param) -> [Σ g_ce², Σ |g_pen|]
        self._kind: dict[int, str] = {}
        self.norm_ratios: list[float] = []
        self.learning_rates: list[float] = []
        self.observed = 0  # measured steps so far
        self.penalty, self.beta = "none", 0.0

    def measures_gradients_at(self, step: int) -> bool:
        return 1 <= step <= self.steps

    @torch.no_grad()
    def observe_gradients(self, step: int, factors: Sequence[LoraFactor], penalty: str, beta: float,
                          penalised: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:  # fmt: skip
        """Take step `step`'s CE-only gradients (`.grad` of the factors' tensors) and the penalty gradient."""
        self.penalty, self.beta = penalty, beta
        pen = {id(p): g for p, g in zip(penalised, grads, strict=True)}
        ce_sq = pen_sq = 0.0
        for factor in factors:
            for kind, tensor in (("a", factor.a), ("b", factor.b)):
                if not tensor.requires_grad:
                    continue
                g_ce = (tensor.grad.detach().float() if tensor.grad is not None
                        else torch.zeros_like(tensor, dtype=torch.float32))  # fmt: skip
                g_pen = pen[id(tensor)].detach().float() if id(tensor) in pen else torch.zeros_like(g_ce)
                sums = self._sums.setdefault(id(tensor), [torch.zeros_like(g_ce), torch.zeros_like(g_ce)])
                sums[0] += g_ce.square()
                sums[1] += g_pen.abs()
                self._kind[id(tensor)] = kind
                ce_sq += float(g_ce.square().sum())
                pen_sq += float(g_pen.square().sum())
        ratio = math.sqrt(pen_sq) / math.sqrt(ce_sq) if ce_sq > 0 else (math.inf if pen_sq > 0 else 0.0)
        self.norm_ratios.append(ratio)
        self.observed += 1

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
        # The rate this step runs with (the scheduler advances after the optimizer step).
        if optimizer is not None and len(self.learning_rates) < self.steps:
            self.learning_rates.append(float(optimizer.param_groups[0]["lr"]))
        return control

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if self.stop and state.global_step >= self.steps:
            control.should_training_stop = True
        return control

    def result(self, **meta: Any) -> PenaltyStrength:
        """The strength over the observed steps; raises when the trainer handed over no gradients."""
        if not self._sums or self.observed < 2:
            raise RuntimeError(
                "no gradients were observed: the strength is measured by HikariTrainer with the closed-form penalty "
                "(loss.penalty_path auto or closed_form, no DeepSpeed/FSDP/fp16), for at least 2 steps"
            )
        n = self.observed
        ratios: dict[str, list[torch.Tensor]] = {"a": [], "b": []}
        for key, (ce2, pen) in self._sums.items():
            rms, pen = (ce2 / n).sqrt().flatten(), (pen / n).flatten()
            r = torch.where(rms > 0, pen / rms.clamp_min(1e-30), torch.full_like(rms, math.inf))
            keep = ((rms > 0) | (pen > 0)) & ~r.isnan()  # 0/0: no force on the element at all, left out
            ratios[self._kind[key]].append(r[keep])
        a = torch.cat(ratios["a"]) if ratios["a"] else torch.zeros(0)
        b = torch.cat(ratios["b"]) if ratios["b"] else torch.zeros(0)
        if a.numel() == 0:
            raise RuntimeError("no lora_A element had a CE or penalty gradient: nothing to measure")

        a, b = a.double().sort()[0], b.double().sort()[0]  # sorted once (torch.quantile refuses > 16M elements)

        def quantile(x: torch.Tensor, q: float) -> float:
            return float(x[round(q * (x.numel() - 1))])

        return PenaltyStrength(
            penalty=self.penalty, beta=self.beta, steps=n,
            strength=quantile(a, 0.5),
            strength_b=quantile(b, 0.5) if b.numel() else 0.0,
            share_a_dominated=float((a > 1).double().mean()),
            quantiles_a=tuple(quantile(a, q) for q in (0.25, 0.5, 0.75)),
            norm_ratios=[round(x, 6) for x in self.norm_ratios],
            norm_ratio=statistics.median(self.norm_ratios[1:]) if len(self.norm_ratios) > 1 else math.nan,
            elements_a=int(a.numel()), elements_b=int(b.numel()),
            learning_rates=self.learning_rates[:n], meta=dict(meta),
        )  # fmt: skip


def measure_penalty_strength(config: Any, *, steps: int = STRENGTH_STEPS, **meta: Any) -> PenaltyStrength:
    """Run `config` (a caption `RunConfig` with a LoRA penalty) for its first `steps` optimizer steps, with its own
    schedule, batch and learning rate, and return its `PenaltyStrength`. The run writes into its output_dir as any
    run does (no evaluation, no checkpoint)."""
    if config.loss.penalty == "none" or config.loss.beta == 0:
        raise ValueError(f"{config.name}: the penalty is off (loss.penalty={config.loss.penalty}, beta "
                         f"{config.loss.beta}); there is no strength to measure")  # fmt: skip
    config = config.model_copy(update={
        "eval": config.eval.model_copy(update={"enabled": False}),
        "train": config.train.model_copy(update={"save_steps": 10**9}),
        "guard": config.guard.model_copy(update={"policy": "off"}),
    })  # fmt: skip
    probe = PenaltyStrengthProbe(steps)
    run_training(config, evaluate=False, callbacks=[probe])
    return probe.result(recipe=config.name, learning_rate=config.train.learning_rate,
                        batch=config.train.batch_size * config.train.grad_accum, **meta)  # fmt: skip


REFERENCE_DIR = "reference_strength"


def reference_strength(recipe: str) -> PenaltyStrength:
    """The strength measured for `recipe` at Qwen3-VL-8B width (`benchmarks/penalty_strength.py`), shipped with the
    recipes as `recipes/reference_strength/<recipe>.json`."""
    path = reference_strength_path(recipe)
    if not path.is_file():
        raise FileNotFoundError(f"no reference strength for {recipe!r} ({path}); run benchmarks/penalty_strength.py")
    return PenaltyStrength.from_dict(json.loads(path.read_text(encoding="utf-8")))


def reference_strength_path(recipe: str) -> Path:
    """Where the shipped reference strength of `recipe` lives (it may not exist)."""
    return Path(str(resources.files("hikari") / "recipes" / REFERENCE_DIR / f"{recipe}.json"))


def prepare_chain(
    base: str | Path, data_dir: str | Path, split: str | Path, work: str | Path, *, overrides: Sequence[str] = ()
) -> Path:
    """Stage 1 (subaru) and Stage 2 (deneb, merged-init) one optimizer step each from `base`, into `work/subaru` and
    `work/deneb`, so that a Stage 3 recipe starts, as the published runs did, from a merged Stage 2 model with a
    fresh LoRA — built the same way for any model. Returns the deneb run directory."""
    work = Path(work)
    common = [f"data.dir={data_dir}", f"data.split={split}", *overrides]
    one_step = ["train.max_steps=1", "train.warmup_steps=0", "train.save_steps=100000", "eval.enabled=false"]
    previous: Path | None = None
    for stage in ("subaru", "deneb"):
        extra = [f"model.base={base}"] if previous is None else [f"model.previous_run={previous}"]
        config = load_config(resolve_recipe(stage), [*common, f"output_dir={work / stage}", *one_step, *extra])
        run_training(config, evaluate=False)
        previous = work / stage
    assert previous is not None
    return previous


def recipe_strength(
    previous_run: str | Path,
    data_dir: str | Path,
    split: str | Path,
    out: str | Path,
    *,
    recipe: str = "antares",
    beta: float | None = None,
    overrides: Sequence[str] = (),
    steps: int = STRENGTH_STEPS,
    schedule_steps: int | None = None,
    **meta: Any,
) -> PenaltyStrength:
    """The strength of `recipe` started from `previous_run`, at its own β or `beta`; the run goes to `out`.
    `schedule_steps` sets `train.max_steps`, so that the learning-rate schedule over the measured steps is that of
    a run of that length."""
    config = load_config(
        resolve_recipe(recipe),
        [f"data.dir={data_dir}", f"data.split={split}", *overrides, f"output_dir={out}",
         f"model.previous_run={previous_run}", *([f"train.max_steps={schedule_steps}"] if schedule_steps else []),
         *([f"loss.beta={beta}"] if beta is not None else [])],
    )  # fmt: skip
    return measure_penalty_strength(config, steps=steps, **meta)


def measure_from_base(
    base: str | Path,
    data_dir: str | Path,
    split: str | Path,
    work: str | Path,
    *,
    overrides: Sequence[str] = (),
    recipe: str = "antares",
    steps: int = STRENGTH_STEPS,
    schedule_steps: int | None = None,
    **meta: Any,
) -> PenaltyStrength:
    """`prepare_chain` from `base`, then `recipe_strength` of `recipe` at its own β (run in `work/<recipe>`)."""
    previous = prepare_chain(base, data_dir, split, work, overrides=overrides)
    return recipe_strength(previous, data_dir, split, Path(work) / recipe, recipe=recipe, overrides=overrides,
                           steps=steps, schedule_steps=schedule_steps, **meta)  # fmt: skip


@dataclass(frozen=True)
class MatchedBeta:
    """The β at which a run's measured strength matches a reference's, and every measurement on the way."""

    beta: float
    reference: float
    measured: list[tuple[float, float]]  # (β, strength) per measurement, in order
    converged: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def match_beta(
    measure: Any, reference: PenaltyStrength, *, beta: float, iterations: int = 3, tol: float = 0.05
) -> MatchedBeta:
    """Find the β whose measured strength is within `tol` (relative) of `reference.strength`: start from `beta`,
    scale linearly (`equivalent_beta`), re-measure, and repeat up to `iterations` measurements — the strength is
    only nearly linear in β (a stronger penalty also shrinks A and B, which changes both gradients), so one
    scaling step can miss by tens of percent. `measure(beta) -> PenaltyStrength` runs one measurement."""
    if not (reference.strength > 0 and math.isfinite(reference.strength)):
        raise ValueError(f"cannot match a reference strength of {reference.strength}")
    measured: list[tuple[float, float]] = []
    current = beta
    for _ in range(iterations):
        result = measure(current)
        if not (result.strength > 0 and math.isfinite(result.strength)):
            raise ValueError(f"the measurement at beta {current} gave a strength of {result.strength}: cannot scale")
        measured.append((current, result.strength))
        if abs(result.strength / reference.strength - 1) <= tol:
            return MatchedBeta(current, reference.strength, measured, True)
        if len(measured) >= 2 and measured[-1][1] != measured[-2][1]:
            # secant in log-log space: strength ∝ β^k locally
            (b0, s0), (b1, s1) = measured[-2], measured[-1]
            k = math.log(s1 / s0) / math.log(b1 / b0) if b1 != b0 and s0 > 0 and s1 > 0 else 1.0
            current = b1 * (reference.strength / s1) ** (1 / k if k > 0 else 1.0)
        else:
            current = equivalent_beta(current, reference, result)
    return MatchedBeta(measured[-1][0], reference.strength, measured,
                       abs(measured[-1][1] / reference.strength - 1) <= tol)  # fmt: skip

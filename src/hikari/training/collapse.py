"""Watch a caption run for supervision collapse, and warn or stop before it wastes a whole training.

HIKARI "Antares" (Stage 3 captions + an L2 penalty on the LoRA factors) collapsed into the previous stage's
one-line answer ("This image shows melanocytic nevus.", ~15 words vs ~62 in the references): the IBR penalty
β·Σ‖A‖²/(2σ²) pulls on A from step 0 — PEFT initialises A randomly and B at zero, so the cross-entropy has no
gradient on A yet — and the adapter is held near zero while the merged previous stage keeps answering.

`CollapseGuard` is a `transformers.TrainerCallback` that measures, cheaply and during training:

* every `grad_every` optimizer steps, on the trainable LoRA tensors, ‖∇penalty‖ / ‖∇CE‖, both before gradient
  clipping. `HikariTrainer` measures them itself at the end of the step's backward passes, where the gradients
  hold the CE part alone (it adds the penalty's closed-form gradient afterwards), and hands them over with
  `record_gradient_norms`; its guards then set no hooks. With any other trainer (or when the penalty must go
  through autograd: DeepSpeed, FSDP, fp16 loss scaling) the guard reads post-accumulate-grad hooks on the measured
  step — the accumulated gradient minus the penalty's closed-form gradient (`lora_penalty_gradients`) is the CE
  part (transformers calls `on_pre_optimizer_step` after clipping, when it could no longer be separated). Under
  DDP those hooks see the local gradient (before the all-reduce), an upper bound of the averaged one;
* the adapter's weight change Σ over adapted modules ‖scale·B·A‖_F (`lora_delta_norm`), tracked over steps;
* every `probe_every` steps and at the last step, greedy captions of a few fixed probe images from the in-memory
  model: mean length vs the references (words), distinct-2 over all outputs, the share of outputs that are a
  previous stage's one-line answer, and the disease mention rate — and once before the first step (the
  model's own starting point).

A probe whose captions are too short, repetitive or previous-stage one-liners has *symptoms*. Repetition is
relative (`repetition_floor`): distinct-2 below a share of the references' over the same probe images, or of the
step-0 captions' when the model started less varied — distinct-n depends on how many and how long the texts are,
and a weak model's healthy captions can sit under any fixed threshold (the tiny default's did). `patience`
consecutive such probes (or symptoms at the last step) make a detected collapse. `diagnose` names the cause
the evidence supports — "penalty-driven collapse" (penalty gradient ≫ CE gradient and ΔW not growing),
"previous-stage answers", "degenerate repetition" or "short captions" — with a remedy. Policy "warn" logs it and
goes on; "stop" saves a checkpoint and stops training. Every measurement goes into the Trainer's logs as
`guard/*`, and `report()` returns the final `CollapseReport` for metrics.json.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from peft.tuners.lora import LoraLayer
from transformers import TrainerCallback

from hikari.config import GuardConfig, LossConfig, default
from hikari.data import prompts as P
from hikari.data.labels import DISEASES, GROUPS
from hikari.evaluation.captions import disease_mention_rate
from hikari.evaluation.parsing import strip_thinking
from hikari.inference.engines import TransformersEngine
from hikari.training.penalties import (
    LoraFactor,
    lora_delta_norm_sum,
    lora_factors,
    lora_penalty_gradients,
    lora_trainable_tensors,
    squared_norm_sum,
)

logger = logging.getLogger(__name__)

PROBE_PROMPT_INDEX = 0  # STAGE3_EVAL_PROMPT, the prompt captions are evaluated with

# Relative change of ΔW between its first non-zero and its latest measurement below which it counts as "flat".
DELTA_W_FLAT_TOL = 0.05
# Σ‖ΔW‖ / Σ‖W₀‖ over the adapted modules below which the adapter counts as pinned near zero even while it grows
# (from B = 0 it always grows at first, however hard a penalty holds it).
DELTA_W_NEGLIGIBLE = 1e-3

_NON_ALNUM = re.compile(r"[^a-z]+")


# ---------------------------------------------------------------------------------------------------------------
# Caption statistics (pure functions, unit-tested on hand-made outputs)
# ---------------------------------------------------------------------------------------------------------------
def visible_caption(raw: str) -> str:
    """A generation without its reasoning (closed or dangling think tags removed), stripped."""
    return strip_thinking(raw)[0]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Unique word n-grams / all word n-grams over every text (lowercased whitespace words); 0 when none."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.lower().split()
        grams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def normalise_answer(text: str) -> str:
    """Lowercase letters only, single-spaced: "1. Benign Tumors, Nevi & Cysts" → "benign tumors nevi cysts"."""
    return " ".join(_NON_ALNUM.sub(" ", text.lower()).split())


def previous_stage_answers() -> list[str]:
    """Every answer a Stage 1/2 model is trained to give: "This image shows {label}." for each disease and each
    group name, and each bare group name (the Stage 1 target)."""
    labels = [*DISEASES, *GROUPS]
    return [P.stage2_target(label) for label in labels] + list(GROUPS)


def is_previous_answer(
    text: str, answers: Sequence[str], *, max_words: int = default(GuardConfig, "one_liner_max_words")
) -> bool:
    """Whether a (thinking-free) output is a previous stage's one-line answer: at most `max_words` words, and its
    normalised text equals or starts with a normalised answer, or starts with the fixed part of an answer
    template ("this image shows …" — the collapsed models also wrote labels such as "melanocytic nevus")."""
    norm = normalise_answer(text)
    if not norm or len(text.split()) > max_words:
        return False
    stems = {normalise_answer(P.STAGE2_TARGET.split("{", 1)[0])}
    for answer in answers:
        a = normalise_answer(answer)
        if a and norm.startswith(a):  # equal, or the answer followed by more words
            return True
    return any(stem and norm.startswith(stem) for stem in stems)


@dataclass(frozen=True)
class ProbeMetrics:
    """What one probe's captions look like (lengths in whitespace words of the thinking-free text)."""

    step: int
    gen_words: float
    ref_words: float
    distinct_2: float
    one_liner_share: float
    mention_rate: float | None  # % of captions naming the image's true disease; None without diseases
    n: int
    ref_distinct_2: float | None = None  # distinct-2 of the references of the same images

    @property
    def length_ratio(self) -> float:
        return self.gen_words / self.ref_words if self.ref_words > 0 else math.inf


def probe_metrics(
    outputs: Sequence[str],
    references: Sequence[str],
    *,
    diseases: Sequence[str] | None = None,
    previous_answers: Sequence[str] = (),
    one_liner_max_words: int = default(GuardConfig, "one_liner_max_words"),
    step: int = 0,
) -> ProbeMetrics:
    """Statistics of raw generations `outputs` against the `references` of the same images."""
    if len(outputs) != len(references) or not outputs:
        raise ValueError(f"probe_metrics needs as many outputs as references (>= 1), got {len(outputs)} and "
                         f"{len(references)}")  # fmt: skip
    visible = [visible_caption(o) for o in outputs]
    gen = sum(len(v.split()) for v in visible) / len(visible)
    ref = sum(len(r.split()) for r in references) / len(references)
    share = sum(is_previous_answer(v, previous_answers, max_words=one_liner_max_words) for v in visible) / len(visible)
    mention = disease_mention_rate(visible, diseases) if diseases else None
    return ProbeMetrics(step, gen, ref, distinct_n(visible, 2), share, mention, len(visible), distinct_n(references, 2))


def repetition_floor(probe: ProbeMetrics, config: GuardConfig, start: ProbeMetrics | None = None) -> float:
    """The distinct-2 below which a probe's captions count as degenerate repetition: `min_distinct_2_share` of the
    references' distinct-2 over the same images — or of the model's own step-0 captions' (`start`) when those were
    captions (reference-like length, not previous-stage one-liners) and less varied, so that a model that never
    wrote varied captions is not blamed for a collapse it did not have — and never below the absolute floor
    `min_distinct_2`. Distinct-n depends on how many and how long the texts are (N identical captions score 1/N
    however long; N short one-liners score far higher), so a probe is compared only with texts of the same images
    and of caption length, never with a fixed number."""
    comparable = (
        start is not None
        and start.length_ratio >= config.min_length_ratio
        and start.one_liner_share <= config.max_one_liner_share
    )
    found = (probe.ref_distinct_2, start.distinct_2 if comparable and start is not None else None)
    candidates = [d for d in found if d is not None and d > 0 and math.isfinite(d)]
    relative = config.min_distinct_2_share * min(candidates) if candidates else 0.0
    return max(relative, config.min_distinct_2)


# ---------------------------------------------------------------------------------------------------------------
# Adapter measurements
# ---------------------------------------------------------------------------------------------------------------
def lora_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable LoRA tensors (lora_A/lora_B weights, embedding A/B) of a PEFT model, in module order."""
    return lora_trainable_tensors(lora_factors(model))


@torch.no_grad()
def lora_delta_norm(model: torch.nn.Module, *, factors: Sequence[LoraFactor] | None = None) -> float:
    """Σ over adapted modules of ‖scale · B · A‖_F (A (r, in), B (out, r)), via r × r Gram matrices:
    ‖BA‖²_F = Σ (BᵀB) ∘ (AAᵀ), so the (out, in) product is never formed; modules of one shape are batched.
    `factors` (from `lora_factors(model)`) saves the walk over the model's modules."""
    factors = lora_factors(model) if factors is None else factors
    return float(lora_delta_norm_sum(factors)) if factors else 0.0  # one host sync for all modules


@torch.no_grad()
def lora_base_norm(model: torch.nn.Module) -> float:
    """Σ over LoRA-adapted modules of ‖W₀‖_F, the frozen base weights the adapters change."""
    norms = [m.get_base_layer().weight.float().norm() for m in model.modules() if isinstance(m, LoraLayer)]
    return float(torch.stack([n.cpu() for n in norms]).sum()) if norms else 0.0


def penalty_gradients(
    model: torch.nn.Module, params: Sequence[torch.nn.Parameter], kind: str, beta: float, sigma2: float
) -> list[torch.Tensor]:
    """∇ of `lora_penalty(model, kind, beta, sigma2)` wrt `params`, in closed form (zeros for "none", β = 0 or a
    tensor the penalty does not involve)."""
    if kind == "none" or beta == 0:
        return [torch.zeros_like(p) for p in params]
    _, penalised, grads = lora_penalty_gradients(lora_factors(model), kind, beta, sigma2)  # type: ignore[arg-type]
    by_id = {id(p): g for p, g in zip(penalised, grads, strict=True)}
    return [by_id[id(p)].to(p.dtype) if id(p) in by_id else torch.zeros_like(p) for p in params]


def gradient_ratio(total: Sequence[torch.Tensor], penalty: Sequence[torch.Tensor]) -> tuple[float, float, float]:
    """(‖∇penalty‖, ‖∇CE‖, ratio) from per-tensor total gradients (CE + penalty) and penalty gradients."""
    pen_sq = sum(float(p.float().square().sum()) for p in penalty)
    ce_sq = sum(float((g.float() - p.float()).square().sum()) for g, p in zip(total, penalty, strict=True))
    pen, ce = math.sqrt(pen_sq), math.sqrt(ce_sq)
    return pen, ce, (pen / ce if ce > 0 else (math.inf if pen > 0 else 0.0))


def delta_w_trend(history: Sequence[tuple[int, float]]) -> str:
    """"growing" | "flat" | "shrinking" | "unknown": the latest ΔW norm against the first non-zero one, and a
    drop below 95 % of its maximum counts as shrinking."""
    values = [v for _, v in history]
    nonzero = [v for v in values if v > 0]
    if len(values) < 2 or not nonzero:
        return "unknown"
    last, first = values[-1], nonzero[0]
    if last < (1 - DELTA_W_FLAT_TOL) * max(values):
        return "shrinking"
    if last <= (1 + DELTA_W_FLAT_TOL) * first:
        return "flat"
    return "growing"


# ---------------------------------------------------------------------------------------------------------------
# Decision
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CollapseReport:
    """The guard's findings: `detected`, the `cause` ("; "-joined names, "" when healthy), a readable `message`,
    the `evidence` (latest measurements, symptom list) and the optimizer `step` they refer to."""

    detected: bool
    cause: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    step: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def diagnose(
    probe: ProbeMetrics | None,
    *,
    penalty_ratio: float | None = None,
    delta_w_history: Sequence[tuple[int, float]] = (),
    base_norm: float | None = None,
    config: GuardConfig = GuardConfig(),
    step: int = 0,
    start: ProbeMetrics | None = None,
) -> CollapseReport:
    """Symptoms of one probe (plus the gradient evidence) → a report; `detected` = the captions have symptoms.

    The thresholds are `config`'s (`min_length_ratio`, `max_one_liner_share`, and for repetition
    `repetition_floor` — relative to the references and to `start`, the model's step-0 probe — for the captions;
    `max_penalty_ratio` for the gradient).

    A penalty (on, and above all when it dominates the gradient) is named as the cause of collapsed captions
    only while ΔW is flat, shrinking or negligible (Σ‖ΔW‖ < `DELTA_W_NEGLIGIBLE` · `base_norm`, the adapted
    modules' Σ‖W₀‖); on its own (healthy captions) it is listed as a symptom but is not a collapse.
    """
    trend = delta_w_trend(delta_w_history)
    rel = delta_w_history[-1][1] / base_norm if delta_w_history and base_norm else None
    pinned = trend in ("flat", "shrinking") or (rel is not None and rel < DELTA_W_NEGLIGIBLE)
    symptoms: list[str] = []
    if penalty_ratio is not None and penalty_ratio > config.max_penalty_ratio:
        symptoms.append("penalty_dominates")
    if trend in ("flat", "shrinking"):
        symptoms.append(f"delta_w_{trend}")
    elif pinned:
        symptoms.append("delta_w_negligible")
    caption_symptoms: list[str] = []
    if probe is not None:
        if probe.length_ratio < config.min_length_ratio:
            caption_symptoms.append("short_captions")
        if probe.one_liner_share > config.max_one_liner_share:
            caption_symptoms.append("previous_stage_answers")
        if probe.distinct_2 < repetition_floor(probe, config, start):
            caption_symptoms.append("low_distinct_2")
    symptoms += caption_symptoms
    evidence: dict[str, Any] = {
        "symptoms": symptoms,
        "penalty_grad_ratio": penalty_ratio,
        "delta_w_norm": delta_w_history[-1][1] if delta_w_history else None,
        "delta_w_trend": trend,
        "delta_w_relative": rel,
        "probe": asdict(probe) if probe is not None else None,
        "distinct_2_floor": repetition_floor(probe, config, start) if probe is not None else None,
        "start_distinct_2": start.distinct_2 if start is not None else None,
    }
    if not caption_symptoms:
        return CollapseReport(False, "", "no collapse symptoms" if probe is not None else "not probed yet",
                              evidence, step)  # fmt: skip

    causes: list[str] = []
    remedies: list[str] = []
    # A penalty that is on while the adapter is pinned or shrinking is named even when its gradient norm is the
    # smaller one: under Adam every element moves by ~lr whatever the gradient's size, so a penalty that pulls
    # each A element steadily towards zero wins against a larger but direction-changing CE gradient (measured
    # on the demo: antares and antares_ckpt at beta 1 collapse into one-liners with the guard's penalty/CE norm
    # ratio at 0.56-0.63; see hikari.training.strength for the per-element measure).
    penalty_on = penalty_ratio is not None and penalty_ratio > 0
    if pinned and ("penalty_dominates" in symptoms or penalty_on):
        causes.append("penalty-driven collapse")
        remedies.append("lower loss.beta or use loss.penalty=ibr_delta")
    assert probe is not None
    if "previous_stage_answers" in caption_symptoms:
        causes.append("previous-stage answers")
        remedies.append("check that the caption loss is falling (loss/ce) and raise the learning rate or train longer")
    if "low_distinct_2" in caption_symptoms and "previous_stage_answers" not in caption_symptoms:
        causes.append("degenerate repetition")
        remedies.append("check the targets and lower the learning rate")
    if not causes:
        causes.append("short captions")
        remedies.append("check train.max_length truncation and the caption targets")
    parts = []
    if penalty_ratio is not None:
        parts.append(f"penalty gradient {penalty_ratio:.3g}× the CE gradient")
    if trend != "unknown":
        size = f" ({rel:.1e} of the base weights)" if rel is not None else ""
        parts.append(f"ΔW norm {trend}{size}")
    parts.append(f"captions {probe.gen_words:.0f} words vs {probe.ref_words:.0f} in references")
    parts.append(f"{probe.one_liner_share:.0%} previous-stage one-liners")
    parts.append(f"distinct-2 {probe.distinct_2:.2f}")
    message = f"{', '.join(parts)} — supervision collapse ({'; '.join(causes)}); {'; '.join(remedies)}"
    return CollapseReport(True, "; ".join(causes), message, evidence, step)


# ---------------------------------------------------------------------------------------------------------------
# The callback
# ---------------------------------------------------------------------------------------------------------------
class CollapseGuard(TrainerCallback):
    """Monitors a caption run for collapse (see the module docstring); one instance per `Trainer`.

    Args:
        config: the run's `GuardConfig`: policy ("warn" logs, "stop" saves and stops training, "off" measures
            nothing), probe and measurement intervals, probe generation settings, `diagnose` thresholds, patience.
        loss: the run's `LossConfig`, for the LoRA penalty whose gradient the guard compares with the CE's
            (`penalty`, `beta`, `sigma2`).
        probe_images: PIL images generated on at each probe; empty = no caption probes.
        probe_references: reference captions of `probe_images`.
        probe_diseases: true diseases of `probe_images` (for the mention rate), or None.
        previous_answers: the previous stages' one-line answers (`previous_stage_answers()`).
        processor: the model's processor (generation pads left; its padding side is restored afterwards).
    """

    def __init__(
        self,
        config: GuardConfig = GuardConfig(),
        *,
        loss: LossConfig = LossConfig(),
        probe_images: Sequence[Any] = (),
        probe_references: Sequence[str] = (),
        probe_diseases: Sequence[str] | None = None,
        previous_answers: Sequence[str] = (),
        processor: Any = None,
    ) -> None:
        if len(probe_images) != len(probe_references):
            raise ValueError(f"{len(probe_images)} probe images but {len(probe_references)} references")
        if probe_diseases is not None and len(probe_diseases) != len(probe_images):
            raise ValueError(f"{len(probe_images)} probe images but {len(probe_diseases)} diseases")
        if probe_images and processor is None:
            raise ValueError("caption probes need the model's processor")
        self.config = config
        self.policy = config.policy
        self.probe_images, self.probe_references = list(probe_images), list(probe_references)
        self.probe_diseases = list(probe_diseases) if probe_diseases is not None else None
        self.previous_answers = list(previous_answers)
        self.processor = processor
        self.penalty, self.beta, self.sigma2 = loss.penalty, loss.beta, loss.sigma2

        self.delta_w_history: list[tuple[int, float]] = []
        self.base_norm: float | None = None
        self.ratio_history: list[tuple[int, float]] = []
        self.probes: list[ProbeMetrics] = []
        self.start_probe: ProbeMetrics | None = None  # the model's captions before its first step
        self.last_outputs: list[str] = []
        self._strikes = 0
        self._report = CollapseReport(False, "", "not probed yet", {}, 0)
        self._pending: dict[str, float] = {}
        self._hooks: list[Any] = []
        self._measure: dict[str, Any] | None = None
        self._factors: list[LoraFactor] | None = None
        # True when the trainer measures the gradient norms and calls `record_gradient_norms` (no hooks then).
        self.gradients_from_trainer = False

    # -- gradient measurement ------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        if self.policy != "off" and model is not None:
            self._record_delta_w(state.global_step, model)
            if self.probe_images and self.start_probe is None:
                # What the model writes before this run changes it: the baseline repetition is judged against.
                self.start_probe = self._probe_metrics(self.generate(model), state.global_step)
                self._pending["guard/start_distinct_2"] = self.start_probe.distinct_2
        return control

    def measures_gradients_at(self, step: int) -> bool:
        """Whether optimizer step `step` (1-based) is one whose gradient norms the guard records."""
        return self.policy != "off" and (step == 1 or step % self.config.grad_every == 0)

    def record_gradient_norms(self, step: int, penalty_norm: float, ce_norm: float) -> None:
        """Take ‖∇penalty‖ and ‖∇CE‖ (LoRA tensors, before clipping) of optimizer step `step` from a trainer that
        measures them itself (`gradients_from_trainer = True`; HikariTrainer does)."""
        ratio = penalty_norm / ce_norm if ce_norm > 0 else (math.inf if penalty_norm > 0 else 0.0)
        self.ratio_history.append((step, ratio))
        self._pending.update({"guard/penalty_grad_ratio": ratio, "guard/penalty_grad_norm": penalty_norm,
                              "guard/ce_grad_norm": ce_norm})  # fmt: skip

    def on_step_begin(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        step = state.global_step + 1  # the step about to run
        if self.gradients_from_trainer or model is None or not self.measures_gradients_at(step):
            return control
        params = lora_parameters(model)
        if not params:
            return control
        pen = penalty_gradients(model, params, self.penalty, self.beta, self.sigma2)
        # Per tensor, the post-accumulate hook keeps (‖G‖², ⟨G, P⟩) of the gradient accumulated so far; after the
        # last micro-batch it holds the whole step's (pre-clipping) values. ‖G − P‖² = ‖G‖² − 2⟨G, P⟩ + ‖P‖².
        # Values stay on the device (no host sync per tensor and micro-batch); summed once in on_pre_optimizer_step.
        seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def hook(p: torch.Tensor, i: int) -> None:
            if p.grad is not None:
                g = p.grad.detach().float()
                seen[i] = (g.square().sum(), (g * pen[i].float()).sum())

        self._hooks = [p.register_post_accumulate_grad_hook(lambda p, i=i: hook(p, i)) for i, p in enumerate(params)]
        self._measure = {"step": step, "pen": pen, "seen": seen}
        return control

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        if self._measure is None:
            return control
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        m, self._measure = self._measure, None
        pen_sq = float(squared_norm_sum(m["pen"]))
        if m["seen"]:
            g_sq = float(torch.stack([v[0].cpu() for v in m["seen"].values()]).sum())
            dot = float(torch.stack([v[1].cpu() for v in m["seen"].values()]).sum())
            self.record_gradient_norms(m["step"], math.sqrt(pen_sq), math.sqrt(max(g_sq - 2 * dot + pen_sq, 0.0)))
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        if self.policy == "off" or model is None:
            return control
        step = state.global_step
        if step % self.config.grad_every == 0 or step == 1:
            self._record_delta_w(step, model)
        last = control.should_training_stop or (state.max_steps > 0 and step >= state.max_steps)
        if self.probe_images and (step % self.config.probe_every == 0 or last):
            self._probe(step, model, final=last, control=control)
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        # Runs that ended before their scheduled last step (another callback stopped them) get a final probe too.
        if self.policy != "off" and model is not None and self.probe_images:
            if not self.probes or self.probes[-1].step != state.global_step:
                self._probe(state.global_step, model, final=True, control=None)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
        if not self._pending or logs is None:
            return control
        pending, self._pending = self._pending, {}
        logs.update(pending)  # seen by the callbacks after this one (TensorBoard)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(pending)  # the Trainer copied `logs` into its history before on_log
        return control

    # -- helpers -------------------------------------------------------------------------------------------------
    def _record_delta_w(self, step: int, model: torch.nn.Module) -> None:
        if self.delta_w_history and self.delta_w_history[-1][0] == step:
            return
        if self._factors is None:
            self._factors = lora_factors(model)  # the adapters stay the same objects for the whole run
        if not self._factors:
            return
        if self.base_norm is None:
            self.base_norm = lora_base_norm(model)
        value = lora_delta_norm(model, factors=self._factors)
        self.delta_w_history.append((step, value))
        self._pending["guard/delta_w_norm"] = value
        if self.base_norm:
            self._pending["guard/delta_w_relative"] = value / self.base_norm

    def generate(self, model: torch.nn.Module) -> list[str]:
        """Greedy captions of the probe images from `model` as it is now (eval mode, then its mode restored)."""
        was_training = model.training
        tokenizer = self.processor.tokenizer
        padding_side = tokenizer.padding_side
        model.eval()
        try:
            engine = TransformersEngine.from_model(model, self.processor, batch_size=self.config.batch_size)
            batch = [P.stage3_messages(image, PROBE_PROMPT_INDEX) for image in self.probe_images]
            return engine.generate(batch, max_new_tokens=self.config.max_new_tokens)
        finally:
            tokenizer.padding_side = padding_side
            model.train(was_training)

    def _probe_metrics(self, outputs: Sequence[str], step: int) -> ProbeMetrics:
        """`probe_metrics` of the probe images' `outputs` at optimizer step `step`."""
        return probe_metrics(
            outputs, self.probe_references, diseases=self.probe_diseases, previous_answers=self.previous_answers,
            one_liner_max_words=self.config.one_liner_max_words, step=step,
        )  # fmt: skip

    def _probe(self, step: int, model: torch.nn.Module, *, final: bool, control: Any) -> None:
        outputs = self.generate(model)
        self.last_outputs = outputs
        probe = self._probe_metrics(outputs, step)
        self.probes.append(probe)
        self._pending.update({"guard/gen_words": probe.gen_words, "guard/ref_words": probe.ref_words,
                              "guard/distinct_2": probe.distinct_2, "guard/one_liner_share": probe.one_liner_share})
        if probe.mention_rate is not None:
            self._pending["guard/mention_rate"] = probe.mention_rate
        ratio = self.ratio_history[-1][1] if self.ratio_history else None
        found = diagnose(probe, penalty_ratio=ratio, delta_w_history=self.delta_w_history, base_norm=self.base_norm,
                         config=self.config, step=step, start=self.start_probe)  # fmt: skip
        self._strikes = self._strikes + 1 if found.detected else 0
        confirmed = found.detected and (self._strikes >= self.config.patience or final)
        if self._report.detected and not confirmed:
            # Keep the last confirmed collapse (what warned or stopped), with the latest measurements added.
            self._report = CollapseReport(True, self._report.cause, self._report.message,
                                          {**self._report.evidence, "latest": found.evidence}, self._report.step)
            return  # fmt: skip
        if not confirmed:
            if found.detected:  # symptoms, not (yet) for `patience` probes: report them, undetected
                found = CollapseReport(False, found.cause, f"symptoms at step {step} ({self._strikes}/"
                                       f"{self.config.patience} probes): {found.message}", found.evidence,
                                       step)  # fmt: skip
            self._report = found
            return
        self._pending["guard/collapse_detected"] = 1.0
        self._report = found
        logger.warning("collapse guard, step %d: %s", step, found.message)
        if self.policy == "stop" and control is not None and not final:
            logger.warning("collapse guard: stopping training (policy 'stop'); a checkpoint is saved")
            control.should_save = True
            control.should_training_stop = True

    def report(self) -> CollapseReport:
        """The guard's findings so far (the first confirmed collapse, or the latest probe's state)."""
        return self._report

"""The Stage 3 ablation: every caption recipe trained from the same Stage 2 run, evaluated, diagnosed, plotted.

HIKARI's Stage 3 question is how to start captioning from a diagnosis model (checkpoint-init `rigel` vs
merged-init `vega`) and whether Selective Token Supervision + an L2 penalty on the LoRA weights helps (`antares`,
which collapsed). `run_stage3_ablation` trains each recipe from one Stage 2 run with identical data, split and
overrides, then for each:

* evaluates the captions (BLEU-1/2/4, ROUGE-1/L, disease mention rate, mean caption length);
* diagnoses collapse on the *whole* evaluation set with the guard's rules (`collapse.diagnose`: captions far
  shorter than the references or mostly the previous stage's one-line answer — the published failure), using the
  guard's gradient evidence (penalty/CE gradient ratio, ΔW trend) to name the cause — and reports separately
  whether the guard fired *during* training (`guard_fired`), so the table shows both what happened and whether the
  monitor saw it in time; repetition is judged relative to the references of the same images
  (`collapse.repetition_floor`) and flagged as low diversity;
* draws one PNG of the loss components (CE, weighted CE, penalty) and the adapter's ΔW norm over steps.

Results go to `OUT/ablation.json` and `OUT/ablation.md` (atomic writes); each recipe's run directory is
`OUT/<recipe>`. Nothing here changes a recipe: overrides apply to all recipes alike.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hikari.config import GuardConfig, RunConfig, load_config, resolve_recipe
from hikari.evaluation.predictions import read_predictions
from hikari.training.collapse import diagnose, distinct_n, previous_stage_answers, probe_metrics
from hikari.training.stages import run_training
from hikari.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

STAGE3_ABLATION = ("rigel", "vega", "antares", "antares_ckpt", "antares_as_run", "sts_safe")
CAPTION_COLUMNS = ("bleu_1", "bleu_2", "bleu_4", "rouge_1", "rouge_l", "mention_rate", "generated_words_mean")
# Series drawn per recipe: loss components (left panel) and adapter measurements (right panel).
LOSS_SERIES = ("loss/ce", "loss/weighted_ce", "loss/penalty")
ADAPTER_SERIES = ("guard/delta_w_norm",)


@dataclass(frozen=True)
class AblationArm:
    """One row of an ablation: a recipe run under its own `name` with `overrides` applied after the ablation's
    common ones (e.g. `antares` at another β: `AblationArm("antares_8b_eq", "antares", ("loss.beta=0.3",))`)."""

    name: str
    recipe: str
    overrides: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AblationArm:
        """`NAME=RECIPE[:KEY=VALUE[;KEY=VALUE...]]` (the CLI's `--arm`), or a plain recipe name or YAML path."""
        if "=" not in text.split(":", 1)[0]:
            return cls.of(text)
        name, rest = text.split("=", 1)
        recipe, _, sets = rest.partition(":")
        if not name.strip() or not recipe.strip():
            raise ValueError(f"--arm {text!r}: expected NAME=RECIPE[:KEY=VALUE;...], e.g. "
                             "antares_b1=antares:loss.beta=1")  # fmt: skip
        return cls(name.strip(), recipe.strip(), tuple(x.strip() for x in sets.split(";") if x.strip()))

    @classmethod
    def of(cls, recipe: str | AblationArm) -> AblationArm:
        """An arm as given, or a recipe (name or YAML path) under its own name."""
        if isinstance(recipe, AblationArm):
            return recipe
        name = Path(recipe).stem if str(recipe).endswith((".yaml", ".yml")) else str(recipe)
        return cls(name, str(recipe))


@dataclass
class AblationRow:
    """One recipe's outcome: caption metrics, collapse diagnosis on the eval set, the guard's verdict, files."""

    recipe: str
    run_dir: str
    metrics: dict[str, float]
    collapse_detected: bool
    collapse_cause: str
    collapse_message: str
    guard_fired: bool
    guard_cause: str
    plot: str | None
    final_delta_w_norm: float | None = None
    distinct_2: float | None = None
    reference_distinct_2: float | None = None
    low_diversity: bool = False
    penalty_grad_ratio: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    guard_step: int | None = None  # the step of the guard's first confirmed collapse (None: it never fired)


def stage2_inputs(stage2_run: str | Path) -> tuple[str, str]:
    """(data.dir, data.split) a finished Stage 2 run was trained on, from its config.resolved.yaml."""
    path = Path(stage2_run) / "config.resolved.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {stage2_run} is not a finished HIKARI run")
    resolved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data = resolved.get("data") or {}
    if not data.get("dir") or not data.get("split"):
        raise ValueError(f"{path}: data.dir and data.split must be set (found {data})")
    return str(data["dir"]), str(data["split"])


def _series(log_history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for entry in log_history:
        value = entry.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(int(entry.get("step", len(steps))))
            values.append(float(value))
    return steps, values


def plot_run_curves(log_history: Sequence[dict[str, Any]], out: str | Path, *, title: str) -> Path:
    """One PNG: loss components (log scale where positive) and ΔW norm over optimizer steps.

    Matplotlib's object API on an Agg canvas (no pyplot): no global backend or figure state is touched."""
    fig = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for key in LOSS_SERIES:
        steps, values = _series(log_history, key)
        if steps:
            left.plot(steps, values, marker=".", label=key.split("/", 1)[1])
    if any(v > 0 for key in LOSS_SERIES for v in _series(log_history, key)[1]):
        left.set_yscale("symlog", linthresh=1e-4)
    left.set_xlabel("step")
    left.set_title("loss components")
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=8)
    for key in ADAPTER_SERIES:
        steps, values = _series(log_history, key)
        if steps:
            right.plot(steps, values, marker=".", color="tab:purple", label="ΣΔW norm")
    right.set_xlabel("step")
    right.set_title("adapter change ‖scale·B·A‖")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    out = Path(out)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def diagnose_run(run_dir: str | Path) -> dict[str, Any]:
    """Collapse diagnosis of a finished caption run on its whole eval set (predictions.val.jsonl), with the
    guard's gradient/ΔW evidence from metrics.json; also whether the guard itself fired during training."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    guard = metrics.get("guard") or {}
    evidence = guard.get("evidence") or {}
    history = [
        (int(e["step"]), float(e["guard/delta_w_norm"]))
        for e in (metrics.get("train") or {}).get("log_history", [])
        if isinstance(e.get("guard/delta_w_norm"), (int, float))
    ]
    base_norm = None
    rel, last = evidence.get("delta_w_relative"), evidence.get("delta_w_norm")
    if rel and last:
        base_norm = last / rel
    predictions = read_predictions(run_dir / "predictions.val.jsonl")
    outputs = [p.raw_output for p in predictions]
    references = [p.ground_truth for p in predictions]
    diseases = [p.disease for p in predictions] if all(p.disease for p in predictions) else None
    probe = probe_metrics(outputs, references, diseases=diseases, previous_answers=previous_stage_answers())
    # The guard's own rules (its run's GuardConfig) on the whole eval set: captions far shorter than the
    # references, mostly the previous stage's one-line answers, or repetitive relative to the references of the
    # same images (`repetition_floor`).
    report = diagnose(
        probe, penalty_ratio=evidence.get("penalty_grad_ratio"), delta_w_history=history, base_norm=base_norm,
        config=_guard_config(run_dir),
    )
    reference_distinct_2 = distinct_n(references, 2)
    return {
        "report": report,
        "distinct_2": probe.distinct_2,
        "reference_distinct_2": reference_distinct_2,
        "low_diversity": "low_distinct_2" in report.evidence["symptoms"],
        "guard_fired": bool(guard.get("detected")),
        "guard_cause": str(guard.get("cause") or ""),
        "guard_step": int(guard["step"]) if guard.get("detected") and guard.get("step") is not None else None,
        "history": history,
        "eval": metrics.get("eval") or {},
        "log_history": (metrics.get("train") or {}).get("log_history", []),
    }


def _guard_config(run_dir: Path) -> GuardConfig:
    """The run's own guard settings (config.resolved.yaml), or the defaults when it has none."""
    path = run_dir / "config.resolved.yaml"
    if path.is_file():
        resolved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if isinstance(resolved.get("guard"), dict):
            return GuardConfig(**resolved["guard"])
    return GuardConfig()


def run_stage3_ablation(
    stage2_run: str | Path,
    out: str | Path,
    *,
    recipes: Sequence[str | AblationArm] = STAGE3_ABLATION,
    data_dir: str | Path | None = None,
    split: str | Path | None = None,
    overrides: Sequence[str] = (),
    steps: int | None = None,
    workers: int = 1,
    console: Any = None,
) -> list[AblationRow]:
    """Train, evaluate, diagnose and plot every recipe in `recipes` from `stage2_run`; write the table.

    Args:
        stage2_run: a finished Stage 2 run directory (deneb), the `model.previous_run` of every recipe.
        out: ablation directory; recipe runs go to `out/<recipe>`, the table to `out/ablation.{json,md}`.
        recipes: built-in recipe names, YAML paths or `AblationArm`s (a recipe under another name with its own
            overrides; default: the six Stage 3 recipes).
        data_dir, split: default to the Stage 2 run's own data and split.
        overrides: `key=value` overrides applied to every recipe alike (e.g. CPU settings).
        steps: `train.max_steps` for every recipe (None: the recipes' own schedule).
        workers: recipes trained at once, each in its own process with one torch thread (CPU machines: the
            number of cores; on one GPU keep 1). The results do not depend on it.
        console: a rich Console for progress lines (None: silent).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    default_data, default_split = stage2_inputs(stage2_run)
    data_dir, split = str(data_dir or default_data), str(split or default_split)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    configs = []
    arms = [AblationArm.of(r) for r in recipes]
    names = [arm.name for arm in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"ablation arms need distinct names, got {names}")
    for arm in arms:
        name = arm.name
        config = load_config(
            resolve_recipe(arm.recipe),
            [f"data.dir={data_dir}", f"data.split={split}", f"model.previous_run={stage2_run}",
             f"output_dir={out / name}", *overrides, *([f"train.max_steps={steps}"] if steps else []),
             *arm.overrides],
        )  # fmt: skip
        if config.task != "caption":
            raise ValueError(f"{arm.recipe}: the Stage 3 ablation takes caption recipes, this one's task is "
                             f"{config.task}")  # fmt: skip
        configs.append((name, config))

    rows: list[AblationRow] = []
    order = {name: i for i, (name, _) in enumerate(configs)}

    def collect(name: str, run_dir: Path) -> None:
        rows.append(_row(name, run_dir, out))
        row = rows[-1]
        if console is not None:
            console.print(f"{name}: {row.metrics} collapse={row.collapse_detected} ({row.collapse_cause or '-'}), "
                          f"guard fired={row.guard_fired}")  # fmt: skip
        rows.sort(key=lambda r: order[r.recipe])
        atomic_write_json(out / "ablation.json", {"stage2_run": str(stage2_run), "rows": [asdict(r) for r in rows]})

    if workers == 1:
        for name, config in configs:
            if console is not None:
                console.rule(f"stage 3 ablation: {name}")
            run_training(config, evaluate=True)
            collect(name, Path(config.output_dir))
    else:
        if console is not None:
            console.rule(f"stage 3 ablation: {len(configs)} recipes, {workers} at a time")
        context = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {name: pool.submit(_train_in_worker, config) for name, config in configs}
            for name, config in configs:
                futures[name].result()  # re-raises a worker's error
                collect(name, Path(config.output_dir))
    atomic_write_text(out / "ablation.md", render_ablation_markdown(rows))
    return rows


def _train_in_worker(config: RunConfig) -> str:
    """Train + evaluate one recipe in a worker process (one torch thread: the workers share the cores)."""
    torch.set_num_threads(1)
    run_training(config, evaluate=True)
    return str(config.output_dir)


def _row(name: str, run_dir: Path, out: Path) -> AblationRow:
    """Diagnose and plot one finished recipe run."""
    found = diagnose_run(run_dir)
    report = found["report"]
    plot = plot_run_curves(found["log_history"], out / f"{name}.png", title=f"{name}: loss components and ΔW")
    return AblationRow(
        recipe=name,
        run_dir=str(run_dir),
        metrics={k: float(found["eval"][k]) for k in CAPTION_COLUMNS if k in found["eval"]},
        collapse_detected=report.detected,
        collapse_cause=report.cause,
        collapse_message=report.message,
        guard_fired=found["guard_fired"],
        guard_cause=found["guard_cause"],
        plot=str(plot),
        final_delta_w_norm=found["history"][-1][1] if found["history"] else None,
        penalty_grad_ratio=report.evidence.get("penalty_grad_ratio"),
        evidence=report.evidence,
        distinct_2=found["distinct_2"],
        reference_distinct_2=found["reference_distinct_2"],
        low_diversity=found["low_diversity"],
        guard_step=found["guard_step"],
    )


def guard_cell(fired: bool, step: int | None) -> str:
    """A table's "guard fired" cell: "yes (step N)" (where it confirmed a collapse), "yes" or "no"."""
    if not fired:
        return "no"
    return "yes" if step is None else f"yes (step {step})"


def render_ablation_markdown(rows: Sequence[AblationRow]) -> str:
    """The ablation table (percentages for metrics, words for length) as Markdown."""
    header = ["recipe", "BLEU-1", "BLEU-2", "BLEU-4", "ROUGE-1", "ROUGE-L", "mention %", "words", "distinct-2",
              "collapse", "cause", "guard fired", "ΔW norm"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.recipe] + [f"{row.metrics[k]:.2f}" if k in row.metrics else "–" for k in CAPTION_COLUMNS]
        diversity = "–" if row.distinct_2 is None else f"{row.distinct_2:.2f}" + (" (low)" if row.low_diversity else "")
        cells += [diversity, "yes" if row.collapse_detected else "no", row.collapse_cause or "–",
                  guard_cell(row.guard_fired, row.guard_step),
                  f"{row.final_delta_w_norm:.3g}" if row.final_delta_w_norm is not None else "–"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

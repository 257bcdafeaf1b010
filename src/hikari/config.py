"""Typed, validated run configuration: one YAML file per experiment, checked once at load, then frozen.

A recipe YAML (configs/*.yaml) maps onto `RunConfig`. Unknown keys are errors (they are usually typos), and
every error names the YAML file and the dotted key. Command-line overrides use `--set key.sub=value`, parsed
with YAML scalar rules (`--set train.learning_rate=1e-4`, `--set lora.target=[q_proj,v_proj]`).
The resolved config is saved next to every checkpoint and result (`config.resolved.yaml`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Task = Literal["group", "disease", "caption"]
Init = Literal["base", "merged", "checkpoint"]
GroupContext = Literal["none", "ground_truth", "stage1", "soft"]

# Near-duplicate threshold of the split, its audit and reference retrieval: the pHash Hamming distance (of 256
# bits) at or below which two images count as one picture. 48 sits in the middle of the gap between the largest
# copy distance measured (36) and the smallest distance between distinct pictures (62); `hikari.data.hashing`
# lists the measurements.
DEFAULT_HASH_THRESHOLD = 48
# recall@10 an approximate retrieval index must reach at build time, else it answers exactly (retrieval/index.py).
DEFAULT_TARGET_RECALL = 0.95


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Frozen):
    dir: Path = Field(description="SkinCAP folder (csv/xlsx + skincap/<id>.png), real or synthetic.")
    split: Path = Field(description="Split JSON made by `hikari data split` (train part is trained on).")
    metadata: str = Field("csv", description="'csv', 'xlsx' or a path to the metadata file.")
    caption_column: str = Field("caption_zh_polish_en", description="English caption column (Stage 3 target).")
    exclude_flagged: bool = Field(False, description="Drop rows flagged 'Do not consider this image'.")
    top_k: int = Field(10, ge=1, description="Keep the K most frequent diseases (the original used 10).")
    oversample: bool = Field(True, description="Square-root oversampling of rare classes (capped at 3x).")
    augment: bool = Field(True, description="Rotation/flip/colour augmentation, p=0.5 each (the original's).")
    max_image_size: int = Field(672, ge=16, description="Images thumbnailed to at most this side (LANCZOS).")
    max_pixels: int = Field(40_000_000, ge=1, description="Largest image (width × height) any reader decodes, "
                            "checked from the header; a larger one (a decompression bomb) is an unreadable image.")
    allow_outside: bool = Field(False, description="Follow image files that are links to outside skincap/ "
                                "(refused by default, like '../' file names).")
    samples_per_image: int = Field(
        1, ge=1, le=3, description="Stage 2: one sample per training prompt (the original used 3)."
    )

    def reader_options(self) -> dict[str, Any]:
        """The `hikari.data.skincap.read_skincap` options this section sets."""
        return {"metadata": self.metadata, "caption_column": self.caption_column,
                "exclude_flagged": self.exclude_flagged, "top_k": self.top_k,
                "allow_outside": self.allow_outside}  # fmt: skip


class ModelConfig(_Frozen):
    base: str = Field(description="Hub id or local directory of the base VLM (used when init='base').")
    init: Init = Field(
        "base",
        description="'base': fresh LoRA on `base`; 'merged': merge previous_run's adapter into its base, then a "
        "fresh LoRA (merged-init, 'Way 2'); 'checkpoint': continue training previous_run's adapter "
        "('Way 1').",
    )
    previous_run: Path | None = Field(None, description="Run directory of the previous stage (merged/checkpoint).")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field("bf16", description="Training dtype.")
    load_in_4bit: bool = Field(
        False, description="QLoRA: 4-bit NF4 base via bitsandbytes (CUDA, or its CPU backend: bitsandbytes >= 0.50)."
    )
    upcast_frozen_fp32: bool = Field(
        False,
        description="With load_in_4bit: cast every frozen weight that is not 4-bit (embeddings, LM head, norms) to "
        "fp32, as PEFT's prepare_model_for_kbit_training does; the hidden states then run in fp32 too. Off: they "
        "stay in `dtype` (Qwen3-VL-8B: 2.5 GB less for the embedding and LM head, half the checkpointed "
        "activations).",
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub (off unless asked).")
    min_pixels: int | None = Field(None, description="Processor min_pixels override.")
    max_pixels: int | None = Field(None, description="Processor max_pixels override.")

    @model_validator(mode="after")
    def _previous_needed(self) -> ModelConfig:
        if self.init != "base" and self.previous_run is None:
            raise ValueError(f"model.init={self.init!r} needs model.previous_run (the previous stage's run dir)")
        return self


class LoraConfig(_Frozen):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: float = Field(16, gt=0, description="LoRA alpha (the code used 16; the docs said 32).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    target: Literal["language", "vision", "both"] | list[str] = Field(
        "both", description="Module set: language, vision, both, or explicit module names."
    )


class PromptConfig(_Frozen):
    train_group_context: GroupContext = Field(
        "none", description="Stage 2 group text in training prompts: none | ground_truth | stage1."
    )
    eval_group_context: GroupContext = Field(
        "none", description="Stage 2 group text at evaluation: none | ground_truth | stage1 | soft."
    )
    stage1_predictions: list[Path] | None = Field(
        None,
        description="Stage 1 prediction files (JSONL from `hikari predict --task group`, one per split part) "
        "for the 'stage1' group context.",
    )
    eval_prompt: str = Field(
        "P0", description="Stage 2 evaluation prompt: P0..P3 (inference prompts) or T0..T2 (training prompts)."
    )

    @model_validator(mode="after")
    def _stage1_needed(self) -> PromptConfig:
        if "stage1" in (self.train_group_context, self.eval_group_context) and self.stage1_predictions is None:
            raise ValueError("group context 'stage1' needs prompts.stage1_predictions")
        return self


class TrainConfig(_Frozen):
    epochs: float = Field(3, gt=0, description="Training epochs.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs).")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field("linear")
    warmup_steps: int = Field(5, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(2, ge=1, description="Per-device batch size.")
    grad_accum: int = Field(4, ge=1, description="Gradient accumulation steps.")
    optim: str = Field("adamw_torch", description="transformers optimizer name (adamw_8bit needs bitsandbytes).")
    max_grad_norm: float = Field(1.0, ge=0)
    seed: int = Field(42)
    max_length: int = Field(
        2048,
        ge=32,
        description="Token budget per sequence: answer tails beyond it are cut (and counted in run_info.json); a "
        "prompt (with its image tokens) that alone fills it is an error, since image tokens cannot be cut.",
    )
    save_steps: int = Field(100, ge=1, description="Checkpoint every N optimizer steps (and at the end).")
    save_total_limit: int | None = Field(2, description="Keep at most this many checkpoints.")
    logging_steps: int = Field(10, ge=1)
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")


class STSConfig(_Frozen):
    """Selective Token Supervision weights (`hikari.training.sts`): w(t) = w_ans(t) · w_reason(t) per caption token.

    Defaults are the original's values; `reason_mode` defaults to the intended span matching (use "vocab" to
    reproduce Antares). The fields sit flat in a recipe's `loss:` section (`LossConfig` extends this model).
    """

    w_recommend: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="w_ans of a sentence with recommendation wording."
    )
    w_diagnosis: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="w_ans of a sentence with diagnosis wording."
    )
    w_first: float = Field(
        0.6, ge=0, allow_inf_nan=False, description="w_ans of the first sentence (when no rule above applies)."
    )
    w_other: float = Field(0.8, ge=0, allow_inf_nan=False, description="w_ans of any other sentence.")
    gamma: float = Field(0.1, ge=0, allow_inf_nan=False, description="w_reason of a non-medical token.")
    reason_mode: Literal["span", "vocab"] = Field(
        "span", description="span: tokens overlapping a medical term; vocab: the original's per-token match."
    )
    normalize: Literal["mean", "global", "none"] = Field(
        "mean", description="mean: weights mean 1 per caption (original); global: divide by the step's total weight."
    )
    w_template: float = Field(
        1.0, ge=0, allow_inf_nan=False,
        description="Chat-template tokens around the caption (think tags, newlines, <|im_end|>): what makes a "
        "generation parse and stop, so they keep plain CE's weight.",
    )  # fmt: skip


class LossConfig(STSConfig):
    """Selective Token Supervision (per-token weights) and the LoRA penalty (IBR); defaults = plain CE."""

    sts: bool = Field(False, description="Weight answer tokens by w_ans x w_reason (Stage 3 captions).")
    penalty: Literal["none", "ibr_ab", "ibr_delta"] = Field(
        "none", description="ibr_ab: beta*sum(|A|^2+|B|^2)/(2 sigma2) (original); ibr_delta: on scale*B*A."
    )
    beta: float = Field(0.01, ge=0, description="Penalty strength.")
    sigma2: float = Field(1.0, gt=0, description="Penalty prior variance.")
    penalty_path: Literal["auto", "closed_form", "autograd"] = Field(
        "auto", description="How the penalty's gradient is applied: closed_form (added to the gradients once per "
        "step, before clipping), autograd (back-propagated), auto (closed_form unless DeepSpeed/FSDP/fp16 scaling)."
    )
    ce_backend: Literal["auto", "torch", "liger", "cce"] = Field("auto", description="Fused CE implementation.")


class EvalConfig(_Frozen):
    part: str = Field("val", description="Split part evaluated after training.")
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int | None = Field(None, description="Default: 64 (group/disease), 256 (caption).")
    limit: int | None = Field(None, description="Evaluate at most this many items (None: all).")
    enabled: bool = Field(True, description="Run generation + metrics at the end of training.")


class GuardConfig(_Frozen):
    """The collapse guard of caption runs (`hikari.training.collapse.CollapseGuard`); ignored by other tasks."""

    policy: Literal["warn", "stop", "off"] = Field("warn", description="warn: log; stop: save and stop; off.")
    probe_every: int = Field(50, ge=1, description="Optimizer steps between caption probes (and the last step).")
    n_probe: int = Field(8, ge=0, description="Probe images: the first N records of the eval part (0: none).")
    grad_every: int = Field(10, ge=1, description="Steps between penalty/CE gradient-ratio and ΔW measurements.")
    max_new_tokens: int = Field(256, ge=1, description="Generation budget of a probe caption.")
    batch_size: int = Field(4, ge=1, description="Probe generation batch size.")
    min_length_ratio: float = Field(0.4, ge=0, description="Symptom: captions shorter than this × references.")
    max_penalty_ratio: float = Field(10.0, gt=0, description="Penalty gradient above this × CE: penalty-driven.")
    max_one_liner_share: float = Field(0.5, ge=0, le=1, description="Symptom: more previous-stage one-liners.")
    min_distinct_2_share: float = Field(0.35, ge=0, le=1, description=(
        "Symptom (degenerate repetition): distinct-2 of the probe captions below this share of the references' over "
        "the same images, or of the model's own step-0 captions' when those were less varied."))  # fmt: skip
    min_distinct_2: float = Field(
        0.0, ge=0, le=1, description="Symptom: distinct-2 below this absolute floor (0: off)."
    )
    one_liner_max_words: int = Field(12, ge=1, description="Longer outputs are never a one-line answer.")
    patience: int = Field(2, ge=1, description="Consecutive probes with symptoms before a collapse is declared.")


class RagConfig(_Frozen):
    """Reference cases in Stage 2 prompts (RAG-in-Training, the Sirius recipe) and at evaluation."""

    index: Path | None = Field(
        None, description="Index directory from `hikari retrieve build` over this split's train part."
    )
    encoder: str | None = Field(
        None,
        description="Without `index`: build one into <output_dir>/rag-index with this encoder (R0-R4 or a "
        "tiny-encoder directory).",
    )
    alpha: float = Field(0.9, ge=0, le=1, description="Image weight of the hybrid score (R2's best: 0.9).")
    k_train: int = Field(1, ge=1, description="References per training sample (the original fitted only 1).")
    k_eval: int = Field(3, ge=0, description="References per evaluated image (0: evaluate without references).")
    reference_text: Literal["label", "label_description"] = Field(
        "label", description="Per reference: 'Reference i: {label}', optionally + its caption as Description."
    )
    train_query_text: Literal["caption", "none"] = Field(
        "caption",
        description="Query text of a training sample: its own caption (training data; the sample itself is "
        "excluded) or none (image only).",
    )
    eval_query_captions: list[Path] | None = Field(
        None,
        description="Stage 3 prediction files (JSONL) whose generated captions are the evaluation query texts; "
        "never the ground-truth captions. None: image-only queries.",
    )
    device: str = Field("cpu", description="Encoder device while computing references (before the VLM loads).")
    trust_remote_code: bool = Field(False, description="Allow hub code for the encoders (R3, R4 need it).")
    references: Literal["retrieved", "oracle", "noise"] = Field(
        "retrieved",
        description="Which references the prompts show (training and evaluation alike): 'retrieved' (the index's "
        "top k), or, for the reference-quality ablation, 'oracle' (random train images of the query's own disease) "
        "or 'noise' (random train images of one random other disease); always leak-free (no self, no same source, "
        "no near-duplicate).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> RagConfig:
        if (self.index is None) == (self.encoder is None):
            raise ValueError("give exactly one of rag.index (a built index) or rag.encoder (build one)")
        return self


class RunConfig(_Frozen):
    name: str = Field(description="Recipe name (subaru, deneb, vega, ...).")
    task: Task = Field(description="group (Stage 1), disease (Stage 2), caption (Stage 3).")
    output_dir: Path = Field(description="Run directory: adapter, checkpoints, logs, metrics.")
    data: DataConfig
    model: ModelConfig
    lora: LoraConfig = LoraConfig()
    prompts: PromptConfig = PromptConfig()
    train: TrainConfig = TrainConfig()
    loss: LossConfig = LossConfig()
    eval: EvalConfig = EvalConfig()
    guard: GuardConfig = GuardConfig()
    rag: RagConfig | None = Field(None, description="Reference cases (Stage 2 only); absent: no references.")
    description: str = Field("", description="What this recipe reproduces (free text).")

    @model_validator(mode="after")
    def _rag_is_stage2(self) -> RunConfig:
        if self.rag is not None and self.task != "disease":
            raise ValueError(f"rag: references are for the disease task (Stage 2), not {self.task!r}")
        return self


def default(section: type[BaseModel], name: str) -> Any:
    """The default of field `name` of config model `section`.

    Components and CLI options that offer a setting of a run config take its default from here (or take the
    config section itself), so every default is written once, in its field, and cannot drift."""
    info = section.model_fields[name]
    if info.is_required():
        raise KeyError(f"{section.__name__}.{name} has no default")
    return info.get_default(call_default_factory=True)


class ServeConfig(_Frozen):
    """Limits and network settings of `hikari serve` (command-line options take their defaults from here)."""

    host: str = Field("127.0.0.1", description="Interface to bind; anything but localhost is reachable by others.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: a free one).")
    max_upload_mb: float = Field(20.0, gt=0, description="Largest request body; larger ones are refused while "
                                 "they stream in (HTTP 413).")
    max_pixels: int = Field(default(DataConfig, "max_pixels"), ge=1, description="Largest image (width × height) "
                            "decoded; a larger one (a decompression bomb) is refused from its header (HTTP 413).")
    queue_size: int = Field(16, ge=1, description="Requests waiting for the model; when full, HTTP 503 with "
                            "Retry-After, so memory does not grow with load.")
    max_batch: int = Field(4, ge=1, description="Queued requests run together as one batch (dynamic batching).")
    max_new_tokens: int = Field(256, ge=1, description="Largest max_new_tokens / max_tokens a request may ask for.")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and the dotted key."""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides (values parsed as YAML scalars) to a nested dict copy."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key in {key.strip()!r}")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:  # absent, or an empty section in the YAML (`prompts:` with nothing under it)
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        try:
            # YAML 1.1 reads on/off/yes/no as booleans; kept as words here, `guard.policy=off` means 'off' (and a
            # boolean setting still takes them: pydantic reads 'off' as false)
            word = value.strip().lower() in ("on", "off", "yes", "no", "y", "n")
            node[parts[-1]] = value.strip() if word else yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value {value!r} is not valid YAML ({yaml_problem(exc)}); "
                              "quote it to pass a string") from None  # fmt: skip
    return out


def yaml_problem(exc: yaml.YAMLError, source: str | None = None) -> str:
    """A YAML error in one line: 'line L, column C: problem' (1-based, as an editor shows them)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{source + ' ' if source else ''}{where}{problem}"


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a recipe YAML, apply overrides, validate. Errors name the file and every bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}  # a BOM (Windows editors) is fine
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML at {yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (paths as strings), saved beside checkpoints and results."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


RECIPE_DIR = Path(__file__).resolve().parent / "recipes"


def recipe_names() -> list[str]:
    """Names of the built-in recipes (configs/*.yaml, shipped inside the package)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A YAML path as given, or a built-in recipe by name; unknown names list the valid ones."""
    path = Path(name_or_path)
    # Only a YAML suffix or an existing *file* makes it a path: a folder that happens to share a recipe's name
    # (e.g. running `hikari train subaru` inside runs/) must not shadow the built-in recipe.
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    candidate = RECIPE_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise ConfigError(f"unknown recipe {str(name_or_path)!r}; valid: {', '.join(recipe_names())} (or a YAML path)")

"""The HIKARI training recipe: read the config, build parts in dependency order, train, save, evaluate.

One function serves every published model; a recipe YAML decides the task (Stage 1 group / Stage 2 disease /
Stage 3 caption), the starting point (`model.init`: base | merged | checkpoint) and the prompts. Stages chain
through artifacts on disk: each run writes `run_info.json` naming the base it trained on and its adapter, and
the next stage reads exactly that.

Run directory:
    config.resolved.yaml   the validated config          run_info.json     base, adapter, split, data summary
    adapter/               final LoRA adapter + processor checkpoints/       Trainer checkpoints (resume)
    logs/                  TensorBoard events            metrics.json      train curve + eval metrics
    init-merged/           (merged-init) previous stage merged into its base
    predictions.<part>.jsonl   evaluation generations
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from peft import prepare_model_for_kbit_training
from torch.utils.tensorboard import SummaryWriter
from transformers import TrainerCallback, TrainingArguments
from transformers.integrations import TensorBoardCallback

from hikari import __version__
from hikari.config import ConfigError, RunConfig, dump_config
from hikari.data.images import load_rgb, set_max_pixels
from hikari.data.records import SkinCapRecord
from hikari.data.split import SplitRecords, load_split, read_split_records
from hikari.evaluation.predictions import read_predictions
from hikari.inference.scoring import soft_group_text
from hikari.models.batching import VLMCollator
from hikari.models.load import load_model, load_processor, nf4_quantization_config
from hikari.models.lora import add_lora, describe_adapter, load_adapter, merge_adapter_into_base
from hikari.retrieval.encoders import resolve_encoder
from hikari.retrieval.index import HybridIndex
from hikari.retrieval.references import (
    build_reference_index,
    cached_references,
    check_index_matches_split,
    controlled_references,
    generated_captions,
    triples_from_dicts,
)
from hikari.training.collapse import CollapseGuard, previous_stage_answers
from hikari.training.cross_entropy import choose_backend
from hikari.training.data import STSCollator, SupervisedVLMDataset, build_examples
from hikari.training.evaluate import evaluate_model
from hikari.training.resume import (
    CHECKPOINTS,
    LogAtSave,
    check_resume,
    checkpoint_step,
    last_checkpoint,
    set_aside_finished_run,
    train_loss_over_all_steps,
)
from hikari.training.trainer import EpochSetter, HikariTrainer
from hikari.utils.io import atomic_write_json, atomic_write_text, sha256_file

logger = logging.getLogger(__name__)

RUN_INFO = "run_info.json"


@dataclass(frozen=True)
class RunResult:
    output_dir: Path
    adapter_dir: Path
    base_model: str
    train_metrics: dict[str, Any]
    eval_metrics: dict[str, Any] | None


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """The previous stage's run_info.json, with a clear error when the run never finished."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a finished HIKARI run (train it first, or check model.previous_run)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def run_records(config: RunConfig) -> SplitRecords:
    """Every part's records of a run's split, read with the run's `data` options and every image decoded.

    A file of the split missing from the data (or relabelled) is an error: training on a different set than the
    split describes would silently break the leak guarantees."""
    return read_split_records(config.data.dir, config.data.split, reader_options=config.data.reader_options(),
                              check_images=True)  # fmt: skip


def prepare_model(config: RunConfig, output_dir: Path) -> tuple[torch.nn.Module, Any, str]:
    """Load the starting model per `model.init` and attach the adapter to train. Returns (model, processor, base)."""
    m = config.model
    previous = read_run_info(m.previous_run) if m.previous_run is not None else None
    if m.init == "base":
        base = m.base
    elif m.init == "merged":
        assert previous is not None and m.previous_run is not None
        base = str(_merged_init(previous, Path(m.previous_run), output_dir, m.dtype, m.trust_remote_code))
    else:  # checkpoint: same base as the previous stage, same adapter tensors
        assert previous is not None
        base = previous["base_model"]
    model = load_model(base, dtype=m.dtype, load_in_4bit=m.load_in_4bit, trust_remote_code=m.trust_remote_code)
    processor = load_processor(
        base, min_pixels=m.min_pixels, max_pixels=m.max_pixels, trust_remote_code=m.trust_remote_code
    )
    if m.load_in_4bit and m.upcast_frozen_fp32:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=m.gradient_checkpointing)
    if m.init == "checkpoint":
        assert previous is not None and m.previous_run is not None
        # The adapter keeps its own rank/alpha/targets; the recipe's `lora` section does not apply.
        model = load_adapter(model, Path(m.previous_run) / previous["adapter"], trainable=True)
    else:
        lo = config.lora
        model = add_lora(model, r=lo.r, alpha=lo.alpha, dropout=lo.dropout, target=lo.target, seed=config.train.seed)
    if m.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name is deprecated
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model, processor, base


def _merged_init(previous: dict[str, Any], previous_run: Path, output_dir: Path, dtype: str, trust: bool) -> Path:
    """The previous stage merged into its base, in `<run>/init-merged` (reused while the adapter is unchanged).

    Only the main process merges; the others wait, then load the result. A stamp records the adapter's hash so a
    retrained previous stage is merged again instead of silently reusing a stale model.
    """
    merged_dir = output_dir / "init-merged"
    adapter_dir = previous_run / previous["adapter"]
    stamp = {"base": previous["base_model"], "adapter_sha256": sha256_file(adapter_dir / "adapter_model.safetensors")}
    stamp_path = merged_dir / "hikari_merge.json"
    with PartialState().main_process_first():
        current = json.loads(stamp_path.read_text(encoding="utf-8")) if stamp_path.is_file() else None
        if current != stamp and PartialState().is_main_process:
            merge_adapter_into_base(
                previous["base_model"],
                adapter_dir,
                merged_dir,
                save_dtype="fp32" if dtype in ("fp32", "auto") else dtype,
                trust_remote_code=trust,
            )
            atomic_write_json(stamp_path, stamp)
    return merged_dir


def training_device() -> torch.device:
    """Where `run_training` trains: the (local) CUDA device when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively: a CUDA GPU that supports it, or a CPU whose oneDNN does
    (AVX-512 BF16 / AMX; elsewhere bf16 would be emulated and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_runnable(config: RunConfig) -> None:
    """Fail before any data or model is loaded when a setting cannot run on this machine, naming the option: an
    explicit cross-entropy backend that cannot run here, an 8-bit optimizer or 4-bit base without bitsandbytes
    (or, without CUDA, without its CPU backend)."""
    try:
        choose_backend(config.loss.ce_backend, training_device())
    except ValueError as err:
        raise ConfigError(f"loss.ce_backend={config.loss.ce_backend!r}: {err}") from None
    if "8bit" in config.train.optim and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"train.optim={config.train.optim!r} needs the bitsandbytes package (pip install "
                          "'hikari[quant]'), or use train.optim=adamw_torch")  # fmt: skip
    if config.model.load_in_4bit:
        try:
            nf4_quantization_config()
        except RuntimeError as err:
            raise ConfigError(f"model.load_in_4bit=true: {err}") from None


def training_arguments(config: RunConfig, output_dir: Path) -> TrainingArguments:
    t = config.train
    use_bf16 = config.model.dtype == "bf16" and bf16_supported(training_device())
    return TrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        optim=t.optim,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        report_to=[],  # TensorBoard is attached explicitly so the events land in <run>/logs
        remove_unused_columns=False,
        dataloader_num_workers=t.num_workers,
        bf16=use_bf16,
        average_tokens_across_devices=True,
        use_cpu=not torch.cuda.is_available(),
    )


def run_training(
    config: RunConfig,
    *,
    resume: bool = False,
    evaluate: bool | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> RunResult:
    """Train one recipe end to end into `config.output_dir` and return where everything went.

    `callbacks` are added to the Trainer's (after the collapse guard and TensorBoard), e.g. to measure a run.

    The run folder's files change only once the run has started (data read, model loaded): then a finished run
    found there is moved into `replaced-<time>/` and the new config is written. `resume` continues from the newest
    complete checkpoint and refuses settings changed since it was written that a resumed run cannot apply."""
    check_runnable(config)
    set_max_pixels(config.data.max_pixels)  # every image this run decodes (the dataloader's workers inherit it)
    out = Path(config.output_dir)
    checkpoint = last_checkpoint(out) if resume else None
    resume_changes = check_resume(out, config) if checkpoint is not None else {}
    if resume and checkpoint is None:
        logger.warning("--resume: no complete checkpoint under %s/%s, starting from scratch", out, CHECKPOINTS)
    out.mkdir(parents=True, exist_ok=True)

    parts, dataset, split = run_records(config)
    train_records = parts.get("train", [])
    if not train_records:
        raise ValueError(f"{config.data.split}: the train part has no usable rows of {config.data.dir}")
    stage1_groups = _stage1_groups(config)
    # References are retrieved (encoders loaded, used, released) and cached before the VLM loads.
    train_refs, eval_refs, rag_info = rag_references(config, parts, out)
    examples = build_examples(
        train_records,
        config.task,
        seed=config.train.seed,
        samples_per_image=config.data.samples_per_image if config.task == "disease" else 1,
        group_context=config.prompts.train_group_context,
        stage1_groups=stage1_groups,
        references=train_refs,
    )
    train_set = SupervisedVLMDataset(
        examples,
        seed=config.train.seed,
        max_image_size=config.data.max_image_size,
        oversample=config.data.oversample,
        augment=config.data.augment,
    )
    model, processor, base = prepare_model(config, out)
    lc = config.loss
    if lc.sts:  # the loss section carries the STS weights
        collator: VLMCollator = STSCollator(processor, sts=lc, max_length=config.train.max_length)
    else:
        collator = VLMCollator(processor, max_length=config.train.max_length)
    guard = _collapse_guard(config, parts.get(config.eval.part, []), processor)
    trainer = HikariTrainer(
        model=model,
        args=training_arguments(config, out),
        train_dataset=train_set,
        data_collator=collator,
        # The guard comes before TensorBoard, so the guard/* values it adds to a log reach the events too.
        callbacks=[EpochSetter(train_set), LogAtSave(), *([guard] if guard is not None else []),
                   *_tensorboard(out / "logs"), *callbacks],
        loss=lc,
    )
    ce = trainer.ce_backend_choice
    logger.info("%s: cross-entropy %s (loss.ce_backend=%s: %s)", config.name, ce.name, ce.requested, ce.reason)
    replaced = None
    if trainer.is_world_process_zero():  # the run has started: now its folder may change
        replaced = set_aside_finished_run(out)
        atomic_write_text(out / "config.resolved.yaml", dump_config(config))
    result = trainer.train(resume_from_checkpoint=checkpoint)

    adapter_dir = out / "adapter"
    trainer.save_model(str(adapter_dir))  # every rank: under ZeRO-3 the adapter is gathered from all of them
    if trainer.is_world_process_zero():
        processor.save_pretrained(adapter_dir)
        # The Trainer also pickles its arguments there; the published adapter stays safetensors + JSON only.
        (adapter_dir / "training_args.bin").unlink(missing_ok=True)
    data_summary = {
        "n_rows": dataset.report.n_rows,
        "n_used": dataset.report.n_used,
        "skipped": dict(dataset.report.skipped),
        "parts": {p: len(r) for p, r in parts.items()},
        "n_train_examples": len(examples),
        "n_train_samples_after_oversampling": len(train_set),
        "n_truncated_sequences": collator.n_truncated,
    }
    initial_step = checkpoint_step(checkpoint)
    train_metrics = {
        "train_runtime_s": result.metrics.get("train_runtime"),
        # over every step of the run, also when it was resumed (the Trainer's own averages the resumed steps)
        "train_loss": train_loss_over_all_steps(trainer.state.log_history, result.training_loss, initial_step,
                                                trainer.state.global_step),  # fmt: skip
        "resumed_from_step": initial_step or None,
        "global_step": trainer.state.global_step,
        "log_history": trainer.state.log_history,
        **describe_adapter(model),
    }
    info = {
        "name": config.name,
        "task": config.task,
        "init": config.model.init,
        "base_model": base,
        "previous_run": str(config.model.previous_run) if config.model.previous_run else None,
        "adapter": "adapter",
        "split": str(config.data.split),
        "split_fingerprint": getattr(split, "fingerprint", None),
        "data": data_summary,
        "rag": rag_info,
        "cross_entropy": ce.to_dict(),
        "resume": {"checkpoint": checkpoint, "changed": {k: list(v) for k, v in resume_changes.items()}}
        if checkpoint is not None else None,
        "replaced_run": str(replaced) if replaced is not None else None,
        "precision": {"dtype": config.model.dtype, "load_in_4bit": config.model.load_in_4bit,
                      "upcast_frozen_fp32": config.model.load_in_4bit and config.model.upcast_frozen_fp32,
                      "bf16_autocast": trainer.args.bf16, "device": str(trainer.args.device)},
        "hikari_version": __version__,
    }
    eval_metrics = None
    if trainer.is_world_process_zero():
        atomic_write_json(out / RUN_INFO, info)
        do_eval = config.eval.enabled if evaluate is None else evaluate
        if do_eval and parts.get(config.eval.part):
            eval_metrics = evaluate_model(
                model, processor, parts[config.eval.part], config, out, stage1_groups=_stage1_groups(config, "eval"),
                references=eval_refs,
            )
        guard_report = guard.report().to_dict() if guard is not None else None
        atomic_write_json(out / "metrics.json", {"train": train_metrics, "eval": eval_metrics, "guard": guard_report})
    return RunResult(out, adapter_dir, base, train_metrics, eval_metrics)


def rag_references(
    config: RunConfig, parts: dict[str, list[SkinCapRecord]], out: Path
) -> tuple[dict[str, list[Any]] | None, dict[str, list[Any]] | None, dict[str, Any] | None]:
    """(train references, eval references, run_info entry) for a `rag` recipe; (None, None, None) otherwise.
    The references are (image path, label, caption or None) triples, as the prompts take them
    (`rag_reference_dicts` gives the full reference dicts with their scores)."""
    train, eval_refs, info = rag_reference_dicts(config, parts, out)
    if config.rag is None:
        return None, None, None
    reference_text = config.rag.reference_text

    def triples(refs: dict[str, list[dict[str, Any]]] | None) -> dict[str, list[Any]] | None:
        return None if refs is None else {n: triples_from_dicts(v, reference_text) for n, v in refs.items()}

    return triples(train), triples(eval_refs), info


def rag_reference_dicts(
    config: RunConfig, parts: dict[str, list[SkinCapRecord]], out: Path, *, train_part: bool = True
) -> tuple[dict[str, list[dict[str, Any]]] | None, dict[str, list[dict[str, Any]]] | None, dict[str, Any] | None]:
    """(train references, eval references, run_info entry) for a `rag` recipe as reference dicts (`Hit.to_dict`:
    score, cosines, label, caption, image path …); (None, None, None) otherwise. `train_part=False` skips the train
    references (returned as None), e.g. to evaluate a finished run.

    The index is `rag.index`, or built once into `<run>/rag-index` from the split's train part with
    `rag.encoder` (rebuilt when the split, the encoder or α changes). It must hold train-part images only. Per
    record the references come from a cache file `<run>/references.<part>.json` keyed by the index content, k,
    α and the query texts. Training queries may use the sample's own caption (`rag.train_query_text`);
    evaluation queries use generated Stage 3 captions (`rag.eval_query_captions`) or the image alone. With
    `rag.references` "oracle" or "noise" the index only supplies the candidates (`controlled_references`, drawn
    with the run's seed, not cached: they cost no encoding).
    """
    rag = config.rag
    if rag is None:
        return None, None, None
    split_path = Path(config.data.split)
    index_dir = Path(rag.index) if rag.index is not None else out / "rag-index"
    common = {"alpha": rag.alpha, "device": rag.device, "trust_remote_code": rag.trust_remote_code,
              "image_max_size": config.data.max_image_size}  # fmt: skip
    with PartialState().main_process_first():  # one process retrieves and caches; the others read the cache
        if rag.index is None and not _built_index_is_current(index_dir, split_path, rag.encoder or "", rag.alpha):
            build_reference_index(config.data.dir, split_path, rag.encoder or "", out=index_dir, alpha=rag.alpha,
                                  device=rag.device, trust_remote_code=rag.trust_remote_code,
                                  image_max_size=config.data.max_image_size)  # fmt: skip
        index = HybridIndex.load(index_dir)
        check_index_matches_split(index, split_path)
        evaluated = parts.get(config.eval.part, []) if rag.k_eval > 0 else []
        eval_refs = None
        train = None
        if rag.references != "retrieved":  # the reference-quality ablation: oracle or noise references
            if train_part:
                train = controlled_references(index, parts["train"], k=rag.k_train, kind=rag.references,
                                              seed=config.train.seed)  # fmt: skip
            if evaluated:
                eval_refs = controlled_references(index, evaluated, k=rag.k_eval, kind=rag.references,
                                                  seed=config.train.seed)  # fmt: skip
        else:
            captions = {r.file_name: r.caption for r in parts["train"]}
            if train_part:
                train = cached_references(out / "references.train.json", index_dir, parts["train"], k=rag.k_train,
                                          query_texts=captions if rag.train_query_text == "caption" else None,
                                          query_kind=rag.train_query_text, **common)  # fmt: skip
            if evaluated:
                texts = generated_captions(rag.eval_query_captions) if rag.eval_query_captions else None
                eval_refs = cached_references(
                    out / f"references.{config.eval.part}.json", index_dir, evaluated, k=rag.k_eval,
                    query_texts=texts, query_kind="stage3_captions" if texts else "none", **common,
                )  # fmt: skip
    info = {"index": str(index_dir), "encoder": index.info.encoder.get("name"), "alpha": rag.alpha,
            "references": rag.references,
            "k_train": rag.k_train, "k_eval": rag.k_eval, "reference_text": rag.reference_text,
            "train_query_text": rag.train_query_text,
            "eval_query_text": "stage3_captions" if rag.eval_query_captions else "none",
            "split_fingerprint": load_split(split_path).fingerprint}  # fmt: skip
    return train, eval_refs, info


def _built_index_is_current(index_dir: Path, split_path: Path, encoder: str, alpha: float) -> bool:
    """Whether `<run>/rag-index` was built from this split (path + fingerprint) with this encoder and α."""
    if not (index_dir / "index.json").is_file():
        return False
    meta = json.loads((index_dir / "index.json").read_text(encoding="utf-8"))
    _, root = resolve_encoder(encoder)
    wanted_ref = str(root) if root is not None else encoder
    return (
        meta.get("split") == str(split_path.resolve())
        and meta.get("split_fingerprint") == load_split(split_path).fingerprint
        and (meta.get("encoder") or {}).get("ref") == wanted_ref
        and meta.get("alpha") == alpha
    )


def _collapse_guard(config: RunConfig, probe_records: list[SkinCapRecord], processor: Any) -> CollapseGuard | None:
    """The collapse guard of a caption run (None for other tasks or policy "off"): probes the first
    `guard.n_probe` records of the eval part."""
    g = config.guard
    if config.task != "caption" or g.policy == "off":
        return None
    probe = probe_records[: g.n_probe]
    if g.n_probe and not probe:
        logger.warning("collapse guard: the %r part has no records; no caption probes", config.eval.part)
    return CollapseGuard(
        g, loss=config.loss,
        probe_images=[load_rgb(r.image_path, max_size=config.data.max_image_size) for r in probe],
        probe_references=[r.caption for r in probe], probe_diseases=[r.disease for r in probe],
        previous_answers=previous_stage_answers(), processor=processor,
    )  # fmt: skip


def _tensorboard(log_dir: Path) -> list[Any]:
    """A TensorBoard callback writing into `<run>/logs`, on the main process only."""
    if not PartialState().is_main_process:
        return []
    return [TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))]


def _stage1_groups(config: RunConfig, when: str = "train") -> dict[str, str] | None:
    """File name → Stage 1 predicted group, from a predictions JSONL (for 'stage1' group context)."""
    mode = config.prompts.train_group_context if when == "train" else config.prompts.eval_group_context
    if mode not in ("stage1", "soft") or config.prompts.stage1_predictions is None:
        return None
    preds = [p for path in config.prompts.stage1_predictions for p in read_predictions(path)]
    if mode == "stage1":
        return {p.file_name: p.parsed for p in preds}
    missing = [p.file_name for p in preds if "group_probabilities" not in p.extra]
    if missing:
        raise ValueError(
            f"soft group context needs group probabilities in {config.prompts.stage1_predictions} "
            f"(run `hikari predict --task group --group-probabilities`); missing for e.g. {missing[:3]}"
        )
    return {p.file_name: soft_group_text(p.extra["group_probabilities"]) for p in preds}

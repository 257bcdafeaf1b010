"""Loading Qwen3-VL (tiny or 8B, one code path), LoRA adapters (targets, stage chaining, merging), and the
collator that turns chat messages and answers into model batches.

    from hikari.models import load_model, load_processor, add_lora, merge_adapter_into_base
"""

from hikari.utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "batching": ("IGNORE_INDEX", "VLMCollator", "supervised_positions"),
    "load": ("describe_model", "load_model", "load_processor", "resolve_model_dir"),
    "lora": ("add_lora", "describe_adapter", "load_adapter", "lora_targets", "merge_adapter_into_base"),
})  # fmt: skip

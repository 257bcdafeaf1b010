"""The embedded default: synthetic SkinCAP (pictures and captions), the tiny Qwen3-VL with its tokenizer and chat
template, its generic pre-training, tiny retrieval encoders, and the demo pipelines (`hikari demo`). The library
packages never import this one: a researcher with the real data and the 8B model does not need it.

    from hikari.demo import write_synthetic_skincap, build_tiny_qwen3vl, run_demo
"""

from hikari.utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "captions": ("caption_corpus", "synth_caption"),
    "encoders": ("build_tiny_encoders", "train_tiny_encoders"),
    "pipeline": ("run_demo",),
    "pretrain": ("pretrain_tiny_vlm",),
    "synth": ("SynthSummary", "write_synthetic_skincap"),
    "tiny": ("TinyDims", "build_tiny_qwen3vl"),
})  # fmt: skip

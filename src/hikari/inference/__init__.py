"""Inference: transformers, vLLM and SGLang behind one engine interface, resumable split predictions, exact
answer scoring and the three-stage cascade.

    from hikari.inference import make_engine, run_predict, run_cascade
"""

from hikari.utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "cascade": ("CascadeResult", "render_summary", "run_cascade"),
    "engines": ("ENGINES", "Engine", "EngineUnavailable", "SGLangEngine", "TransformersEngine", "VLLMEngine",
                "make_engine"),
    "predict": ("PredictSummary", "resolve_prompt", "run_predict"),
    "scoring": ("choice_probabilities", "soft_group_text"),
})  # fmt: skip

"""Reference retrieval (RAG): the encoder registry R0–R4, the hybrid faiss index, leak-free reference lookup.

    from hikari.retrieval import HybridIndex, load_encoders, build_reference_index
"""

from hikari.utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "encoders": ("ENCODERS", "EncoderSpec", "Encoders", "load_encoders", "resolve_encoder"),
    "index": ("Exclusion", "Hit", "HybridIndex", "Reference"),
    "references": ("build_reference_index", "cached_references", "references_for_prediction",
                   "retrieve_references"),
})  # fmt: skip

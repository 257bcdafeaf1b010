"""HIKARI: cascaded vision-language models for skin-lesion diagnosis and clinical captioning."""

__version__ = "0.1.0"

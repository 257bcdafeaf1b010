"""Small shared helpers: atomic writes, fingerprints, a stopwatch, lazy package exports.

    from hikari.utils import atomic_write_json, atomic_directory
"""

from hikari.utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "io": ("Stopwatch", "atomic_directory", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "fingerprint_strings", "sha256_file"),
})  # fmt: skip

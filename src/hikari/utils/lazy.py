"""Lazy public API for a subpackage: its names resolve to their defining module on first access (PEP 562).

A subpackage's `__init__` names what it offers (`__all__`) without importing it: `from hikari.retrieval import
HybridIndex` loads `hikari.retrieval.index` (and faiss) only then, and `import hikari.data.labels` does not pay for
the rest of `hikari.data`. This is what keeps `hikari --help` from importing torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """(`__all__`, module `__getattr__`, module `__dir__`) for `package`, whose public names are `exports`
    (submodule name → the names it defines). A resolved name is cached in the package's namespace."""
    where = {name: f"{package}.{module}" for module, names in exports.items() for name in names}
    if len(where) != sum(len(names) for names in exports.values()):
        raise ValueError(f"{package}: a name is exported by two submodules")

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return sorted(where), __getattr__, __dir__

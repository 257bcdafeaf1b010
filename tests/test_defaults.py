"""Each default is stated once, in the config models: every library function, method and CLI option that offers
a run-config setting under its name either has no default of its own or takes the config's (`config.default`).
Checked over every module of the library and the CLI by signature, so a new parameter cannot drift either."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from typing import Any

import typer.models

import hikari
from hikari.config import (
    DEFAULT_HASH_THRESHOLD,
    DataConfig,
    GuardConfig,
    LossConfig,
    RagConfig,
    STSConfig,
    TrainConfig,
    default,
)

# Parameter name → the config default it stands for. (`alpha` is also LoRA's alpha, which has no default anywhere.)
SETTINGS: dict[str, Any] = {
    "beta": default(LossConfig, "beta"),
    "sigma2": default(LossConfig, "sigma2"),
    "penalty": default(LossConfig, "penalty"),
    "penalty_path": default(LossConfig, "penalty_path"),
    "ce_backend": default(LossConfig, "ce_backend"),
    "backend": default(LossConfig, "ce_backend"),
    "alpha": default(RagConfig, "alpha"),
    "k_train": default(RagConfig, "k_train"),
    "k_eval": default(RagConfig, "k_eval"),
    "k": default(RagConfig, "k_eval"),
    "max_image_size": default(DataConfig, "max_image_size"),
    "image_max_size": default(DataConfig, "max_image_size"),
    "max_size": default(DataConfig, "max_image_size"),
    "top_k": default(DataConfig, "top_k"),
    "metadata": default(DataConfig, "metadata"),
    "exclude_flagged": default(DataConfig, "exclude_flagged"),
    "max_length": default(TrainConfig, "max_length"),
    "hash_threshold": DEFAULT_HASH_THRESHOLD,
    **{name: default(STSConfig, name) for name in STSConfig.model_fields},
    # (The guard's `batch_size` and `max_new_tokens` are names every generating component uses for its own.)
    **{name: default(GuardConfig, name) for name in GuardConfig.model_fields
       if name not in ("batch_size", "max_new_tokens")},
    "max_words": default(GuardConfig, "one_liner_max_words"),
}
LIBRARY = re.compile(r"^hikari\.(config|utils|data|models|evaluation|retrieval|inference|training|cli)(\.|$)")


def _callables(module: Any) -> list[tuple[str, Any]]:
    out = []
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            out.append((name, obj))
        elif inspect.isclass(obj):
            out += [(f"{name}.{m}", f) for m, f in vars(obj).items() if inspect.isfunction(f)]
    return out


def _library_modules() -> list[Any]:
    names = [m.name for m in pkgutil.walk_packages(hikari.__path__, "hikari.") if LIBRARY.match(m.name)]
    return [importlib.import_module(n) for n in names if not n.endswith("__main__")]


def test_no_component_restates_a_config_default() -> None:
    checked, wrong = 0, []
    for module in _library_modules():
        for qualname, fn in _callables(module):
            for param in inspect.signature(fn).parameters.values():
                if param.name not in SETTINGS:
                    continue
                value = param.default
                if isinstance(value, typer.models.OptionInfo):
                    value = value.default
                if value is inspect.Parameter.empty or value is None:
                    continue
                checked += 1
                expected = SETTINGS[param.name]
                if isinstance(expected, float) and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                if value != expected or type(value) is not type(expected):
                    wrong.append(f"{module.__name__}.{qualname}({param.name}={value!r}): the config says {expected!r}")
    assert wrong == []
    assert checked >= 20  # the check reaches the components (a renamed parameter would silently escape it)


def test_the_published_literals_are_written_once_in_the_source() -> None:
    """β 0.01, α 0.9 and the collapse thresholds appear as a default only in their config field."""
    src = Path(hikari.__file__).parent
    text = {p: p.read_text(encoding="utf-8") for p in src.rglob("*.py")}
    literals = {"beta": "0.01", "alpha": "0.9", "min_length_ratio": "0.4", "max_penalty_ratio": "10.0",
                "max_one_liner_share": "0.5", "min_distinct_2_share": "0.35", "min_distinct_2": "0.0",
                "one_liner_max_words": "12"}  # fmt: skip
    for name, value in literals.items():
        # `name ... = value`, `name ... Field(value` or `name=value`, on one line
        pattern = rf"\b{name}\b[^\n]*?[=(]\s*{re.escape(value)}(?![\d.])"
        where = [(p.name, m.group(0)) for p, t in text.items() for m in re.finditer(pattern, t)]
        assert len(where) == 1 and where[0][0] == "config.py", (name, where)

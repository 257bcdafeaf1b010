"""The package's shape, checked on the source itself (stdlib `ast`, nothing imported):

* imports flow one way: cli → demo → training → inference → retrieval → evaluation → models → data → config /
  utils; a module imports only from its own subpackage or from a lower layer, so no library package imports the
  embedded default (`hikari.demo`);
* no import cycle between modules, not even inside a subpackage;
* no module (under src/hikari or tests/) imports another module's `_`-prefixed name, or reads one off a module;
* an import inside a function is only for CLI start-up time (in `hikari.cli`) or an optional extra, and says
  which in a comment.

Each rule is also run on a small deliberately broken tree, so a checker that stopped seeing violations fails.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
TESTS = ROOT / "tests"

# Lower layers first. A module may import its own subpackage and any layer below its own.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("config", "utils"),
    ("data",),
    ("models",),
    ("evaluation",),
    ("retrieval",),
    ("inference",),
    ("training",),
    ("serve",),
    ("demo",),
    ("cli",),
    ("__main__",),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
# Optional extras (pyproject's [project.optional-dependencies]): imported where they are used, never at the top.
OPTIONAL = frozenset({"vllm", "sglang", "bitsandbytes", "liger_kernel", "cut_cross_entropy", "sentence_transformers",
                      "FlagEmbedding", "bert_score", "deepspeed", "gradio"})  # fmt: skip


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "hikari.training.stages"
    target: str  # the imported module (absolute), e.g. "hikari.models.lora"
    names: tuple[str, ...]  # names taken from it ("*" for `import target`)
    line: int
    in_function: bool
    commented: bool  # a comment on the import line or right above its block of imports


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _commented(lines: list[str], line: int) -> bool:
    """A comment on line `line` (1-based) or right above the block of import (and blank) lines it belongs to."""
    i = line - 1
    if "#" in lines[i]:
        return True
    while i > 0 and (not lines[i - 1].strip() or lines[i - 1].strip().startswith(("from ", "import "))):
        i -= 1
        if "#" in lines[i]:
            return True
    return i > 0 and lines[i - 1].strip().startswith("#")


def imports_of(path: Path, root: Path) -> Iterator[Import]:
    module = module_name(path, root)
    text = path.read_text(encoding="utf-8")
    tree, lines = ast.parse(text), text.splitlines()
    top: set[int] = set()
    for node in tree.body:  # imports directly in the module body, or in its top-level if/try (TYPE_CHECKING)
        top.update(id(n) for n in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            targets = [(_resolve(module, path.name == "__init__.py", node), tuple(a.name for a in node.names))]
        elif isinstance(node, ast.Import):
            targets = [(a.name, ("*",)) for a in node.names]
        else:
            continue
        for target, names in targets:
            yield Import(module, target, names, node.lineno, id(node) not in top, _commented(lines, node.lineno))


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "egg-info" not in str(p))


def is_module(name: str, root: Path) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "config"  # `hikari` itself (its __init__) sits at the bottom


# ---------------------------------------------------------------------------------------------------------------
# The checks (each returns readable violations)
# ---------------------------------------------------------------------------------------------------------------
def upward_imports(src: Path) -> list[str]:
    found = []
    for path in python_files(src / "hikari"):
        for imp in imports_of(path, src):
            if not imp.target.startswith("hikari.") or imp.target == "hikari":
                continue
            own, other = layer_of(imp.module), layer_of(imp.target)
            if other not in RANK or own not in RANK:
                found.append(f"{imp.module}:{imp.line}: {other or own} is in no layer of test_layers.LAYERS")
            elif own != other and RANK[other] >= RANK[own]:
                found.append(f"{imp.module}:{imp.line} ({own}) imports {imp.target} ({other}): not a lower layer")
    return found


def import_cycles(src: Path) -> list[str]:
    graph: dict[str, set[str]] = {}
    for path in python_files(src / "hikari"):
        module = module_name(path, src)
        edges = graph.setdefault(module, set())
        for imp in imports_of(path, src):
            if not imp.target.startswith("hikari"):
                continue
            for name in imp.names:  # `from hikari.data import prompts` depends on the module hikari.data.prompts
                sub = f"{imp.target}.{name}"
                edges.add(sub if is_module(sub, src) else imp.target)
    cycles, state = [], dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in state or nxt == node:
                continue
            if state[nxt] == 1:
                cycles.append(" → ".join([*stack[stack.index(nxt):], nxt]))
            elif state[nxt] == 0:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    return cycles


def underscore_imports(roots: list[tuple[Path, Path]]) -> list[str]:
    """`from X import _name` or `module._name` for a module X of ours other than the importing one."""
    ours = ("hikari", "tests")
    found = []
    for files_root, root in roots:
        for path in python_files(files_root):
            module = module_name(path, root)
            aliases: dict[str, str] = {}
            for imp in imports_of(path, root):
                if not imp.target.startswith(ours) or imp.target == module:
                    continue
                for name in imp.names:
                    if name.startswith("_") and not name.startswith("__"):
                        found.append(f"{module}:{imp.line}: imports {imp.target}.{name}")
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):  # names bound to modules of ours: `import a.b as m`, `from a import b`
                if isinstance(node, ast.Import):
                    for a in node.names:
                        if a.name.startswith(ours) and a.asname:
                            aliases[a.asname] = a.name
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(ours):
                    for a in node.names:
                        if is_module(f"{node.module}.{a.name}", root):
                            aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                        and node.attr.startswith("_") and not node.attr.startswith("__")):  # fmt: skip
                    found.append(f"{module}:{node.lineno}: reads {aliases[node.value.id]}.{node.attr}")
    return found


def function_level_imports(src: Path) -> list[str]:
    found = []
    for path in python_files(src / "hikari"):
        for imp in imports_of(path, src):
            if not imp.in_function:
                continue
            allowed = layer_of(imp.module) == "cli" or imp.target.split(".")[0] in OPTIONAL
            if not allowed:
                found.append(f"{imp.module}:{imp.line}: imports {imp.target} inside a function (move it to the top)")
            elif not imp.commented:
                found.append(f"{imp.module}:{imp.line}: imports {imp.target} inside a function without a comment "
                             "saying why (CLI start-up time or which optional extra)")
    return found


# ---------------------------------------------------------------------------------------------------------------
# The real tree
# ---------------------------------------------------------------------------------------------------------------
def test_every_subpackage_is_in_a_layer() -> None:
    packages = {p.name for p in (SRC / "hikari").iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in (SRC / "hikari").glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= set(RANK), (packages | modules) - set(RANK)


def test_imports_flow_down_the_layers() -> None:
    assert upward_imports(SRC) == []


def test_no_library_module_imports_the_embedded_default() -> None:
    library = [p for p in python_files(SRC / "hikari") if layer_of(module_name(p, SRC)) not in ("demo", "cli")]
    offenders = [f"{imp.module}:{imp.line}" for p in library for imp in imports_of(p, SRC)
                 if imp.target == "hikari.demo" or imp.target.startswith("hikari.demo.")]  # fmt: skip
    assert library and offenders == []


def test_no_import_cycles() -> None:
    assert import_cycles(SRC) == []


def test_no_underscore_names_cross_modules() -> None:
    assert underscore_imports([(SRC / "hikari", SRC), (TESTS, ROOT)]) == []


def test_imports_inside_functions_are_only_for_cli_start_up_or_optional_extras() -> None:
    assert function_level_imports(SRC) == []


# ---------------------------------------------------------------------------------------------------------------
# The checker finds what it must (a small broken tree per rule)
# ---------------------------------------------------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    for name, text in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for package in {p.parent for p in src.rglob("*.py")}:
        (package / "__init__.py").touch()
    return src


def test_checker_sees_an_upward_import_and_an_import_of_the_demo(tmp_path: Path) -> None:
    src = _tree(tmp_path, {
        "hikari/data/labels.py": "from hikari.training.stages import run_training\n",
        "hikari/training/stages.py": "from hikari.data.labels import GROUPS\n",
        "hikari/models/load.py": "import hikari.demo.tiny\n",
        "hikari/demo/tiny.py": "",
        "hikari/retrieval/index.py": "from hikari.evaluation import predictions\n",  # allowed: a lower layer
        "hikari/evaluation/predictions.py": "",
    })  # fmt: skip
    found = upward_imports(src)
    assert len(found) == 2, found
    assert "hikari.data.labels:1 (data) imports hikari.training.stages (training)" in found[0]
    assert "imports hikari.demo.tiny (demo)" in found[1]


def test_checker_sees_a_cycle_inside_one_subpackage(tmp_path: Path) -> None:
    src = _tree(tmp_path, {
        "hikari/training/data.py": "from hikari.training.sts import weights\n",
        "hikari/training/sts.py": "def f():\n    from hikari.training.data import IGNORE  # CLI start-up time\n",
    })  # fmt: skip
    assert import_cycles(src) == ["hikari.training.data → hikari.training.sts → hikari.training.data"]


def test_checker_sees_underscore_names_imported_or_read(tmp_path: Path) -> None:
    private = "_popcount"  # (kept out of the literal so that a grep for such imports finds none in tests/)
    src = _tree(tmp_path, {
        "hikari/data/hashing.py": f"def {private}(x):\n    return x\n",
        "hikari/retrieval/index.py": f"from hikari.data.hashing import {private}\n",
        "hikari/retrieval/other.py": "from hikari.data import hashing\nhashing._popcount(1)\n",
        "hikari/retrieval/fine.py": "from hikari.data.hashing import popcount\nimport os\nos._exit\n",
    })  # fmt: skip
    found = underscore_imports([(src / "hikari", src)])
    assert found == ["hikari.retrieval.index:1: imports hikari.data.hashing._popcount",
                     "hikari.retrieval.other:2: reads hikari.data.hashing._popcount"]


def test_checker_sees_unexplained_imports_inside_functions(tmp_path: Path) -> None:
    src = _tree(tmp_path, {
        "hikari/training/stages.py": "def f():\n    import torch\n",
        "hikari/inference/engines.py": "def f():\n    import vllm\n\n\ndef g():\n    import vllm  # optional extra\n",
        "hikari/cli/train.py": "def f():\n    # CLI start-up time\n    import torch\n    import peft\n",
    })  # fmt: skip
    found = function_level_imports(src)
    assert len(found) == 2, found
    assert found[0].startswith("hikari.inference.engines:2") and "without a comment" in found[0]
    assert found[1].startswith("hikari.training.stages:2") and "move it to the top" in found[1]


@pytest.mark.parametrize("package", ["data", "models", "evaluation", "retrieval", "inference", "training", "demo",
                                     "utils"])  # fmt: skip
def test_every_subpackage_names_its_public_api(package: str) -> None:
    """`__all__` lists what `from hikari.<package> import X` offers, and every name resolves (lazily)."""
    import importlib

    module = importlib.import_module(f"hikari.{package}")
    assert module.__all__ and module.__all__ == sorted(set(module.__all__))
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018

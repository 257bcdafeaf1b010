"""Typed run configuration (hikari.config): built-in recipes, validation messages, `--set` overrides, lookup."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hikari.config import (
    RECIPE_DIR,
    ConfigError,
    RunConfig,
    apply_overrides,
    dump_config,
    load_config,
    recipe_names,
    resolve_recipe,
)

PUBLISHED = {"subaru", "altair", "deneb", "rigel", "vega", *(f"polaris_m{i}" for i in range(5))}
MINIMAL = {
    "name": "mini",
    "task": "disease",
    "output_dir": "runs/mini",
    "data": {"dir": "data/SkinCAP", "split": "runs/split.json"},
    "model": {"base": "Qwen/Qwen3-VL-8B-Thinking"},
}


def _write(tmp_path: Path, raw: dict, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_the_published_recipes_are_built_in() -> None:
    assert PUBLISHED <= set(recipe_names())
    assert "accelerate" not in recipe_names()  # launcher configs live in a subfolder, not among the recipes


@pytest.mark.parametrize("name", recipe_names())
def test_every_built_in_recipe_loads_and_round_trips(name: str, tmp_path: Path) -> None:
    config = load_config(resolve_recipe(name))
    assert config.name == name
    assert config.model.init == "base" or config.model.previous_run is not None
    resolved = tmp_path / "config.resolved.yaml"
    resolved.write_text(dump_config(config), encoding="utf-8")
    assert load_config(resolved) == config


def test_recipes_chain_as_published() -> None:
    chain = {name: load_config(resolve_recipe(name)).model for name in ("subaru", "deneb", "rigel", "vega")}
    assert chain["subaru"].init == "base"
    assert (chain["deneb"].init, chain["deneb"].previous_run) == ("merged", Path("runs/subaru"))
    assert (chain["rigel"].init, chain["rigel"].previous_run) == ("checkpoint", Path("runs/deneb"))
    assert (chain["vega"].init, chain["vega"].previous_run) == ("merged", Path("runs/deneb"))


def test_a_typo_names_the_file_and_the_dotted_key(tmp_path: Path) -> None:
    raw = {**MINIMAL, "train": {"learning_rat": 1e-4}, "lora": {"r": 0}}
    path = _write(tmp_path, raw)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "train.learning_rat" in message and "Extra inputs are not permitted" in message
    assert "lora.r" in message  # every problem is listed, not only the first


def test_a_missing_required_key_is_named(tmp_path: Path) -> None:
    raw = {**MINIMAL, "data": {"dir": "data/SkinCAP"}}
    with pytest.raises(ConfigError, match=r"data\.split: Field required"):
        load_config(_write(tmp_path, raw))


def test_overrides_are_yaml_scalars(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL)
    config = load_config(
        path,
        [
            "train.learning_rate=1e-4",
            "train.max_steps=7",
            "model.load_in_4bit=false",
            "lora.target=[q_proj, v_proj]",
            "train.save_total_limit=null",
            'description="x=1: quoted"',  # only the first '=' splits; quoting keeps YAML syntax a string
            "prompts.eval_prompt=P2",
        ],
    )
    assert config.train.learning_rate == pytest.approx(1e-4)
    assert config.train.max_steps == 7 and isinstance(config.train.max_steps, int)
    assert config.model.load_in_4bit is False
    assert config.lora.target == ["q_proj", "v_proj"]
    assert config.train.save_total_limit is None
    assert config.description == "x=1: quoted"
    with pytest.raises(ConfigError, match="description: Input should be a valid string"):
        load_config(path, ["description=a: b"])  # unquoted, `a: b` is a YAML mapping
    assert config.prompts.eval_prompt == "P2"


def test_overrides_into_an_empty_section_and_bad_overrides(tmp_path: Path) -> None:
    empty = tmp_path / "empty_section.yaml"
    empty.write_text(yaml.safe_dump(MINIMAL) + "prompts:\n", encoding="utf-8")  # `prompts:` with nothing under it
    assert load_config(empty, ["prompts.eval_prompt=P1"]).prompts.eval_prompt == "P1"
    path = _write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(path, ["train.learning_rate"])
    with pytest.raises(ConfigError, match="'learning_rate' is not a section"):
        load_config(path, ["train.learning_rate=1", "train.learning_rate.peak=2"])
    with pytest.raises(ConfigError, match="empty key"):
        load_config(path, ["train..epochs=2"])
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_config(path, ["train.epochs=-1"])
    with pytest.raises(ConfigError, match="trian: Extra inputs are not permitted"):
        load_config(path, ["trian.epochs=1"])


def test_apply_overrides_leaves_its_input_alone() -> None:
    raw = {"train": {"epochs": 3}}
    assert apply_overrides(raw, ["train.epochs=1", "eval.limit=5"]) == {"train": {"epochs": 1}, "eval": {"limit": 5}}
    assert raw == {"train": {"epochs": 3}}


@pytest.mark.parametrize("init", ["merged", "checkpoint"])
def test_chained_init_needs_a_previous_run(tmp_path: Path, init: str) -> None:
    path = _write(tmp_path, {**MINIMAL, "model": {"base": "x/y", "init": init}})
    with pytest.raises(ConfigError, match=rf"{path}.*model: .*model.init='{init}' needs model.previous_run"):
        load_config(path)
    assert load_config(path, ["model.previous_run=runs/subaru"]).model.previous_run == Path("runs/subaru")


def test_stage1_group_context_needs_predictions(tmp_path: Path) -> None:
    path = _write(tmp_path, {**MINIMAL, "prompts": {"eval_group_context": "stage1"}})
    with pytest.raises(ConfigError, match="prompts.stage1_predictions"):
        load_config(path)


def test_config_is_frozen() -> None:
    config = load_config(resolve_recipe("subaru"))
    with pytest.raises(ValueError, match="frozen"):
        config.train.learning_rate = 1.0  # type: ignore[misc]
    assert isinstance(config, RunConfig)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{bad}: invalid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listing)


def test_resolve_recipe_by_name_path_or_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_recipe("deneb") == RECIPE_DIR / "deneb.yaml"
    mine = _write(tmp_path, MINIMAL, "mine.yaml")
    assert resolve_recipe(str(mine)) == mine
    with pytest.raises(ConfigError) as info:
        resolve_recipe("denebb")
    assert "unknown recipe 'denebb'" in str(info.value)
    assert all(name in str(info.value) for name in recipe_names())
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_recipe(tmp_path / "nope.yaml")
    # A folder that shares a recipe's name (say, a run directory) does not shadow the built-in recipe.
    (tmp_path / "subaru").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe("subaru") == RECIPE_DIR / "subaru.yaml"


def test_configs_folder_is_the_recipe_folder() -> None:
    configs = Path(__file__).resolve().parents[1] / "configs"
    if not configs.exists():
        pytest.skip("no configs/ link in this checkout")
    assert configs.resolve() == RECIPE_DIR.resolve()

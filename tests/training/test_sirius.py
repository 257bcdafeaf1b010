"""The `sirius` recipe (Deneb + RAG-in-Training) on the tiny Qwen3-VL: references are retrieved and cached before
the VLM loads, every training sample shows K reference images with their labels, the LoRA trains, and the
evaluation runs with references."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hikari.config import ConfigError, load_config, resolve_recipe
from hikari.data import prompts as P

from .conftest import CHAIN_LR, CHAIN_STEPS, StageChain, tiny_overrides, train_captured


def _sirius_config(stage_chain: StageChain, tiny_encoders_dir: Path, out: Path, extra: list[str]):
    return load_config(resolve_recipe("sirius"), tiny_overrides(
        data_dir=stage_chain.data_dir, split=stage_chain.split, output_dir=out, steps=CHAIN_STEPS,
        extra=[f"train.learning_rate={CHAIN_LR}", f"model.previous_run={stage_chain.root / 'subaru'}",
               f"rag.encoder={tiny_encoders_dir}", *extra],
    ))  # fmt: skip


def test_sirius_recipe_is_deneb_plus_rag() -> None:
    sirius, deneb = load_config(resolve_recipe("sirius")), load_config(resolve_recipe("deneb"))
    assert sirius.rag is not None and deneb.rag is None
    assert (sirius.rag.encoder, sirius.rag.alpha, sirius.rag.k_train, sirius.rag.k_eval) == ("R2", 0.9, 1, 3)
    assert sirius.model == deneb.model and sirius.lora == deneb.lora and sirius.train == deneb.train


def test_rag_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="exactly one of rag.index"):
        load_config(resolve_recipe("sirius"), ["rag.index=/x"])
    with pytest.raises(ConfigError, match="rag.k_train"):
        load_config(resolve_recipe("sirius"), ["rag.k_train=0"])
    with pytest.raises(ConfigError, match="disease task"):
        load_config(resolve_recipe("vega"), ["rag.encoder=R2"])
    with pytest.raises(ConfigError, match="rag.reference_text"):
        load_config(resolve_recipe("sirius"), ["rag.reference_text=caption"])


def test_sirius_smoke_run_with_k2_references(
    stage_chain: StageChain, tiny_encoders_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage_chain.get("subaru")
    out = tmp_path / "sirius"
    config = _sirius_config(stage_chain, tiny_encoders_dir, out, ["rag.k_train=2", "rag.k_eval=2",
                                                                    "rag.reference_text=label_description"])
    # Capture the dataset items the collator sees: K reference images + the query, labels in the text.
    from hikari.training import data as training_data

    seen: list[dict] = []
    original = training_data.SupervisedVLMDataset.__getitem__

    def spy(self, i):  # type: ignore[no-untyped-def]
        item = original(self, i)
        seen.append(item)
        return item

    monkeypatch.setattr(training_data.SupervisedVLMDataset, "__getitem__", spy)
    run = train_captured(config, tmp_path / "capture")

    assert all(math.isfinite(x) for x in run.losses) and len(run.losses) == CHAIN_STEPS
    unmoved = [n for n in run.trainable if torch.equal(run.initial[n], run.final[n])]
    assert run.trainable and not unmoved
    frozen = set(run.initial) - run.trainable
    assert not [n for n in frozen if not torch.equal(run.initial[n], run.final[n])]

    refs = json.loads((out / "references.train.json").read_text())["references"]
    assert set(refs) == {ex["file_name"] for ex in run.examples}
    assert all(len(v) == 2 and ex not in {r["file_name"] for r in v} for ex, v in refs.items())
    assert seen
    for item in seen:
        content = item["messages"][0]["content"]
        images = [c for c in content if c["type"] == "image"]
        texts = [c["text"] for c in content if c["type"] == "text"]
        assert len(images) == 3  # 2 references + the query, the query last
        assert texts[0] == P.RAG_INTRO and content[-2]["type"] == "image"
        ref_texts = [t for t in texts if t.startswith("Reference ")]
        assert [t.split(":")[0] for t in ref_texts] == ["Reference 1", "Reference 2"]
        assert all("\nDescription: " in t for t in ref_texts)
        want = refs[item["file_name"]]
        assert [t.split("\n")[0] for t in ref_texts] == [f"Reference {i}: {r['label']}" for i, r in enumerate(want, 1)]
    info = run.run_info["rag"]
    assert info["k_train"] == 2 and info["encoder"] == "tiny-clip" and Path(info["index"]) == out / "rag-index"

    # Evaluation with references after training (reusing the trained run: eval only, from the saved adapter)
    from hikari.models.load import load_model, load_processor
    from hikari.models.lora import load_adapter
    from hikari.training.evaluate import evaluate_model
    from hikari.training.stages import rag_references, run_records

    parts = run_records(config).parts
    train_refs, eval_refs, _ = rag_references(config, parts, out)  # from the cache now
    assert eval_refs is not None and all(len(v) == 2 for v in eval_refs.values())
    base = run.run_info["base_model"]
    model = load_adapter(load_model(base, dtype="fp32"), out / "adapter", trainable=False)
    metrics = evaluate_model(model, load_processor(base), parts["val"][:4], config.model_copy(
        update={"eval": config.eval.model_copy(update={"limit": 4})}), out, references=eval_refs)
    assert metrics["n"] == 4
    lines = [json.loads(x) for x in Path(metrics["predictions"]).read_text().splitlines()]
    assert {x["prompt_id"] for x in lines} == {"P0+rag2"}

"""Generic pre-training of the tiny base: disease-free image targets, its own picture space, both phases run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from hikari.data.labels import ALIASES, DISEASES, GROUPS
from hikari.demo import pretrain as PT


def _names() -> set[str]:
    names = {d.lower() for d in DISEASES} | {a.lower() for v in ALIASES.values() for a in v}
    return names | {g.lower() for g in GROUPS}


def test_image_descriptions_never_name_a_disease_or_group() -> None:
    from hikari.demo.synth_images import STYLES

    rng = random.Random(0)
    for disease in STYLES:
        for _ in range(5):
            text = PT.generic_description(disease, rng).lower()
            assert text.startswith(PT.DESCRIPTION_START.lower())
            assert not [n for n in _names() if n in text], (disease, text)


def test_descriptions_separate_the_ten_training_diseases() -> None:
    # the synthetic styles are distinguishable in words, so a base model that reads images *can* tell them apart
    attributes = {d: PT.lesion_attributes(d) for d in DISEASES}
    assert len(set(attributes.values())) == len(DISEASES)


def test_language_samples_are_text_only_and_cover_groups_and_diagnoses() -> None:
    samples = PT.language_samples(random.Random(0), 300, ["A red plaque on the arm."])
    assert all(part["type"] == "text" for s in samples for m in s["messages"] for part in m["content"])
    targets = {s["target"] for s in samples}
    assert set(GROUPS) <= targets
    assert any(DISEASES[0] in t for t in targets)


def test_picture_corpus_is_deterministic_and_disjoint_from_the_dataset_seeds() -> None:
    a = PT.PictureCorpus(20, seed=0, max_size=64)
    b = PT.PictureCorpus(20, seed=0, max_size=64)
    c = PT.PictureCorpus(20, seed=1, max_size=64)
    assert np.array_equal(np.asarray(a.picture(3)), np.asarray(b.picture(3)))
    assert not np.array_equal(np.asarray(a.picture(3)), np.asarray(c.picture(3)))
    assert max(a.picture(0).size) <= 64 and a.picture(0).mode == "RGB"
    assert [a.disease(k) for k in range(len(a.diseases))] == list(a.diseases)
    with pytest.raises(ValueError, match="no synthetic lesion style"):
        PT.PictureCorpus(5, seed=0, max_size=64, diseases=["not a disease"])


def test_pretraining_runs_both_phases_and_saves_a_loadable_base(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from hikari.models.load import load_model

    torch.set_num_threads(1)
    out = PT.pretrain_tiny_vlm(
        tiny_model_dir, tmp_path / "base", steps=2, vision_warmup_steps=2, n_pictures=12, batch_size=4,
        progress=False,
    )  # fmt: skip
    losses = json.loads((out / "pretrain_losses.json").read_text())
    assert len(losses["vision_warmup_losses"]) == 2 and len(losses["losses"]) == 2
    assert all(np.isfinite(losses["losses"]))
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("visual" in k for k in changed) and any("language_model" in k for k in changed)
    assert load_model(str(out), dtype="fp32") is not None


def test_descriptions_state_the_pictures_facts_in_the_captions_words() -> None:
    from hikari.demo.captions import facts_sentence
    from hikari.demo.synth_images import LesionFacts

    facts = LesionFacts(3, "medium-sized", 14, "upper left")
    text = PT.generic_description(DISEASES[0], random.Random(0), facts, 4)
    stated = facts_sentence(facts, 4)
    assert text.endswith(": " + stated[:1].lower() + stated[1:])  # the same words a Stage 3 caption uses


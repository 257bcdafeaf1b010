"""HikariService.load: one engine per distinct model (a folder named for two stages is loaded once), names that
cannot collide, and the whole cascade through another server (the openai engine) giving the same answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from hikari.serve.process import ServerProcess
from hikari.serve.service import CascadeRequest, HikariService, model_name

from .conftest import noise


def test_names_come_from_the_run_the_folder_or_the_url(tiny_model_dir: Path, served_runs: dict[str, Path]) -> None:
    assert model_name(served_runs["vega"]) == "vega"  # run_info.json
    assert model_name(tiny_model_dir) == "model"  # the folder
    assert model_name(tiny_model_dir, "base") == "base"
    assert model_name("http://127.0.0.1:8001/v1") == "127.0.0.1:8001"
    assert model_name("http://127.0.0.1:8001/v1#vega") == "vega"


def test_two_different_models_may_not_share_a_name(tiny_model_dir: Path, served_runs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="both called 'vega'"):
        HikariService.load(stage1=tiny_model_dir, stage2=tiny_model_dir,
                           stage3=[(None, served_runs["vega"]), ("vega", served_runs["antares"])])  # fmt: skip
    with pytest.raises(ValueError, match="served once, as 'model'"):
        HikariService.load(stage1=tiny_model_dir, stage2=tiny_model_dir, stage3=[("other", tiny_model_dir)])


def requests(image: Image.Image, stage3: tuple[str, ...]) -> list[CascadeRequest]:
    return [CascadeRequest(image, "x.png", None, 2, stage3, 10, True)]


def test_the_cascade_through_a_remote_server_matches_the_local_one(
    service: HikariService, server: ServerProcess, rag_index_dir: Path
) -> None:
    """Every stage on `server` (here `hikari serve`; on a GPU machine `vllm serve` per stage) over HTTP."""
    v1 = f"{server.url}/v1"
    remote = HikariService.load(stage1=f"{v1}#model", stage2=f"{v1}#model", stage3=[("vega", f"{v1}#vega")],
                                index=rag_index_dir, engine="openai",
                                image_max_size=service.image_max_size)  # fmt: skip
    try:
        assert remote.stage1 == remote.stage2 == "model" and remote.stage3 == ["vega"]
        assert remote.models["vega"].fingerprint == {"kind": "remote", "url": f"{v1}#vega"}
        image = noise(90, 70, seed=5)
        [far] = remote.cascade(requests(image, ("vega",)))
        [near] = service.cascade(requests(image, ("vega",)))
    finally:
        remote.close()
    assert (far.group, far.diagnosis, far.captions, far.raw) == (near.group, near.diagnosis, near.captions, near.raw)
    assert [r["file_name"] for r in far.references] == [r["file_name"] for r in near.references]
    assert far.disease_probabilities is None and near.disease_probabilities is not None  # needs the weights

"""Fixtures for the server tests: tiny served models (Stage 1/2 the tiny base, two Stage 3 run directories with
adapters), the service loaded once per module, and images — good ones in every PNG mode and bad ones."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hikari.data.split import load_split
from hikari.models.load import load_model, load_processor
from hikari.models.lora import add_lora
from hikari.serve.process import ServerProcess
from hikari.serve.service import HikariService

ROOT = Path(__file__).resolve().parents[2]


def make_run(base: Path, out: Path, name: str, seed: int) -> Path:
    """A training-run-shaped directory (run_info.json + adapter) whose adapter really changes the answers."""
    model = add_lora(load_model(base, dtype="fp32"), r=4, alpha=8, dropout=0.0, target="language", seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))
    model.save_pretrained(out / "adapter")
    load_processor(base).save_pretrained(out / "adapter")
    (out / "run_info.json").write_text(json.dumps({"name": name, "base_model": str(base), "adapter": "adapter"}))
    return out


@pytest.fixture(scope="session")
def served_runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("served")
    return {"vega": make_run(tiny_model_dir, root / "vega", "vega", 1),
            "antares": make_run(tiny_model_dir, root / "antares", "antares", 2)}


@pytest.fixture(scope="module")
def service(tiny_model_dir: Path, served_runs: dict[str, Path], rag_index_dir: Path) -> Iterator[HikariService]:
    torch.set_num_threads(1)
    svc = HikariService.load(stage1=tiny_model_dir, stage2=tiny_model_dir,
                             stage3=[(None, served_runs["vega"]), (None, served_runs["antares"])],
                             index=rag_index_dir, dtype="fp32", device="cpu", image_max_size=96)  # fmt: skip
    yield svc
    svc.close()


def png_bytes(image: Image.Image, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def lesion_path(synth_dir: Path, synth_split: Path) -> Path:
    """A synthetic SkinCAP picture of the validation part (so not in the reference index)."""
    return synth_dir / "skincap" / load_split(synth_split).parts["val"][0]


@pytest.fixture(scope="session")
def lesion_png(lesion_path: Path) -> bytes:
    return lesion_path.read_bytes()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # as in `make test`: one per xdist worker


def served_args(tiny_model_dir: Path, served_runs: dict[str, Path], rag_index_dir: Path) -> list[str]:
    """`hikari serve` options for the test models: the tiny base as Stage 1 and 2, vega and antares, the index."""
    return ["--stage1", str(tiny_model_dir), "--stage2", str(tiny_model_dir), "--stage3", str(served_runs["vega"]),
            "--stage3", str(served_runs["antares"]), "--index", str(rag_index_dir), "--dtype", "fp32",
            "--device", "cpu", "--max-batch", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, served_runs: dict[str, Path], rag_index_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(served_args(tiny_model_dir, served_runs, rag_index_dir) + ["--queue-size", "8"],
                         log=tmp_path_factory.mktemp("serve") / "server.log", env=ONE_THREAD, cwd=ROOT)  # fmt: skip
    yield proc
    proc.stop()

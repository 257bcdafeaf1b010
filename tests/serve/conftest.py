"""Fixtures for the server tests: tiny served models (Stage 1/2 the tiny base, two Stage 3 run directories with
adapters), the service loaded once per module, and images — good ones in every PNG mode and bad ones."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from hikari.data.split import load_split
from hikari.models.load import load_model, load_processor
from hikari.models.lora import add_lora
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`hikari serve` in a subprocess on a free localhost port; stopped (and waited for) on exit."""

    def __init__(self, args: list[str], log: Path, *, timeout: float = 180.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.log_path = log
        self.log = log.open("ab")  # closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "hikari", "serve", "--port", str(self.port), *args],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=self.log)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hikari serve exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"hikari serve did not answer within {timeout} s")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def listening_on(self) -> str:
        """The address the server's socket is bound to (from /proc/net/tcp*: LISTEN on our port)."""
        for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port = local.split(":")
                if state == "0A" and int(port, 16) == self.port:
                    if width == 8:
                        return socket.inet_ntoa(bytes.fromhex(address)[::-1])
                    return socket.inet_ntop(socket.AF_INET6, b"".join(
                        bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, 32, 8)))  # fmt: skip
        raise RuntimeError(f"nothing listens on port {self.port}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, served_runs: dict[str, Path], rag_index_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(["--stage1", str(tiny_model_dir), "--stage2", str(tiny_model_dir),
                          "--stage3", str(served_runs["vega"]), "--stage3", str(served_runs["antares"]),
                          "--index", str(rag_index_dir), "--dtype", "fp32", "--device", "cpu",
                          "--queue-size", "8", "--max-batch", "4"],
                         tmp_path_factory.mktemp("serve") / "server.log")  # fmt: skip
    yield proc
    proc.stop()

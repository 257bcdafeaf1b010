"""The reliability suite's world: a synthetic SkinCAP folder split while it was intact and then damaged — every
kind of bad image a real folder holds, in the val part (what `predict` meets) and the train part (what `retrieve
build` and `train` meet) — and a way to run the real `hikari` command on it, as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hikari.data.split import load_split, split_dataset
from hikari.demo.synth import write_synthetic_skincap
from hikari.demo.synth_images import bomb_png

ROOT = Path(__file__).resolve().parents[2]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Damage done after the split, to files of the val part: kind → what a command must say about it.
UNREADABLE = {  # decoded at use: an error line / a skipped item naming the file
    "truncated": "cannot decode",
    "zero_byte": "not an image",
    "not_an_image": "not an image",
    "bomb": "400.0 megapixels",
}
LEFT_OUT = {  # refused by the reader: the item is left out and named
    "missing": "missing file",
    "directory": "a directory",
    "link_outside": "outside the image folder",
}
VALID = ("cmyk", "rgba", "sixteen_bit", "palette")  # unusual but readable: predicted like any other


@dataclass
class Damaged:
    root: Path  # the SkinCAP folder
    split: Path
    val: dict[str, str]  # kind → file name in the val part
    train_bomb: str  # a train-part file replaced by a decompression bomb
    val_names: list[str] = field(default_factory=list)  # every file of the val part

    def image(self, name: str) -> Path:
        return self.root / "skincap" / name


def hikari(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`hikari ARGS` in a fresh process (the console script's `main`, as a user runs it)."""
    return subprocess.run([sys.executable, "-m", "hikari", *args], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **ONE_THREAD})  # fmt: skip


def assert_clean_failure(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 with one `error:` line naming every word, and no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors, result.stderr[-2000:]
    assert all(w in result.stderr for w in words), (words, result.stderr[-2000:])


def _damage(path: Path, kind: str, outside: Path) -> None:
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "not_an_image":
        path.write_text("a clinician's note, saved under the picture's name\n" * 20)
    elif kind == "bomb":
        path.write_bytes(bomb_png(20_000, 20_000))
    elif kind == "missing":
        path.unlink()
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "link_outside":
        rgb.save(outside)
        path.unlink()
        path.symlink_to(outside)
    elif kind == "cmyk":
        rgb.convert("CMYK").save(path, format="JPEG")  # a JPEG under a .png name, as exports often are
    elif kind == "rgba":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.fromarray(np.full((rgb.height, rgb.width), 128, np.uint8)))
        rgba.save(path)
    elif kind == "sixteen_bit":
        Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).save(path)
    elif kind == "palette":
        rgb.convert("P").save(path)
    else:
        raise ValueError(kind)


@pytest.fixture(scope="session")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> Damaged:
    base = tmp_path_factory.mktemp("damaged")
    root = base / "skincap"
    write_synthetic_skincap(root, n=120, seed=5, corrupt=True)  # + the bad metadata rows of the synthesiser
    split, _ = split_dataset(root, seed=1, val_frac=0.2, progress=False)
    split_path = split.save(base / "split.json")
    info = load_split(split_path)
    val, train = info.parts["val"], info.parts["train"]
    kinds = [*UNREADABLE, *LEFT_OUT, *VALID]
    assert len(val) > len(kinds) + 4
    chosen = dict(zip(kinds, val, strict=False))
    for kind, name in chosen.items():
        _damage(root / "skincap" / name, kind, base / f"outside-{name}")
    _damage(root / "skincap" / train[0], "bomb", base)
    return Damaged(root, split_path, chosen, train[0], list(val))

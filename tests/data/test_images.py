from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hikari.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageRejected,
    load_rgb,
    max_pixels,
    set_max_pixels,
    to_rgb,
    verify_image,
)
from hikari.demo.synth_images import bomb_png


def _save(img: Image.Image, path: Path) -> Path:
    img.save(path)
    return path


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., :3] = (200, 10, 30)
    arr[:4, :, 3] = 0  # transparent top half
    arr[4:, :, 3] = 255
    out = np.asarray(load_rgb(_save(Image.fromarray(arr), tmp_path / "a.png")))
    assert out.shape == (8, 8, 3)
    assert (out[:4] == 255).all()  # a bare convert("RGB") would give (200, 10, 30) here
    assert (out[4:] == (200, 10, 30)).all()


def test_half_transparent_pixel_blends_with_white() -> None:
    img = Image.fromarray(np.array([[[0, 0, 0, 128]]], np.uint8))
    value = np.asarray(to_rgb(img))[0, 0]
    assert (np.abs(value.astype(int) - 127) <= 1).all()


def test_la_and_palette_with_transparency(tmp_path: Path) -> None:
    la = Image.fromarray(np.dstack([np.full((4, 4), 50, np.uint8), np.zeros((4, 4), np.uint8)]))
    assert la.mode == "LA"
    assert (np.asarray(load_rgb(_save(la, tmp_path / "la.png"))) == 255).all()
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.info["transparency"] = 1
    assert (np.asarray(load_rgb(_save(pal, tmp_path / "p.png"))) == 255).all()


def test_greyscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    out = np.asarray(load_rgb(_save(Image.fromarray(grey), tmp_path / "l.png")))
    assert out.shape == (8, 8, 3)
    assert (out[..., 0] == grey).all() and (out[..., 1] == grey).all() and (out[..., 2] == grey).all()


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    levels = np.array([[0, 257 * 10, 257 * 128, 65535]], np.uint16)
    path = _save(Image.fromarray(levels), tmp_path / "i16.png")
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # PNG keeps 16 bits
    out = np.asarray(load_rgb(path))
    assert out[0, :, 0].tolist() == [0, 10, 128, 255]  # clipping would give [0, 255, 255, 255]


def test_float_and_int32_modes() -> None:
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert np.asarray(to_rgb(f))[0, :, 0].tolist() == [0, 128, 255]
    i = Image.fromarray(np.array([[0, 65535]], np.int32))
    assert i.mode == "I"
    assert np.asarray(to_rgb(i))[0, :, 0].tolist() == [0, 255]
    small = Image.fromarray(np.array([[0, 200]], np.int32))  # already 8-bit range: left as is
    assert np.asarray(to_rgb(small))[0, :, 0].tolist() == [0, 200]


def test_thumbnail_keeps_aspect_and_never_enlarges(tmp_path: Path) -> None:
    big = _save(Image.new("RGB", (1000, 500), (1, 2, 3)), tmp_path / "big.png")
    assert load_rgb(big).size == (672, 336)
    assert load_rgb(big, max_size=100).size == (100, 50)
    assert load_rgb(big, max_size=None).size == (1000, 500)
    small = _save(Image.new("RGB", (40, 30)), tmp_path / "small.png")
    assert load_rgb(small).size == (40, 30)


def test_verify_image_reasons(tmp_path: Path) -> None:
    good = _save(Image.new("RGB", (32, 32), (9, 9, 9)), tmp_path / "good.png")
    assert verify_image(good) is None
    assert verify_image(tmp_path / "absent.png") == "missing file"
    assert verify_image(tmp_path) == "not a regular file"
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = _save(noise, tmp_path / "noise.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    reason = verify_image(tmp_path / "trunc.png")
    assert reason is not None and "truncated" in reason
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    assert verify_image(tmp_path / "junk.png") == "not an image PIL can identify"


def test_a_bomb_is_refused_from_its_header_by_every_reader(tmp_path: Path) -> None:
    """20000 × 20000 (PIL's own check would raise DecompressionBombError, not an OSError) and 7000 × 6000 (under
    PIL's limit, over ours): both an unreadable image naming the file and the size, never a crash."""
    for (width, height), size in (((20_000, 20_000), "400.0 megapixels"), ((7_000, 6_000), "42.0 megapixels")):
        path = tmp_path / f"bomb{width}.png"
        path.write_bytes(bomb_png(width, height))
        assert path.stat().st_size < 100_000
        assert struct.unpack(">II", path.read_bytes()[16:24]) == (width, height)  # the IHDR says so
        with pytest.raises(ImageRejected, match=rf"image .*bomb{width}.png: .*{size}, more than the limit of 40"):
            load_rgb(path)
        assert size in verify_image(path) and "limit of 40" in verify_image(path)
    with pytest.raises(OSError):  # what every reader already catches for unreadable files
        load_rgb(tmp_path / "bomb7000.png")


def test_the_limit_is_one_setting(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    path.write_bytes(bomb_png(3000, 2000))  # 6 MP
    assert load_rgb(path, max_size=64).size == (64, 43)
    try:
        set_max_pixels(5_000_000)
        assert max_pixels() == 5_000_000
        with pytest.raises(ImageRejected, match="6.0 megapixels, more than the limit of 5") as refused:
            load_rgb(path)
        assert refused.value.reason == "too_many_pixels"
        assert "6.0 megapixels" in verify_image(path)
        with pytest.raises(ValueError, match="at least 1"):
            set_max_pixels(0)
    finally:
        set_max_pixels(None)
    assert max_pixels() == DEFAULT_MAX_PIXELS == 40_000_000


def test_missing_files_and_directories_are_named(tmp_path: Path) -> None:
    with pytest.raises(ImageRejected, match="absent.png: no such file") as missing:
        load_rgb(tmp_path / "absent.png")
    assert missing.value.reason == "missing"
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageRejected, match="folder.png: a directory"):
        load_rgb(tmp_path / "folder.png")


def test_load_rgb_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"nope")
    with pytest.raises(OSError, match="junk.png"):
        load_rgb(tmp_path / "junk.png")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A phone photo 120 wide and 100 high, stored with 'rotate 90°' in EXIF (Orientation 6): read upright."""
    img = Image.new("RGB", (120, 100), (200, 30, 30))
    img.paste((30, 30, 200), (0, 0, 20, 100))  # a blue stripe on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    upright = load_rgb(tmp_path / "phone.jpg", max_size=None)
    assert upright.size == (100, 120)
    assert upright.getpixel((50, 5))[2] > 150  # the left stripe is now at the top

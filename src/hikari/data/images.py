"""Image loading that every consumer shares: any PNG mode → 8-bit RGB, thumbnailed like the original.

SkinCAP is RGB, but real-world folders contain RGBA screenshots, greyscale scans and 16-bit exports. Converting
them with a bare ``Image.convert("RGB")`` is wrong in two ways this module avoids: transparent pixels become
black (we composite on white, as a viewer shows them) and 16-bit values are clipped at 255 instead of scaled.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hikari.config import DataConfig, default

# The original HIKARI preprocessing: `img.thumbnail((672, 672), Image.LANCZOS)` before the processor.
DEFAULT_MAX_SIZE = default(DataConfig, "max_image_size")
# Every reader refuses images with more pixels than this (read from the header, before decoding); `hikari
# --max-pixels N` sets HIKARI_MAX_PIXELS for the command and its child processes.
DEFAULT_MAX_PIXELS: int = default(DataConfig, "max_pixels")
MAX_PIXELS_ENV = "HIKARI_MAX_PIXELS"


def _limit_from_env() -> int:
    value = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        return int(value) if value.strip() else DEFAULT_MAX_PIXELS
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV}={value!r} is not a whole number of pixels") from None


_max_pixels = _limit_from_env()


def set_max_pixels(limit: int | None) -> None:
    """Set the pixel limit of every image reader in this process (`hikari --max-pixels`, `data.max_pixels` of a
    training config); None restores the default. Like PIL's `Image.MAX_IMAGE_PIXELS`, but enforced: an image over
    it is refused before decoding, as an unreadable image naming the file."""
    global _max_pixels
    if limit is not None and limit < 1:
        raise ValueError(f"max_pixels must be at least 1, got {limit}")
    _max_pixels = DEFAULT_MAX_PIXELS if limit is None else int(limit)
    # PIL refuses at twice its MAX_IMAGE_PIXELS on its own; keep that above ours so that our message is the one seen.
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, _max_pixels)


def max_pixels() -> int:
    """The pixel limit every reader uses now (see `set_max_pixels`)."""
    return _max_pixels

PathLike = str | os.PathLike[str]


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map a single-channel array deeper than 8 bits to uint8 by scaling (never clipping the range).

    I;16* is 16-bit (0..65535 → 0..255). I (32-bit int, what some readers give for 16-bit PNGs) is scaled the
    same way when it exceeds 255. F is scaled ×255 when it lies in [0, 1], ÷257 when it exceeds 255.
    """
    values = np.nan_to_num(arr.astype(np.float64))
    peak = float(values.max()) if values.size else 0.0
    if mode.startswith("I;16") or (mode in ("I", "F") and peak > 255.0):
        values = values / 257.0  # 65535 / 257 == 255 exactly
    elif mode == "F" and peak <= 1.0 and float(values.min(initial=0.0)) >= 0.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    RGBA/LA/PA and palette images with transparency are alpha-composited on `background` (white by default);
    16-bit and 32-bit greyscale (I;16, I;16B, I, F) are scaled to 0..255; CMYK/YCbCr/L/1/P go through PIL.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = _scale_to_uint8(np.asarray(img), mode)
        return Image.fromarray(grey).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: PathLike, max_size: int | None = DEFAULT_MAX_SIZE) -> Image.Image:
    """Decode an image file fully into 8-bit RGB; shrink it to fit `max_size`² (LANCZOS, aspect kept).

    `max_size=None` keeps the original size. Images are never enlarged. An image over the pixel limit
    (`set_max_pixels`) is refused from its header. Raises `ImageRejected` (an OSError) saying "cannot read image
    <path>: …" when the file cannot be read or decoded, or is refused.
    """
    try:
        return decode_image(path, max_pixels=_max_pixels, max_size=max_size, name=str(path))
    except FileNotFoundError as err:
        raise ImageRejected("missing", f"cannot read image {path}: no such file") from err
    except IsADirectoryError as err:
        raise ImageRejected("not_an_image", f"cannot read image {path}: a directory, not an image file") from err
    except ImageRejected as err:
        raise ImageRejected(err.reason, f"cannot read image {err}") from None


class ImageRejected(OSError):
    """An image refused before or while decoding — an OSError, so every reader's handling of unreadable files
    covers it. `reason`: "missing" | "not_an_image" | "corrupt" | "empty" | "too_many_pixels"; the message names
    the source and what was wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0])


def decode_image(
    source: bytes | PathLike,
    *,
    max_pixels: int | None,
    max_size: int | None = DEFAULT_MAX_SIZE,
    name: str | None = None,
) -> Image.Image:
    """Decode image bytes (or a file) into 8-bit RGB, thumbnailed to `max_size`², refusing what should not be
    decoded: the pixel count is read from the header and checked against `max_pixels` *before* any pixel is
    decoded, so a decompression bomb (a small file declaring a huge picture) costs nothing. Raises
    `ImageRejected` naming `name` (default: the path, or "image")."""
    label = name or (str(source) if not isinstance(source, bytes) else "image")
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (FileNotFoundError, IsADirectoryError):
        raise
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image", f"{label}: not an image (PNG, JPEG, WebP, TIFF, … expected)") from None
    except Image.DecompressionBombError as err:  # PIL's own limit (2 × MAX_IMAGE_PIXELS), checked while opening
        raise ImageRejected("too_many_pixels", f"{label}: {_bomb_size(err)}, more than the limit of "
                            f"{(max_pixels or _max_pixels) / 1e6:g} (a decompression bomb?)") from None
    except OSError as err:
        raise ImageRejected("corrupt", f"{label}: cannot open ({err})") from None
    with img:
        width, height = img.size
        if width * height == 0:
            raise ImageRejected("empty", f"{label}: the image has no pixels ({width}×{height})")
        if max_pixels is not None and width * height > max_pixels:
            megapixels = width * height / 1e6
            raise ImageRejected("too_many_pixels", f"{label}: {width}×{height} = {megapixels:.1f} megapixels, more "
                                f"than the limit of {max_pixels / 1e6:g} (a decompression bomb?)")  # fmt: skip
        try:
            img.load()
            # A phone photo stores "rotate me" in EXIF; the model must see it as the photographer did.
            upright = ImageOps.exif_transpose(img)
            rgb = to_rgb(upright)
        except (OSError, ValueError, SyntaxError) as err:  # truncated data, broken chunks
            raise ImageRejected("corrupt", f"{label}: cannot decode ({err})") from None
        if rgb is img:
            rgb = rgb.copy()
    if max_size is not None:
        rgb.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    return rgb


def _bomb_size(err: Exception) -> str:
    found = re.search(r"\((\d+) pixels\)", str(err))
    return f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else "too many pixels"


def verify_image(path: PathLike) -> str | None:
    """None when `path` is a decodable image file; otherwise a short reason ("missing file", "truncated …",
    "40000×30000 = 1200.0 megapixels, more than the limit …").

    Decodes every pixel (``Image.verify`` alone misses truncated data), so it costs one full read — except for an
    image over the pixel limit (`set_max_pixels`), which is refused from its header.
    """
    p = Path(path)
    if not p.exists():
        return "missing file"
    if not p.is_file():
        return "not a regular file"
    try:
        with Image.open(p) as img:
            width, height = img.size
            if width * height > _max_pixels:
                return (f"{width}×{height} = {width * height / 1e6:.1f} megapixels, more than the limit of "
                        f"{_max_pixels / 1e6:g} (a decompression bomb?)")  # fmt: skip
            img.load()
            if img.width == 0 or img.height == 0:
                return "empty image (0 pixels)"
    except Image.DecompressionBombError as err:
        return f"{_bomb_size(err)}, more than the limit of {_max_pixels / 1e6:g} (a decompression bomb?)"
    except UnidentifiedImageError:
        return "not an image PIL can identify"
    except (OSError, ValueError, SyntaxError) as err:  # PIL raises SyntaxError for some broken PNG chunks
        return f"cannot decode: {err}"
    return None

"""Image loading that every consumer shares: any PNG mode → 8-bit RGB, thumbnailed like the original.

SkinCAP is RGB, but real-world folders contain RGBA screenshots, greyscale scans and 16-bit exports. Converting
them with a bare ``Image.convert("RGB")`` is wrong in two ways this module avoids: transparent pixels become
black (we composite on white, as a viewer shows them) and 16-bit values are clipped at 255 instead of scaled.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hikari.config import DataConfig, default

# The original HIKARI preprocessing: `img.thumbnail((672, 672), Image.LANCZOS)` before the processor.
DEFAULT_MAX_SIZE = default(DataConfig, "max_image_size")

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

    `max_size=None` keeps the original size. Images are never enlarged. Raises OSError/ValueError (from PIL)
    with the path in the message when the file cannot be decoded.
    """
    try:
        with Image.open(path) as img:
            img.load()
            rgb = to_rgb(img)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise OSError(f"cannot read image {path}: {err}") from err
    if rgb is img:  # detach from the closed file object
        rgb = rgb.copy()
    if max_size is not None:
        rgb.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    return rgb


class ImageRejected(ValueError):
    """An image refused before or while decoding. `reason`: "not_an_image" | "corrupt" | "empty" |
    "too_many_pixels"; the message names the source and what was wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image", f"{label}: not an image (PNG, JPEG, WebP, TIFF, … expected)") from None
    except Image.DecompressionBombError as err:  # PIL's own limit, far above any sensible max_pixels
        raise ImageRejected("too_many_pixels", f"{label}: {err}") from None
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
            rgb = to_rgb(img)
        except (OSError, ValueError, SyntaxError) as err:  # truncated data, broken chunks
            raise ImageRejected("corrupt", f"{label}: cannot decode ({err})") from None
        if rgb is img:
            rgb = rgb.copy()
    if max_size is not None:
        rgb.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    return rgb


def verify_image(path: PathLike) -> str | None:
    """None when `path` is a decodable image file; otherwise a short reason ("missing file", "truncated …").

    Decodes every pixel (``Image.verify`` alone misses truncated data), so it costs one full read.
    """
    p = Path(path)
    if not p.exists():
        return "missing file"
    if not p.is_file():
        return "not a regular file"
    try:
        with Image.open(p) as img:
            img.load()
            if img.width == 0 or img.height == 0:
                return "empty image (0 pixels)"
    except UnidentifiedImageError:
        return "not an image PIL can identify"
    except (OSError, ValueError, SyntaxError) as err:  # PIL raises SyntaxError for some broken PNG chunks
        return f"cannot decode: {err}"
    return None

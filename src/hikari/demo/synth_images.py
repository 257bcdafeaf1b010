"""Procedural skin-lesion pictures for the synthetic SkinCAP: one visual signature per disease.

Each picture is a skin-tone background (random illumination, smooth mottling, coarse blotches) with the
disease's lesion(s) drawn at a random position and orientation — colour, shape (round, oval, irregular, annular,
clustered or scattered papules, diffuse), border sharpness, texture (scale flakes, crust, shine, vessels,
pustules, pale or dark centre, rim) and size — then white balance, sensor noise and flips. The background
mottling sits in the frequency band a 64-bit pHash reads, so distinct pictures never look like near-duplicates.

Everything is numpy on small arrays (~100 px); a picture takes a few milliseconds.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from hikari.data.labels import DISEASES

# Skin tones by Fitzpatrick type I..VI (RGB in 0..1).
SKIN_TONES: tuple[tuple[float, float, float], ...] = (
    (0.96, 0.84, 0.75), (0.92, 0.77, 0.65), (0.84, 0.66, 0.52), (0.72, 0.53, 0.39), (0.55, 0.39, 0.27),
    (0.38, 0.26, 0.19),
)  # fmt: skip


@dataclass(frozen=True)
class LesionStyle:
    """A disease's visual signature. Sizes are fractions of the image's shorter side; softness is in pixels."""

    colour: tuple[float, float, float]
    shape: str  # round | oval | irregular | annular | papules | scatter | diffuse
    count: tuple[int, int]
    size: tuple[float, float]
    softness: tuple[float, float]
    opacity: tuple[float, float] = (0.8, 0.95)
    textures: tuple[str, ...] = ()  # scale, crust, shine, vessels, pustules, pale_centre, dark_centre, rim, warty
    accent: tuple[float, float, float] = (0.95, 0.93, 0.88)  # colour of the texture marks / rim / centre


STYLES: dict[str, LesionStyle] = {
    DISEASES[0]: LesionStyle((0.86, 0.40, 0.38), "irregular", (1, 3), (0.14, 0.28), (0.6, 1.2), textures=("scale",)),
    DISEASES[1]: LesionStyle((0.58, 0.26, 0.36), "annular", (1, 2), (0.2, 0.32), (1.4, 2.6),
                             textures=("pale_centre", "scale"), accent=(0.9, 0.82, 0.78)),
    DISEASES[2]: LesionStyle((0.46, 0.24, 0.44), "papules", (6, 14), (0.035, 0.07), (0.5, 0.9),
                             textures=("shine",)),
    DISEASES[3]: LesionStyle((0.94, 0.89, 0.80), "oval", (1, 1), (0.26, 0.4), (2.0, 4.0),
                             textures=("rim", "shine"), accent=(0.62, 0.45, 0.62)),
    DISEASES[4]: LesionStyle((0.90, 0.38, 0.35), "diffuse", (1, 1), (0.35, 0.5), (5.0, 9.0), (0.45, 0.7),
                             textures=("papules_overlay",)),
    DISEASES[5]: LesionStyle((0.64, 0.40, 0.30), "oval", (1, 4), (0.08, 0.16), (1.5, 3.0), textures=("shine",)),
    DISEASES[6]: LesionStyle((0.36, 0.23, 0.16), "round", (1, 1), (0.07, 0.14), (0.5, 1.0), (0.88, 1.0),
                             textures=("dark_centre",), accent=(0.22, 0.14, 0.1)),
    DISEASES[7]: LesionStyle((0.78, 0.35, 0.32), "irregular", (1, 1), (0.18, 0.3), (0.8, 1.5),
                             textures=("crust", "scale"), accent=(0.72, 0.55, 0.25)),
    DISEASES[8]: LesionStyle((0.92, 0.68, 0.66), "round", (1, 1), (0.12, 0.22), (1.0, 1.8),
                             textures=("shine", "vessels", "dark_centre"), accent=(0.45, 0.22, 0.2)),
    DISEASES[9]: LesionStyle((0.82, 0.32, 0.32), "scatter", (8, 20), (0.025, 0.05), (0.6, 1.2),
                             textures=("pustules",), accent=(0.96, 0.92, 0.7)),
    "eczema": LesionStyle((0.82, 0.44, 0.40), "diffuse", (1, 2), (0.25, 0.4), (4.0, 7.0), (0.55, 0.8),
                          textures=("scale", "vessels"), accent=(0.6, 0.15, 0.15)),
    "seborrheic keratosis": LesionStyle((0.46, 0.33, 0.21), "oval", (1, 2), (0.12, 0.22), (0.5, 1.0),
                                        textures=("warty",), accent=(0.3, 0.2, 0.12)),
    "vitiligo": LesionStyle((0.98, 0.94, 0.90), "irregular", (1, 3), (0.15, 0.3), (0.8, 1.5)),
    "urticaria": LesionStyle((0.94, 0.56, 0.55), "annular", (2, 4), (0.1, 0.2), (2.0, 3.0), (0.6, 0.8),
                             textures=("pale_centre",), accent=(0.96, 0.8, 0.76)),
    "tinea corporis": LesionStyle((0.80, 0.40, 0.34), "annular", (1, 2), (0.2, 0.32), (0.8, 1.4),
                                  textures=("scale",)),
    "rosacea": LesionStyle((0.86, 0.42, 0.42), "diffuse", (1, 1), (0.3, 0.45), (6.0, 9.0), (0.5, 0.7),
                           textures=("vessels", "papules_overlay"), accent=(0.7, 0.12, 0.15)),
    "folliculitis": LesionStyle((0.86, 0.47, 0.36), "scatter", (6, 14), (0.02, 0.04), (0.6, 1.0),
                                textures=("pustules",), accent=(0.97, 0.9, 0.6)),
    "lipoma": LesionStyle((0.90, 0.80, 0.72), "round", (1, 1), (0.25, 0.38), (5.0, 8.0), (0.25, 0.4),
                          textures=("shine",)),
}  # fmt: skip


def _soft(d: np.ndarray, softness: float) -> np.ndarray:
    """Signed distance (px, negative inside) → alpha in (0, 1) with a border `softness` px wide."""
    return 1.0 / (1.0 + np.exp(np.clip(d / max(softness, 1e-3), -40, 40)))


def _window(cx: float, cy: float, reach: float, h: int, w: int) -> tuple[slice, slice]:
    """The (rows, cols) slices of the box within `reach` px of (cx, cy): lesions are drawn only there."""
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 2)
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def _blob(xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float,
          wobble: float) -> np.ndarray:  # fmt: skip
    """Signed distance (px) to a rotated ellipse whose radius wobbles with angle (irregular borders)."""
    t = rng.uniform(0, math.pi)
    u = (xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)
    v = -(xx - cx) * math.sin(t) + (yy - cy) * math.cos(t)
    rho = np.hypot(u / rx, v / ry)
    amps = wobble * rng.uniform(0.3, 1.0, 4) / np.arange(2, 6)
    phases = rng.uniform(0, 2 * math.pi, 4)
    if wobble > 0.06:  # the angular term is the expensive part; near-round blobs skip it
        phi = np.arctan2(v / ry, u / rx)
        edge = 1 + sum(a * np.cos(k * phi + p) for a, k, p in zip(amps, range(2, 6), phases, strict=True))
    else:
        edge = 1.0
    return (rho - edge) * min(rx, ry)


@dataclass(frozen=True)
class LesionFacts:
    """What a rendered picture shows that a caption can state and a model can see: how many lesions were drawn
    and how large the largest is ("small" < 9 %, "medium-sized" < 20 %, else "large", radius as a fraction of
    the picture's shorter side). Flips and crops do not change them."""

    count: int
    size: str
    diameter_mm: int  # of the largest lesion, for a picture whose shorter side spans FIELD_MM
    place: str  # where the lesions' centre of mass lies: one of PLACE_WORDS (thirds of the picture)


SIZE_WORDS = ("small", "medium-sized", "large")
FIELD_MM = 50  # the shorter side of every synthetic picture is taken to span 5 cm of skin
# Thirds of the picture, rows then columns (a crop moves the picture by at most PAD px: rarely across a third).
PLACE_WORDS = ("upper left", "upper middle", "upper right", "left", "centre", "right", "lower left", "lower middle",
               "lower right")  # fmt: skip


def size_word(radius_fraction: float) -> str:
    """The size word of a lesion whose radius is `radius_fraction` of the picture's shorter side."""
    return SIZE_WORDS[0] if radius_fraction < 0.09 else SIZE_WORDS[1] if radius_fraction < 0.2 else SIZE_WORDS[2]


def _render(
    rng: np.random.Generator, style: LesionStyle, h: int, w: int, tone: tuple[float, ...]
) -> tuple[np.ndarray, LesionFacts]:
    """One (h, w, 3) float32 image in [0, 1]: skin background + the disease's lesion(s) + nuisances, and the
    facts of what was drawn."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    side = min(h, w)
    # Background: skin tone × random low-frequency illumination (this is what makes pHashes of unrelated
    # images differ) × blotchy coarse texture.
    base = np.clip(np.asarray(tone) + rng.normal(0, 0.025, 3), 0, 1).astype(np.float32)
    light = np.ones((h, w), np.float32)
    for _ in range(3):
        fx, fy = rng.uniform(-1.6, 1.6, 2)
        light += rng.uniform(0.04, 0.1) * np.cos(2 * math.pi * (fx * xx / w + fy * yy / h) + rng.uniform(0, 6.3))
    coarse = rng.normal(0, 0.025, (h // 6 + 2, w // 6 + 2)).astype(np.float32)
    light += np.kron(coarse, np.ones((6, 6), np.float32))[:h, :w]
    # Smooth mottling at 1/4-1/8 of the picture: random energy in exactly the band a 64-bit pHash looks at.
    k = int(rng.integers(4, 8))
    mottle = Image.fromarray(rng.normal(0, rng.uniform(0.05, 0.1), (k, k)).astype(np.float32))
    light += np.asarray(mottle.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    img = base[None, None, :] * light[..., None]

    # Lesion colour darkens on darker skin, as pigmented skin masks erythema.
    lesion_rgb = np.asarray(style.colour) * (0.7 + 0.3 * float(np.mean(tone))) + rng.normal(0, 0.04, 3)
    accent = np.asarray(style.accent, np.float32)
    alpha = np.zeros((h, w), np.float32)
    inner = np.zeros((h, w), np.float32)  # where centre effects (pale/dark centre) apply
    centres: list[tuple[float, float, float]] = []
    n = int(rng.integers(style.count[0], style.count[1] + 1))
    soft = rng.uniform(*style.softness)

    def paint(mask: np.ndarray, colour: np.ndarray, strength: float, win: tuple[slice, slice] = (slice(None),) * 2):
        m = (np.clip(mask, 0, 1) * strength)[..., None]
        img[win] = img[win] * (1 - m) + colour * m

    if style.shape in ("papules", "scatter"):
        # Papules cluster around one point (papules) or spread over the whole picture (scatter).
        ccx, ccy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        spread = side * (0.22 if style.shape == "papules" else 0.6)
        for _ in range(n):
            r = rng.uniform(*style.size) * side
            cx, cy = ccx + rng.normal(0, spread / 2), ccy + rng.normal(0, spread / 2)
            if style.shape == "scatter":
                cx, cy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h
            win = _window(cx, cy, 1.2 * r + 8 * soft, h, w)
            d = _blob(xx[win], yy[win], rng, cx, cy, r, r * rng.uniform(0.75, 1.0), 0.04)
            alpha[win] = np.maximum(alpha[win], _soft(d, soft))
            centres.append((cx, cy, r))
    else:
        for _ in range(n):
            r = rng.uniform(*style.size) * side
            margin = min(0.35, 0.1 + r / side)  # small lesions roam further (keeps pHashes apart)
            cx, cy = rng.uniform(margin, 1 - margin) * w, rng.uniform(margin, 1 - margin) * h
            ry = r * (rng.uniform(0.55, 0.8) if style.shape == "oval" else rng.uniform(0.85, 1.0))
            wobble = {"irregular": rng.uniform(0.25, 0.45), "diffuse": 0.3}.get(style.shape, 0.05)
            win = _window(cx, cy, 1.7 * r + 8 * soft, h, w)
            d = _blob(xx[win], yy[win], rng, cx, cy, r, ry, wobble)
            a = _soft(d, soft)
            if style.shape == "annular":  # a ring: cut out the centre
                a = a * (1 - 0.85 * _soft(d + r * rng.uniform(0.35, 0.55), soft))
            alpha[win] = np.maximum(alpha[win], a)
            inner[win] = np.maximum(inner[win], _soft(d + r * 0.55, soft + 1))
            centres.append((cx, cy, r))
            if "rim" in style.textures:
                paint(np.exp(-((d / max(2.0, 0.12 * r)) ** 2)), accent, 0.6, win)

    opacity = rng.uniform(*style.opacity)
    shade = 1 + rng.normal(0, 0.05, (h // 4 + 2, w // 4 + 2)).astype(np.float32)  # mottled lesion colour
    lesion = lesion_rgb.astype(np.float32)[None, None, :] * np.kron(shade, np.ones((4, 4), np.float32))[:h, :w, None]
    a = (alpha * opacity)[..., None]
    img = img * (1 - a) + lesion * a

    tex = set(style.textures)
    if "pale_centre" in tex:
        paint(inner * alpha.clip(0.2, 1), accent, rng.uniform(0.4, 0.7))
    if "dark_centre" in tex and rng.random() < 0.6:
        paint(inner, accent, rng.uniform(0.3, 0.7))
    if "scale" in tex or "warty" in tex or "crust" in tex:
        # Speckles at half resolution (2×2 px flakes) inside the lesion.
        flakes = rng.random((h // 2 + 1, w // 2 + 1)) < rng.uniform(0.15, 0.35)
        dots = np.kron(flakes.astype(np.float32), np.ones((2, 2), np.float32))[:h, :w]
        colour = accent if ("warty" in tex or "crust" in tex) else np.array([0.95, 0.93, 0.9], np.float32)
        paint(dots * alpha, colour, rng.uniform(0.35, 0.65))
    for cx, cy, r in centres:
        win = _window(cx, cy, 1.5 * r + 4, h, w)
        x, y = xx[win], yy[win]
        if "crust" in tex:
            d = _blob(x, y, rng, cx + rng.normal(0, r / 3), cy + rng.normal(0, r / 3), r / 3, r / 4, 0.3)
            paint(_soft(d, 1.0) * alpha[win], accent * 0.85, 0.75, win)
        if "shine" in tex:
            g = np.exp(-(((x - cx + 0.3 * r) ** 2 + (y - cy + 0.3 * r) ** 2) / (2 * (0.3 * r + 0.5) ** 2)))
            paint(g * alpha[win], np.ones(3, np.float32), 0.45, win)
        if "pustules" in tex and rng.random() < 0.6:
            paint(np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * (0.35 * r + 0.3) ** 2))), accent, 0.8, win)
    if "papules_overlay" in tex:
        for _ in range(int(rng.integers(4, 12))):
            cx, cy, r = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h, rng.uniform(0.02, 0.04) * side
            win = _window(cx, cy, r + 5, h, w)
            d = np.hypot(xx[win] - cx, yy[win] - cy) - r
            paint(_soft(d, 0.7) * alpha[win], lesion_rgb * 0.85, 0.7, win)
    if "vessels" in tex:
        for cx, cy, r in centres[:2]:
            win = _window(cx, cy, 2.2 * r + 3, h, w)
            x, y = xx[win], yy[win]
            for _ in range(int(rng.integers(2, 4))):
                x0, y0 = cx + rng.normal(0, r / 2), cy + rng.normal(0, r / 2)
                ang, length = rng.uniform(0, 2 * math.pi), rng.uniform(0.4, 1.0) * r
                x1, y1 = x0 + length * math.cos(ang), y0 + length * math.sin(ang)
                seg = np.clip(((x - x0) * (x1 - x0) + (y - y0) * (y1 - y0)) / (length**2 + 1e-9), 0, 1)
                dist = np.hypot(x - (x0 + seg * (x1 - x0)), y - (y0 + seg * (y1 - y0)))
                paint(np.exp(-((dist / 0.7) ** 2)), np.array([0.7, 0.12, 0.16], np.float32), 0.7, win)
    if rng.random() < 0.15:  # a dark hair across the picture: a nuisance every disease can have
        x0, x1 = rng.uniform(0, w, 2)
        path = x0 + (x1 - x0) * yy / h + 3 * np.sin(yy / h * rng.uniform(2, 6))
        paint(np.exp(-(((xx - path) / 0.6) ** 2)), np.array([0.12, 0.09, 0.07], np.float32), 0.8)

    img = img * rng.uniform(0.94, 1.06, 3).astype(np.float32)[None, None, :]  # camera white balance
    img = img + rng.uniform(0.01, 0.025) * rng.standard_normal(img.shape, dtype=np.float32)
    flip_x = rng.random() < 0.5
    if flip_x:
        img = img[:, ::-1]
    flip_y = rng.random() < 0.5
    if flip_y:
        img = img[::-1]
    largest = max(r for _, _, r in centres) / side
    mass = alpha.sum()
    fy = float((alpha.sum(1) * np.arange(h)).sum() / mass / h) if mass > 0 else 0.5
    fx = float((alpha.sum(0) * np.arange(w)).sum() / mass / w) if mass > 0 else 0.5
    fx, fy = (1 - fx if flip_x else fx), (1 - fy if flip_y else fy)
    place = PLACE_WORDS[3 * min(2, int(fy * 3)) + min(2, int(fx * 3))]
    facts = LesionFacts(len(centres), size_word(largest), max(1, round(2 * largest * FIELD_MM)), place)
    return np.clip(img, 0, 1), facts


def to_image(arr: np.ndarray) -> Image.Image:
    """(h, w, 3) float array in [0, 1] → 8-bit RGB image."""
    return Image.fromarray(np.rint(arr * 255).astype(np.uint8))


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit black PNG of width × height pixels that is only kilobytes long: a decompression bomb (e.g.
    20000 × 20000 = 400 megapixels in about 50 kB), built without ever holding the picture in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte 0 + the packed bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row * min(1024, height - start)) for start in range(0, height, 1024))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data + packer.flush())
            + chunk(b"IEND", b""))  # fmt: skip


def png_bytes(img: Image.Image) -> bytes:
    """PNG-encode an image in memory (deterministic: PIL writes no timestamps)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # noisy pixels barely compress; favour speed
    return buf.getvalue()


PAD = 16  # extra canvas around every picture so that a second crop of the same source differs slightly


def render_canvas(seed: int, row_id: int, disease: str, tone: tuple[float, ...]) -> tuple[np.ndarray, int, int]:
    """Render the source picture of row `row_id` of disease `disease` on skin `tone`.

    Returns the (h + PAD, w + PAD, 3) float canvas and the (h, w) of the picture to crop from it, with h and w
    in [64, 112]. Depends only on (seed, row_id, disease, tone), never on generation order.
    """
    canvas, h, w, _ = render_picture(seed, row_id, disease, tone)
    return canvas, h, w


def render_picture(
    seed: int, row_id: int, disease: str, tone: tuple[float, ...]
) -> tuple[np.ndarray, int, int, LesionFacts]:
    """`render_canvas` and the `LesionFacts` of the picture (what its caption may state)."""
    rng = np.random.default_rng([seed, row_id, 7])
    h, w = (int(v) for v in rng.integers(64, 113, 2))
    canvas, facts = _render(rng, STYLES[disease], h + PAD, w + PAD, tone)
    return canvas, h, w, facts


def crop(canvas: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An (h, w, 3) window of `canvas` at a random offset of 0..PAD px (two crops of one source differ)."""
    oy, ox = (int(v) for v in rng.integers(0, PAD + 1, 2))
    return canvas[oy : oy + h, ox : ox + w]


REENCODINGS: tuple[str, ...] = ("jpeg90", "brightness+2%", "brightness-2%")


def reencode(png: bytes, how: str) -> bytes:
    """A near-duplicate of a PNG: a JPEG quality-90 round trip or a ±2 % brightness change, saved as PNG."""
    with Image.open(io.BytesIO(png)) as im:
        img = im.convert("RGB")
    if how == "jpeg90":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        with Image.open(io.BytesIO(buf.getvalue())) as jpeg:
            img = jpeg.convert("RGB")
    elif how in ("brightness+2%", "brightness-2%"):
        factor = 1.02 if how == "brightness+2%" else 0.98
        img = Image.fromarray(np.clip(np.rint(np.asarray(img) * factor), 0, 255).astype(np.uint8))
    else:
        raise ValueError(f"unknown re-encoding {how!r}; valid: {', '.join(REENCODINGS)}")
    return png_bytes(img)

"""Pillow drawing of the synthetic scenes: a few bold primitives shared by every task.

Every task draws from the same palette, shape set and backgrounds on purpose: tuning on a
later task then rewrites features an earlier task needed, which is what makes sequential
tuning forget. Scenes are drawn at 4x and box-filtered down, so shapes stay readable at 32 px.
Coordinates are fractions of the image side, so a scene renders at any size.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 210, 30),
    "purple": (150, 60, 190),
    "orange": (250, 140, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "dark": (30, 30, 36),
    "gray": (128, 128, 128),
    "light": (228, 228, 222),
}
# How a shape is rendered (the ImageNet-R-like task asks for the class across renditions).
STYLES: tuple[str, ...] = ("filled", "outline", "bordered")

_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Obj:
    """One shape: centre and radius as fractions of the image side."""

    shape: str
    color: str
    cx: float
    cy: float
    r: float
    style: str = "filled"


@dataclass(frozen=True)
class Scene:
    """What an image shows. `kind` names the layout; `bars` holds (color, height 0-1) for charts."""

    kind: str
    bg: str
    objects: tuple[Obj, ...] = ()
    bars: tuple[tuple[str, float], ...] = field(default=())


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = 0.85 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + 0.98 * r, cy + 0.78 * r), (cx - 0.98 * r, cy + 0.78 * r)]
    if shape == "cross":
        t = 0.36 * r
        return [
            (cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
            (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r),
            (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t),
        ]
    raise ValueError(f"unknown shape {shape!r}")


def _contrast(bg: str) -> tuple[int, int, int]:
    return (250, 250, 250) if bg == "dark" else (15, 15, 15)


def _draw_obj(draw: ImageDraw.ImageDraw, obj: Obj, side: int, bg: str) -> None:
    cx, cy, r = obj.cx * side, obj.cy * side, obj.r * side
    fill = COLORS[obj.color]
    width = max(2, round(0.3 * r))
    if obj.style == "filled":
        kw = {"fill": fill}
    elif obj.style == "outline":
        kw = {"outline": fill, "width": width}
    elif obj.style == "bordered":
        kw = {"fill": fill, "outline": _contrast(bg), "width": max(2, round(0.18 * r))}
    else:
        raise ValueError(f"unknown style {obj.style!r}")
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], **kw)
    else:
        draw.polygon(_shape_points(obj.shape, cx, cy, r), **kw)


def _draw_chart(draw: ImageDraw.ImageDraw, bars: tuple[tuple[str, float], ...], side: int,
                bg: str) -> None:
    ink = _contrast(bg)
    left, right, top, bottom = 0.1 * side, 0.92 * side, 0.08 * side, 0.9 * side
    n = len(bars)
    slot = (right - left) / n
    for i, (color, height) in enumerate(bars):
        x0 = left + i * slot + 0.14 * slot
        x1 = left + (i + 1) * slot - 0.14 * slot
        y0 = bottom - height * (bottom - top)
        draw.rectangle([x0, y0, x1, bottom], fill=COLORS[color])
    axis = max(2, round(0.025 * side))
    draw.rectangle([left - axis, top, left, bottom + axis], fill=ink)
    draw.rectangle([left - axis, bottom, right, bottom + axis], fill=ink)


def render(scene: Scene, size: int) -> Image.Image:
    """Draw `scene` as a size x size RGB image (deterministic: no randomness here)."""
    side = size * _SUPERSAMPLE
    img = Image.new("RGB", (side, side), BACKGROUNDS[scene.bg])
    draw = ImageDraw.Draw(img)
    if scene.kind == "chart":
        _draw_chart(draw, scene.bars, side, scene.bg)
    for obj in scene.objects:
        _draw_obj(draw, obj, side, scene.bg)
    return img.resize((size, size), Image.Resampling.BOX)


def png_bytes(img: Image.Image) -> bytes:
    """PNG encoding with fixed options and no metadata, so equal images give equal bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()

"""What a scene shows, as class labels: the targets of the tiny base's vision-tower pretraining.

Generic visual attributes of the pretraining scenes (never a task's question or answer format):
the layout, the background, how many objects, each grid object's shape and colour, per colour
how many objects or bars, and the tallest and shortest bar of a chart, by colour and by place from the
left. -100 where one does not apply.
"""

from __future__ import annotations

from .images import BACKGROUNDS, COLORS, SHAPES, Scene
from .tasks import KINDS

IGNORE = -100
_COLORS = tuple(COLORS)
_SLOTS = 2  # the first objects in reading order get a shape and a colour label each
MAX_OBJECTS = 9
MAX_BARS = 5

CLASSES: dict[str, int] = {
    "kind": len(KINDS), "bg": len(BACKGROUNDS), "n_objects": MAX_OBJECTS + 1,
    **{f"shape{i}": len(SHAPES) for i in range(_SLOTS)},
    **{f"color{i}": len(_COLORS) for i in range(_SLOTS)},
    **{f"n_{c}": MAX_OBJECTS + 1 for c in _COLORS},
    "tallest": len(_COLORS), "shortest": len(_COLORS),
    "tallest_at": MAX_BARS, "shortest_at": MAX_BARS,
}


def scene_labels(scene: Scene) -> dict[str, int]:
    """One class index per attribute of CLASSES (IGNORE where it does not apply)."""
    out = dict.fromkeys(CLASSES, IGNORE)
    out["kind"] = KINDS.index(scene.kind)
    out["bg"] = list(BACKGROUNDS).index(scene.bg)
    if scene.kind == "chart":  # bars are drawn left to right in the order listed
        heights = [h for _, h in scene.bars]
        tallest, shortest = heights.index(max(heights)), heights.index(min(heights))
        out["tallest"] = _COLORS.index(scene.bars[tallest][0])
        out["shortest"] = _COLORS.index(scene.bars[shortest][0])
        out["tallest_at"], out["shortest_at"] = tallest, shortest
        out["n_objects"] = len(scene.bars)
        return out
    objs = scene.objects  # single, and pair: left then right
    if scene.kind in ("icons", "mixed"):  # grid cells in reading order
        objs = tuple(sorted(objs, key=lambda o: (int(o.cy * 3), int(o.cx * 3))))
    out["n_objects"] = len(objs)
    for c in _COLORS:
        out[f"n_{c}"] = sum(o.color == c for o in objs)
    for i, o in enumerate(objs[:_SLOTS]):
        out[f"shape{i}"] = SHAPES.index(o.shape)
        out[f"color{i}"] = _COLORS.index(o.color)
    return out


def label_columns(scenes: list[Scene]) -> dict[str, list[int]]:
    """Per attribute, the labels of `scenes` in order."""
    rows = [scene_labels(s) for s in scenes]
    return {name: [r[name] for r in rows] for name in CLASSES}

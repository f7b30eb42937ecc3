"""Line charts drawn with Braille dots (2x4 dots a cell), in plain Python.

A cell keeps the series that last touched it, so the widget can colour it; long series are
averaged per dot column first, so drawing costs the chart's width, not the series' length.
"""

from __future__ import annotations

from dataclasses import dataclass

# Bit of each dot in a Braille cell, [row][column] (Unicode's dot numbering).
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
_BLANK = 0x2800


@dataclass
class Plot:
    """A rendered chart: rows of (character, series index or None) and the ranges drawn."""

    rows: list[list[tuple[str, int | None]]]
    x_range: tuple[float, float]
    y_range: tuple[float, float]


def _bounds(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.05 or 1.0
        return lo - pad, hi + pad
    return lo, hi


def plot(series: list[list[tuple[float, float]]], width: int, height: int) -> Plot:
    """Draw `series` (each a list of (x, y), x ascending) into width x height cells."""
    width, height = max(1, width), max(1, height)
    points = [p for s in series for p in s]
    bits = [[0] * width for _ in range(height)]
    owner: list[list[int | None]] = [[None] * width for _ in range(height)]
    if not points:
        return Plot([[(" ", None)] * width for _ in range(height)], (0.0, 1.0), (0.0, 1.0))
    x0, x1 = _bounds([p[0] for p in points])
    y0, y1 = _bounds([p[1] for p in points])
    dots_x, dots_y = width * 2, height * 4

    def dot(px: int, py: int, index: int) -> None:
        if 0 <= px < dots_x and 0 <= py < dots_y:
            row, col = py // 4, px // 2
            bits[row][col] |= _DOTS[py % 4][px % 2]
            owner[row][col] = index

    for index, s in enumerate(series):
        previous = None
        for px, y in _per_column(s, x0, x1, dots_x):
            py = round((y1 - y) / (y1 - y0) * (dots_y - 1))
            if previous is None:
                dot(px, py, index)
            else:
                for qx, qy in _line(*previous, px, py):
                    dot(qx, qy, index)
            previous = (px, py)
    rows = [[(chr(_BLANK + b) if b else " ", owner[r][c] if b else None) for c, b in enumerate(line)]
            for r, line in enumerate(bits)]
    return Plot(rows, (x0, x1), (y0, y1))


def _per_column(s: list[tuple[float, float]], x0: float, x1: float, dots_x: int) -> list[tuple[int, float]]:
    """Mean y of the points falling in each dot column, in x order."""
    sums: dict[int, list[float]] = {}
    for x, y in s:
        px = round((x - x0) / (x1 - x0) * (dots_x - 1))
        acc = sums.setdefault(px, [0.0, 0])
        acc[0] += y
        acc[1] += 1
    return [(px, total / n) for px, (total, n) in sorted(sums.items())]


def _line(xa: int, ya: int, xb: int, yb: int):
    """Bresenham's line from (xa, ya) to (xb, yb), both ends included."""
    dx, dy = abs(xb - xa), -abs(yb - ya)
    sx, sy = (1 if xa < xb else -1), (1 if ya < yb else -1)
    err = dx + dy
    while True:
        yield xa, ya
        if xa == xb and ya == yb:
            return
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            xa += sx
        if e2 <= dx:
            err += dx
            ya += sy


def concat_stages(curves: dict[int, list[tuple[int, float]]]) -> list[list[tuple[float, float]]]:
    """Stages' curves, in stage order, laid end to end on one x axis (each starts where the
    previous ended), so a run reads left to right."""
    series, offset = [], 0
    for index in sorted(curves):
        points = curves[index]
        series.append([(offset + step, value) for step, value in points])
        if points:
            offset += max(step for step, _ in points)
    return series


def tick(value: float) -> str:
    """A short axis label."""
    magnitude = abs(value)
    if magnitude >= 10_000:
        return f"{value / 1000:.0f}k"
    if magnitude >= 100 or value == int(value):
        return f"{value:.0f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"

"""The training loss of a run, stages laid end to end, one colour a stage."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from ..chart import concat_stages, plot, tick
from .style import Palette

GUTTER = 7  # y-axis labels


class LossChart(Widget):
    DEFAULT_CSS = "LossChart { height: 1fr; min-height: 6; }"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._curves: dict[int, list[tuple[int, float]]] = {}

    def set_curves(self, curves: dict[int, list[tuple[int, float]]]) -> None:
        self._curves = curves
        self.refresh()

    def _colours(self, palette: Palette) -> list[str]:
        return [c.hex for c in (palette.primary, palette.accent, palette.success, palette.warning, palette.error)]

    def render(self) -> Text:
        palette = Palette.of(self.app)
        width, height = self.size.width, self.size.height
        points = sum(len(v) for v in self._curves.values())
        if not points:
            return Text("no loss points yet: they appear here while a stage trains", style=palette.muted.hex)
        series = concat_stages(self._curves)
        plot_w, plot_h = max(4, width - GUTTER - 1), max(2, height - 3)
        chart = plot(series, plot_w, plot_h)
        colours = self._colours(palette)
        stages = sorted(self._curves)
        y0, y1 = chart.y_range
        labels = {0: tick(y1), plot_h - 1: tick(y0), (plot_h - 1) // 2: tick((y0 + y1) / 2)}
        text = Text(no_wrap=True, overflow="crop")
        for r, row in enumerate(chart.rows):
            text.append(labels.get(r, "").rjust(GUTTER - 1) + " ┤" if r in labels else " " * GUTTER + "│",
                        style=palette.muted.hex)
            for char, owner in row:
                text.append(char, style=colours[stages[owner] % len(colours)] if owner is not None else "")
            text.append("\n")
        x0, x1 = chart.x_range
        text.append(" " * GUTTER + "└" + "─" * plot_w + "\n", style=palette.muted.hex)
        left, right = tick(max(0.0, x0)), tick(x1)
        text.append(" " * (GUTTER + 1) + left + right.rjust(plot_w - len(left)) + "\n", style=palette.muted.hex)
        for index in stages:
            text.append("━ ", style=colours[index % len(colours)])
            last = self._curves[index][-1] if self._curves[index] else None
            text.append(f"stage {index + 1}" + (f" {last[1]:.3f}" if last else "") + "  ", style=palette.muted.hex)
        return text

"""CKA similarity per layer: one small heatmap per layer, scale 0..1."""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.widgets import Label

from .heatmap import HeatmapTable


class CkaView(VerticalScroll):
    """Takes {layer: square matrix}; rows and columns are labelled with `labels` or indices."""

    async def show(self, cka: dict[str, list[list[float]]], labels: list[str] | None = None) -> None:
        await self.remove_children()
        for layer, matrix in cka.items():
            n = max(len(matrix), max((len(r) for r in matrix), default=0))
            names = labels if labels and len(labels) == n else [str(i) for i in range(n)]
            table = HeatmapTable(classes="cka")
            await self.mount(Label(layer, classes="cka-layer"), table)
            table.show(names[: len(matrix)], names, matrix, lo=0.0, hi=1.0, digits=2)

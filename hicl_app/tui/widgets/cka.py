"""CKA similarity per layer: one small heatmap per layer, scale 0..1; and the per-layer summary
a method stored while training (hide's mean cross-task CKA, which chose its expanded layers)."""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.widgets import Label

from .heatmap import HeatmapTable


class CkaView(VerticalScroll):
    """Takes {layer: square matrix}; rows and columns are labelled with `labels` or indices."""

    async def show(self, cka: dict[str, list[list[float]]], labels: list[str] | None = None,
                   stored: dict | None = None) -> None:
        await self.remove_children()
        if stored:
            await self._show_stored(stored)
        for layer, matrix in cka.items():
            n = max(len(matrix), max((len(r) for r in matrix), default=0))
            names = labels if labels and len(labels) == n else [str(i) for i in range(n)]
            table = HeatmapTable(classes="cka")
            await self.mount(Label(layer, classes="cka-layer"), table)
            table.show(names[: len(matrix)], names, matrix, lo=0.0, hi=1.0, digits=2)
        if not cka:
            await self.mount(Label("`hicl analyze cka RUN` adds the task-by-task matrices per layer",
                                   classes="cka-note"))

    async def _show_stored(self, s: dict) -> None:
        layers = sorted(s["mean_cross"])
        expanded = set(s.get("expanded") or [])
        threshold = s.get("threshold")
        under = f"; ✱ expanded (under {threshold:g})" if threshold is not None else "; ✱ expanded"
        title = (f"measured by the run at stage {s['stage'] + 1 if s.get('stage') is not None else '?'}: "
                 f"mean cross-task CKA per layer ({s.get('kernel') or 'linear'}, {s.get('n_probe')} probes){under}")
        table = HeatmapTable(classes="cka")
        await self.mount(Label(title, classes="cka-layer"), table)
        table.show([f"layer {k}{' ✱' if k in expanded else ''}" for k in layers], ["mean CKA"],
                   [[s["mean_cross"][k]] for k in layers], lo=0.0, hi=1.0, digits=2)

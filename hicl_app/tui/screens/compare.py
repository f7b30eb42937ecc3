"""Two runs side by side: their metrics, final score per task, and both matrices on one scale."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Static

from ...core import clmetrics
from ..data import RunData, fmt_score, fmt_signed, load_run
from ..widgets.heatmap import HeatmapTable, legend, value_range
from ..widgets.metrics import LABELS
from ..widgets.style import Palette
from ..widgets.tables import num, refill
from .base import LiveScreen


def final_scores(data: RunData) -> dict[str, float | None]:
    """Each task's score in the run's latest complete row."""
    names, matrix = data.detail["task_order"], data.detail["matrix"]
    last = clmetrics.last_complete_row(matrix) if matrix else None
    row = matrix[last] if last is not None else []
    return {name: (row[j] if j < len(row) else None) for j, name in enumerate(names)}


class CompareScreen(LiveScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("x", "swap", "Swap sides")]

    def __init__(self, a: int, b: int) -> None:
        super().__init__()
        self.a, self.b = a, b

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="compare"):
            yield Static(id="compare-title")
            with Horizontal(id="compare-tables"):
                yield DataTable(id="compare-metrics", cursor_type="row")
                yield DataTable(id="compare-tasks", cursor_type="row")
            with Horizontal(id="compare-matrices"):
                with Vertical(classes="compare-side"):
                    yield Static(id="matrix-a-title", classes="compare-label")
                    yield HeatmapTable(id="matrix-a")
                with Vertical(classes="compare-side"):
                    yield Static(id="matrix-b-title", classes="compare-label")
                    yield HeatmapTable(id="matrix-b")
            yield Static(id="compare-legend")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        metrics = self.query_one("#compare-metrics", DataTable)
        metrics.border_title = "Metrics"
        tasks = self.query_one("#compare-tasks", DataTable)
        tasks.border_title = "Final score per task"

    def load(self) -> tuple[RunData, RunData]:
        return load_run(self.app.catalog, self.a), load_run(self.app.catalog, self.b)

    def show_data(self, data: tuple[RunData, RunData]) -> None:
        a, b = data
        palette = Palette.of(self.app)
        muted = palette.muted.hex
        title = Text()
        for side, run in (("A", a), ("B", b)):
            if side == "B":
                title.append("\n")
            title.append(f"{side} ", style=f"bold {palette.accent.hex}")
            title.append(f"run {run.id} {run.detail['name']}", style="bold")
            title.append(f" ({run.detail['method']}, ", style=muted)
            title.append_text(palette.status(run.detail["status"]))
            title.append(")", style=muted)
        self.query_one("#compare-title", Static).update(title)

        def delta(x, y, lower_is_better: bool = False) -> Text:
            if x is None or y is None:
                return num("—", muted)
            d = y - x
            better = -d if lower_is_better else d
            colour = palette.success.hex if better > 0 else palette.error.hex if better < 0 else muted
            return num(fmt_signed(d, 2), colour)

        metrics = self.query_one("#compare-metrics", DataTable)
        ma, mb = a.detail["metrics"], b.detail["metrics"]
        labels = [(key, label) for key, label in LABELS
                  if key != "fwt" or ma.get(key) is not None or mb.get(key) is not None]
        refill(metrics, ("metric", "A", "B", "B−A"), [
            (key, [Text(label), num(fmt_score(ma.get(key), 2)), num(fmt_score(mb.get(key), 2)),
                   delta(ma.get(key), mb.get(key), key == "forgetting")]) for key, label in labels])
        fa, fb = final_scores(a), final_scores(b)
        names = list(fa) + [n for n in fb if n not in fa]
        tasks = self.query_one("#compare-tasks", DataTable)
        refill(tasks, ("task", "A", "B", "B−A"), [
            (name, [Text(name), num(fmt_score(fa.get(name))), num(fmt_score(fb.get(name))),
                    delta(fa.get(name), fb.get(name))]) for name in names])

        lo, hi = value_range(a.detail["matrix"] + b.detail["matrix"])
        for side, run in (("a", a), ("b", b)):
            d = run.detail
            self.query_one(f"#matrix-{side}-title", Static).update(
                Text(f"{side.upper()}: run {d['id']}", style=f"bold {palette.accent.hex}"))
            labels = [f"s{st['index']} {', '.join(st['train_tasks'])}" for st in d["stages"]]
            footer = ("Δ vs best", run.forgetting()) if len(d["matrix"]) > 1 else None
            self.query_one(f"#matrix-{side}", HeatmapTable).show(labels, d["task_order"], d["matrix"], lo=lo, hi=hi,
                                                                footer=footer)
        self.query_one("#compare-legend", Static).update(legend(palette, lo, hi))

    def action_swap(self) -> None:
        self.a, self.b = self.b, self.a
        self.reload()

"""Runs side by side: their metrics, each run's difference from the first with its paired bootstrap
interval, the final score per task, and every run's matrix on one scale."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Static

from ...core import clmetrics
from ..data import RunData, load_run
from ..widgets.heatmap import HeatmapTable, legend, value_range
from ..widgets.style import Palette
from ..widgets.tables import num, refill
from .base import LiveScreen

#: the metrics of the comparison (General: the held-out task after the sequence)
METRICS = (("mft", "MFT"), ("last", "Last"), ("avg", "Avg"), ("bwt", "BWT"), ("forgetting", "Forgetting"),
           ("general", "General"))
#: bootstrap resamples on this screen: fewer than `hicl compare`'s 1000, to answer at once
RESAMPLES = 400


def final_scores(data: RunData) -> dict[str, float | None]:
    """Each task's score in the run's latest complete row."""
    names, matrix = data.detail["task_order"], data.detail["matrix"]
    last = clmetrics.last_complete_row(matrix) if matrix else None
    row = matrix[last] if last is not None else []
    return {name: (row[j] if j < len(row) else None) for j, name in enumerate(names)}


def side(i: int) -> str:
    """A, B, ..., Z, then R27, R28, ..."""
    return chr(ord("A") + i) if i < 26 else f"R{i + 1}"


def compact(value: float | None, signed: bool = False) -> str:
    """One decimal: 104.7, +12.3 (the tables stay narrow enough for 80 columns)."""
    if value is None:
        return "—"
    value = round(value, 1)
    if value == 0:
        return "0.0"  # not "-0.0" or "+0.0" for a difference that rounds away
    return f"{value:+.1f}" if signed else f"{value:.1f}"


@dataclass
class CompareData:
    runs: list[RunData]
    metrics: list[dict]  # per run: the compared metrics
    intervals: list[dict | None]  # per run after the first: {metric: interval dict}, None when not available
    note: str | None  # why there are no intervals, or that the environments differ

    def __eq__(self, other) -> bool:
        return isinstance(other, CompareData) and (self.runs, self.metrics, self.intervals, self.note) == (
            other.runs, other.metrics, other.intervals, other.note)


def load_compare(catalog, ids: list[int]) -> CompareData:
    """The runs, and each against the first with paired bootstrap intervals where the predictions allow."""
    from ...core.errors import HiclError
    from ...services import compare

    runs = [load_run(catalog, i) for i in ids]
    metrics = []
    for run in runs:
        general = run.detail.get("general") or {}
        metrics.append({**run.detail["metrics"], "general": general.get("last")})
    intervals: list[dict | None] = [None] * (len(runs) - 1)
    notes = []
    try:
        loaded = [compare.run_samples(catalog, i) for i in ids]
        for k, other in enumerate(loaded[1:]):
            try:
                intervals[k] = compare.compare_pair(loaded[0], other, resamples=RESAMPLES, seed=0)["metrics"]
            except HiclError as exc:
                why = str(exc).split("cannot be compared: ", 1)[-1].split(": ", 1)[0]
                notes.append(f"{side(k + 1)}: no interval ({why})")
        differ = compare.env_differences([summary for summary, _ in loaded])
        if differ:
            notes.append("environments differ: " + ", ".join(differ))
    except HiclError as exc:
        notes.append(f"no intervals: {exc}")
    return CompareData(runs=runs, metrics=metrics, intervals=intervals, note="; ".join(notes) or None)


class CompareScreen(LiveScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("x", "swap", "Swap A and B")]

    def __init__(self, *runs: int) -> None:
        super().__init__()
        self.ids = list(runs)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="compare"):
            yield Static(id="compare-title")
            yield DataTable(id="compare-metrics", cursor_type="row")
            yield Static(id="compare-verdict")
            yield DataTable(id="compare-tasks", cursor_type="row")
            yield Vertical(id="compare-matrices")
            yield Static(id="compare-legend")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#compare-metrics", DataTable).border_title = "Metrics · differences from A (95% CI)"
        self.query_one("#compare-tasks", DataTable).border_title = "Final score per task"

    def load(self) -> CompareData:
        return load_compare(self.app.catalog, self.ids)

    def show_data(self, data: CompareData) -> None:
        palette = Palette.of(self.app)
        muted = palette.muted.hex
        title = Text()
        for i, run in enumerate(data.runs):
            if i:
                title.append("\n")
            title.append(f"{side(i)} ", style=f"bold {palette.accent.hex}")
            title.append(f"run {run.id} {run.detail['name']}", style="bold")
            title.append(f" ({run.detail['method']}, ", style=muted)
            title.append_text(palette.status(run.detail["status"]))
            title.append(")", style=muted)
        self.query_one("#compare-title", Static).update(title)

        def coloured(d: float | None, key: str, text: str, clear: bool = True) -> Text:
            if d is None:
                return num("—", muted)
            better = -d if key == "forgetting" else d
            colour = palette.success.hex if better > 0 else palette.error.hex if better < 0 else muted
            return num(text, colour if clear else muted)

        others = range(1, len(data.runs))
        labels = ["metric"] + [side(i) for i in range(len(data.runs))]
        for i in others:
            labels += [f"{side(i)}−A", "95% CI"]
        rows = []
        for key, label in METRICS:
            cells = [Text(label)] + [num(compact(m.get(key))) for m in data.metrics]
            for i in others:
                a, b = data.metrics[0].get(key), data.metrics[i].get(key)
                iv = (data.intervals[i - 1] or {}).get(key)
                d = None if a is None or b is None else b - a
                clear = iv is None or iv["excludes_zero"]
                cells.append(coloured(d, key, compact(d, signed=True), clear))
                cells.append(num("—" if not iv or iv["low"] is None else
                                 f"[{compact(iv['low'], True)},{compact(iv['high'], True)}]", muted))
            rows.append((key, cells))
        refill(self.query_one("#compare-metrics", DataTable), labels, rows)
        self.query_one("#compare-verdict", Static).update(self._verdict(data, palette))

        finals = [final_scores(run) for run in data.runs]
        names = list(dict.fromkeys(name for f in finals for name in f))
        labels = ["task"] + [side(i) for i in range(len(data.runs))] + [f"{side(i)}−A" for i in others]
        rows = []
        for name in names:
            values = [f.get(name) for f in finals]
            cells = [Text(name)] + [num(compact(v)) for v in values]
            for i in others:
                d = None if values[0] is None or values[i] is None else values[i] - values[0]
                cells.append(coloured(d, name, compact(d, signed=True)))
            rows.append((name, cells))
        refill(self.query_one("#compare-tasks", DataTable), labels, rows)
        self._show_matrices(data, palette)

    def _verdict(self, data: CompareData, palette: Palette) -> Text:
        text = Text()
        for i in range(1, len(data.runs)):
            ivs = data.intervals[i - 1]
            if ivs is None:
                continue
            better = [label for key, label in METRICS if ivs[key]["excludes_zero"]
                      and (ivs[key]["diff"] < 0 if key == "forgetting" else ivs[key]["diff"] > 0)]
            worse = [label for key, label in METRICS if ivs[key]["excludes_zero"] and label not in better]
            if text:
                text.append("\n")
            text.append(f"{side(i)} vs A: ", style=f"bold {palette.accent.hex}")
            if not better and not worse:
                text.append("no clear difference (every interval holds 0)", style=palette.muted.hex)
            if better:
                text.append(f"better on {', '.join(better)}", style=palette.success.hex)
            if worse:
                text.append(("; " if better else "") + f"worse on {', '.join(worse)}", style=palette.error.hex)
        if data.note:
            if text:
                text.append("\n")
            text.append(data.note, style=palette.warning.hex)
        return text

    def _show_matrices(self, data: CompareData, palette: Palette) -> None:
        box = self.query_one("#compare-matrices", Vertical)
        wanted = [f"matrix-{i}" for i in range(len(data.runs))]
        if [w.id for w in box.query(HeatmapTable)] != wanted:
            box.remove_children()
            for i in range(len(data.runs)):
                box.mount(Static(id=f"matrix-{i}-title", classes="compare-label"))
                box.mount(HeatmapTable(id=f"matrix-{i}"))
        lo, hi = value_range([row for run in data.runs for row in run.detail["matrix"]])
        for i, run in enumerate(data.runs):
            d = run.detail
            self.query_one(f"#matrix-{i}-title", Static).update(
                Text(f"{side(i)}: run {d['id']} {d['name']}", style=f"bold {palette.accent.hex}"))
            labels = [f"s{st['index'] + 1} {', '.join(st['train_tasks'])}" for st in d["stages"]]
            footer = ("Δ vs best", run.forgetting()) if len(d["matrix"]) > 1 else None
            self.query_one(f"#matrix-{i}", HeatmapTable).show(labels, d["task_order"], d["matrix"], lo=lo, hi=hi,
                                                               footer=footer)
        self.query_one("#compare-legend", Static).update(legend(palette, lo, hi))

    def action_swap(self) -> None:
        if len(self.ids) > 1:
            self.ids[0], self.ids[1] = self.ids[1], self.ids[0]
            self.reload()


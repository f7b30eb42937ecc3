"""One run: its accuracy matrix as a heatmap, metrics, loss curve, stages, adapters and CKA."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from ..data import RunData, column_scales, fmt_eta, fmt_score, fmt_size, load_run, progress_of
from ..widgets.cka import CkaView
from ..widgets.heatmap import HeatmapTable, value_range
from ..widgets.loss_chart import LossChart
from ..widgets.metrics import MetricsBar
from ..widgets.style import Palette
from ..widgets.tables import clip, num, refill, selected_key
from .base import LiveScreen

TABS = ("matrix", "loss", "stages", "adapters", "cka")
STAGE_COLUMNS = ("st", "trains on", "status", "progress", "step", "loss", "ETA", "job")
ADAPTER_COLUMNS = ("st", "size", "sha256", "files", "path")


class RunScreen(LiveScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("c", "job('cancel')", "Cancel"),
        Binding("r", "job('retry')", "Retry"),
        Binding("m", "mark", "Mark"),
        Binding("v", "compare", "Compare"),
        Binding("p", "push", "Push"),
        *[Binding(str(i + 1), f"tab('{tab}')", tab.title(), show=False) for i, tab in enumerate(TABS)],
    ]

    def __init__(self, run_id: int) -> None:
        super().__init__()
        self.run_id = run_id
        self.data: RunData | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="run-title")
        yield MetricsBar(id="run-metrics")
        yield Static(id="run-error")
        with TabbedContent(id="run-tabs"):
            with TabPane("Matrix", id="matrix"):
                yield HeatmapTable(id="matrix-table")
                yield Static(id="matrix-legend")
            with TabPane("Loss", id="loss"):
                yield LossChart(id="loss-chart")
            with TabPane("Stages", id="stages"):
                yield DataTable(id="stages-table", cursor_type="row")
            with TabPane("Adapters", id="adapters"):
                yield DataTable(id="adapters-table", cursor_type="row")
                yield Static(id="adapter-detail")
            with TabPane("CKA", id="cka"):
                yield CkaView(id="cka-view")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#run-tabs", TabbedContent).hide_tab("cka")

    def load(self) -> RunData:
        return load_run(self.app.catalog, self.run_id)

    async def show_data(self, data: RunData) -> None:
        self.data = data
        d = data.detail
        palette = Palette.of(self.app)
        muted = palette.muted.hex
        done = sum(st["status"] == "done" for st in d["stages"])
        title = Text()
        title.append(f"run {d['id']} ", style="bold")
        title.append(d["name"], style=f"bold {palette.primary.hex}")
        title.append(f"  {d['method']} · stage {done}/{len(d['stages'])} · ", style=muted)
        title.append_text(palette.status(d["status"]))
        title.append(f"\n{' → '.join(d['task_order'])}", style=muted)
        self.query_one("#run-title", Static).update(title)
        self.query_one("#run-metrics", MetricsBar).show(d["metrics"])
        error = self.query_one("#run-error", Static)
        error.update(Text(f"✗ {d['error']}", style=palette.error.hex) if d["error"] else "")
        error.display = bool(d["error"])
        self._show_matrix(data, palette)
        self.query_one("#loss-chart", LossChart).set_curves(data.loss)
        self._show_stages(data, palette)
        self._show_adapters(data, palette)
        tabs = self.query_one("#run-tabs", TabbedContent)
        if data.cka or data.stored_cka:
            tabs.show_tab("cka")
            await self.query_one("#cka-view", CkaView).show(data.cka, d["task_order"], data.stored_cka)
        else:
            tabs.hide_tab("cka")

    def _show_matrix(self, data: RunData, palette: Palette) -> None:
        d = data.detail
        names, matrix = d["task_order"], d["matrix"]
        lo, hi = value_range(matrix)
        labels = [f"s{st['index'] + 1} {', '.join(st['train_tasks'])}" for st in d["stages"]]
        rows, row_labels = list(matrix), list(labels)
        if d["zero_shot"]:
            rows.insert(0, d["zero_shot"])
            row_labels.insert(0, "zero-shot")
        footer = ("Δ vs best", data.forgetting()) if len(matrix) > 1 else None
        self.query_one("#matrix-table", HeatmapTable).show(row_labels, names, rows, lo=lo, hi=hi, footer=footer,
                                                           scales=column_scales(rows))
        caption = Text("½ best ", style=palette.muted.hex)
        for i in range(8):
            caption.append(" ", style=palette.heat(i / 7, 0.0, 1.0))
        caption.append(" best, per column · row sK: after stage K",
                       style=palette.muted.hex)
        self.query_one("#matrix-legend", Static).update(caption)

    def _show_stages(self, data: RunData, palette: Palette) -> None:
        jobs = {j["stage_index"]: j for j in data.jobs if j.get("kind", "stage") == "stage"}
        rows = []
        for st in data.detail["stages"]:
            job = jobs.get(st["index"], {"status": st["status"], "progress": {}})
            fraction, steps = progress_of(job)
            p = job["progress"]
            bar = palette.bar(fraction, 10, job["status"])
            running = job["status"] == "running"
            rows.append((str(st["index"]), [
                num(str(st["index"] + 1)), clip(", ".join(st["train_tasks"]), 24), palette.status(st["status"]), bar,
                num(steps or (str(st["steps"]) if st["steps"] is not None else "")),
                num(fmt_score(p.get("loss"), 3) if p.get("loss") is not None else "—"),
                num(fmt_eta(p.get("eta_s")) if running else "—"),
                num(str(job.get("id", "")), palette.muted.hex)]))
        refill(self.query_one("#stages-table", DataTable), STAGE_COLUMNS, rows)

    def _show_adapters(self, data: RunData, palette: Palette) -> None:
        rows = [(str(i), [num("" if a["stage_index"] is None else str(a["stage_index"] + 1)),
                          num(fmt_size(a["size_bytes"])), Text(a["sha256"][:16] + "…", style=palette.accent.hex),
                          num(str(len(a["files"]))), Text(a["path"], style=palette.muted.hex)])
                for i, a in enumerate(data.detail["adapters"])]
        table = self.query_one("#adapters-table", DataTable)
        refill(table, ADAPTER_COLUMNS, rows)
        self._show_adapter_detail()

    def _show_adapter_detail(self) -> None:
        detail = self.query_one("#adapter-detail", Static)
        key = selected_key(self.query_one("#adapters-table", DataTable))
        if self.data is None or key is None:
            detail.update(Text("no adapters yet: one is saved when a stage finishes",
                               style=Palette.of(self.app).muted.hex))
            return
        a = self.data.detail["adapters"][int(key)]
        detail.update(Text(f"sha256 {a['sha256']}\n{a['path']}"))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "adapters-table":
            self._show_adapter_detail()

    def action_tab(self, tab: str) -> None:
        tabs = self.query_one("#run-tabs", TabbedContent)
        if tab != "cka" or (self.data and (self.data.cka or self.data.stored_cka)):
            tabs.active = tab

    def action_job(self, action: str) -> None:
        """On the Stages tab, the highlighted stage's job; elsewhere the run's current one."""
        table = self.query_one("#stages-table", DataTable)
        key = selected_key(table)
        if self.focused is table and key is not None and self.data is not None:
            job = next((j for j in self.data.jobs if str(j["stage_index"]) == key), None)
            if job is not None:
                self.app.job_action(action, job_id=job["id"])
                return
        self.app.job_action(action, run_id=self.run_id)

    def action_mark(self) -> None:
        self.app.mark_run(self.run_id)

    def action_compare(self) -> None:
        marked = self.app.marked_run
        if marked is None or marked == self.run_id:
            self.notify("mark another run with m first (here or on the dashboard)", severity="warning")
            return
        self.app.compare_runs(marked, self.run_id)

    def action_push(self) -> None:
        from .push import PushScreen

        def pushed(url: str | None) -> None:
            if url:
                self.notify(f"pushed: {url}", title=f"run {self.run_id}")

        self.app.push_screen(PushScreen(self.run_id), pushed)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "push":
            return self.app.hub_available
        return True

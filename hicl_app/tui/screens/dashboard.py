"""The dashboard: runs (paged), the jobs with their progress, and the tasks."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.widgets import DataTable, Footer

from ..data import DashboardData, fmt_eta, fmt_score, load_dashboard, progress_of, stage_label
from ..widgets.style import Palette
from ..widgets.tables import Fit, clip, num, refill, selected_key
from .base import LiveScreen

BAR = 8
RUN_COLUMNS = ("#", "name", "method", "stage", "status", "Avg", "Last", "created")
JOB_COLUMNS = ("job", "run", "st", "status", "progress", "loss", "smp/s", "ETA")
TASK_COLUMNS = ("task", "train", "test", "scorer", "format")
#: what gives way when a panel is narrow: status, scores, loss, rate and ETA stay whole
RUN_FIT = Fit(priority=(1, 4, 5, 6, 3, 0, 2, 7), keep=6, shrink={1: 12})
JOB_FIT = Fit(priority=(1, 2, 3, 5, 6, 7, 4, 0), keep=7, shrink={1: 9, 4: BAR}, crop=frozenset({4}))
TASK_FIT = Fit(priority=(0, 3, 1, 2, 4), keep=2, shrink={0: 10})


class DashboardScreen(LiveScreen):
    BINDINGS = [
        Binding("a", "app.add_task", "Add task"),
        Binding("s", "app.start_run", "New run"),
        Binding("c", "job('cancel')", "Cancel"),
        Binding("r", "job('retry')", "Retry"),
        Binding("m", "mark", "Mark for comparison", show=False),
        Binding("v", "compare", "Compare"),
        Binding("right_square_bracket", "page(1)", "Next page", show=False),
        Binding("left_square_bracket", "page(-1)", "Previous page", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.page = 0
        self.data: DashboardData | None = None

    def compose(self) -> ComposeResult:
        with Container(id="panels"):
            runs = DataTable(id="runs", cursor_type="row", zebra_stripes=True)
            runs.border_title = "Runs"
            yield runs
            jobs = DataTable(id="jobs", cursor_type="row")
            jobs.border_title = "Jobs"
            yield jobs
            tasks = DataTable(id="tasks", cursor_type="row")
            tasks.border_title = "Tasks"
            yield tasks
        yield Footer(compact=True)

    def load(self) -> DashboardData:
        return load_dashboard(self.app.catalog, self.page, self.app.page_size)

    def show_data(self, data: DashboardData) -> None:
        self.data = data
        self.page = data.page
        palette = Palette.of(self.app)
        muted = palette.muted.hex
        runs = self.query_one("#runs", DataTable)
        refill(runs, RUN_COLUMNS, [(str(r["id"]), [
            num(str(r["id"]), muted), clip(r["name"], 28), Text(r["method"]), num(stage_label(r)),
            palette.status(r["status"]), num(fmt_score(r["metrics"]["avg"])), num(fmt_score(r["metrics"]["last"])),
            Text(r["created_at"].strftime("%Y-%m-%d %H:%M"), style=muted)]) for r in data.runs], RUN_FIT)
        first = data.page * data.page_size + 1
        runs.border_title = (f"Runs {first}–{first + len(data.runs) - 1} of {data.runs_total}" if data.runs
                             else "Runs · none yet: s starts one")
        runs.border_subtitle = (f"page {data.page + 1}/{data.pages} · [ ]" if data.pages > 1 else "") + \
            (f" · marked #{self.app.marked_run}" if self.app.marked_run is not None else "")
        jobs = self.query_one("#jobs", DataTable)
        refill(jobs, JOB_COLUMNS, [(str(j["id"]), self._job_cells(j, palette)) for j in data.jobs], JOB_FIT)
        active = sum(j["status"] in ("running", "queued") for j in data.jobs)
        jobs.border_title = f"Jobs · {active} active"
        tasks = self.query_one("#tasks", DataTable)
        refill(tasks, TASK_COLUMNS, [(t["name"], [clip(t["name"], 24), num(str(t["n_train"])), num(str(t["n_test"])),
                                    Text(t["scorer"]), Text(t["format"], style=muted)]) for t in data.tasks], TASK_FIT)
        tasks.border_title = f"Tasks · {len(data.tasks)}" if data.tasks else "Tasks · none yet: a adds one"
        self.app.first_paint()

    def _job_cells(self, job: dict, palette: Palette) -> list:
        p = job["progress"]
        fraction, steps = progress_of(job)
        status = "cancelling" if job["cancel_requested"] and job["status"] == "running" else job["status"]
        bar = palette.bar(fraction, BAR, job["status"])
        bar.append(f" {steps}", style=palette.muted.hex)
        running = job["status"] == "running"
        rate = p.get("samples_per_s")
        run = clip(job["run_name"] or f"run {job['run_id']}", 28)
        stage = "" if job["stage_index"] is None else str(job["stage_index"] + 1)
        if job.get("kind") == "push" and stage:
            stage = f"push {stage}"
        return [num(str(job["id"]), palette.muted.hex), run, num(stage), palette.status(status), bar,
                num(fmt_score(p.get("loss"), 3) if p.get("loss") is not None else "—"),
                num(f"{rate:.1f}" if running and rate is not None else "—"),
                num(fmt_eta(p.get("eta_s")) if running else "—")]

    def on_resize(self, _event) -> None:
        """Fit the columns again to the panels' new widths (after they are laid out)."""
        if self.data is not None:
            self.call_after_refresh(self.show_data, self.data)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        table = event.data_table
        if table.id == "runs":
            self.app.open_run(int(event.row_key.value))
        elif table.id == "jobs" and self.data is not None:
            job = next((j for j in self.data.jobs if str(j["id"]) == event.row_key.value), None)
            if job and job["run_id"] is not None:
                self.app.open_run(job["run_id"])

    def _focused_run(self) -> int | None:
        key = selected_key(self.query_one("#runs", DataTable))
        return int(key) if key else None

    def action_job(self, action: str) -> None:
        """Cancel or retry the highlighted job, or the current job of the highlighted run."""
        jobs = self.query_one("#jobs", DataTable)
        if self.focused is jobs and selected_key(jobs):
            self.app.job_action(action, job_id=int(selected_key(jobs)))
        elif self._focused_run() is not None:
            self.app.job_action(action, run_id=self._focused_run())
        else:
            self.notify("no run or job selected", severity="warning")

    def action_page(self, delta: int) -> None:
        if self.data is None:
            return
        page = max(0, min(self.data.pages - 1, self.page + delta))
        if page != self.page:
            self.page = page
            self.query_one("#runs", DataTable).move_cursor(row=0, animate=False)
            self.reload()

    def action_mark(self) -> None:
        run = self._focused_run()
        if run is None:
            return
        self.app.mark_run(run)
        if self.data:
            self.show_data(self.data)

    def action_compare(self) -> None:
        run, marked = self._focused_run(), self.app.marked_run
        if marked is None or run is None:
            self.notify("mark a run with m, highlight another, then press v", severity="warning")
            return
        if run == marked:
            self.notify("highlight a different run than the marked one", severity="warning")
            return
        self.app.compare_runs(marked, run)

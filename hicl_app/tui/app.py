"""The hicl dashboard app: themes, live polling of the catalog, and the actions every screen shares."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from functools import partial
from typing import Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import ModalScreen, Screen

from ..catalog import dashboard as board, queue
from ..catalog.db import Catalog
from .data import PAGE_SIZE
from .prefs import load_prefs, save_prefs
from .screens.base import LiveScreen
from .themes import DEFAULT_THEME, load_themes, stylesheet_path


class RunSearch(Provider):
    """"Open run …" for every run in the palette, matched fuzzily by id, name and method."""

    async def startup(self) -> None:
        app: HiclApp = self.app  # type: ignore[assignment]

        def index():
            with app.catalog.session() as s:
                return board.run_index(s)

        self.runs = await asyncio.to_thread(index)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for run_id, name, method, status in self.runs:
            text = f"Open run {run_id}: {name}"
            score = matcher.match(f"{text} {method}")
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(self.app.open_run, run_id),
                          help=f"{method} · {status}")

    async def discover(self) -> Hits:
        for run_id, name, method, status in self.runs[:10]:
            yield DiscoveryHit(f"Open run {run_id}: {name}", partial(self.app.open_run, run_id),
                               help=f"{method} · {status}")


def _declared_by_hicl(node, binding: Binding) -> bool:
    """True when `binding` comes from the BINDINGS of one of hicl's own classes of `node`."""
    for cls in type(node).__mro__:
        if not cls.__module__.startswith("hicl_app"):
            continue
        for own in vars(cls).get("BINDINGS", []):
            if isinstance(own, Binding) and own.action == binding.action and binding.key in own.key.split(","):
                return True
    return False


class HiclApp(App[None]):
    CSS_PATH = stylesheet_path()
    TITLE = "hicl"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (40, "-tall")]
    COMMANDS = App.COMMANDS | {RunSearch}
    BINDINGS = [Binding("question_mark", "help", "Help"), Binding("q", "quit", "Quit")]

    def __init__(self, catalog: Catalog, *, poll_interval: float | None = 0.5, page_size: int = PAGE_SIZE,
                 exit_on_first_paint: bool = False, start_worker: bool = False) -> None:
        super().__init__()
        self.catalog = catalog
        #: start a background worker for a run started from the form (`hicl tui` does; tests don't)
        self.start_worker = start_worker
        self.poll_interval = poll_interval
        self.page_size = page_size
        self.exit_on_first_paint = exit_on_first_paint
        #: runs marked with m, in the order marked: `v` compares them with the highlighted one
        self.marked_runs: list[int] = []
        self.painted_at: float | None = None
        self.probe = board.ChangeProbe(catalog)
        for theme in load_themes():
            self.register_theme(theme)
        saved = load_prefs(catalog.settings).get("theme")
        self.theme = saved if saved in self.available_themes else DEFAULT_THEME
        self._hub: bool | None = None

    def on_mount(self) -> None:
        from .screens.dashboard import DashboardScreen

        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self.probe.changed()  # the baseline: what the screens load next is current
        if self.poll_interval:
            self.set_interval(self.poll_interval, self._probe)
        self.push_screen(DashboardScreen())

    def on_unmount(self) -> None:
        self.probe.close()

    # -- live updates ---------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="probe")
    def _probe(self) -> None:
        if self.probe.changed():
            self.call_from_thread(self.catalog_changed)

    def catalog_changed(self, redraw: bool = False) -> None:
        """Reload the screens in view; the ones hidden under another screen reload on return."""
        hidden = False
        for screen in reversed(self.screen_stack):
            if isinstance(screen, LiveScreen):
                if hidden:
                    screen.stale = True
                    screen.shown = None if redraw else screen.shown
                else:
                    screen.reload(redraw)
            hidden = hidden or not isinstance(screen, ModalScreen)

    def _theme_changed(self, theme) -> None:
        self._save_theme(theme.name)
        self.catalog_changed(redraw=True)  # tables carry the theme's colours: draw them again

    @work(thread=True, group="prefs")
    def _save_theme(self, name: str) -> None:
        save_prefs(self.catalog.settings, theme=name)

    def first_paint(self) -> None:
        """Called by screens once they show data: notes when that first reached the terminal."""
        if self.painted_at is None:
            self.call_after_refresh(self._painted)

    def _painted(self) -> None:
        if self.painted_at is None:
            self.painted_at = time.perf_counter()
            if self.exit_on_first_paint:
                self.exit()

    # -- navigation -----------------------------------------------------------------------------

    def open_run(self, run_id: int) -> None:
        from .screens.run_detail import RunScreen

        self.push_screen(RunScreen(run_id))

    @property
    def marked_run(self) -> int | None:
        """The run marked last (None when none is)."""
        return self.marked_runs[-1] if self.marked_runs else None

    def compare_runs(self, a: int, b: int) -> None:
        """Compare the marked runs (A = the first marked; `a` among them) with `b`."""
        from .screens.compare import CompareScreen

        runs = [r for r in self.marked_runs if r != b] or [a]
        if a not in runs:
            runs.insert(0, a)
        self.push_screen(CompareScreen(*runs, b))

    def mark_run(self, run_id: int) -> None:
        if run_id in self.marked_runs:
            self.marked_runs.remove(run_id)
            self.notify(f"run {run_id} unmarked" + (f" ({len(self.marked_runs)} still marked)" if self.marked_runs else ""))
            return
        self.marked_runs.append(run_id)
        marked = ", ".join(map(str, self.marked_runs))
        self.notify(f"run{'s' if len(self.marked_runs) > 1 else ''} {marked} marked: mark more, or highlight another "
                    "and press v to compare them")

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            return
        screen, app, generic = [], [], []
        for active in self.screen.active_bindings.values():
            b = active.binding
            if not active.enabled or not b.description:
                continue
            entry = (b.key_display or self.get_key_display(b), b.description)
            # hicl's own keys (declared by its screens and app) first; Textual's (focus, copy,
            # a focused table's cursor keys) after them
            if not _declared_by_hicl(active.node, b):
                generic.append(entry)
            else:
                (app if active.node is self else screen).append(entry)
        self.push_screen(HelpScreen(screen + app, str(self.catalog.settings.home), generic=generic))

    def action_add_task(self) -> None:
        from .screens.add_task import AddTaskScreen

        def added(name: str | None) -> None:
            if name:
                self.notify(f"task {name!r} added")

        self.push_screen(AddTaskScreen(), added)

    def action_start_run(self) -> None:
        from .screens.start_run import StartRunScreen

        def started(result: tuple[int, str] | None) -> None:
            if result is not None:
                run_id, who = result
                self.notify(f"run {run_id} queued: {who}")
                self.open_run(run_id)

        self.push_screen(StartRunScreen(), started)

    @property
    def hub_available(self) -> bool:
        if self._hub is None:
            try:
                self._hub = importlib.util.find_spec("hicl_app.hub.push") is not None
            except ImportError:
                self._hub = False
        return self._hub

    # -- job actions ----------------------------------------------------------------------------

    @work(thread=True, group="action")
    def job_action(self, action: str, *, job_id: int | None = None, run_id: int | None = None) -> None:
        """Cancel or retry a job (or a run's current job) with the catalog's queue functions."""
        try:
            if job_id is None:
                with self.catalog.session() as s:
                    job_id = board.job_for(s, run_id, action)
                if job_id is None:
                    wanted = "running or queued" if action == "cancel" else "failed or cancelled"
                    self.call_from_thread(self.notify, f"run {run_id} has no {wanted} job", severity="warning")
                    return
            if action == "cancel":
                outcome = queue.request_cancel(self.catalog, job_id)
                message = (f"job {job_id} cancelled" if outcome == "cancelled"
                           else f"job {job_id}: cancel requested; the worker stops at the next step")
            else:
                queue.retry(self.catalog, job_id)
                message = f"job {job_id} queued again"
        except Exception as exc:
            render = getattr(exc, "render", None)
            self.call_from_thread(self.notify, render() if callable(render) else str(exc),
                                  title=f"{action} failed", severity="error")
            return
        self.call_from_thread(self.notify, message)

    # -- command palette ------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Add task", "Validate a task file and add it to the catalog", self.action_add_task)
        yield SystemCommand("Start run", "Choose a method, tasks in order and a base model", self.action_start_run)
        yield SystemCommand("Help", "Keys, metrics and colours", self.action_help)
        if hasattr(screen, "action_job"):
            yield SystemCommand("Cancel job", "Cancel the selected (or the current) job",
                                partial(screen.action_job, "cancel"))
            yield SystemCommand("Retry job", "Queue a failed or cancelled job again",
                                partial(screen.action_job, "retry"))
        if hasattr(screen, "action_push") and self.hub_available:
            yield SystemCommand("Push to the Hub", "Upload this run's adapters", screen.action_push)

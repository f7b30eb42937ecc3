"""Start a run: method, tasks in the order ticked, base model and the main hyper-parameters.

The form scrolls between its title and its buttons, so at 80x24 every field stays reachable and
the buttons stay in view; the task picker shows up to eight tasks at once, each ticked one
numbered by its place in the training order, and the order line sits right under it.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select, SelectionList, Static

from ...catalog.tasks import list_tasks
from ...core.errors import HiclError
from ...services.launch import start_run
from ..forms import TRAIN_FIELDS, method_fields, parse_run_form
from ..widgets.error_report import ErrorReport


class StartRunScreen(ModalScreen[tuple[int, str] | None]):
    """Dismissed with (the new run's id, who trains it), or None when cancelled."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("ctrl+s", "submit", "Start")]

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="start-run"):
            with VerticalScroll(id="start-body", can_focus=False):  # tab goes field to field
                with Grid(classes="form"):
                    yield Label("method")
                    yield Select([], id="method", prompt="loading…", compact=True)
                    yield Label("base model")
                    yield Input(placeholder="local folder or hub id", id="base", compact=True)
                    yield Label("name")
                    yield Input(placeholder="default: method:tasks", id="name", compact=True)
                yield Label("tasks: space ticks one; they train in the order ticked", classes="picker-label")
                yield SelectionList[str](id="tasks")
                yield Static("order: none ticked yet", id="order")
                with Grid(classes="form params"):
                    for key, label, _kind, default in TRAIN_FIELDS:
                        yield Label(label)
                        yield Input(value="" if default is None else str(default),
                                    placeholder="by base size" if key in ("lr", "epochs") else "—", id=key,
                                    compact=True)
                yield Grid(classes="form params", id="method-options")
                yield ErrorReport(id="error")
            with Horizontal(classes="buttons"):
                yield Button("Start run", variant="primary", id="submit", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#start-run").border_title = "Start a run"
        self._load_choices()

    @work(thread=True)
    def _load_choices(self) -> None:
        from ..forms import method_choices

        with self.app.catalog.session() as s:
            tasks = [t.name for t in list_tasks(s)]
        self.app.call_from_thread(self._show_choices, method_choices(), tasks)

    def _show_choices(self, methods: list[str], tasks: list[str]) -> None:
        select = self.query_one("#method", Select)
        select.set_options([(m, m) for m in methods])
        select.prompt = "choose a method" if methods else "no method registered"
        if methods:
            select.value = methods[0]
        picker = self.query_one("#tasks", SelectionList)
        picker.add_options([(t, t) for t in tasks])
        picker.styles.height = min(max(len(tasks), 1), 8) + 2  # every task in view, up to eight, plus the border
        if not tasks:
            self.query_one("#order", Static).update("no tasks yet: add one first (a on the dashboard)")

    def on_select_changed(self, event: Select.Changed) -> None:
        """Show the chosen method's own options (from its options dataclass), empty = its default."""
        if event.select.id != "method":
            return
        grid = self.query_one("#method-options", Grid)
        grid.remove_children()
        fields = method_fields(None if event.value is Select.BLANK else str(event.value))
        grid.display = bool(fields)
        widgets = []
        for spec in fields:
            label = Label(spec.name.replace("_", " "))
            label.tooltip = spec.help
            hint = "|".join(spec.choices) if spec.choices else spec.kind
            widgets += [label, Input(placeholder=f"{spec.default!r} ({hint})", id=f"opt-{spec.name}", compact=True)]
        grid.mount_all(widgets)

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged) -> None:
        picker = event.selection_list
        ticked = set(picker.selected)
        self.order = [t for t in self.order if t in ticked] + [t for t in picker.selected if t not in self.order]
        for index in range(picker.option_count):  # a ticked task shows its place in the order
            name = picker.get_option_at_index(index).value
            prompt = Text(f"{self.order.index(name) + 1}. {name}", style="bold") if name in ticked else Text(name)
            picker.replace_option_prompt_at_index(index, prompt)
        order = Text("order: ", style="bold")
        order.append(" → ".join(self.order) or "none ticked yet")
        self.query_one("#order", Static).update(order)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "submit":
            self.action_submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_submit()

    def action_submit(self) -> None:
        report = self.query_one(ErrorReport)
        report.clear()
        method = self.query_one("#method", Select).value
        try:
            request = parse_run_form(None if method is Select.BLANK else method, self.order,
                                     self.query_one("#base", Input).value, self.query_one("#name", Input).value,
                                     {key: self.query_one(f"#{key}", Input).value for key, *_ in TRAIN_FIELDS},
                                     {i.id.removeprefix("opt-"): i.value for i in self.query("#method-options Input")})
        except HiclError as exc:
            report.show_error(exc)
            return
        self.query_one("#submit", Button).disabled = True
        self._start(request)

    @work(thread=True, exclusive=True)
    def _start(self, request) -> None:
        try:
            from ...services.base_model import resolve_base
            from ..forms import config_for

            base = resolve_base(request.base)  # a hub id may take a few seconds: off the UI thread
            run = start_run(self.app.catalog, method=request.method, tasks=request.tasks, base=base,
                            name=request.name, config=config_for(request, base))
        except Exception as exc:
            self.app.call_from_thread(self._failed, exc)
            return
        self.app.call_from_thread(self.dismiss, (run.id, self._worker_for_it()))

    def _worker_for_it(self) -> str:
        """Start a background worker unless one is alive (as `hicl run start` does); say who trains the run."""
        if not getattr(self.app, "start_worker", False):
            return "`hicl worker` trains it"
        from ...worker.daemon import start_background_worker

        try:
            started = start_background_worker(self.app.catalog.settings)
        except HiclError as exc:
            return f"no worker could start ({exc}); run `hicl worker`"
        return "the running worker trains it" if started is None else f"a background worker (pid {started.pid}) trains it"

    def _failed(self, exc: Exception) -> None:
        self.query_one(ErrorReport).show_error(exc)
        self.query_one("#submit", Button).disabled = False

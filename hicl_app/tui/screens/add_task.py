"""Add a task: the CLI's add-task as a form, validated by the same catalog function."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select

from ...catalog.tasks import SCORERS, add_task
from ...core.errors import InvalidInput
from ..widgets.error_report import ErrorReport
from .file_picker import FilePickerScreen


class AddTaskScreen(ModalScreen[str | None]):
    """Dismissed with the new task's name, or None when cancelled."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("ctrl+o", "browse", "Browse")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="add-task"):
            with Grid(classes="form"):
                yield Label("file")
                with Horizontal(classes="file-row"):
                    yield Input(placeholder="LLaVA JSON/JSONL or VQA JSONL", id="file", compact=True)
                    yield Button("Browse…", id="browse", compact=True)
                yield Label("name")
                yield Input(placeholder="default: from the file name", id="name", compact=True)
                yield Label("images")
                yield Input(placeholder="default: the file's folder", id="images", compact=True)
                yield Label("test file")
                yield Input(placeholder="optional; else a fraction is split off", id="test-file", compact=True)
                yield Label("test fraction")
                yield Input(placeholder="0.1", id="test-fraction", compact=True)
                yield Label("scorer")
                yield Select([("guess from the answers", "")] + [(s, s) for s in SCORERS], value="", id="scorer",
                             allow_blank=False, compact=True)
            with VerticalScroll(classes="report"):
                yield ErrorReport(id="error")
            with Horizontal(classes="buttons"):
                yield Button("Add task", variant="primary", id="submit", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#add-task").border_title = "Add a task"
        self.query_one("#file", Input).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "browse":
            self.action_browse()
        elif event.button.id == "submit":
            self.submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.submit()

    def action_browse(self) -> None:
        current = self.query_one("#file", Input).value.strip()
        start = Path(current).expanduser().parent if current else Path.cwd()

        def chosen(path: Path | None) -> None:
            if path is not None:
                self.query_one("#file", Input).value = str(path)

        self.app.push_screen(FilePickerScreen(start), chosen)

    def submit(self) -> None:
        value = {key: self.query_one(f"#{key}", Input).value.strip()
                 for key in ("file", "name", "images", "test-file", "test-fraction")}
        report = self.query_one(ErrorReport)
        report.clear()
        if not value["file"]:
            report.show_error(InvalidInput("choose a task file", hint="type a path or press Browse (ctrl+o)"))
            return
        fraction = None
        if value["test-fraction"]:
            try:
                fraction = float(value["test-fraction"])
            except ValueError:
                report.show_error(InvalidInput(f"test fraction {value['test-fraction']!r} is not a number"))
                return
        scorer = self.query_one("#scorer", Select).value or None
        self.query_one("#submit", Button).disabled = True
        self._add(Path(value["file"]).expanduser(), value["name"] or None, value["images"] or None,
                  value["test-file"] or None, fraction, scorer)

    @work(thread=True, exclusive=True)
    def _add(self, file, name, images, test_file, fraction, scorer) -> None:
        try:
            task = add_task(self.app.catalog, file, name=name, images=images, test_file=test_file,
                            test_fraction=fraction, scorer=scorer)
        except Exception as exc:  # HiclError above all; anything else is shown the same way
            self.app.call_from_thread(self._failed, exc)
            return
        self.app.call_from_thread(self.dismiss, task.name)

    def _failed(self, exc: Exception) -> None:
        self.query_one(ErrorReport).show_error(exc)
        self.query_one("#submit", Button).disabled = False

"""Pick a task file: a directory tree showing folders and JSON/JSONL files only."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Footer

SUFFIXES = (".json", ".jsonl")


class TaskFileTree(DirectoryTree):
    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in SUFFIXES)]


class FilePickerScreen(ModalScreen[Path | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("backspace", "up", "Parent folder")]

    def __init__(self, start: Path) -> None:
        super().__init__()
        self.start = start if start.is_dir() else Path.cwd()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="picker"):
            yield TaskFileTree(self.start, id="picker-tree")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._title()
        self.query_one(TaskFileTree).focus()

    def _title(self) -> None:
        self.query_one("#picker").border_title = f"Choose a task file · {self.query_one(TaskFileTree).path}"

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.dismiss(Path(event.path))

    def action_up(self) -> None:
        tree = self.query_one(TaskFileTree)
        tree.path = Path(tree.path).resolve().parent
        self._title()

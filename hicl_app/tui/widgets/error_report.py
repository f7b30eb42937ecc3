"""What went wrong with a form, as the CLI would say it: message, every problem, a hint."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ...core.errors import HiclError, InvalidInput
from .style import Palette

MAX_PROBLEMS = 50


class ErrorReport(Static):
    DEFAULT_CSS = "ErrorReport { display: none; height: auto; }"

    def show_error(self, exc: BaseException) -> None:
        palette = Palette.of(self.app)
        text = Text(f"✗ {exc}", style=f"bold {palette.error.hex}")
        problems = exc.problems if isinstance(exc, InvalidInput) else []
        for problem in problems[:MAX_PROBLEMS]:
            text.append(f"\n  • {problem}")
        if len(problems) > MAX_PROBLEMS:
            text.append(f"\n  … and {len(problems) - MAX_PROBLEMS} more", style=palette.muted.hex)
        hint = exc.hint if isinstance(exc, HiclError) else None
        if hint:
            text.append("\nhint: ", style=palette.muted.hex)
            text.append(hint)
        self.update(text)
        self.display = True

    def clear(self) -> None:
        self.update("")
        self.display = False

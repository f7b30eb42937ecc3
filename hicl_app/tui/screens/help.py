"""`?`: the keys of the screen underneath (hicl's own first, then those of the focused table or
list), and what the numbers and colours mean."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

ABOUT = """
### Reading a run
- **Accuracy matrix**: row *sK* = scores after training stage *K* (stages count from 1), column
  *j* = task *j*, in points (accuracy %; a caption score, the mean of BLEU-1..4, ROUGE-L and
  CIDEr-D x100, can pass 100). Each column is coloured on its own scale, from half that task's
  best score or less (red) to its best (green), so forgetting shows as a column that cools going down; the
  *Δ vs best* row is the latest score minus the best earlier one.
- **MFT** mean of the diagonal (plasticity) · **Last** mean of the latest row · **Avg** mean over
  stages of the tasks seen so far · **BWT** latest minus diagonal (negative = forgetting) ·
  **Forgetting** best earlier minus latest · **FWT** first seen minus zero-shot.

### Everywhere
- `ctrl+p` command palette: open any run by name, switch theme (remembered in the workspace).
- Tables page with `[` and `]`; `tab` moves between panels; the mouse works but is never needed.
- The screens follow the catalog live while a worker trains (`hicl worker`).
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss(None)", "Close")]

    def __init__(self, keys: list[tuple[str, str]], workspace: str,
                 generic: list[tuple[str, str]] | None = None) -> None:
        super().__init__()
        self.keys = keys
        self.generic = generic or []
        self.workspace = workspace

    def compose(self) -> ComposeResult:
        def table(rows: list[tuple[str, str]]) -> str:
            return "| key | does |\n|---|---|\n" + "\n".join(f"| `{key}` | {what} |" for key, what in rows)

        text = f"### Keys here\n{table(self.keys)}\n"
        if self.generic:
            text += f"\n### Other keys (focus, copy, the focused table or list)\n{table(self.generic)}\n"
        text += f"{ABOUT}\nWorkspace: `{self.workspace}`\n"
        with VerticalScroll(classes="dialog", id="help"):
            yield Markdown(text)

    def on_mount(self) -> None:
        self.query_one("#help").border_title = "hicl · help"

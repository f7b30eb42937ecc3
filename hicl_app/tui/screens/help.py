"""`?`: the keys of the screen underneath and what the numbers and colours mean."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

ABOUT = """
### Reading a run
- **Accuracy matrix**: row *t* = scores after training stage *t*, column *j* = task *j*, in points
  (accuracy %; a caption score, the mean of BLEU-1..4, ROUGE-L and CIDEr-D x100, can pass 100).
  Cells are coloured from low (red) to high (green) on the matrix's own range, so forgetting
  shows as a column that cools going down; the *forgetting* row is the drop from the best
  earlier score to the latest row.
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

    def __init__(self, keys: list[tuple[str, str]], workspace: str) -> None:
        super().__init__()
        self.keys = keys
        self.workspace = workspace

    def compose(self) -> ComposeResult:
        table = "\n".join(f"| `{key}` | {description} |" for key, description in self.keys)
        text = f"### Keys here\n| key | does |\n|---|---|\n{table}\n{ABOUT}\nWorkspace: `{self.workspace}`\n"
        with VerticalScroll(classes="dialog", id="help"):
            yield Markdown(text)

    def on_mount(self) -> None:
        self.query_one("#help").border_title = "hicl · help"

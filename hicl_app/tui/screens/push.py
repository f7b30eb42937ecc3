"""Push a run's adapters to the Hugging Face Hub through hicl_app.hub (when it is installed)."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Footer, Input, Label

from ..widgets.error_report import ErrorReport


def push_run(catalog, run_id: int, repo_id: str, private: bool) -> str:
    """What `hicl push RUN --hub REPO_ID` does (last trained stage, branch main); returns the commit URL."""
    from ...hub.bundle import build_bundle
    from ...hub.push import check_repo_id, push_bundle, resolve_endpoint

    check_repo_id(repo_id)
    with catalog.session() as s:
        bundle = build_bundle(s, run_id, repo_id=repo_id)
    result = push_bundle(catalog, bundle, repo_id=repo_id, endpoint=resolve_endpoint(None), private=private)
    return result.commit_url


class PushScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, run_id: int) -> None:
        super().__init__()
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="push"):
            with Grid(classes="form"):
                yield Label("repository")
                yield Input(placeholder="user/name on the Hub", id="repo", compact=True)
                yield Label("")
                yield Checkbox("private", value=False, id="private", compact=True)
            with VerticalScroll(classes="report"):
                yield ErrorReport(id="error")
            with Horizontal(classes="buttons"):
                yield Button("Push", variant="primary", id="submit", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#push").border_title = f"Push run {self.run_id} to the Hub"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "submit":
            self.submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.submit()

    def submit(self) -> None:
        repo = self.query_one("#repo", Input).value.strip()
        self.query_one(ErrorReport).clear()
        if not repo:
            self.query_one("#repo", Input).focus()
            return
        self.query_one("#submit", Button).disabled = True
        self._push(repo, self.query_one("#private", Checkbox).value)

    @work(thread=True, exclusive=True)
    def _push(self, repo: str, private: bool) -> None:
        try:
            where = push_run(self.app.catalog, self.run_id, repo, private)
        except Exception as exc:
            self.app.call_from_thread(self._failed, exc)
            return
        self.app.call_from_thread(self.dismiss, where)

    def _failed(self, exc: Exception) -> None:
        self.query_one(ErrorReport).show_error(exc)
        self.query_one("#submit", Button).disabled = False

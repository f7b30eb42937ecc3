"""Push a run's adapters to the Hugging Face Hub through hicl_app.hub (when it is installed):
the stage to put at the repo root, a dry run listing every file and its size, as `hicl push`
offers with --stage and --dry-run."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static

from ..data import fmt_size
from ..widgets.error_report import ErrorReport

LAST = "last"  # the stage choice meaning "the last trained stage", as `hicl push` without --stage


def push_run(catalog, run_id: int, repo_id: str, private: bool, stage: int | None = None) -> str:
    """What `hicl push RUN --hub REPO_ID [--stage K]` does (branch main); returns the commit URL.
    `stage` is a 0-based index, None for the last trained stage."""
    from ...hub.push import push_bundle, resolve_endpoint

    bundle = plan_push(catalog, run_id, repo_id, stage)
    result = push_bundle(catalog, bundle, repo_id=repo_id, endpoint=resolve_endpoint(None), private=private)
    return result.commit_url


def plan_push(catalog, run_id: int, repo_id: str, stage: int | None = None):
    """The bundle `hicl push --dry-run` shows: every file, verified, with its size; sends nothing."""
    from ...hub.bundle import build_bundle
    from ...hub.push import check_repo_id

    check_repo_id(repo_id)
    with catalog.session() as s:
        return build_bundle(s, run_id, repo_id=repo_id, stage=stage)


def stage_choices(catalog, run_id: int) -> list[tuple[str, str]]:
    """(label, value) for each stage with an adapter, after "the last trained"."""
    from ...catalog.runs import adapters_of, stages_of

    with catalog.session() as s:
        stages = stages_of(s, run_id)
        trained = {a.stage_id for a in adapters_of(s, run_id)}
        return [("the last trained", LAST)] + [
            (f"stage {st.index + 1}: {', '.join(st.train_tasks)}", str(st.index)) for st in stages if st.id in trained]


class PushScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("ctrl+t", "dry_run", "Dry run", priority=True)]

    def __init__(self, run_id: int) -> None:
        super().__init__()
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="push"):
            with Grid(classes="form"):
                yield Label("repository")
                yield Input(placeholder="user/name on the Hub", id="repo", compact=True)
                yield Label("stage at the root")
                yield Select([("the last trained", LAST)], value=LAST, allow_blank=False, id="stage", compact=True)
                yield Label("")
                yield Checkbox("private", value=False, id="private", compact=True)
            with VerticalScroll(id="push-plan"):
                yield Static(id="plan")
            with VerticalScroll(classes="report"):
                yield ErrorReport(id="error")
            with Horizontal(classes="buttons"):
                yield Button("Dry run", id="dry-run", compact=True)
                yield Button("Push", variant="primary", id="submit", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#push").border_title = f"Push run {self.run_id} to the Hub"
        self.query_one("#push-plan").display = False
        self._load_stages()

    @work(thread=True)
    def _load_stages(self) -> None:
        choices = stage_choices(self.app.catalog, self.run_id)
        self.app.call_from_thread(self.query_one("#stage", Select).set_options, choices)

    def _stage(self) -> int | None:
        value = self.query_one("#stage", Select).value
        return None if value in (LAST, Select.BLANK) else int(value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "submit":
            self.submit()
        elif event.button.id == "dry-run":
            self.action_dry_run()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.submit()

    def _repo(self) -> str | None:
        repo = self.query_one("#repo", Input).value.strip()
        self.query_one(ErrorReport).clear()
        if not repo:
            self.query_one("#repo", Input).focus()
            return None
        return repo

    def action_dry_run(self) -> None:
        repo = self._repo()
        if repo:
            self._plan(repo, self._stage())

    @work(thread=True, exclusive=True, group="plan")
    def _plan(self, repo: str, stage: int | None) -> None:
        try:
            bundle = plan_push(self.app.catalog, self.run_id, repo, stage)
        except Exception as exc:
            self.app.call_from_thread(self._failed, exc)
            return
        self.app.call_from_thread(self._show_plan, bundle)

    def _show_plan(self, bundle) -> None:
        files = [u.as_dict() for u in bundle.uploads]
        width = max((len(f["path"]) for f in files), default=4)
        text = Text(f"dry run: stage {bundle.number} of {bundle.n_stages} at the root, tag "
                    f"{bundle.tag('main')!r}; nothing sent\n", style="bold")
        for f in files:
            text.append(f"{f['path'].ljust(width)}  {fmt_size(f['size']).rjust(9)}\n")
        text.append(f"{len(files)} files, {fmt_size(bundle.total_bytes)}", style="bold")
        self.query_one("#plan", Static).update(text)
        self.query_one("#push-plan").display = True

    def submit(self) -> None:
        repo = self._repo()
        if not repo:
            return
        self.query_one("#submit", Button).disabled = True
        self._push(repo, self.query_one("#private", Checkbox).value, self._stage())

    @work(thread=True, exclusive=True)
    def _push(self, repo: str, private: bool, stage: int | None) -> None:
        try:
            # the last trained stage is `hicl push` without --stage: the call leaves it out
            where = (push_run(self.app.catalog, self.run_id, repo, private) if stage is None
                     else push_run(self.app.catalog, self.run_id, repo, private, stage=stage))
        except Exception as exc:
            self.app.call_from_thread(self._failed, exc)
            return
        self.app.call_from_thread(self.dismiss, where)

    def _failed(self, exc: Exception) -> None:
        self.query_one(ErrorReport).show_error(exc)
        self.query_one("#submit", Button).disabled = False

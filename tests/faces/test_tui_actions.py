"""Actions from the TUI: add a task, start a run, cancel and retry jobs, push; each through the
catalog functions the CLI uses, with the same validation and error reports."""

import pytest
from sqlmodel import select
from tui_support import FakeEngine, add_tasks, async_test, cell_texts, fake_base, open_catalog, settle, start_worker, wait_for

from hicl_app.catalog import queue
from hicl_app.catalog.models import Job, Run, Stage, Task
from hicl_app.core.errors import Conflict
from hicl_app.services.launch import start_run
from hicl_app.services.run_config import run_config
from hicl_app.tui.app import HiclApp
from hicl_app.tui.screens.add_task import AddTaskScreen
from hicl_app.tui.screens.dashboard import DashboardScreen
from hicl_app.tui.screens.file_picker import FilePickerScreen
from hicl_app.tui.screens.push import PushScreen
from hicl_app.tui.screens.run_detail import RunScreen
from hicl_app.tui.screens.start_run import StartRunScreen
from hicl_app.tui.widgets.error_report import ErrorReport


@pytest.fixture
def catalog(home):
    cat = open_catalog(home)
    yield cat
    cat.dispose()


@pytest.fixture
def three_stage_run(catalog, tmp_path):
    add_tasks(catalog, tmp_path / "data", ["alpha", "beta", "gamma"])
    run = start_run(catalog, method="seq-lora", tasks=["alpha", "beta", "gamma"], base=str(fake_base(tmp_path)),
                    name="r", config=run_config(train={"max_steps": 6}))
    with catalog.session() as s:
        jobs = [j.id for j in s.exec(select(Job).where(Job.run_id == run.id).order_by(Job.id))]
    return run.id, jobs


def statuses(catalog, run_id):
    with catalog.session() as s:
        jobs = [j.status for j in s.exec(select(Job).where(Job.run_id == run_id).order_by(Job.id))]
        stages = [st.status for st in s.exec(select(Stage).where(Stage.run_id == run_id).order_by(Stage.index))]
        return s.get(Run, run_id).status, jobs, stages


# -- the queue functions behind cancel and retry ----------------------------------------------------

def test_cancel_queued_job_cancels_the_rest_of_the_run(catalog, three_stage_run):
    run_id, jobs = three_stage_run
    assert queue.request_cancel(catalog, jobs[0]) == "cancelled"
    assert statuses(catalog, run_id) == ("cancelled", ["cancelled"] * 3, ["cancelled", "queued", "queued"])
    with pytest.raises(Conflict):
        queue.request_cancel(catalog, jobs[0])


def test_cancel_running_job_is_a_request(catalog, three_stage_run):
    run_id, jobs = three_stage_run
    job = queue.claim(catalog, "w")
    assert queue.request_cancel(catalog, job.id) == "requested"
    assert queue.cancel_requested(catalog, job.id)
    assert statuses(catalog, run_id)[1] == ["running", "queued", "queued"]


def test_retry_requeues_the_job_and_the_stages_cancelled_after_it(catalog, three_stage_run):
    run_id, jobs = three_stage_run
    first = queue.claim(catalog, "w")
    queue.finish(catalog, first.id, "done")
    second = queue.claim(catalog, "w")
    queue.finish(catalog, second.id, "failed", error="boom")
    assert statuses(catalog, run_id) == ("failed", ["done", "failed", "cancelled"], ["queued", "failed", "queued"])
    with pytest.raises(Conflict):
        queue.retry(catalog, jobs[2])  # waits on the failed job
    with pytest.raises(Conflict):
        queue.retry(catalog, jobs[0])  # done
    queue.retry(catalog, second.id)
    assert statuses(catalog, run_id) == ("queued", ["done", "queued", "queued"], ["queued", "queued", "queued"])
    with catalog.session() as s:
        again = s.get(Job, second.id)
        assert (again.attempts, again.error, again.cancel_requested, again.progress) == (0, None, False, {})
        assert s.get(Run, run_id).error is None
    assert queue.claim(catalog, "w").id == second.id


# -- cancel and retry from the screens ------------------------------------------------------------

@async_test
async def test_cancel_and_retry_a_live_job_from_the_dashboard(catalog, three_stage_run, monkeypatch):
    run_id, jobs = three_stage_run
    engine = FakeEngine(steps=6, hold_stage=0).install(monkeypatch)
    app = HiclApp(catalog, poll_interval=0.05)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        worker = start_worker(catalog, run_id)
        try:
            await wait_for(pilot, engine.held.is_set, what="stage 0 to be training")
            await pilot.press("c")  # the runs table has focus: the run's running job
            await wait_for(pilot, lambda: statuses(catalog, run_id)[1][0] == "cancelled", what="the worker to stop")
            worker.join(timeout=10)
            runs = app.screen.query_one("#runs")
            await wait_for(pilot, lambda: cell_texts(runs)[0][4] == "cancelled", what="the dashboard to show it")
            await pilot.press("r")
            await wait_for(pilot, lambda: cell_texts(runs)[0][4] == "queued", what="the retried run")
            assert statuses(catalog, run_id)[1] == ["queued"] * 3
            await pilot.press("tab")  # the jobs table: act on the highlighted job
            await settle(pilot)
            assert app.screen.focused.id == "jobs"
            await pilot.press("c")
            await wait_for(pilot, lambda: statuses(catalog, run_id)[1] == ["cancelled"] * 3, what="the job cancelled")
        finally:
            engine.release()
            worker.join(timeout=10)


@async_test
async def test_retry_the_highlighted_stage_on_the_run_screen(catalog, three_stage_run):
    run_id, jobs = three_stage_run
    queue.finish(catalog, queue.claim(catalog, "w").id, "failed", error="CUDA out of memory")
    app = HiclApp(catalog, poll_interval=0.05)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.open_run(run_id)
        await settle(pilot)
        screen = app.screen
        assert "CUDA out of memory" in str(screen.query_one("#run-error").render())
        await pilot.press("3")
        screen.query_one("#stages-table").focus()
        await pilot.press("down")  # stage 1 waits on stage 0: retrying it is refused
        await pilot.press("r")
        await settle(pilot)
        assert statuses(catalog, run_id)[0] == "failed"
        await pilot.press("up", "r")
        await wait_for(pilot, lambda: screen.data.detail["status"] == "queued", what="the run queued again")
        assert not screen.query_one("#run-error").display


@async_test
async def test_nothing_to_cancel_is_said_not_done(catalog, three_stage_run):
    run_id, jobs = three_stage_run
    app = HiclApp(catalog, poll_interval=None)
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        assert any("no failed or cancelled job" in n.message for n in app._notifications)
        assert statuses(catalog, run_id)[1] == ["queued"] * 3


# -- add a task -----------------------------------------------------------------------------------

async def _fill(pilot, values: dict[str, str]) -> None:
    for key, value in values.items():
        pilot.app.screen.query_one(f"#{key}").value = value
    await pilot.pause()


async def _enter(pilot, field: str) -> None:
    """Submit a form the keyboard way: enter in one of its inputs."""
    pilot.app.screen.query_one(f"#{field}").focus()
    await pilot.press("enter")
    await pilot.pause()


@async_test
async def test_add_task_form_adds_a_valid_task(catalog, llava_file):
    app = HiclApp(catalog, poll_interval=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        assert isinstance(app.screen, AddTaskScreen)
        await pilot.press("q", "question_mark")  # typed into the focused field, not taken as keys
        assert isinstance(app.screen, AddTaskScreen) and app.screen.query_one("#file").value == "q?"
        await _fill(pilot, {"file": str(llava_file), "name": "colours", "test-fraction": "0.2"})
        await pilot.click("#submit")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="the form to close")
        tasks = app.screen.query_one("#tasks")
        await wait_for(pilot, lambda: tasks.row_count == 1, what="the new task on the dashboard")
        assert cell_texts(tasks)[0][:3] == ["colours", "8", "2"]
    with catalog.session() as s:
        assert s.exec(select(Task)).one().name == "colours"


@async_test
async def test_add_task_form_reports_every_problem_like_the_cli(catalog, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "image": "missing.png", "question": "q?", "answer": "x"}\n{not json\n')
    app = HiclApp(catalog, poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await pilot.click("#submit")  # no file at all
        await pilot.pause()
        report = app.screen.query_one(ErrorReport)
        assert report.display and "choose a task file" in str(report.render())
        await _fill(pilot, {"file": str(bad), "test-fraction": "half"})
        await _enter(pilot, "name")
        assert "not a number" in str(report.render())
        await _fill(pilot, {"test-fraction": ""})
        await _enter(pilot, "test-fraction")
        await wait_for(pilot, lambda: "bad JSON" in str(report.render()), what="the validation report")
        text = str(report.render())
        assert "missing.png" in text and "•" in text  # every problem listed, as `hicl add-task` does
        assert isinstance(app.screen, AddTaskScreen) and not app.screen.query_one("#submit").disabled
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
    with catalog.session() as s:
        assert s.exec(select(Task)).first() is None


@async_test
async def test_file_picker_fills_the_file_field(catalog, llava_file):
    app = HiclApp(catalog, poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        app.screen.query_one("#file").value = str(llava_file.parent / "x")
        await pilot.click("#browse")
        await pilot.pause()
        picker = app.screen
        assert isinstance(picker, FilePickerScreen)
        tree = picker.query_one("#picker-tree")
        await wait_for(pilot, lambda: tree.root.children, what="the folder listing")
        shown = [str(node.label) for node in tree.root.children]
        assert "colour.jsonl" in shown and "img" in shown  # folders and task files only
        node = next(n for n in tree.root.children if str(n.label) == "colour.jsonl")
        tree.select_node(node)
        await pilot.pause()
        await wait_for(pilot, lambda: isinstance(app.screen, AddTaskScreen), what="the picker to close")
        assert app.screen.query_one("#file").value == str(llava_file)


# -- start a run ----------------------------------------------------------------------------------

@async_test
async def test_start_run_form_records_the_run_in_the_order_ticked(catalog, tmp_path):
    add_tasks(catalog, tmp_path / "data", ["alpha", "beta", "gamma"])
    base = fake_base(tmp_path)
    app = HiclApp(catalog, poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("s")
        form = app.screen
        assert isinstance(form, StartRunScreen)
        await settle(pilot)
        assert form.query_one("#method").value == "seq-lora"
        tasks = form.query_one("#tasks")
        for name in ("gamma", "alpha"):
            tasks.select(name)
        await pilot.pause()
        assert form.order == ["gamma", "alpha"] and "gamma → alpha" in str(form.query_one("#order").render())
        await _fill(pilot, {"base": str(base), "name": "from-tui", "rank": "4", "max_steps": "3"})
        await pilot.click("#submit")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="the new run's screen")
        await settle(pilot)
        assert app.screen.data.detail["task_order"] == ["gamma", "alpha"]
    with catalog.session() as s:
        run = s.exec(select(Run)).one()
        assert (run.name, run.method, run.task_order) == ("from-tui", "seq-lora", ["gamma", "alpha"])
        assert run.config["train"]["rank"] == 4 and run.config["train"]["max_steps"] == 3
        assert len(list(s.exec(select(Job).where(Job.run_id == run.id)))) == 2


@async_test
async def test_start_run_form_offers_the_chosen_methods_own_options(catalog, tmp_path):
    add_tasks(catalog, tmp_path / "data", ["alpha", "beta"])
    base = fake_base(tmp_path)
    app = HiclApp(catalog, poll_interval=None)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("s")
        form = app.screen
        await settle(pilot)
        assert not form.query("#method-options Input")  # seq-lora has no options
        form.query_one("#method").value = "hide"
        await settle(pilot)
        fields = [i.id for i in form.query("#method-options Input")]
        assert "opt-expand" in fields and "opt-tau" in fields and len(fields) == 13
        for name in ("alpha", "beta"):
            form.query_one("#tasks").select(name)
        await _fill(pilot, {"base": str(base), "opt-tau": "0.5", "opt-expand": "sideways"})
        await pilot.click("#submit")
        await settle(pilot)
        assert "expand must be top, auto or a comma-separated list" in str(form.query_one("#error").render())
        await _fill(pilot, {"opt-expand": "auto"})
        await pilot.click("#submit")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="the new run's screen")
    with catalog.session() as s:
        run = s.exec(select(Run)).one()
        assert run.method == "hide" and run.config["method_options"] == {"tau": 0.5, "expand": "auto"}


@async_test
async def test_start_run_form_starts_a_background_worker_like_run_start(catalog, tmp_path, monkeypatch):
    import hicl_app.worker.daemon as daemon

    calls = []
    monkeypatch.setattr(daemon, "start_background_worker",
                        lambda settings: calls.append(settings.home) or daemon.Started(4242, tmp_path / "worker.log"))
    add_tasks(catalog, tmp_path / "data", ["alpha"])
    app = HiclApp(catalog, poll_interval=None, start_worker=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        app.screen.query_one("#tasks").select("alpha")
        await _fill(pilot, {"base": str(fake_base(tmp_path)), "max_steps": "3"})
        await pilot.click("#submit")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="the new run's screen")
        # the note is a message: it may arrive just after the run's screen
        await wait_for(pilot, lambda: any("background worker (pid 4242) trains it" in n.message
                                          for n in app._notifications), what="the note on who trains it")
    assert calls == [catalog.settings.home]


@async_test
async def test_start_run_form_shows_form_and_catalog_errors(catalog, tmp_path):
    add_tasks(catalog, tmp_path / "data", ["alpha"])
    app = HiclApp(catalog, poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        form = app.screen
        await _fill(pilot, {"lr": "fast"})
        await pilot.click("#submit")
        await pilot.pause()
        text = str(form.query_one(ErrorReport).render())
        assert "tasks: tick at least one" in text and "base:" in text and "learning rate" in text
        form.query_one("#tasks").select("alpha")
        await _fill(pilot, {"lr": "", "base": str(tmp_path / "no-such-model" / "x" / "y")})
        await pilot.press("ctrl+s")
        report = form.query_one(ErrorReport)
        await wait_for(pilot, lambda: "neither an existing folder nor a hub id" in str(report.render()),
                       what="start_run's own check")
        assert isinstance(app.screen, StartRunScreen)
    with catalog.session() as s:
        assert s.exec(select(Run)).first() is None


# -- push -----------------------------------------------------------------------------------------

@async_test
async def test_push_goes_through_the_hub_layer(catalog, three_stage_run, monkeypatch):
    import hicl_app.tui.screens.push as push

    run_id, _ = three_stage_run
    calls = []
    monkeypatch.setattr(push, "push_run", lambda cat, rid, repo, private: calls.append((rid, repo, private))
                        or f"https://hub.example/{repo}/commit/1")
    app = HiclApp(catalog, poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.open_run(run_id)
        await settle(pilot)
        if not app.hub_available:
            pytest.skip("hicl_app.hub is not installed")
        await pilot.press("p")
        assert isinstance(app.screen, PushScreen)
        await _fill(pilot, {"repo": "alice/hicl-run"})
        await pilot.click("#submit")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="the push to finish")
        assert calls == [(run_id, "alice/hicl-run", False)]
        await wait_for(pilot, lambda: any("hub.example/alice/hicl-run" in n.message for n in app._notifications),
                       what="the note with the commit URL")

"""The dashboard, run detail and comparison screens driven with Pilot, including a live run
whose (real) worker writes the catalog while the app watches."""

import pytest
from tui_support import FakeEngine, add_tasks, async_test, cell_texts, fake_base, open_catalog, settle, start_worker, wait_for

from hicl_app.bench.tui_paint import populate
from hicl_app.services.launch import start_run
from hicl_app.services.run_config import run_config
from hicl_app.tui.app import HiclApp
from hicl_app.tui.prefs import load_prefs
from hicl_app.tui.screens.compare import CompareScreen
from hicl_app.tui.screens.dashboard import DashboardScreen
from hicl_app.tui.screens.help import HelpScreen
from hicl_app.tui.screens.run_detail import RunScreen
from hicl_app.tui.widgets.heatmap import HeatmapTable
from hicl_app.tui.widgets.loss_chart import LossChart


@pytest.fixture
def catalog(home):
    cat = open_catalog(home)
    yield cat
    cat.dispose()


@pytest.fixture
def busy(catalog):
    populate(catalog, runs=250, points=5000)
    return catalog


@async_test
async def test_dashboard_pages_runs_and_shows_jobs_and_tasks(busy):
    app = HiclApp(busy, poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        runs = screen.query_one("#runs")
        assert runs.row_count == 100
        assert cell_texts(runs)[0][:5] == ["250", "seq-lora-0250", "seq-lora", "1/5", "running"]
        assert "Runs 1–100 of 250" in str(runs.border_title)
        jobs = cell_texts(screen.query_one("#jobs"))
        assert jobs[0][3] == "running" and "/" in jobs[0][4] and jobs[0][7] != "—"  # progress and ETA
        assert int(jobs[0][2]) >= 1  # stages count from 1 on every screen
        assert len(cell_texts(screen.query_one("#tasks"))) == 6
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert cell_texts(runs)[0][0] == "150" and "Runs 101–200 of 250" in str(runs.border_title)
        await pilot.press("right_square_bracket", "right_square_bracket")
        await settle(pilot)
        assert runs.row_count == 50 and cell_texts(runs)[-1][0] == "1"
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert cell_texts(runs)[0][0] == "150"
        assert app.painted_at is not None


@async_test
async def test_open_run_tabs_and_back(busy):
    app = HiclApp(busy, poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "down", "down", "down", "enter")  # run 246: completed
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RunScreen) and screen.run_id == 246
        matrix = cell_texts(screen.query_one(HeatmapTable))
        n = len(screen.data.detail["task_order"])
        assert len(matrix) == n + 1 and matrix[-1][0] == "Δ vs best"
        assert all(c.strip() not in ("·", "") for c in matrix[n - 1][1:])  # the last row is complete
        assert matrix[0][2].strip() == "·"  # task 2 not yet trained after stage 0
        metrics = str(screen.query_one("#run-metrics").render())
        assert "MFT" in metrics and "BWT" in metrics and "Forgetting" in metrics
        for key, tab in (("2", "loss"), ("3", "stages"), ("4", "adapters"), ("1", "matrix")):
            await pilot.press(key)
            assert screen.query_one("#run-tabs").active == tab
        assert screen.query_one(LossChart)._curves
        assert screen.query_one("#adapters-table").row_count == n
        assert "sha256 " in str(screen.query_one("#adapter-detail").render())
        await pilot.press("5")  # no CKA for this run: the tab stays hidden and unselected
        assert screen.query_one("#run-tabs").active == "matrix"
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


@async_test
async def test_cka_panel_appears_when_the_run_has_cka(busy, monkeypatch):
    from hicl_app.tui import data

    monkeypatch.setattr(data, "load_cka", lambda catalog, run_id: {"layer 12": [[1.0, 0.4], [0.4, 1.0]],
                                                                    "layer 24": [[1.0, 0.9], [0.9, 1.0]]})
    app = HiclApp(busy, poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.open_run(1)
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        screen = app.screen
        assert screen.query_one("#run-tabs").active == "cka"
        tables = list(screen.query("CkaView HeatmapTable"))
        assert len(tables) == 2 and cell_texts(tables[0])[0][2].strip() == "0.40"


@async_test
async def test_compare_two_runs(busy):
    app = HiclApp(busy, poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("v")  # nothing marked yet: a warning, no screen
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("down", "down", "down", "down", "m", "down", "v")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, CompareScreen) and screen.ids == [246, 245]
        metrics = cell_texts(screen.query_one("#compare-metrics"))
        assert [row[0] for row in metrics] == ["MFT", "Last", "Avg", "BWT", "Forgetting", "General"]
        a, b = float(metrics[1][1]), float(metrics[1][2])
        assert float(metrics[1][3]) == pytest.approx(b - a, abs=0.11)
        assert len(list(screen.query(HeatmapTable))) == 2
        await pilot.press("x")
        await settle(pilot)
        assert screen.ids == [245, 246]
        assert cell_texts(screen.query_one("#compare-metrics"))[1][1] == metrics[1][2]
        # a third run: mark two, compare with the highlighted one
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("down", "m", "down", "v")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, CompareScreen) and len(screen.ids) == 3 and screen.ids[0] == 246
        assert len(list(screen.query(HeatmapTable))) == 3
        header = [str(c.label) for c in screen.query_one("#compare-metrics").ordered_columns]
        assert header[:4] == ["metric", "A", "B", "C"] and "C−A" in header


@async_test
async def test_help_lists_the_keys_of_the_screen(busy):
    app = HiclApp(busy, poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = dict((d, k) for k, d in app.screen.keys)
        assert keys["Add task"] == "a" and keys["Cancel"] == "c" and "Mark for comparison" in keys
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


@async_test
async def test_theme_is_remembered_in_the_workspace(catalog):
    app = HiclApp(catalog, poll_interval=None)
    assert {"hicl-dark", "hicl-light"} <= set(app.available_themes) and app.theme == "hicl-dark"
    async with app.run_test() as pilot:
        await settle(pilot)
        assert load_prefs(catalog.settings) == {}  # nothing written until the user picks a theme
        assert "none yet" in str(app.screen.query_one("#runs").border_title)  # an empty workspace says what to do
        app.theme = "hicl-light"
        await settle(pilot)
    assert load_prefs(catalog.settings)["theme"] == "hicl-light"
    assert HiclApp(catalog).theme == "hicl-light"


@async_test
async def test_command_palette_opens_a_run(busy):
    app = HiclApp(busy, poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"run 17:")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, RunScreen) and app.screen.run_id == 17


@pytest.fixture
def live_run(catalog, tmp_path, monkeypatch):
    """A two-stage seq-lora run on two small tasks, with a fake engine the real worker runs."""
    add_tasks(catalog, tmp_path / "data", ["alpha", "beta"])
    config = run_config(train={"max_steps": 6})
    run = start_run(catalog, method="seq-lora", tasks=["alpha", "beta"], base=str(fake_base(tmp_path)),
                    name="live", config=config)
    engine = FakeEngine(steps=6, hold_stage=0).install(monkeypatch)
    return run.id, engine


@async_test
async def test_screens_follow_a_worker_live(catalog, live_run):
    run_id, engine = live_run
    app = HiclApp(catalog, poll_interval=0.05)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        dashboard = app.screen
        assert cell_texts(dashboard.query_one("#runs"))[0][4] == "queued"
        worker = start_worker(catalog, run_id)
        try:
            await wait_for(pilot, engine.held.is_set, what="the worker to reach the middle of stage 0")
            jobs = dashboard.query_one("#jobs")
            await wait_for(pilot, lambda: cell_texts(jobs)[0][3] == "running" and "3/6" in cell_texts(jobs)[0][4],
                           what="the job's progress on the dashboard")
            assert cell_texts(dashboard.query_one("#runs"))[0][4] == "running"
            row = cell_texts(jobs)[0]
            assert row[6] == "12.5" and row[7] == "3s"  # samples/s and ETA from the worker
            app.open_run(run_id)
            await settle(pilot)
            screen = app.screen
            assert len(screen.query_one(LossChart)._curves.get(0, [])) >= 1
            engine.release()
            await wait_for(pilot, lambda: screen.data is not None and screen.data.detail["status"] == "completed",
                           what="the run to complete on the run screen")
            await settle(pilot)
            matrix = cell_texts(screen.query_one(HeatmapTable))
            assert [c.strip() for c in matrix[0][1:]] == ["80.0", "·"]
            assert [c.strip() for c in matrix[1][1:]] == ["70.0", "80.0"]
            assert matrix[2][1].strip() == "-10.0"  # forgetting of alpha
            assert sorted(screen.query_one(LossChart)._curves) == [0, 1]
            assert screen.query_one("#adapters-table").row_count == 2
            assert "Last 75.00" in str(screen.query_one("#run-metrics").render())
            await pilot.press("escape")
            await settle(pilot)
            assert cell_texts(dashboard.query_one("#runs"))[0][3:7] == ["2/2", "completed", "77.5", "75.0"]
        finally:
            engine.release()
            worker.join(timeout=10)

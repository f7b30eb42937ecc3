"""Snapshots of the main screens at 80x24 and 120x35 (and the dashboard wide and in the light theme).

Regenerate after an intended change with `pytest tests/faces/test_tui_snapshots.py --snapshot-update`
and look at the SVGs under tests/faces/__snapshots__/ before committing them.
"""

import pytest
from tui_support import open_catalog, settle

from hicl_app.bench.tui_paint import populate
from hicl_app.tui.app import HiclApp


@pytest.fixture
def demo(home):
    cat = open_catalog(home)
    populate(cat, runs=12, points=3000)
    yield cat
    cat.dispose()


def steps(*actions):
    """A run_before that lets data load, then does each action (a key, or a callable on the app)."""

    async def run_before(pilot):
        await settle(pilot)
        for action in actions:
            if callable(action):
                action(pilot.app)
            else:
                await pilot.press(action)
            await settle(pilot)
        for field in pilot.app.screen.query("Input"):
            field.cursor_blink = False
        await pilot.pause()

    return run_before


def test_dashboard(snap_compare, demo):
    assert snap_compare(HiclApp(demo, poll_interval=None), run_before=steps())


def test_dashboard_120x35(snap_compare, demo):
    assert snap_compare(HiclApp(demo, poll_interval=None), run_before=steps(), terminal_size=(120, 35))


def test_dashboard_wide(snap_compare, demo):
    assert snap_compare(HiclApp(demo, poll_interval=None), run_before=steps(), terminal_size=(160, 40))


def test_dashboard_light_theme(snap_compare, demo):
    app = HiclApp(demo, poll_interval=None)
    app.theme = "hicl-light"
    assert snap_compare(app, run_before=steps())


def test_run_matrix(snap_compare, demo):
    assert snap_compare(HiclApp(demo, poll_interval=None), run_before=steps(lambda app: app.open_run(7)))


def test_run_matrix_120x35(snap_compare, demo):
    assert snap_compare(HiclApp(demo, poll_interval=None), run_before=steps(lambda app: app.open_run(7)),
                        terminal_size=(120, 35))


def test_run_loss_curve(snap_compare, demo):
    assert snap_compare(HiclApp(demo, poll_interval=None), run_before=steps(lambda app: app.open_run(7), "2"))


def test_run_stages_while_training(snap_compare, demo):
    assert snap_compare(HiclApp(demo, poll_interval=None), run_before=steps(lambda app: app.open_run(12), "3"))


def test_compare_runs(snap_compare, demo):
    assert snap_compare(HiclApp(demo, poll_interval=None), run_before=steps(lambda app: app.compare_runs(8, 7)))


def test_add_task_form(snap_compare, demo):
    assert snap_compare(HiclApp(demo, poll_interval=None), run_before=steps("a"))


#: the start-run form with the picker focused, two tasks ticked (the second first) and the cursor
#: on an unticked one: the picker's rows, the order line and the focus must all show
PICKED = ("s", lambda app: app.screen.query_one("#tasks").focus(), "down", "down", "space", "up", "space", "down",
          "down")


def test_start_run_form(snap_compare, demo):
    assert snap_compare(HiclApp(demo, poll_interval=None), run_before=steps(*PICKED))


def test_start_run_form_120x35(snap_compare, demo):
    assert snap_compare(HiclApp(demo, poll_interval=None), run_before=steps(*PICKED), terminal_size=(120, 35))

"""Snapshots of the main screens at 80x24 and 120x35 (and the dashboard in the light theme).

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


def with_predictions(cat, run_id: int, *, seed: int | None = None, shift: int = 0) -> int:
    """Give a populated run's cells predictions files (100 right/wrong samples matching each score),
    or with `seed`, record a copy of the run trained with that seed, `shift` points better on every cell."""
    import json

    from sqlmodel import select

    from hicl_app.catalog.models import Run, Score, Stage

    with cat.session() as s:
        run = s.get(Run, run_id)
        if seed is not None:
            config = json.loads(json.dumps(run.config))
            config["train"]["seed"] = seed
            copy = Run(name=f"{run.name}-seed{seed}", method=run.method, base_model=run.base_model,
                       task_order=list(run.task_order), config=config, env=dict(run.env), status=run.status,
                       created_at=run.created_at, started_at=run.started_at, finished_at=run.finished_at)
            s.add(copy)
            s.flush()
            for st in s.exec(select(Stage).where(Stage.run_id == run_id)):
                s.add(Stage(run_id=copy.id, index=st.index, train_tasks=st.train_tasks, status=st.status, steps=st.steps))
            cells = [(c.stage_index, c.task_name, min(100.0, c.score + shift))
                     for c in s.exec(select(Score).where(Score.run_id == run_id))]
            target = copy.id
        else:
            cells = [(c.stage_index, c.task_name, c.score) for c in s.exec(select(Score).where(Score.run_id == run_id))]
            target = run_id
        folder = cat.settings.home / "predictions" / f"run-{target}"
        folder.mkdir(parents=True, exist_ok=True)
        for stage, task, score in cells:
            right = round(score)
            path = folder / f"{stage}-{task}.jsonl"
            path.write_text("".join(json.dumps({"id": f"{task}-{i}", "score": float(i < right)}) + "\n"
                                    for i in range(100)))
            row = s.exec(select(Score).where(Score.run_id == target, Score.stage_index == stage,
                                             Score.task_name == task)).first()
            if row is None:
                row = Score(run_id=target, stage_index=stage, task_name=task, n=100, scorer="exact", score=score)
            row.score, row.predictions_path = score, str(path)
            s.add(row)
        s.commit()
    return target


@pytest.fixture
def compared(demo):
    """Run 7 with predictions, a copy trained with another seed 12 points better, and run 8."""
    with_predictions(demo, 7)
    better = with_predictions(demo, 7, seed=1, shift=12)
    with_predictions(demo, 8)
    return demo, [7, better, 8]


def _compare(runs):
    def open_compare(app):
        app.marked_runs = list(runs[:-1])
        app.compare_runs(runs[0], runs[-1])
    return open_compare


def test_compare_runs(snap_compare, compared):
    cat, runs = compared
    assert snap_compare(HiclApp(cat, poll_interval=None), run_before=steps(_compare(runs)))


def test_compare_runs_wide(snap_compare, compared):
    cat, runs = compared
    assert snap_compare(HiclApp(cat, poll_interval=None), run_before=steps(_compare(runs)), terminal_size=(120, 35))


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

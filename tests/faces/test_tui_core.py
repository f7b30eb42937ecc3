"""The TUI's Textual-free core: batched catalog reads, the change probe, charts, forms, prefs."""

import json
import sqlite3
import subprocess
import sys

import pytest
from tui_support import open_catalog

from hicl_app.bench.tui_paint import populate
from hicl_app.catalog import dashboard as board
from hicl_app.catalog.report import run_summary
from hicl_app.catalog.runs import list_runs
from hicl_app.core.errors import InvalidInput
from hicl_app.tui import chart, data, forms, prefs


@pytest.fixture
def catalog(home):
    cat = open_catalog(home)
    populate(cat, runs=30, points=3000)
    yield cat
    cat.dispose()


def test_core_never_imports_textual(home):
    code = ("import sys, json\n"
            "import hicl_app.tui, hicl_app.tui.data, hicl_app.tui.chart, hicl_app.tui.forms, hicl_app.tui.prefs\n"
            "import hicl_app.catalog.dashboard\n"
            "print(json.dumps([m for m in ('textual', 'torch') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == []


def test_runs_page_matches_run_summary(catalog):
    with catalog.session() as s:
        expected = {r.id: run_summary(s, r) for r in list_runs(s)}
        page = board.runs_page(s, 0, 100)
        assert board.count_runs(s) == 30
        assert [r["id"] for r in board.runs_page(s, 10, 5)] == [20, 19, 18, 17, 16]
    assert [r["id"] for r in page] == sorted(expected, reverse=True)
    for row in page:
        want = expected[row["id"]]
        for key in ("stages", "stages_done", "status"):
            assert row[key] == want[key]
        assert row["metrics"] == want["metrics"]


def test_load_dashboard_clamps_the_page(catalog):
    d = data.load_dashboard(catalog, page=99, page_size=8)
    assert (d.page, d.pages, d.runs_total) == (3, 4, 30)
    assert [r["id"] for r in d.runs] == [6, 5, 4, 3, 2, 1]
    assert [t["name"] for t in d.tasks][:2] == ["arxivqa", "clevr-math"]
    statuses = [j["status"] for j in d.jobs]
    assert statuses[0] == "running"  # running first, then queued, then the recently finished
    assert statuses.index("queued") < min(statuses.index(s) for s in ("done", "failed", "cancelled") if s in statuses)


def test_load_run_and_forgetting(catalog):
    run = data.load_run(catalog, 1)
    assert run.detail["id"] == 1 and run.loss and all(points for points in run.loss.values())
    assert run.cka == {}
    assert data.column_forgetting([[80, None], [70, 90], [60, 85]]) == [20, 5]
    assert data.column_forgetting([[80, None]]) == [None, None]
    assert data.column_forgetting([]) == []


def test_job_for(catalog):
    with catalog.session() as s:
        running = board.job_for(s, 30, "cancel")
        assert running is not None and board.job_for(s, 30, "retry") is None
        assert board.job_for(s, 28, "retry") is not None  # the failed run
        assert board.job_for(s, 1, "cancel") is None


def test_change_probe_sees_commits_of_other_connections(catalog):
    probe = board.ChangeProbe(catalog)
    try:
        assert probe.changed()
        assert not probe.changed()
        other = sqlite3.connect(catalog.engine.url.database)
        other.execute("UPDATE jobs SET progress = '{\"step\": 3}' WHERE id = 1")
        other.commit()
        other.close()
        assert probe.changed()
        assert not probe.changed()
        with catalog.session() as s:
            s.exec(board.select(board.Run)).first()  # reads change nothing
        assert not probe.changed()
    finally:
        probe.close()


def test_plot_draws_every_series_in_its_box():
    p = chart.plot([[(0, 1.0), (10, 0.5)], [(10, 0.5), (20, 0.2)]], width=20, height=5)
    assert len(p.rows) == 5 and all(len(r) == 20 for r in p.rows)
    owners = {o for row in p.rows for _, o in row if o is not None}
    assert owners == {0, 1}
    assert p.x_range == (0, 20) and p.y_range == (0.2, 1.0)
    assert p.rows[0][0][0] != " " and p.rows[-1][-1][0] != " "  # the first point top-left, the last bottom-right


def test_plot_long_series_and_flat_and_empty():
    long = [(i, 1.0 / (1 + i)) for i in range(100_000)]
    assert len(chart.plot([long], 30, 6).rows) == 6
    flat = chart.plot([[(0, 2.0), (5, 2.0)]], 10, 3)
    assert flat.y_range[0] < 2.0 < flat.y_range[1]
    assert chart.plot([], 4, 2).rows == [[(" ", None)] * 4] * 2
    assert chart.concat_stages({1: [(1, 0.5), (4, 0.3)], 0: [(1, 1.0), (10, 0.8)]}) == [
        [(1, 1.0), (10, 0.8)], [(11, 0.5), (14, 0.3)]]


def test_formatting():
    assert data.fmt_eta(None) == "—" and data.fmt_eta(42) == "42s" and data.fmt_eta(125) == "2m05s"
    assert data.fmt_eta(3 * 3600 + 60) == "3h01m"
    assert data.fmt_size(512) == "512 B" and data.fmt_size(3 * 1048576) == "3.0 MB"
    assert data.progress_of({"status": "running", "progress": {"step": 3, "total": 12}}) == (0.25, "3/12")
    assert data.progress_of({"status": "queued", "progress": {}}) == (None, "")
    assert chart.tick(25000) == "25k" and chart.tick(0.1234) == "0.123" and chart.tick(3.0) == "3"


def test_parse_run_form_reports_every_problem():
    with pytest.raises(InvalidInput) as err:
        forms.parse_run_form(None, [], " ", "", {"rank": "eight", "lr": "-1", "epochs": "", "max_steps": "2.5"})
    problems = " | ".join(err.value.problems)
    for expected in ("method", "tasks", "base", "LoRA rank", "learning rate", "max steps"):
        assert expected in problems
    request = forms.parse_run_form("seq-lora", ["a", "b"], " /m ", "", {"rank": "4", "max_steps": "3"})
    assert (request.tasks, request.base, request.name) == (["a", "b"], "/m", None)
    assert request.config["train"]["rank"] == 4 and request.config["train"]["alpha"] == 8.0
    assert request.config["train"]["max_steps"] == 3 and request.config["train"]["lr"] == 2e-4
    assert forms.method_choices()[:2] == ["seq-lora", "joint"]


def test_prefs_roundtrip(home):
    from hicl_app.core.settings import Settings

    settings = Settings.resolve(home)
    assert prefs.load_prefs(settings) == {}
    prefs.save_prefs(settings, theme="hicl-light")
    assert prefs.load_prefs(settings) == {"theme": "hicl-light"}
    settings.path(prefs.FILE).write_text("not json")
    assert prefs.load_prefs(settings) == {}


def test_tui_command_is_registered_and_imports_textual_only_when_run(home):
    code = ("import json, sys\n"
            "from hicl_app.cli.main import cli\n"
            "try:\n"
            "    cli.main(args=['tui', '--help'], prog_name='hicl')\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(json.dumps('textual' in sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "live dashboard" in proc.stdout
    assert json.loads(proc.stderr.strip().splitlines()[-1]) is False


def test_bench_builds_a_workspace_and_times_first_paint(tmp_path):
    from hicl_app.bench.tui_paint import measure

    result = measure(tmp_path / "ws", runs=40, points=2000, repeat=1)
    assert result["runs"] == 40 and result["curve_points"] >= 2000 and result["scores"] > 0
    assert 0 < result["first_paint_s"] < 10 and 0 < result["first_paint_fresh_process_s"] < 30

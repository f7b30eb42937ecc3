"""What a new user meets first in the TUI: columns that fit, the run's matrix read per task, the
CKA a run stored, the start-run picker, the push form's dry run and stage, and the help's keys."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from sqlmodel import select
from tui_support import add_tasks, async_test, cell_texts, open_catalog, settle, wait_for

from hicl_app.bench.tui_paint import populate
from hicl_app.catalog.models import Adapter, Run
from hicl_app.tui.app import HiclApp
from hicl_app.tui.data import column_scales, fmt_signed, stored_cka
from hicl_app.tui.widgets.tables import Fit, fit_columns


@pytest.fixture
def demo(home):
    cat = open_catalog(home)
    populate(cat, runs=12, points=300)
    yield cat
    cat.dispose()


def test_fit_columns_keeps_the_important_columns_whole():
    widths = [2, 20, 9, 4, 16]  # id, name, status, score, created
    fit = Fit(priority=(1, 2, 3, 0, 4), keep=3, shrink={1: 8})
    assert fit_columns(widths, 100, fit) == widths  # room for all: unchanged
    assert fit_columns(widths, 42, fit) == [None, 20, 9, 4, None]  # optional columns go before the name is cut
    out = fit_columns(widths, 30, fit)
    assert out[2] == 9 and out[3] == 4 and 8 <= out[1] < 20  # status and score whole, the name cut, not dropped
    assert sum(w + 2 for w in out if w is not None) <= 30
    assert fit_columns(widths, 12, fit) == [None, 10, None, None, None]  # at worst the first column alone
    bar = Fit(priority=(0, 1), keep=2, shrink={1: 8}, crop=frozenset({1}))
    assert fit_columns([10, 15], 26, bar) == [10, 8]  # a progress bar loses its step count whole, not half


def test_a_change_that_rounds_to_zero_has_no_sign_and_each_column_has_its_scale():
    assert fmt_signed(-0.0) == "0.0" and fmt_signed(-0.04) == "0.0" and fmt_signed(-1.25) == "-1.2"
    assert fmt_signed(2.0) == "+2.0" and fmt_signed(None) == "—"
    assert column_scales([[48.0, None], [40.0, 180.0]]) == [(24.0, 48.0), (90.0, 180.0)]
    assert column_scales([[0.0]]) == [(-1.0, 0.0)]


@pytest.mark.parametrize("size", [(80, 24), (120, 35)])
@async_test
async def test_dashboard_columns_fit_with_status_scores_loss_rate_and_eta(demo, size):
    app = HiclApp(demo, poll_interval=None)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        runs, jobs = app.screen.query_one("#runs"), app.screen.query_one("#jobs")
        for table, wanted in ((runs, {"status", "Avg", "Last"}), (jobs, {"status", "loss", "smp/s", "ETA"})):
            labels = [c.label.plain for c in table.ordered_columns]
            assert wanted <= set(labels), labels
            used = sum(c.width + 2 * table.cell_padding for c in table.ordered_columns)
            assert used <= table.size.width, (labels, used, table.size.width)
            status = labels.index("status")
            assert all("…" not in row[status] for row in cell_texts(table))  # never "complet…"
        running = next(row for row in cell_texts(jobs) if "running" in row)
        labels = [c.label.plain for c in jobs.ordered_columns]
        assert running[labels.index("loss")] != "—" and running[labels.index("ETA")] != "—"


def _hide_run_with_stored_cka(catalog, tmp_path, run_id: int = 7) -> None:
    with catalog.session() as s:
        run = s.get(Run, run_id)
        run.method = "hide"
        s.add(run)
        for a in s.exec(select(Adapter).where(Adapter.run_id == run_id)):
            stage_dir = tmp_path / f"stage-{a.id}"
            (stage_dir / "hide").mkdir(parents=True)
            (stage_dir / "hide" / "manifest.json").write_text(json.dumps({
                "cka": {"kernel": "linear", "n_probe": 12, "mean_cross": {"0": 0.97, "1": 0.42}},
                "expanded_layers": [1], "options": {"cka_threshold": 0.9}}))
            a.path = str(stage_dir / "adapter")
            s.add(a)
        s.commit()


@async_test
async def test_the_cka_tab_shows_what_a_hide_run_stored(demo, tmp_path):
    _hide_run_with_stored_cka(demo, tmp_path)
    app = HiclApp(demo, poll_interval=None)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.open_run(7)
        await settle(pilot)
        assert app.screen.data.stored_cka["mean_cross"] == {0: 0.97, 1: 0.42}
        await pilot.press("5")
        await settle(pilot)
        view = app.screen.query_one("#cka-view")
        assert app.screen.query_one("#run-tabs").active == "cka"
        text = " ".join(str(label.render()) for label in view.query("Label"))
        assert "mean cross-task CKA per layer" in text and "under 0.9" in text
        rows = cell_texts(view.query_one("HeatmapTable"))
        assert rows[1][0].startswith("layer 1 ✱") and rows[1][1].strip() == "0.42"
    assert stored_cka({"method": "seq-lora", "adapters": []}) is None


@async_test
async def test_run_matrix_counts_stages_from_1_and_colours_each_column(demo):
    app = HiclApp(demo, poll_interval=None)
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(pilot)
        app.open_run(7)
        await settle(pilot)
        rows = cell_texts(app.screen.query_one("#matrix-table"))
        assert rows[0][0].startswith("s1 ") and not any(r[0].startswith("s0") for r in rows)
        assert all("-0.0" not in c for r in rows for c in r)
        detail = app.screen.data.detail
        shown = ([detail["zero_shot"]] if detail["zero_shot"] else []) + detail["matrix"]
        scales = app.screen.query_one("#matrix-table")._shown[1]["scales"]
        assert scales == column_scales(shown) and len(scales) == len(detail["task_order"])
        assert all(hi == max(r[j] for r in shown if r[j] is not None) and lo == hi / 2
                   for j, (lo, hi) in enumerate(scales))  # each task against its own best


@pytest.mark.parametrize("size", [(80, 24), (120, 35)])
@async_test
async def test_start_run_picker_shows_every_task_the_order_and_the_focus(demo, size):
    app = HiclApp(demo, poll_interval=None)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        form = app.screen
        picker = form.query_one("#tasks")
        picker.focus()
        await pilot.press("down", "down", "space", "up", "space")
        await settle(pilot)
        assert picker.option_count == 6 and picker.size.height == 6  # all six rows in view
        order = form.query_one("#order")
        body = form.query_one("#start-body")
        assert body.region.contains_region(order.region) and order.region.height >= 1  # the order line shows
        assert str(order.render()) == "order: clevr-math → arxivqa"
        prompts = [str(picker.get_option_at_index(i).prompt) for i in range(2)]
        assert prompts == ["2. arxivqa", "1. clevr-math"]  # ticked tasks carry their place
        assert picker.has_focus and body.region.contains_region(picker.region)
        assert form.query_one("#submit").region.height == 1  # the buttons stay in view


@async_test
async def test_help_lists_the_apps_own_keys_first(demo):
    app = HiclApp(demo, poll_interval=None)
    async with app.run_test(size=(80, 40)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        help_screen = app.screen
        own = [d for _, d in help_screen.keys]
        assert own[:2] == ["Add task", "New run"] and "Cursor up" not in own and "Focus Next" not in own
        assert "Cursor up" in [d for _, d in help_screen.generic]


@async_test
async def test_push_form_dry_run_lists_files_and_sizes_and_offers_the_stage(demo, tmp_path, monkeypatch):
    import hicl_app.tui.screens.push as push

    add_tasks(demo, tmp_path / "data", ["alpha"])
    uploads = [SimpleNamespace(as_dict=lambda p=p, n=n: {"path": p, "size": n, "sha256": "0" * 64})
               for p, n in (("adapter_model.safetensors", 3 * 1_048_576), ("stages/stage-1/adapter/adapter_config.json", 700))]
    planned, pushed = [], []
    monkeypatch.setattr(push, "plan_push", lambda cat, rid, repo, stage=None: planned.append((rid, repo, stage)) or
                        SimpleNamespace(uploads=uploads, number=(stage or 0) + 1, n_stages=6, total_bytes=3 * 1_048_576 + 700,
                                        tag=lambda rev, s=stage: f"stage-{(s or 0) + 1}"))
    monkeypatch.setattr(push, "push_run", lambda cat, rid, repo, private, stage=None: pushed.append(stage) or "https://x/1")
    app = HiclApp(demo, poll_interval=None)
    async with app.run_test(size=(100, 35)) as pilot:
        await settle(pilot)
        app.open_run(7)
        await settle(pilot)
        if not app.hub_available:
            pytest.skip("hicl_app.hub is not installed")
        await pilot.press("p")
        await settle(pilot)
        form = app.screen
        stage = form.query_one("#stage")
        labels = [str(prompt) for prompt, _ in stage._options]
        assert labels[0] == "the last trained" and labels[1].startswith("stage 1: ")
        form.query_one("#repo").value = "alice/r"
        stage.value = "0"
        await pilot.click("#dry-run")
        await wait_for(pilot, lambda: form.query_one("#push-plan").display, what="the dry run's plan")
        plan = str(form.query_one("#plan").render())
        assert "adapter_model.safetensors" in plan and "3.0 MB" in plan and "700 B" in plan and "2 files" in plan
        assert "stage 1 of 6" in plan and "nothing sent" in plan and planned == [(7, "alice/r", 0)]
        await pilot.click("#submit")
        await wait_for(pilot, lambda: pushed, what="the push")
    assert pushed == [0]

"""Helpers shared by the TUI tests: workspaces, waiting on the app, and a fake engine stage that
the real worker runs (so the catalog is written exactly as during training, without torch)."""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
import time
import types
from pathlib import Path

from conftest import write_images, write_jsonl

from hicl_app.catalog.db import Catalog
from hicl_app.core.settings import Settings


def async_test(fn):
    """Run an async test function in its own event loop (no pytest-asyncio needed)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return run


def open_catalog(home: Path) -> Catalog:
    return Catalog(Settings.resolve(home))


async def settle(pilot, rounds: int = 3) -> None:
    """Let every load worker finish, its data reach the screen, and every table measure its
    new rows (DataTable sizes its columns when it next goes idle)."""
    from textual.widgets import DataTable
    from textual.worker import WorkerState

    def busy() -> bool:
        if any(w.state in (WorkerState.PENDING, WorkerState.RUNNING) for w in pilot.app.workers):
            return True
        tables = [t for screen in pilot.app.screen_stack for t in screen.query(DataTable)]
        return any(t._require_update_dimensions or t._updated_cells for t in tables)

    for _ in range(rounds):
        while busy():
            await pilot.pause(0.01)
        await pilot.pause()


async def wait_for(pilot, predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def cell_texts(table) -> list[list[str]]:
    """A DataTable's rows as plain strings."""
    return [[str(getattr(c, "plain", c)) for c in table.get_row_at(i)] for i in range(table.row_count)]


def add_tasks(catalog: Catalog, folder: Path, names: list[str], n: int = 6) -> None:
    from hicl_app.catalog.tasks import add_task

    for name in names:
        where = folder / name
        images = write_images(where / "img", n)
        recs = [{"id": f"{name}{i}", "image": img, "conversations": [
            {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "blue"}]}
            for i, img in enumerate(images)]
        add_task(catalog, write_jsonl(where / "train.jsonl", recs), name=name, test_fraction=0.34)


def fake_base(folder: Path) -> Path:
    base = folder / "base-model"
    base.mkdir(parents=True, exist_ok=True)
    (base / "config.json").write_text("{}")
    return base


class FakeEngine:
    """Stands in for hicl_app.engine.pipeline: `run_stage` reports progress and loss like the
    engine, honours should_stop, and can be held mid-stage with `hold` until `release`."""

    def __init__(self, steps: int = 6, hold_stage: int | None = None):
        from hicl_app.engine import spec

        self.steps = steps
        self.hold_stage = hold_stage
        self.held = threading.Event()
        self.released = threading.Event()
        self.module = types.ModuleType("hicl_app.engine.pipeline")
        self.module.StageSpec, self.module.TaskData = spec.StageSpec, spec.TaskData
        self.module.StageResult = spec.StageResult
        self.module.run_stage = self.run_stage
        self.module.run_eval = self.run_eval

    def install(self, monkeypatch) -> "FakeEngine":
        monkeypatch.setitem(sys.modules, "hicl_app.engine.pipeline", self.module)
        return self

    def release(self) -> None:
        self.released.set()

    def run_eval(self, model, tasks, eval_cfg, out_dir, **_kwargs):
        """Zero-shot scores of the base model (asked for only with eval_all or a general task)."""
        return {t.name: {"score": 30.0, "n": 2, "predictions_path": None, "details": {}} for t in tasks}

    def run_stage(self, spec, on_event=None, should_stop=None):
        from hicl_app.engine.errors import Stopped

        half = self.steps // 2
        for step in range(1, self.steps + 1):
            loss = 2.0 / (1 + step + 3 * spec.stage_index)
            on_event({"type": "loss", "step": step, "loss": loss, "lr": 1e-4})
            on_event({"type": "progress", "step": step, "total": self.steps, "loss": loss, "lr": 1e-4,
                      "samples_per_s": 12.5, "eta_s": float(self.steps - step)})
            if step == half and spec.stage_index == self.hold_stage:
                time.sleep(1.05)  # the reporter writes at most once a second: let this step reach the catalog
                on_event({"type": "progress", "step": step, "total": self.steps, "loss": loss, "lr": 1e-4,
                          "samples_per_s": 12.5, "eta_s": float(self.steps - step)})
                self.held.set()
                while not self.released.wait(0.05):
                    if should_stop and should_stop():
                        raise Stopped(step, None)
        adapter = spec.stage_dir / "adapter"
        adapter.mkdir(parents=True, exist_ok=True)
        (adapter / "adapter_model.safetensors").write_bytes(b"x" * 64)
        scores = {t.name: {"score": 80.0 - 10 * (spec.stage_index - i), "n": 2, "predictions_path": None,
                           "details": {}} for i, t in enumerate(spec.eval_tasks)}
        return self.module.StageResult(adapter_dir=adapter, files={"adapter/adapter_model.safetensors": "ab" * 32},
                                       scores=scores, train_samples=4 * self.steps, steps=self.steps)


def start_worker(catalog: Catalog, run_id: int) -> threading.Thread:
    """The real worker loop in a thread, until the run has nothing left to run."""
    from hicl_app.catalog import queue
    from hicl_app.worker.loop import Worker

    worker = Worker(catalog, poll=0.05)
    thread = threading.Thread(target=worker.run, kwargs={"until": lambda: queue.runnable_jobs(catalog, run_id) == 0},
                              daemon=True)
    thread.start()
    return thread

"""The demo's progress while its runs drain: where each run is and when it should end.

The runs train in worker processes, so their progress is read where the workers write it, the
catalog's jobs (step, total, status), once a second from a thread of the demo's process. A run's
share done weighs each stage by its planned optimizer steps; its ETA is its time so far times
what is left over what is done (evaluation time included, as it is in the time so far).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, Iterator

from sqlalchemy.exc import OperationalError
from sqlmodel import select

from ..catalog.db import Catalog
from ..catalog.models import Job, Run

Status = Callable[[dict], None]


def _aware(when: datetime | None) -> datetime | None:
    return when.replace(tzinfo=timezone.utc) if when is not None and when.tzinfo is None else when


def runs_status(catalog: Catalog, runs: dict[str, int]) -> dict:
    """{"runs": [{label, run_id, status, stages, done, step, total, fraction, eta_s}], "fraction", "eta_s"}.

    `fraction` of the whole is weighted by planned steps; ETAs are None until a run has done something.
    """
    now = datetime.now(timezone.utc)
    ids = list(runs.values())
    with catalog.session() as s:
        jobs = list(s.exec(select(Job).where(Job.run_id.in_(ids)).order_by(Job.id)))
        rows = {r.id: r for r in s.exec(select(Run).where(Run.id.in_(ids)))}
    out, weight_all, done_all, first_start = [], 0.0, 0.0, None
    for label, run_id in runs.items():
        mine = [j for j in jobs if j.run_id == run_id]
        run = rows[run_id]
        per_stage = float((run.config or {}).get("train", {}).get("max_steps") or 1)
        done = sum(j.status == "done" for j in mine)
        running = next((j for j in mine if j.status == "running"), None)
        p = dict(running.progress or {}) if running else {}
        step, total = p.get("step") or 0, p.get("total") or 0
        fraction = (done + (step / total if total else 0.0)) / max(1, len(mine))
        starts = [_aware(j.started_at) for j in mine if j.started_at is not None]
        start = min(starts) if starts else None
        if start is not None:
            first_start = start if first_start is None else min(first_start, start)
        finished = run.status in ("completed", "failed", "cancelled")
        eta = None
        if finished:
            eta = 0.0
        elif start is not None and fraction > 0:
            eta = (now - start).total_seconds() * (1 - fraction) / fraction
        out.append({"label": label, "run_id": run_id, "status": run.status, "stages": len(mine), "done": done,
                    "stage": running.payload.get("stage_index") if running else None, "step": step, "total": total,
                    "fraction": 1.0 if run.status == "completed" else fraction, "eta_s": eta})
        weight_all += per_stage * len(mine)
        done_all += per_stage * len(mine) * out[-1]["fraction"]
    fraction = done_all / weight_all if weight_all else 0.0
    eta = None
    if first_start is not None and 0 < fraction < 1:
        eta = (now - first_start).total_seconds() * (1 - fraction) / fraction
    return {"runs": out, "fraction": fraction, "eta_s": 0.0 if fraction >= 1 else eta}


@contextmanager
def watching(catalog: Catalog, runs: dict[str, int], on_status: Status | None, every: float = 1.0) -> Iterator[None]:
    """Call `on_status(runs_status(...))` every `every` seconds while the block runs, and once at its end."""
    if on_status is None:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                on_status(runs_status(catalog, runs))
            except OperationalError:  # a busy database: skip this refresh, the next one will do
                continue

    thread = threading.Thread(target=loop, name="demo-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        try:
            on_status(runs_status(catalog, runs))
        except OperationalError:
            pass

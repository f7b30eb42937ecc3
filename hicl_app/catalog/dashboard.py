"""Reads for a live dashboard: a page of runs with their metrics in a few queries, the jobs
worth watching, curve points as plain tuples, and a cheap "did anything change?" probe.

The per-run helpers in runs.py and report.py cost a few queries a run; a screen that lists
a thousand runs or polls every half second needs these batched forms instead.
"""

from __future__ import annotations

import sqlite3
import threading

from sqlalchemy import func
from sqlmodel import Session, select

from ..core import clmetrics
from .db import Catalog
from .models import CurvePoint, Job, Run, Score, Stage

ACTIVE = ("running", "queued")


def count_runs(session: Session) -> int:
    return session.exec(select(func.count()).select_from(Run)).one()


def runs_page(session: Session, offset: int = 0, limit: int = 100) -> list[dict]:
    """Runs newest first, each with stage progress and its metrics so far (as run_summary)."""
    runs = list(session.exec(select(Run).order_by(Run.id.desc()).offset(offset).limit(limit)))
    if not runs:
        return []
    ids = [r.id for r in runs]
    stages: dict[int, list[int]] = {i: [0, 0] for i in ids}  # run id -> [stages, done]
    rows = session.exec(select(Stage.run_id, Stage.status, func.count()).where(Stage.run_id.in_(ids))
                        .group_by(Stage.run_id, Stage.status))
    for run_id, status, n in rows:
        stages[run_id][0] += n
        if status == "done":
            stages[run_id][1] += n
    cells: dict[int, list[tuple[int, str, float]]] = {i: [] for i in ids}
    for run_id, index, task, score in session.exec(
            select(Score.run_id, Score.stage_index, Score.task_name, Score.score).where(Score.run_id.in_(ids))):
        cells[run_id].append((index, task, score))
    out = []
    for r in runs:
        n_stages, done = stages[r.id]
        matrix, zero = _matrix(list(r.task_order), n_stages, cells[r.id])
        out.append({"id": r.id, "name": r.name, "method": r.method, "status": r.status, "stages": n_stages,
                    "stages_done": done, "created_at": r.created_at, "metrics": clmetrics.compute(matrix, zero, joint=n_stages == 1)})
    return out


def _matrix(names: list[str], n_rows: int, cells) -> tuple[list[list[float | None]], list[float | None] | None]:
    """The same matrix report.run_metrics reads: trailing rows not evaluated yet left out."""
    col = {n: j for j, n in enumerate(names)}
    matrix: list[list[float | None]] = [[None] * len(names) for _ in range(n_rows)]
    zero: list[float | None] = [None] * len(names)
    has_zero = False
    for index, task, score in cells:
        if task not in col:
            continue
        if index < 0:
            zero[col[task]], has_zero = score, True
        elif index < n_rows:
            matrix[index][col[task]] = score
    while matrix and all(v is None for v in matrix[-1]):
        matrix.pop()
    return matrix, zero if has_zero else None


def watched_jobs(session: Session, finished: int = 20, active: int = 100) -> list[dict]:
    """Running and queued jobs (oldest first) and the most recently finished ones."""
    live = list(session.exec(select(Job).where(Job.status.in_(ACTIVE)).order_by(Job.id).limit(active)))
    live.sort(key=lambda j: (j.status != "running", j.id))
    ended = list(session.exec(select(Job).where(Job.status.not_in(ACTIVE))
                              .order_by(Job.finished_at.desc(), Job.id.desc()).limit(finished)))
    jobs = live + ended
    run_ids = {j.run_id for j in jobs if j.run_id is not None}
    names = {i: n for i, n in session.exec(select(Run.id, Run.name).where(Run.id.in_(run_ids)))} if run_ids else {}
    return [{"id": j.id, "run_id": j.run_id, "run_name": names.get(j.run_id, ""), "kind": j.kind,
             "stage_index": j.payload.get("stage_index"), "status": j.status,
             "cancel_requested": j.cancel_requested, "attempts": j.attempts, "progress": dict(j.progress or {}),
             "error": j.error, "started_at": j.started_at, "finished_at": j.finished_at} for j in jobs]


def jobs_of_run(session: Session, run_id: int) -> list[dict]:
    """A run's jobs with their raw progress, by stage."""
    return [{"id": j.id, "kind": j.kind, "stage_index": j.payload.get("stage_index"), "status": j.status,
             "cancel_requested": j.cancel_requested, "progress": dict(j.progress or {}), "error": j.error}
            for j in session.exec(select(Job).where(Job.run_id == run_id).order_by(Job.id))]


def job_for(session: Session, run_id: int, action: str) -> int | None:
    """The job of a run that `action` ("cancel" or "retry") applies to: the running (else the
    first queued) job, or the first failed or cancelled one."""
    wanted = {"cancel": ("running", "queued"), "retry": ("failed", "cancelled")}[action]
    jobs = list(session.exec(select(Job).where(Job.run_id == run_id, Job.status.in_(wanted)).order_by(Job.id)))
    jobs.sort(key=lambda j: wanted.index(j.status) if action == "cancel" else 0)
    return jobs[0].id if jobs else None


def curve_points(session: Session, run_id: int, name: str = "loss") -> dict[int, list[tuple[int, float]]]:
    """{stage index: [(step, value), ...]} of one curve, without building ORM objects."""
    out: dict[int, list[tuple[int, float]]] = {}
    rows = session.exec(select(CurvePoint.stage_index, CurvePoint.step, CurvePoint.value)
                        .where(CurvePoint.run_id == run_id, CurvePoint.name == name)
                        .order_by(CurvePoint.stage_index, CurvePoint.step))
    for index, step, value in rows:
        out.setdefault(index, []).append((step, value))
    return out


def run_index(session: Session, limit: int = 5000) -> list[tuple[int, str, str, str]]:
    """(id, name, method, status) of the newest runs, for a fuzzy search in memory."""
    q = select(Run.id, Run.name, Run.method, Run.status).order_by(Run.id.desc()).limit(limit)
    return [tuple(row) for row in session.exec(q)]


class ChangeProbe:
    """Whether anything committed to the catalog since the last look, for the price of a pragma.

    SQLite bumps `PRAGMA data_version` on a connection whenever another connection (in any
    process) commits, so one private connection held open answers without reading a table.
    Elsewhere (PostgreSQL) it always answers yes and the caller re-reads.
    """

    def __init__(self, catalog: Catalog):
        url = catalog.engine.url
        self._path = url.database if url.get_backend_name() == "sqlite" else None
        self._conn: sqlite3.Connection | None = None
        self._last: int | None = None
        self._lock = threading.Lock()

    def changed(self) -> bool:
        """True on the first call and after every commit by another connection."""
        if self._path is None:
            return True
        with self._lock:
            if self._conn is None:
                self._conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            changed, self._last = version != self._last, version
            return changed

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

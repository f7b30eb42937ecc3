"""The job queue: atomic claims with leases, heartbeats, completion, cancel, retry and resume.

A claim is one transaction whose UPDATE picks the oldest runnable job (queued, its predecessor
done), so two workers can never claim the same job: on SQLite the transaction is opened with
`BEGIN IMMEDIATE` (the write lock is taken before anything is read); on PostgreSQL the candidate
row is locked with `FOR UPDATE SKIP LOCKED`. Every later change of a claimed job is a
compare-and-set on (status, lease owner), so a worker whose lease was taken away can no longer
write anything for that job. Writes that meet a busy SQLite database are retried, so
`database is locked` does not reach a user.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Callable, TypeVar

from sqlalchemy import text, update
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from ..core.errors import Conflict, HiclError, NotFound
from .db import Catalog
from .models import Job, Run, Stage, utcnow

LEASE_SECONDS = 60
BUSY_RETRY_SECONDS = 120.0
ACTIVE = ("queued", "running")

T = TypeVar("T")

# Push jobs go first (a stage is published as soon as it is scored, before the next one trains)
# and wait on the push before them only while it may still succeed: a push that gave up does not
# hold back the later stages' pushes. A job retried with back-off waits until its not_before.
_CANDIDATE = """
    SELECT j.id FROM jobs j LEFT JOIN jobs d ON j.depends_on = d.id
    WHERE j.status = 'queued' AND (j.not_before IS NULL OR j.not_before <= :now)
      AND (j.depends_on IS NULL OR d.status = 'done'
           OR (j.kind = 'push' AND d.status IN ('failed', 'cancelled')))
    ORDER BY CASE WHEN j.kind = 'push' THEN 0 ELSE 1 END, j.id LIMIT 1
"""
#: kinds whose failure stops their run (a push job belongs to a run but never stops it)
RUN_KINDS = ("stage",)


class LeaseLost(HiclError):
    """This worker no longer holds the job's lease (it expired and the job went back to the
    queue, or the job was closed meanwhile); nothing more may be written for it."""


def _is_busy(exc: OperationalError) -> bool:
    msg = str(getattr(exc, "orig", exc)).lower()
    return "database is locked" in msg or "database is busy" in msg or "database table is locked" in msg


def busy_budget() -> float:
    """Seconds a write waits for a busy catalog, SQLite's own timeout included."""
    from .db import BUSY_TIMEOUT_MS

    return BUSY_RETRY_SECONDS + BUSY_TIMEOUT_MS / 1000


def with_busy_retry(fn: Callable[[], T], *, budget: float | None = None) -> T:
    """Run the transaction `fn`, again with jittered back-off while SQLite says it is busy, for
    `budget` seconds (default BUSY_RETRY_SECONDS); then the busy error is raised.

    SQLite's own busy timeout covers most waits; this covers the rest (a read transaction that
    cannot be upgraded, or a writer holding the lock longer than the timeout).
    """
    deadline = time.monotonic() + (BUSY_RETRY_SECONDS if budget is None else budget)
    delay = 0.05
    while True:
        try:
            return fn()
        except OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 2.0)


# --- leases -------------------------------------------------------------------------------------


def _expire(conn, job_id: int, owner: str | None, attempts: int, max_attempts: int, cancel: bool, now) -> bool:
    """Re-queue (or fail, after max attempts; or cancel, if asked) a running job still held by `owner`."""
    held = Job.lease_owner.is_(None) if owner is None else Job.lease_owner == owner
    cond = update(Job).where(Job.id == job_id, Job.status == "running", held)
    if cancel:
        error = "cancelled by the user (its worker died before stopping)"
        done = conn.execute(cond.values(status="cancelled", error=error, finished_at=now, lease_owner=None,
                                        lease_expires_at=None)).rowcount == 1
        if done:
            _stop_run(conn, job_id, "cancelled", error)
        return done
    if attempts >= max_attempts:
        error = f"lease expired after {attempts} attempt(s): the worker died each time"
        done = conn.execute(cond.values(status="failed", error=error, finished_at=now, lease_owner=None,
                                        lease_expires_at=None)).rowcount == 1
        if done:
            _stop_run(conn, job_id, "failed", error)
        return done
    return conn.execute(cond.values(status="queued", lease_owner=None, lease_expires_at=None)).rowcount == 1


def requeue_expired(conn, dead_owner: Callable[[str], bool] | None = None) -> int:
    """Running jobs whose lease expired, or whose owner is known dead (`dead_owner(owner)`),
    go back to the queue, or fail once they used their attempts. `conn` is a Session or a
    Connection inside a write transaction. Returns how many were handled."""
    now = utcnow()
    rows = conn.execute(select(Job.id, Job.lease_owner, Job.lease_expires_at, Job.attempts, Job.max_attempts,
                               Job.cancel_requested).where(Job.status == "running")).all()
    n = 0
    for job_id, owner, expires, attempts, max_attempts, cancel in rows:
        stale = expires is None or _aware(expires) < now
        if not stale and dead_owner is not None and owner:
            stale = dead_owner(owner)
        if stale:
            n += _expire(conn, job_id, owner, attempts, max_attempts, bool(cancel), now)
    return n


def _aware(value):
    from datetime import timezone

    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def claim(catalog: Catalog, owner: str, lease_seconds: int = LEASE_SECONDS,
          dead_owner: Callable[[str], bool] | None = None) -> Job | None:
    """Atomically take the next runnable job for `owner`, or None when nothing is runnable.

    Expired leases (and leases of owners `dead_owner` knows are dead) are released first, in
    the same transaction.
    """

    def attempt() -> int | None:
        with catalog.session() as s:  # a cheap read first: an idle worker takes no write lock
            if s.execute(select(Job.id).where(Job.status.in_(ACTIVE)).limit(1)).first() is None:
                return None
        now = utcnow()
        expires = now + timedelta(seconds=lease_seconds)
        with catalog.engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            requeue_expired(conn, dead_owner)
            candidate = _CANDIDATE if sqlite else _CANDIDATE.replace("LIMIT 1", "LIMIT 1 FOR UPDATE OF j SKIP LOCKED")
            row = conn.execute(
                text(f"""UPDATE jobs SET status = 'running', lease_owner = :owner, lease_expires_at = :expires,
                         heartbeat_at = :now, attempts = attempts + 1, started_at = COALESCE(started_at, :now)
                         WHERE id = ({candidate}) AND status = 'queued' RETURNING id"""),
                {"owner": owner, "expires": _bind(conn, expires), "now": _bind(conn, now)},
            ).first()
            conn.commit()
        return row[0] if row else None

    job_id = with_busy_retry(attempt)
    if job_id is None:
        return None
    return get_job(catalog, job_id)


def _bind(conn, value):
    """Raw SQL bypasses SQLModel's UTC type: store the same text/naive form it would."""
    if conn.dialect.name == "sqlite":
        return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def heartbeat(catalog: Catalog, job_id: int, owner: str, lease_seconds: int = LEASE_SECONDS) -> bool:
    """Extend the lease; False when the job is no longer ours (re-queued, cancelled, closed)."""

    def attempt() -> bool:
        now = utcnow()
        with catalog.session() as s:
            return s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner, Job.status == "running")
                             .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds))
                             ).rowcount == 1

    return with_busy_retry(attempt)


def holds(catalog: Catalog, job_id: int, owner: str) -> bool:
    with catalog.session() as s:
        job = s.get(Job, job_id)
        return job is not None and job.status == "running" and job.lease_owner == owner


def release(catalog: Catalog, job_id: int, owner: str, note: str | None = None) -> bool:
    """Give a running job back to the queue (its worker is shutting down); the attempt is not
    counted. False when the job was no longer ours."""

    def attempt() -> bool:
        with catalog.session() as s:
            ok = s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner, Job.status == "running")
                           .values(status="queued", lease_owner=None, lease_expires_at=None,
                                   attempts=Job.attempts - 1)).rowcount == 1
            if ok and note:
                job = s.get(Job, job_id)
                from .runs import add_event

                add_event(s, f"job {job_id}: {note}", run_id=job.run_id, job_id=job_id)
            return ok

    return with_busy_retry(attempt)


def requeue_failed_attempt(catalog: Catalog, job_id: int, owner: str, reason: str) -> str:
    """Put a running job whose process died (not by its own error) back in the queue as a spent
    attempt, or fail it once it used its attempts. Returns the status; "lost" when not ours."""
    return retry_later(catalog, job_id, owner, reason, 0.0)


# --- closing jobs ------------------------------------------------------------------------------


def close_job(s: Session, job_id: int, status: str, *, owner: str | None = None, error: str | None = None,
              tb: str | None = None) -> None:
    """Close a job inside session `s`; with `owner`, only if it still holds the lease (else
    LeaseLost, and the caller's transaction, results included, is rolled back)."""
    stmt = update(Job).where(Job.id == job_id)
    if owner is not None:
        stmt = stmt.where(Job.lease_owner == owner, Job.status == "running")
    done = s.execute(stmt.values(status=status, error=error, traceback=tb, finished_at=utcnow(),
                                 lease_owner=None, lease_expires_at=None)).rowcount == 1
    if not done:
        raise LeaseLost(f"job {job_id} is no longer held by {owner}")
    if status in ("failed", "cancelled"):
        _stop_run(s, job_id, status, error)


def finish(catalog: Catalog, job_id: int, status: str, *, error: str | None = None, tb: str | None = None,
           owner: str | None = None) -> bool:
    """Close a job; a failed or cancelled stage fails its run and cancels the stages after it.
    With `owner`, only while that owner holds the lease; returns False when it does not."""

    def attempt() -> bool:
        try:
            with catalog.session() as s:
                close_job(s, job_id, status, owner=owner, error=error, tb=tb)
            return True
        except LeaseLost:
            return False

    return with_busy_retry(attempt)


def _stop_run(conn, job_id: int, status: str, error: str | None) -> None:
    """The stage of a failed/cancelled job takes its status; later queued jobs of its run are
    cancelled and the run takes the job's status."""
    job = conn.execute(select(Job.run_id, Job.stage_id, Job.kind).where(Job.id == job_id)).first()
    if job is None or job.run_id is None or job.kind not in RUN_KINDS:
        return
    now = utcnow()
    if job.stage_id is not None:
        conn.execute(update(Stage).where(Stage.id == job.stage_id).values(status=status, error=error))
    conn.execute(update(Job).where(Job.run_id == job.run_id, Job.id > job_id, Job.status == "queued",
                                   Job.kind.in_(RUN_KINDS))
                 .values(status="cancelled", error=f"stage job {job_id} {status}", finished_at=now))
    conn.execute(update(Run).where(Run.id == job.run_id).values(status=status, error=error, finished_at=now))


# --- reading -----------------------------------------------------------------------------------


def get_job(catalog: Catalog, job_id: int) -> Job:
    with catalog.session() as s:
        job = s.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}", hint="`hicl jobs` lists the jobs of this workspace")
    return job


def cancel_requested(catalog: Catalog, job_id: int) -> bool:
    with catalog.session() as s:
        return bool(s.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar())


def set_progress(catalog: Catalog, job_id: int, progress: dict, owner: str | None = None) -> bool:
    """Store a job's progress; with `owner`, only while it holds the lease."""

    def attempt() -> bool:
        with catalog.session() as s:
            stmt = update(Job).where(Job.id == job_id)
            if owner is not None:
                stmt = stmt.where(Job.lease_owner == owner, Job.status == "running")
            return s.execute(stmt.values(progress=dict(progress))).rowcount == 1

    return with_busy_retry(attempt)


def runnable_jobs(catalog: Catalog, run_id: int | list[int] | None = None) -> int:
    """Jobs that are queued or running, of one run, of several or of all (for `--wait` and the
    demo to know when their runs are over). A job waiting out a retry back-off is not counted:
    a push waiting for the hub to come back must not hold a finished run's `--wait`."""
    now = utcnow()
    with catalog.session() as s:
        q = select(Job).where(Job.status.in_(ACTIVE))
        if isinstance(run_id, list):
            q = q.where(Job.run_id.in_(run_id))
        elif run_id is not None:
            q = q.where(Job.run_id == run_id)
        return sum(1 for j in s.exec(q) if j.not_before is None or _aware(j.not_before) <= now)


def retry_later(catalog: Catalog, job_id: int, owner: str, reason: str, delay: float) -> str:
    """Put a running job that failed for a passing reason (the hub is down) back in the queue,
    not to be claimed for `delay` seconds, or fail it once it used its attempts. Returns the
    status ("queued" or "failed"); "lost" when the job is no longer ours."""

    def attempt() -> str:
        with catalog.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.status != "running" or job.lease_owner != owner:
                return "lost"
            from .runs import add_event

            if job.attempts >= job.max_attempts:
                close_job(s, job_id, "failed", owner=owner, error=f"{reason} (after {job.attempts} attempt(s))")
                return "failed"
            s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner)
                      .values(status="queued", lease_owner=None, lease_expires_at=None, error=reason,
                              not_before=utcnow() + timedelta(seconds=delay) if delay else None))
            when = f"next try in {delay:.0f}s" if delay else "back in the queue"
            add_event(s, f"job {job_id}: {reason}; {when} (attempt {job.attempts}/{job.max_attempts})",
                      run_id=job.run_id, job_id=job_id, level="warning" if delay else "info")
            return "queued"

    return with_busy_retry(attempt)


def enqueue(catalog: Catalog, kind: str, payload: dict | None = None, *, depends_on: int | None = None,
            max_attempts: int = 3) -> int:
    """Queue a job that belongs to no run (kinds other than "stage"); returns its id."""

    def attempt() -> int:
        with catalog.session() as s:
            job = Job(kind=kind, payload=dict(payload or {}), depends_on=depends_on, max_attempts=max_attempts)
            s.add(job)
            s.flush()
            return job.id

    return with_busy_retry(attempt)


# --- user actions ------------------------------------------------------------------------------


def request_cancel(catalog: Catalog, job_id: int) -> str:
    """Cancel a job: a queued one at once ("cancelled"), a running one at its next step
    boundary, where the worker checkpoints and stops ("requested")."""

    def attempt() -> str:
        with catalog.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"no job {job_id}", hint="`hicl jobs` lists the jobs of this workspace")
            if job.status not in ACTIVE:
                raise Conflict(f"job {job_id} is already {job.status}",
                               hint="only a queued or running job can be cancelled")
            # A queued job is closed here, unless a worker claimed it in the meantime.
            if s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                         .values(cancel_requested=True)).rowcount == 1:
                close_job(s, job_id, "cancelled", error="cancelled by the user")
                return "cancelled"
            if s.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                         .values(cancel_requested=True)).rowcount == 1:
                return "requested"
            s.refresh(job)
            raise Conflict(f"job {job_id} is already {job.status}")

    return with_busy_retry(attempt)


def retry(catalog: Catalog, job_id: int) -> list[int]:
    """Put a failed or cancelled job back in the queue, with the later stages of its run that
    were cancelled because of it; the run goes back to queued. Returns the re-queued job ids.
    A stage resumes from its last checkpoint."""

    def attempt() -> list[int]:
        with catalog.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"no job {job_id}", hint="`hicl jobs` lists the jobs of this workspace")
            if job.status not in ("failed", "cancelled"):
                raise Conflict(f"job {job_id} is {job.status}", hint="only a failed or cancelled job can be retried")
            before = s.get(Job, job.depends_on) if job.depends_on else None
            if before is not None and before.status != "done":
                raise Conflict(f"job {job_id} waits on job {before.id}, which is {before.status}",
                               hint=f"retry job {before.id} first")
            again = [job]
            stops_run = job.run_id is not None and job.kind in RUN_KINDS
            if stops_run:
                again += list(s.exec(select(Job).where(Job.run_id == job.run_id, Job.id > job.id,
                                                       Job.status == "cancelled", Job.kind.in_(RUN_KINDS))
                                     .order_by(Job.id)))
            for j in again:
                j.status, j.error, j.traceback, j.finished_at = "queued", None, None, None
                j.cancel_requested, j.attempts, j.progress = False, 0, {}
                j.lease_owner = j.lease_expires_at = j.not_before = None
                s.add(j)
                stage = s.get(Stage, j.stage_id) if j.stage_id else None
                if stage is not None:
                    stage.status, stage.error, stage.finished_at = "queued", None, None
                    s.add(stage)
            if job.run_id is not None:
                from .runs import add_event

                if stops_run:
                    run = s.get(Run, job.run_id)
                    run.status, run.error, run.finished_at = "queued", None, None
                    s.add(run)

                add_event(s, f"job {job_id} retried ({len(again)} job(s) queued again)", run_id=job.run_id,
                          job_id=job_id)
            return [j.id for j in again]

    return with_busy_retry(attempt)


def resume_run(catalog: Catalog, run_ref: str | int) -> tuple[int, list[int]]:
    """Queue a failed or cancelled run again from its first unfinished stage (which resumes from
    its checkpoint). Returns (run id, re-queued job ids); no ids when it is still queued or
    running (nothing to do but run a worker)."""
    from .runs import get_run, jobs_of

    with catalog.session() as s:
        run = get_run(s, run_ref)
        jobs = [j for j in jobs_of(s, run.id) if j.kind in RUN_KINDS]
    if run.status == "completed":
        raise Conflict(f"run {run.id} ({run.name}) is already completed", hint="start a new run instead")
    if any(j.status in ACTIVE for j in jobs):
        return run.id, []
    first = next((j for j in jobs if j.status in ("failed", "cancelled")), None)
    if first is None:
        raise Conflict(f"run {run.id} is {run.status} but has no failed or cancelled job to resume",
                       hint=f"`hicl run show {run.id}` shows its stages")
    return run.id, retry(catalog, first.id)


def list_jobs(catalog: Catalog, finished: int | None = 20) -> list[dict]:
    """The last `finished` ended jobs (all with None), then the running and queued ones, by id."""
    with catalog.session() as s:
        live = list(s.exec(select(Job).where(Job.status.in_(ACTIVE)).order_by(Job.id)))
        q = select(Job).where(Job.status.not_in(ACTIVE)).order_by(Job.id.desc())
        ended = list(s.exec(q if finished is None else q.limit(finished)))
    return [{"id": j.id, "kind": j.kind, "run_id": j.run_id, "stage_index": j.payload.get("stage_index"),
             "status": j.status, "attempts": j.attempts, "max_attempts": j.max_attempts,
             "cancel_requested": j.cancel_requested, "lease_owner": j.lease_owner, "not_before": j.not_before,
             "repo_id": j.payload.get("repo_id"),
             "lease_expires_at": j.lease_expires_at, "progress": dict(j.progress or {}), "error": j.error,
             "log_path": j.log_path, "created_at": j.created_at, "started_at": j.started_at,
             "finished_at": j.finished_at} for j in sorted(ended, key=lambda j: j.id) + live]

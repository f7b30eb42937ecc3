"""The job queue: atomic claims with leases, heartbeats, completion and failure.

A claim is one UPDATE whose WHERE picks the oldest runnable job (queued, its predecessor done),
so two workers can never claim the same job: on SQLite the statement runs under the database's
write lock; on PostgreSQL the candidate row is locked with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from sqlmodel import Session, select

from .db import Catalog
from .models import Job, Run, Stage, utcnow

LEASE_SECONDS = 60

_CANDIDATE = """
    SELECT j.id FROM jobs j LEFT JOIN jobs d ON j.depends_on = d.id
    WHERE j.status = 'queued' AND (j.depends_on IS NULL OR d.status = 'done')
    ORDER BY j.id LIMIT 1
"""


def requeue_expired(session: Session) -> int:
    """Jobs whose worker stopped heart-beating go back to the queue (or fail after max attempts)."""
    now = utcnow()
    expired = list(session.exec(select(Job).where(Job.status == "running", Job.lease_expires_at < now)))
    for job in expired:
        job.lease_owner = None
        job.lease_expires_at = None
        if job.attempts >= job.max_attempts:
            job.status = "failed"
            job.error = f"lease expired after {job.attempts} attempt(s): the worker died each time"
            job.finished_at = now
        else:
            job.status = "queued"
        session.add(job)
    return len(expired)


def claim(catalog: Catalog, owner: str, lease_seconds: int = LEASE_SECONDS) -> Job | None:
    """Atomically take the next runnable job for `owner`, or None when nothing is runnable."""
    now = utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    with catalog.session() as s:
        requeue_expired(s)
    with catalog.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            candidate = _CANDIDATE.replace("LIMIT 1", "LIMIT 1 FOR UPDATE OF j SKIP LOCKED")
        else:
            candidate = _CANDIDATE
        row = conn.execute(
            text(f"""UPDATE jobs SET status = 'running', lease_owner = :owner, lease_expires_at = :expires,
                     heartbeat_at = :now, attempts = attempts + 1, started_at = COALESCE(started_at, :now)
                     WHERE id = ({candidate}) AND status = 'queued' RETURNING id"""),
            {"owner": owner, "expires": _bind(conn, expires), "now": _bind(conn, now)},
        ).first()
    if row is None:
        return None
    with catalog.session() as s:
        return s.get(Job, row[0])


def _bind(conn, value):
    """Raw SQL bypasses SQLModel's UTC type: store the same text/naive form it would."""
    if conn.dialect.name == "sqlite":
        return value.replace(tzinfo=None).isoformat(sep=" ")
    return value


def heartbeat(catalog: Catalog, job_id: int, owner: str, lease_seconds: int = LEASE_SECONDS) -> bool:
    """Extend the lease; False when the job is no longer ours (re-queued or cancelled)."""
    with catalog.session() as s:
        job = s.get(Job, job_id)
        if job is None or job.lease_owner != owner or job.status != "running":
            return False
        job.heartbeat_at = utcnow()
        job.lease_expires_at = job.heartbeat_at + timedelta(seconds=lease_seconds)
        s.add(job)
        return True


def finish(catalog: Catalog, job_id: int, status: str, *, error: str | None = None, tb: str | None = None) -> None:
    """Close a job; a failed or cancelled stage fails its run and cancels the stages after it."""
    with catalog.session() as s:
        job = s.get(Job, job_id)
        job.status = status
        job.error = error
        job.traceback = tb
        job.finished_at = utcnow()
        job.lease_owner = None
        job.lease_expires_at = None
        s.add(job)
        if status in ("failed", "cancelled") and job.run_id is not None:
            _stop_run(s, job, status, error)


def _stop_run(s: Session, job: Job, status: str, error: str | None) -> None:
    run = s.get(Run, job.run_id)
    stage = s.get(Stage, job.stage_id) if job.stage_id else None
    if stage is not None:
        stage.status = status
        stage.error = error
        s.add(stage)
    later = s.exec(select(Job).where(Job.run_id == job.run_id, Job.id > job.id, Job.status == "queued"))
    for other in later:
        other.status = "cancelled"
        other.error = f"stage job {job.id} {status}"
        other.finished_at = utcnow()
        s.add(other)
    run.status = status
    run.error = error
    run.finished_at = utcnow()
    s.add(run)


def cancel_requested(catalog: Catalog, job_id: int) -> bool:
    with catalog.session() as s:
        job = s.get(Job, job_id)
        return bool(job and job.cancel_requested)


def set_progress(catalog: Catalog, job_id: int, progress: dict) -> None:
    with catalog.session() as s:
        job = s.get(Job, job_id)
        job.progress = dict(progress)
        s.add(job)


def runnable_jobs(catalog: Catalog, run_id: int | None = None) -> int:
    """Jobs that are queued or running (for `--wait` to know when a run is over)."""
    with catalog.session() as s:
        q = select(Job).where(Job.status.in_(("queued", "running")))
        if run_id is not None:
            q = q.where(Job.run_id == run_id)
        return len(list(s.exec(q)))


def request_cancel(catalog: Catalog, job_id: int) -> str:
    """Cancel a job: a queued one at once ("cancelled"), a running one at its next step
    boundary, where the worker checkpoints and stops ("requested")."""
    from sqlalchemy import update

    from ..errors import Conflict, NotFound

    with catalog.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        if job.status not in ("queued", "running"):
            raise Conflict(f"job {job_id} is already {job.status}", hint="only a queued or running job can be cancelled")
        # A queued job is closed here, unless a worker claimed it in the meantime.
        closed = s.connection().execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                                        .values(status="cancelled", cancel_requested=True)).rowcount == 1
    if closed:
        finish(catalog, job_id, "cancelled", error="cancelled by the user")
        return "cancelled"
    with catalog.session() as s:
        job = s.get(Job, job_id)
        if job.status != "running":
            raise Conflict(f"job {job_id} is already {job.status}")
        job.cancel_requested = True
        s.add(job)
    return "requested"


def retry(catalog: Catalog, job_id: int) -> None:
    """Put a failed or cancelled stage job back in the queue, with the later stages of its run
    that were cancelled because of it; the run goes back to queued."""
    from ..errors import Conflict, NotFound

    with catalog.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        if job.status not in ("failed", "cancelled"):
            raise Conflict(f"job {job_id} is {job.status}", hint="only a failed or cancelled job can be retried")
        before = s.get(Job, job.depends_on) if job.depends_on else None
        if before is not None and before.status != "done":
            raise Conflict(f"job {job_id} waits on job {before.id}, which is {before.status}",
                           hint=f"retry job {before.id} first")
        again = [job]
        if job.run_id is not None:
            again += list(s.exec(select(Job).where(Job.run_id == job.run_id, Job.id > job.id,
                                                   Job.status == "cancelled").order_by(Job.id)))
        for j in again:
            j.status, j.error, j.traceback, j.finished_at = "queued", None, None, None
            j.cancel_requested, j.attempts, j.progress = False, 0, {}
            j.lease_owner = j.lease_expires_at = None
            s.add(j)
            stage = s.get(Stage, j.stage_id) if j.stage_id else None
            if stage is not None:
                stage.status, stage.error, stage.finished_at = "queued", None, None
                s.add(stage)
        if job.run_id is not None:
            run = s.get(Run, job.run_id)
            run.status, run.error, run.finished_at = "queued", None, None
            s.add(run)
            from .runs import add_event

            add_event(s, f"job {job_id} retried ({len(again)} job(s) queued again)", run_id=job.run_id, job_id=job_id)

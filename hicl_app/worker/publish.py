"""The `push` job: publish one scored stage of a `--push-to` run, retried with back-off.

Queued by `record_push_job` in the transaction that records the stage, so a stage that is in
the catalog always has its push queued, and never twice. The push jobs of a run are chained in
stage order (each waits on the one before, unless that one gave up), so the branch's head is
always the latest stage published. A failure never touches the run: it stays completed (or
training) whatever the hub does.
"""

from __future__ import annotations

from sqlmodel import Session, select

from ..catalog import queue
from ..catalog.models import Job
from ..catalog.runs import add_event
from .context import JobContext


def record_push_job(s: Session, run, stage_index: int) -> Job | None:
    """Inside the stage's closing transaction: queue the push of `stage_index` when the run
    publishes live (config "publish") and no push of that stage is queued yet."""
    from ..hub.live import PUSH_ATTEMPTS

    target = (run.config or {}).get("publish")
    if not target:
        return None
    pushes = list(s.exec(select(Job).where(Job.run_id == run.id, Job.kind == "push").order_by(Job.id)))
    if any(j.payload.get("stage_index") == stage_index for j in pushes):
        return None
    job = Job(kind="push", run_id=run.id, depends_on=pushes[-1].id if pushes else None,
              max_attempts=PUSH_ATTEMPTS,
              payload={"run_id": run.id, "stage_index": stage_index, "repo_id": target["repo_id"],
                       "endpoint": target["endpoint"], "private": bool(target.get("private")),
                       "revision": target.get("revision", "main")})
    s.add(job)
    s.flush()
    add_event(s, f"stage {stage_index + 1}: push to {target['repo_id']} queued (job {job.id})", run_id=run.id,
              job_id=job.id)
    return job


def run_push_job(ctx: JobContext) -> str:
    from ..hub.live import backoff, publish_stage, retryable
    from .kinds import one_line

    p = ctx.job.payload
    ctx.say(f"job {ctx.job.id}: push run {p['run_id']} stage {p['stage_index']} to {p['repo_id']} on "
            f"{p['endpoint']}, attempt {ctx.job.attempts}/{ctx.job.max_attempts}")
    try:
        done = publish_stage(ctx.catalog, run_id=int(p["run_id"]), stage_index=int(p["stage_index"]),
                             repo_id=p["repo_id"], endpoint=p["endpoint"], private=bool(p.get("private")),
                             revision=p.get("revision", "main"))
    except Exception as exc:
        if not retryable(exc):
            raise
        reason = one_line(exc)
        delay = backoff(ctx.job.attempts)
        status = queue.retry_later(ctx.catalog, ctx.job.id, ctx.owner, reason, delay)
        ctx.say(f"push failed: {reason}; " + (f"next try in {delay:.0f}s" if status == "queued" else "giving up"))
        return status
    ctx.say(done.message)
    return "done" if queue.finish(ctx.catalog, ctx.job.id, "done", owner=ctx.owner) else "lost"

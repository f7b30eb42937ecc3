"""Job commands: jobs (with progress), jobs cancel, jobs retry, logs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .context import AppContext, pass_app
from .output import emit_json, fmt_num, info, table


def ensure_worker(app: AppContext, no_worker: bool) -> None:
    """Start a background worker for this workspace unless one is alive (or `no_worker`)."""
    if no_worker:
        return
    from ..worker.daemon import live_workers, start_background_worker

    started = start_background_worker(app.settings)
    if started is None:
        n = live_workers(app.settings)
        info(f"{n} worker{'s are' if n > 1 else ' is'} already running for this workspace and will train it"
             if n else "a worker is already running for this workspace")
    else:
        info(f"started a background worker (pid {started.pid}; output in {started.log})")


def _eta(seconds) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _tries(j: dict) -> str:
    """Attempts used of those allowed while the job can still run; once it ended, only the number
    used: a job that failed on its first attempt is not retried (a crash of its own, an error, a
    cancel), so "1/3" would promise two more tries that will not come."""
    return f"{j['attempts']}/{j['max_attempts']}" if j["status"] in ("queued", "running") else str(j["attempts"])


def _what(j: dict) -> str:
    """What a job does, its stage counted from 1 as everywhere a user reads one."""
    if j["kind"] == "stage" and j["stage_index"] is not None:
        return f"run {j['run_id']} · stage {j['stage_index'] + 1}"
    if j["kind"] == "push":
        return f"run {j['run_id']} · push stage {j['stage_index'] + 1} → {j['repo_id']}"
    if j["kind"] == "eval":
        return f"run {j['run_id']} · eval"
    return j["kind"]


def _note(j: dict) -> str:
    if j["status"] == "queued" and j.get("not_before"):
        from ..catalog.models import utcnow

        wait = (j["not_before"] - utcnow()).total_seconds() if j["not_before"].tzinfo else 0
        first = (j["error"] or "").splitlines()[0][:60] if j["error"] else ""
        return f"retry in {max(0, int(wait))}s: {first}" if wait > 0 else first
    if j["status"] == "running" and j["cancel_requested"]:
        return "cancel requested"
    if j["status"] == "running":
        return j["lease_owner"] or ""
    return (j["error"] or "").splitlines()[0][:80] if j["error"] else ""


@click.group("jobs", invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Every job, not only active and the 20 last finished.")
@click.option("--json", "as_json", is_flag=True,
              help="[{id, kind, run_id, stage_index (0-based), status, attempts, max_attempts, progress: {step, total, "
                   "loss, lr, samples_per_s, eta_s}, cancel_requested, lease_owner, lease_expires_at, error, log_path, "
                   "created_at, started_at, finished_at, not_before (a retried push waits until then), repo_id (push jobs: "
                   "the target repo)}].")
@click.pass_context
def jobs(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Queued and running jobs with their progress (step/total, loss, samples/s, ETA), then the
    last finished ones."""
    if ctx.invoked_subcommand is not None:
        return
    from ..catalog import queue

    app = ctx.find_object(AppContext)
    rows = queue.list_jobs(app.catalog, finished=None if show_all else 20)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        info("no jobs: `hicl run start ...` queues one per stage")
        return
    out = []
    for j in rows:
        p = j["progress"]
        what = _what(j)
        step = f"{p['step']}/{p.get('total', '?')}" if "step" in p else ""
        out.append([j["id"], what, j["status"], _tries(j), step,
                    fmt_num(p.get("loss"), 3), fmt_num(p.get("samples_per_s"), 1),
                    _eta(p.get("eta_s")) if j["status"] == "running" else "—", _note(j)])
    click.echo(table(["job", "what", "status", "try", "step", "loss", "smp/s", "ETA", "note"], out,
                     align_right={0}))


@jobs.command("cancel")
@click.argument("job_id", type=int)
@pass_app
def jobs_cancel(app: AppContext, job_id: int) -> None:
    """Cancel a job: a queued one at once; a running one stops at its next step boundary,
    keeping its last checkpoint (`hicl jobs retry` resumes it)."""
    from ..catalog import queue

    outcome = queue.request_cancel(app.catalog, job_id)
    if outcome == "cancelled":
        info(f"job {job_id} cancelled")
    else:
        info(f"job {job_id}: cancel requested; it stops at its next step boundary and keeps its last checkpoint")


@jobs.command("retry")
@click.argument("job_id", type=int)
@click.option("--no-worker", is_flag=True, help="Do not start a background worker.")
@pass_app
def jobs_retry(app: AppContext, job_id: int, no_worker: bool) -> None:
    """Queue a failed or cancelled job again (a stage resumes from its last checkpoint), with
    the later stages of its run that were cancelled because of it."""
    from ..catalog import queue

    ids = queue.retry(app.catalog, job_id)
    info(f"job {job_id} queued again" + (f" with {len(ids) - 1} later job(s)" if len(ids) > 1 else ""))
    ensure_worker(app, no_worker)


@click.command("logs")
@click.argument("job_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@pass_app
def logs(app: AppContext, job_id: int, follow: bool) -> None:
    """Print a job's log: what its process printed, its events, and how it ended."""
    from ..catalog import queue

    job = queue.get_job(app.catalog, job_id)
    path = Path(job.log_path) if job.log_path else app.settings.logs / f"job-{job_id}.log"
    if not path.is_file() and not follow:
        info(f"job {job_id} has no log yet (it is {job.status})")
        return
    offset = 0
    while True:
        if path.is_file():
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            if chunk:
                offset += len(chunk)
                sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                sys.stdout.flush()
        if not follow:
            return
        if queue.get_job(app.catalog, job_id).status not in queue.ACTIVE:
            if path.is_file() and path.stat().st_size == offset:
                return
            continue
        time.sleep(0.5)


COMMANDS = [jobs, logs]

"""`hicl worker`: claim queued jobs and run each in its own process."""

from __future__ import annotations

import click

from .context import AppContext, pass_app
from .output import info


def job_label(job) -> str:
    if job.kind == "stage":
        index = job.payload.get("stage_index")
        return f"job {job.id}: run {job.run_id} stage {index + 1 if isinstance(index, int) else '?'}"
    return f"job {job.id}: {job.kind}"


@click.command("worker")
@click.option("--once", is_flag=True, help="Run at most one job, then exit.")
@click.option("--max-jobs", type=click.IntRange(1), help="Exit after this many jobs.")
@click.option("--idle-exit", type=click.FloatRange(0), help="Exit after this many seconds with nothing to run.")
@click.option("--lease", "lease_seconds", type=click.IntRange(2), default=60, show_default=True,
              help="Seconds a job's lease lasts without a heartbeat (the worker renews it every third).")
@click.option("--nproc", type=click.IntRange(1), help="Processes (GPUs) per stage for runs that set no --nproc "
                                                     "of their own (default 1).")
@pass_app
def worker(app: AppContext, once: bool, max_jobs: int | None, idle_exit: float | None, lease_seconds: int,
           nproc: int | None) -> None:
    """Run queued jobs of this workspace until stopped (Ctrl-C or SIGTERM: the running job
    checkpoints and goes back to the queue). Several workers may share a workspace."""
    from ..worker.loop import Worker

    def on_end(job, status):
        if status == "lost":
            info(f"job {job.id} lost: its lease went to another worker, which runs it now; this worker "
                 "wrote nothing more for it")
        else:
            info(f"job {job.id} {status}")

    from ..worker.daemon import live_workers

    others = live_workers(app.settings)
    w = Worker(app.catalog, isolate=True, lease_seconds=lease_seconds, on_job=lambda job: info(job_label(job)),
               on_end=on_end, nproc=nproc)
    info(f"worker {w.owner} on {app.settings.home}")
    if others:
        info(f"{others} other worker{'s are' if others > 1 else ' is'} alive on this workspace: workers share the "
             "queue, each job runs once on whichever claims it first; this one takes the next queued job")
    if once:
        max_jobs, idle_exit = 1, 0.0
    try:
        n = w.run(max_jobs=max_jobs, idle_exit=idle_exit)
    except KeyboardInterrupt:
        info("worker stopped")
        return
    info(f"worker ran {n} job(s)" if n or not once else "nothing to run")


COMMANDS = [worker]

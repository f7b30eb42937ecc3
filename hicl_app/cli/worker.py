"""`hicl worker`: claim queued stage jobs and run them."""

from __future__ import annotations

import click

from .context import AppContext, pass_app
from .output import info


@click.command("worker")
@click.option("--once", is_flag=True, help="Run at most one job, then exit.")
@click.option("--max-jobs", type=int, help="Exit after this many jobs.")
@click.option("--idle-exit", type=float, help="Exit after this many seconds with nothing to run.")
@pass_app
def worker(app: AppContext, once: bool, max_jobs: int | None, idle_exit: float | None) -> None:
    """Run queued jobs of this workspace until stopped (Ctrl-C)."""
    from ..worker.loop import Worker

    w = Worker(app.catalog, on_job=lambda job: info(f"job {job.id}: run {job.run_id} stage {job.payload.get('stage_index')}"))
    info(f"worker {w.owner} on {app.settings.home}")
    if once:
        status = w.run_one()
        info(f"job {status}" if status else "nothing to run")
        return
    try:
        n = w.run(max_jobs=max_jobs, idle_exit=idle_exit)
    except KeyboardInterrupt:
        info("worker stopped")
        return
    info(f"worker ran {n} job(s)")


COMMANDS = [worker]

"""The process one job runs in: `python -m hicl_app.worker.child JOB --owner OWNER --parent PID [--nproc N]`.

Started by the worker (worker/loop.py) with the workspace in HICL_HOME / HICL_DB_URL and its
stdout and stderr on the job's log file. A crash here (an exception that escapes, an
out-of-memory kill, a segfault) ends this process only; the worker sees the exit status and
records the failure. On Linux the kernel kills this process when the worker dies
(PR_SET_PDEATHSIG), so a `kill -9` of the worker never leaves a job running unsupervised;
elsewhere the job notices at its next step that its parent is gone.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..core.process import die_with_parent, parent_is

#: the exit status of a child that wrote nothing for its job: the job was not, or no longer, held by
#: its worker (the lease went to another worker, which may have finished the job since)
CHILD_LOST = 3


def _die_with_parent(parent: int) -> None:
    die_with_parent()
    if not parent_is(parent):  # the worker died before the line above took effect
        os._exit(CHILD_LOST)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hicl_app.worker.child")
    parser.add_argument("job", type=int)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--nproc", type=int, default=None)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    sys.stdout.reconfigure(line_buffering=True)

    from ..catalog import queue
    from ..catalog.db import Catalog
    from ..core.settings import Settings
    from .context import JobContext
    from .kinds import execute, install_stop_signals

    catalog = Catalog(Settings.resolve())
    job = queue.get_job(catalog, args.job)
    ctx = JobContext(catalog, job, args.owner, sys.stdout, parent_pid=args.parent, nproc=args.nproc)
    install_stop_signals(ctx)
    if job.status != "running" or job.lease_owner != args.owner:
        ctx.say(f"job {job.id} is {job.status} and not held by {args.owner}: nothing to do")
        return CHILD_LOST
    status = execute(ctx)
    ctx.say(f"job {job.id} ended: {status}")
    catalog.dispose()
    return CHILD_LOST if status == "lost" else 0


if __name__ == "__main__":
    sys.exit(main())

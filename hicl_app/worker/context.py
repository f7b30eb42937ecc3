"""What a running job sees: its row, its log, and one question asked at every step boundary,
"should I stop?", with the reason (cancelled, worker shutting down, lease lost, worker gone)."""

from __future__ import annotations

import os
import time
from typing import Callable, TextIO

from sqlalchemy import select

from ..catalog import queue
from ..catalog.db import Catalog
from ..catalog.models import Job

CANCEL = "cancel"      # the user cancelled the job: close it as cancelled
SHUTDOWN = "shutdown"  # the worker is stopping: give the job back to the queue
ORPHANED = "orphaned"  # the worker process is gone: give the job back to the queue
LEASE = "lease"        # the job is no longer ours: write nothing more


class JobContext:
    """A claimed job as its kind's code runs it, in the worker's child process or inline."""

    def __init__(self, catalog: Catalog, job: Job, owner: str, log: TextIO, *, parent_pid: int | None = None,
                 on_progress: Callable | None = None, poll: float = 0.5, nproc: int | None = None):
        self.catalog, self.job, self.owner, self.log = catalog, job, owner, log
        #: the worker's default number of ranks per stage (a run's own setting wins)
        self.nproc = nproc
        self.parent_pid = parent_pid
        self.on_progress = on_progress
        self.poll = poll
        self.reason: str | None = None
        self._last_poll = 0.0

    def say(self, message: str) -> None:
        """A timestamped line in the job's log."""
        self.log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        self.log.flush()

    def interrupt(self, reason: str = SHUTDOWN) -> None:
        """Ask the job to stop at its next step boundary (signal handlers, the heartbeat)."""
        if self.reason is None:
            self.reason = reason

    def should_stop(self) -> bool:
        """True once the job must stop; cheap enough to call at every step."""
        if self.reason is not None:
            return True
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self.reason = ORPHANED
            return True
        now = time.monotonic()
        if now - self._last_poll >= self.poll:
            self._last_poll = now
            with self.catalog.session() as s:
                row = s.execute(select(Job.status, Job.lease_owner, Job.cancel_requested)
                                .where(Job.id == self.job.id)).first()
            if row is None or row.status != "running" or row.lease_owner != self.owner:
                self.reason = LEASE
            elif row.cancel_requested:
                self.reason = CANCEL
        return self.reason is not None

    def set_progress(self, progress: dict) -> None:
        """Store the job's progress (fenced by the lease: LeaseLost once it is not ours)."""
        if not queue.set_progress(self.catalog, self.job.id, progress, owner=self.owner):
            self.reason = LEASE
            raise queue.LeaseLost(f"job {self.job.id} is no longer held by {self.owner}")

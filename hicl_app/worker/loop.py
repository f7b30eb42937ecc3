"""The worker loop: claim a job, keep its lease alive, run it, record how it ended."""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
import uuid

from ..catalog import queue
from ..catalog.db import Catalog


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class _Heartbeat(threading.Thread):
    """Extends the job's lease while it runs, so a live worker's job is never re-queued."""

    def __init__(self, catalog: Catalog, job_id: int, owner: str, interval: float):
        super().__init__(daemon=True)
        self.catalog, self.job_id, self.owner, self.interval = catalog, job_id, owner, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                queue.heartbeat(self.catalog, self.job_id, self.owner)
            except Exception:  # a busy database must not kill the job; the next beat retries
                pass


class Worker:
    def __init__(self, catalog: Catalog, *, owner: str | None = None, poll: float = 1.0,
                 lease_seconds: int = queue.LEASE_SECONDS, on_progress=None, on_job=None):
        self.catalog = catalog
        self.owner = owner or worker_id()
        self.poll = poll
        self.lease_seconds = lease_seconds
        self.on_progress = on_progress
        self.on_job = on_job

    def run_one(self) -> str | None:
        """Claim and run one job; None when nothing is runnable."""
        job = queue.claim(self.catalog, self.owner, self.lease_seconds)
        if job is None:
            return None
        if self.on_job:
            self.on_job(job)
        beat = _Heartbeat(self.catalog, job.id, self.owner, max(1.0, self.lease_seconds / 3))
        beat.start()
        try:
            from .stage import run_stage_job

            return run_stage_job(self.catalog, job, self.on_progress)
        except Exception as exc:  # the job failed; the worker lives on
            reason = _one_line(exc)
            queue.finish(self.catalog, job.id, "failed", error=reason, tb=traceback.format_exc())
            return "failed"
        finally:
            beat.stopped.set()
            beat.join()

    def run(self, *, max_jobs: int | None = None, idle_exit: float | None = None, until=None) -> int:
        """Run jobs until `max_jobs` ran, `idle_exit` seconds passed idle, or `until()` is true."""
        done = 0
        idle_since = time.monotonic()
        while max_jobs is None or done < max_jobs:
            if until is not None and until():
                break
            status = self.run_one()
            if status is None:
                if idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                    break
                time.sleep(self.poll)
                continue
            done += 1
            idle_since = time.monotonic()
        return done


def _one_line(exc: BaseException) -> str:
    render = getattr(exc, "render", None)
    text = render() if callable(render) else f"{exc.__class__.__name__}: {exc}"
    return " ".join(text.split())[:500]

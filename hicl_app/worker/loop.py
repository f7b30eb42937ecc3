"""The worker loop: claim a job, keep its lease alive, run it, record how it ended.

With `isolate=True` (the `hicl worker` command, `run start --wait`) each job runs in a child
process (`python -m hicl_app.worker.child`) whose stdout and stderr go to the job's log file;
the worker heart-beats the lease, relays progress, forwards a shutdown, enforces a cancel that
the job does not honour in time, and turns a crash of the child (exception, out-of-memory kill,
segfault) into a failed job with the reason and the log's tail. With `isolate=False` (tests, the
demo) jobs run in this process. Kinds marked inline (`noop`) always run in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from ..catalog import queue
from ..catalog.db import Catalog
from ..catalog.models import Job
from .child import CHILD_LOST
from .context import JobContext
from .kinds import KINDS, execute
from .owner import owner_is_dead, worker_id

CANCEL_GRACE = 60.0   # seconds a job may take to honour a cancel before it is killed
STOP_GRACE = 300.0    # seconds a job may take to checkpoint and stop when the worker stops
LOG_TAIL = 60         # lines of the log kept as a crashed child's traceback

__all__ = ["Worker", "worker_id"]


class _Heartbeat(threading.Thread):
    """Extends the job's lease while it runs inline; tells the job when the lease is lost."""

    def __init__(self, worker: "Worker", ctx: JobContext):
        super().__init__(daemon=True)
        self.worker, self.ctx = worker, ctx
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.worker.beat_interval):
            try:
                if not queue.heartbeat(self.worker.catalog, self.ctx.job.id, self.worker.owner,
                                       self.worker.lease_seconds):
                    self.ctx.interrupt("lease")
                    return
            except Exception:  # a database hiccup must not kill the job; the next beat retries
                pass


class Worker:
    def __init__(self, catalog: Catalog, *, owner: str | None = None, poll: float = 1.0,
                 lease_seconds: int = queue.LEASE_SECONDS, on_progress=None, on_job=None, on_end=None,
                 isolate: bool = False, cancel_grace: float = CANCEL_GRACE, stop_grace: float = STOP_GRACE,
                 nproc: int | None = None):
        self.catalog = catalog
        self.nproc = nproc  # ranks per stage for runs that do not set their own
        self.owner = owner or worker_id()
        self.poll = poll
        self.lease_seconds = lease_seconds
        self.beat_interval = max(0.5, lease_seconds / 3)
        self.on_progress = on_progress
        self.on_job = on_job
        self.on_end = on_end
        self.isolate = isolate
        self.cancel_grace = cancel_grace
        self.stop_grace = stop_grace
        self.stopping = False
        self.interrupts = 0

    # --- one job -------------------------------------------------------------------------------

    def run_one(self) -> str | None:
        """Claim and run one job; None when nothing is runnable. Returns the job's status."""
        job = queue.claim(self.catalog, self.owner, self.lease_seconds, dead_owner=owner_is_dead)
        if job is None:
            return None
        if self.on_job:
            self.on_job(job)
        log_path = self._log_path(job)
        kind = KINDS.get(job.kind)
        if self.isolate and not (kind is not None and kind.inline):
            status = self._run_child(job, log_path)
        else:
            status = self._run_inline(job, log_path)
        if self.on_end:
            self.on_end(job, status)
        return status

    def _log_path(self, job: Job) -> Path:
        path = self.catalog.settings.logs / f"job-{job.id}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        if job.log_path != str(path):
            from sqlalchemy import update

            def write() -> None:
                with self.catalog.session() as s:
                    s.execute(update(Job).where(Job.id == job.id).values(log_path=str(path)))

            queue.with_busy_retry(write)
        return path

    def _header(self, job: Job, how: str) -> str:
        return (f"{time.strftime('%Y-%m-%d %H:%M:%S')} === job {job.id} ({job.kind}) attempt {job.attempts}/"
                f"{job.max_attempts} by worker {self.owner}, {how}\n")

    def _run_inline(self, job: Job, log_path: Path) -> str:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(self._header(job, "in the worker process"))
            ctx = JobContext(self.catalog, job, self.owner, log, on_progress=self.on_progress, nproc=self.nproc)
            beat = _Heartbeat(self, ctx)
            beat.start()
            try:
                return execute(ctx)
            finally:
                beat.stopped.set()
                beat.join()

    def _run_child(self, job: Job, log_path: Path) -> str:
        settings = self.catalog.settings
        env = {**os.environ, "HICL_HOME": str(settings.home), "HICL_DB_URL": settings.db_url,
               "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "hicl_app.worker.child", str(job.id), "--owner", self.owner,
               "--parent", str(os.getpid()), *(["--nproc", str(self.nproc)] if self.nproc else [])]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, close_fds=True)
            log.write(self._header(job, f"child pid {proc.pid}").encode())
            log.flush()
        outcome = self._supervise(job, proc)
        return self._after_child(job, proc.returncode, outcome, log_path)

    def _supervise(self, job: Job, proc: subprocess.Popen) -> str | None:
        """Wait for the child, heart-beating and relaying; returns why it was killed, if it was."""
        now = time.monotonic()
        next_beat, next_look = now + self.beat_interval, now
        stop_sent = cancel_seen = None
        stage = SimpleNamespace(index=job.payload.get("stage_index"))
        while True:
            try:
                proc.wait(timeout=0.2)
                return None
            except subprocess.TimeoutExpired:
                pass
            except KeyboardInterrupt:
                self.interrupts += 1
                self.stopping = True
                if self.interrupts > 1:  # a second Ctrl-C: no more waiting for a checkpoint
                    proc.kill()
                    proc.wait()
                    return "shutdown"
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.beat_interval
                try:
                    ours = queue.heartbeat(self.catalog, job.id, self.owner, self.lease_seconds)
                except Exception:
                    ours, next_beat = True, now + 1.0
                if not ours:  # the lease went to another worker: this copy must not go on
                    proc.kill()
                    proc.wait()
                    return "lease"
            if self.stopping and stop_sent is None:
                proc.send_signal(signal.SIGTERM)
                stop_sent = now
            if stop_sent is not None and now - stop_sent > self.stop_grace:
                proc.kill()
                proc.wait()
                return "shutdown"
            if now >= next_look:
                next_look = now + 1.0
                try:
                    row = queue.get_job(self.catalog, job.id)
                except Exception:
                    continue
                if row.cancel_requested and cancel_seen is None:
                    cancel_seen = now
                if self.on_progress and row.progress and row.status == "running":
                    self.on_progress(stage, dict(row.progress))
            if cancel_seen is not None and now - cancel_seen > self.cancel_grace:
                proc.kill()
                proc.wait()
                return "cancel"

    def _after_child(self, job: Job, rc: int, killed: str | None, log_path: Path) -> str:
        """The child is gone: if it left the job running under our lease, close it here."""
        row = queue.get_job(self.catalog, job.id)
        if killed == "lease" or rc == CHILD_LOST:
            return "lost"  # another worker holds the job (and may have finished it): none of that is ours
        if row.status != "running" or row.lease_owner != self.owner:
            # the child closed the job itself (exit 0), else someone else did: not ours to report
            return row.status if rc == 0 and row.status != "running" else "lost"
        if killed == "cancel":
            reason = f"cancelled by the user (the job did not stop within {self.cancel_grace:.0f}s and was killed)"
            ok = queue.finish(self.catalog, job.id, "cancelled", error=reason, owner=self.owner)
            status = "cancelled"
        elif killed == "shutdown" or (self.stopping and rc != 0):
            reason = "the worker stopped; the job goes back to the queue"
            ok = queue.release(self.catalog, job.id, self.owner, note=reason)
            status = "queued"
        else:
            reason = _exit_reason(rc)
            ok = queue.finish(self.catalog, job.id, "failed", error=reason, tb=_tail(log_path), owner=self.owner)
            status = "failed"
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} worker: {reason}\n")
        return status if ok else "lost"

    # --- the loop ------------------------------------------------------------------------------

    def run(self, *, max_jobs: int | None = None, idle_exit: float | None = None, until=None) -> int:
        """Run jobs until `max_jobs` ran, `idle_exit` seconds passed idle, `until()` is true, or
        the worker is told to stop (SIGTERM; Ctrl-C). Returns how many jobs ran."""
        from .daemon import Liveness

        done = 0
        idle_since = time.monotonic()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            with Liveness(self.catalog.settings):
                while (max_jobs is None or done < max_jobs) and not self.stopping:
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
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return done

    def _on_sigterm(self, *_args) -> None:
        self.stopping = True


def _exit_reason(rc: int) -> str:
    if rc < 0:
        sig = -rc
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        why = {"SIGKILL": " (out of memory, or killed by hand)", "SIGSEGV": " (a segmentation fault)",
               "SIGABRT": " (aborted)", "SIGBUS": " (a bus error)"}.get(name, "")
        return f"the job's process was killed by {name}{why}"
    return f"the job's process exited with code {rc} without closing the job; see its log"


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL:])

"""Is a worker alive for this workspace, and starting one in the background when none is.

Every worker holds a shared lock on `<workspace>/worker.lock` for as long as it lives; the
kernel drops the lock when the process ends, however it ends (kill -9 included), so there is no
stale pid file to trust. "A worker is alive" means the lock cannot be taken exclusively. To tell
how many are alive, each worker also holds an exclusive lock on a file of its own under
`<workspace>/workers/`; a file whose lock can be taken belongs to a worker that is gone.
Starting a background worker happens under a second, exclusive lock, so two `hicl run start`
at the same moment start one worker, not two. POSIX only (fcntl).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.settings import Settings

LOCK = "worker.lock"
SPAWN_LOCK = "worker-spawn.lock"
LOG = "worker.log"
WORKERS = "workers"
STALE_AFTER = 5.0  # seconds: a younger unlocked file may belong to a worker that is taking its lock
IDLE_EXIT = 600.0


def _open(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a+b")


class Liveness:
    """Held by a running worker: a shared lock on the workspace's worker.lock."""

    def __init__(self, settings: Settings):
        self.path = settings.home / LOCK
        self.own = settings.home / WORKERS / f"{os.getpid()}-{os.urandom(3).hex()}.lock"
        self.fh = self.own_fh = None

    def __enter__(self) -> "Liveness":
        self.fh = _open(self.path)
        fcntl.flock(self.fh.fileno(), fcntl.LOCK_SH)
        self.own_fh = _open(self.own)
        fcntl.flock(self.own_fh.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *_exc) -> None:
        if self.own_fh is not None:
            self.own.unlink(missing_ok=True)
            self.own_fh.close()
            self.own_fh = None
        if self.fh is not None:
            self.fh.close()  # closing drops the lock
            self.fh = None


def live_workers(settings: Settings) -> int:
    """How many worker processes of this workspace are running (any machine sharing its folder
    and honouring flock); removes the files of workers that are gone."""
    folder = settings.home / WORKERS
    alive = 0
    for path in folder.glob("*.lock") if folder.is_dir() else []:
        try:
            fh = open(path, "a+b")
        except OSError:
            continue
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                alive += 1
                continue
            try:
                if time.time() - path.stat().st_mtime > STALE_AFTER:
                    path.unlink(missing_ok=True)
            except OSError:
                pass
    return alive


def worker_alive(settings: Settings) -> bool:
    """True when some worker process of this workspace is running."""
    path = settings.home / LOCK
    if not path.exists():
        return False
    with _open(path) as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False


@dataclass
class Started:
    pid: int
    log: Path


def start_background_worker(settings: Settings, idle_exit: float = IDLE_EXIT, timeout: float = 30.0) -> Started | None:
    """Start `hicl worker --idle-exit N` detached from this terminal (its own session, output to
    logs/worker.log) unless a worker is alive already; None in that case."""
    with _open(settings.home / SPAWN_LOCK) as guard:
        fcntl.flock(guard.fileno(), fcntl.LOCK_EX)
        if worker_alive(settings):
            return None
        log_path = settings.logs / LOG
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HICL_HOME": str(settings.home), "HICL_DB_URL": settings.db_url}
        cmd = [sys.executable, "-m", "hicl_app", "--home", str(settings.home), "worker", "--idle-exit", str(idle_exit)]
        with open(log_path, "ab") as log:
            log.write(f"\n{time.strftime('%Y-%m-%d %H:%M:%S')} starting a background worker\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, close_fds=True)
        deadline = time.monotonic() + timeout
        # hold the spawn lock until the new worker holds its liveness lock: a second caller
        # waiting on the spawn lock then sees it alive
        while not worker_alive(settings):
            if proc.poll() is not None:
                from ..core.errors import HiclError

                raise HiclError(f"the background worker exited at once (code {proc.returncode})",
                                hint=f"see {log_path}; `hicl worker` runs one in the foreground")
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return Started(proc.pid, log_path)

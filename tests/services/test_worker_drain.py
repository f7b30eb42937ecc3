"""Three worker processes drain 200 queued jobs: each job runs exactly once, all three take part,
and no `database is locked` (or any error) reaches a user. tests/services/test_postgres.py runs the same
drain against PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlmodel import select

from hicl_app.catalog import queue
from hicl_app.catalog.db import Catalog
from hicl_app.catalog.models import Event, Job
from hicl_app.core.settings import Settings

N_JOBS, N_WORKERS = 200, 3


def drain(home: Path, db_url: str, tmp: Path) -> float:
    """Start the workers, queue the jobs once all are up, wait; returns the drain time."""
    cat = Catalog(Settings.resolve(home, db_url=db_url))
    env = {**os.environ, "HICL_HOME": str(home), "HICL_DB_URL": db_url}
    errs = [tmp / f"worker-{i}.err" for i in range(N_WORKERS)]
    procs = [subprocess.Popen([sys.executable, "-m", "hicl_app", "worker", "--idle-exit", "3"], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(err, "wb")) for err in errs]
    try:
        deadline = time.monotonic() + 120
        while not all(e.read_text().startswith("worker ") for e in errs):  # each prints its id once up
            assert time.monotonic() < deadline, [e.read_text() for e in errs]
            assert all(p.poll() is None for p in procs), [e.read_text() for e in errs]
            time.sleep(0.05)
        t0 = time.monotonic()
        with cat.session() as s:  # all at once, so that the workers contend from the first job
            s.add_all([Job(kind="noop", payload={"seconds": 0.02, "n": i}) for i in range(N_JOBS)])
        while queue.runnable_jobs(cat) and time.monotonic() < t0 + 300:
            time.sleep(0.1)
        took = time.monotonic() - t0
        codes = [p.wait(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    output = "\n".join(e.read_text() for e in errs)
    assert codes == [0] * N_WORKERS, output
    assert "locked" not in output and "Traceback" not in output and "error" not in output.lower(), output
    with cat.session() as s:
        jobs = list(s.exec(select(Job)))
        events = list(s.exec(select(Event).where(Event.job_id.is_not(None))))
    cat.dispose()
    assert len(jobs) == N_JOBS and all(j.status == "done" and j.attempts == 1 for j in jobs)
    runs = Counter(e.job_id for e in events)
    assert len(runs) == N_JOBS and set(runs.values()) == {1}  # every job ran, none twice
    per_worker = Counter(e.data["owner"] for e in events)
    assert len(per_worker) == N_WORKERS, per_worker  # all three took jobs
    print(f"\n{N_JOBS} jobs drained by {N_WORKERS} workers in {took:.1f}s; per worker {sorted(per_worker.values())}")
    return took


def test_three_workers_drain_200_jobs_on_sqlite(tmp_path):
    home = tmp_path / "ws"
    drain(home, f"sqlite:///{home / 'hicl.db'}", tmp_path)

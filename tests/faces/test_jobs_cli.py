"""`hicl jobs`, `jobs cancel`, `jobs retry`, `logs`, `worker` and the background worker, on cheap
`sleep` jobs run by real worker processes: progress while running, cancel within seconds,
retry resuming, a crashing job taking down only itself, a graceful worker shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from hicl_app.catalog import queue
from hicl_app.catalog.db import Catalog
from hicl_app.core.settings import Settings


@pytest.fixture
def cat(home):
    catalog = Catalog(Settings.resolve(home))
    yield catalog
    catalog.dispose()


def start_worker(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hicl_app", "worker", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait(what, cond, timeout=60.0, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def status(cat, job_id) -> str:
    return queue.get_job(cat, job_id).status


def test_progress_cancel_retry_and_logs(cli, cat):
    assert "no jobs" in cli("jobs").stderr
    job_id = queue.enqueue(cat, "sleep", {"seconds": 30, "ticks": 300})
    assert json.loads(cli("jobs", "--json").stdout)[0]["status"] == "queued"
    w = start_worker("--idle-exit", "30")
    try:
        wait("progress", lambda: queue.get_job(cat, job_id).progress.get("step", 0) >= 3, timeout=120)
        row = json.loads(cli("jobs", "--json").stdout)[0]
        assert row["status"] == "running" and row["progress"]["total"] == 300
        assert row["progress"]["samples_per_s"] > 0 and row["progress"]["eta_s"] > 0 and row["lease_owner"]
        table = cli("jobs").stdout
        assert re.search(rf"^\s*{job_id}\s+sleep\s+running\s+1/3\s+\d+/300", table, re.M), table

        t0 = time.monotonic()
        res = cli("jobs", "cancel", job_id)
        assert res.exit_code == 0 and "cancel requested" in res.stderr
        wait("the cancel", lambda: status(cat, job_id) == "cancelled", timeout=30, every=0.02)
        latency = time.monotonic() - t0
        stopped_at = queue.get_job(cat, job_id).progress["step"]
        assert stopped_at < 300
        assert w.poll() is None  # the worker lives on

        res = cli("jobs", "retry", job_id, "--no-worker")
        assert res.exit_code == 0 and f"job {job_id} queued again" in res.stderr
        wait("the retried job to run again", lambda: status(cat, job_id) == "running")
        follow = subprocess.Popen([sys.executable, "-m", "hicl_app", "logs", str(job_id), "--follow"],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert follow.poll() is None  # still following the running job
        cli("jobs", "cancel", job_id)
        text, _ = follow.communicate(timeout=60)  # and done once it ended
    finally:
        w.send_signal(signal.SIGTERM)
        w.wait(timeout=60)
    assert text.count("=== job") == 2 and f"resuming at tick {stopped_at}/300" in text
    assert "cancelled at step" in text and f"job {job_id} ended: cancelled" in text
    assert cli("logs", job_id).stdout == open(queue.get_job(cat, job_id).log_path).read()
    print(f"\ncancel stopped a running job in {latency:.2f}s")


def test_a_crash_takes_down_one_job_not_the_worker(cli, cat):
    killed = queue.enqueue(cat, "sleep", {"signal": int(signal.SIGKILL), "at": 1, "seconds": 0.2, "ticks": 4})
    exited = queue.enqueue(cat, "sleep", {"exit": 7, "seconds": 0.1, "ticks": 2})
    failed = queue.enqueue(cat, "sleep", {"fail": "the data is bad", "at": 1, "seconds": 0.1, "ticks": 2})
    fine = queue.enqueue(cat, "sleep", {"seconds": 0.1, "ticks": 2})
    proc = subprocess.run([sys.executable, "-m", "hicl_app", "worker", "--idle-exit", "0"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "worker ran 4 job(s)" in proc.stderr
    rows = {r["id"]: r for r in json.loads(cli("jobs", "--json").stdout)}
    assert [rows[i]["status"] for i in (killed, exited, failed, fine)] == ["failed", "failed", "failed", "done"]
    assert rows[killed]["error"] == "the job's process was killed by SIGKILL (out of memory, or killed by hand)"
    assert "exited with code 7" in rows[exited]["error"]
    assert rows[failed]["error"] == "the data is bad hint: the job was told to fail"
    tb = queue.get_job(cat, failed).traceback
    assert "Traceback" in tb and "JobFailed: the data is bad" in tb
    assert "JobFailed: the data is bad" in cli("logs", failed).stdout
    assert "child pid" in queue.get_job(cat, killed).traceback  # a dead child's log tail is kept
    assert "killed by SIGKILL" in cli("logs", killed).stdout


def test_worker_stop_gives_the_running_job_back(cli, cat):
    job_id = queue.enqueue(cat, "sleep", {"seconds": 60, "ticks": 600})
    w = start_worker()
    wait("progress", lambda: queue.get_job(cat, job_id).progress.get("step", 0) >= 2, timeout=120)
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=60) == 0
    job = queue.get_job(cat, job_id)
    assert (job.status, job.attempts, job.lease_owner) == ("queued", 0, None)
    assert "goes back to the queue" in cli("logs", job_id).stdout


def test_errors_and_the_background_worker(cli, cat, home):
    res = cli("jobs", "cancel", "42")
    assert res.exit_code == 4 and "no job 42" in res.stderr
    assert cli("logs", "42").exit_code == 4
    assert cli("run", "resume", "nope").exit_code == 4
    job_id = queue.enqueue(cat, "sleep", {"fail": "boom", "seconds": 0.1, "ticks": 2})
    assert "no log yet" in cli("logs", job_id).stderr
    res = cli("jobs", "retry", job_id)
    assert res.exit_code == 5 and f"job {job_id} is queued" in res.stderr

    from hicl_app.worker.daemon import worker_alive

    settings = Settings.resolve(home)
    assert not worker_alive(settings)
    subprocess.run([sys.executable, "-m", "hicl_app", "worker", "--once"], check=True, capture_output=True, timeout=120)
    assert status(cat, job_id) == "failed"
    with cat.session() as s:  # make the retried job succeed
        from hicl_app.catalog.models import Job

        j = s.get(Job, job_id)
        j.payload = {"seconds": 0.1, "ticks": 2}
        s.add(j)
    res = cli("jobs", "retry", job_id)  # no --no-worker: starts a background worker
    pid = int(re.search(r"started a background worker \(pid (\d+)", res.stderr).group(1))
    try:
        assert worker_alive(settings)
        from hicl_app.worker.daemon import start_background_worker

        assert start_background_worker(settings) is None  # one is alive: no second one
        wait("the background worker to run the job", lambda: status(cat, job_id) == "done", timeout=120)
        res = cli("jobs", "cancel", job_id)
        assert res.exit_code == 5 and "already done" in res.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    wait("the background worker to stop", lambda: not worker_alive(settings), timeout=30)
    assert (home / "logs" / "worker.log").is_file()

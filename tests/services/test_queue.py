"""The job queue: stage order, atomic claims, leases (expiry, dead owners, fencing), cancel,
retry, resume, busy retries.

Every test takes the `cat` fixture: a SQLite catalog here; tests/services/test_postgres.py runs the same
tests against a real PostgreSQL server.
"""

from __future__ import annotations

import subprocess
import threading
from datetime import timedelta

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from hicl_app.catalog import queue
from hicl_app.catalog.db import Catalog
from hicl_app.catalog.models import Job, Run, Stage, utcnow
from hicl_app.catalog.runs import create_run
from hicl_app.core.errors import Conflict, NotFound
from hicl_app.core.settings import Settings
from hicl_app.worker.owner import owner_is_dead, worker_id


@pytest.fixture
def cat(tmp_path) -> Catalog:
    catalog = Catalog(Settings.resolve(tmp_path / "ws", db_url=f"sqlite:///{tmp_path / 'ws' / 'hicl.db'}"))
    yield catalog
    catalog.dispose()


def _run(catalog, n_stages=3) -> int:
    with catalog.session() as s:
        run = create_run(s, name="r", method="seq-lora", base_model="m", task_order=[f"t{i}" for i in range(n_stages)],
                         stages=[[f"t{i}"] for i in range(n_stages)], config={})
        return run.id


def _expire_lease(catalog, job_id) -> None:
    with catalog.session() as s:
        j = s.get(Job, job_id)
        j.lease_expires_at = utcnow() - timedelta(seconds=1)
        s.add(j)


def _statuses(catalog, run_id) -> list[str]:
    with catalog.session() as s:
        return [j.status for j in s.exec(select(Job).where(Job.run_id == run_id).order_by(Job.id))]


def test_stages_claimed_in_order_only_after_predecessor(cat):
    _run(cat)
    first = queue.claim(cat, "w1")
    assert first.payload["stage_index"] == 0 and first.attempts == 1
    assert queue.claim(cat, "w2") is None  # stage 1 waits for stage 0
    queue.finish(cat, first.id, "done")
    second = queue.claim(cat, "w2")
    assert second.payload["stage_index"] == 1 and second.lease_owner == "w2"


def test_concurrent_claims_never_share_a_job(cat):
    for _ in range(30):
        _run(cat, n_stages=1)
    got: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(name):
        c = Catalog(cat.settings)
        try:
            while (job := queue.claim(c, name)) is not None:
                with lock:
                    got.append(job.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            c.dispose()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(got) == sorted(set(got)) and len(got) == 30


def test_expired_lease_is_requeued_then_failed_after_max_attempts(cat):
    run_id = _run(cat, n_stages=2)
    for attempt in range(1, 4):
        job = queue.claim(cat, f"dead{attempt}")
        assert job is not None and job.attempts == attempt
        _expire_lease(cat, job.id)
    assert queue.claim(cat, "w") is None
    with cat.session() as s:
        first = s.exec(select(Job).order_by(Job.id)).first()
        assert first.status == "failed" and "lease expired" in first.error
        assert s.get(Run, run_id).status == "failed"  # the run does not hang on a dead stage
    assert _statuses(cat, run_id) == ["failed", "cancelled"]


def test_heartbeat_extends_only_own_lease(cat):
    _run(cat, n_stages=1)
    job = queue.claim(cat, "w1", lease_seconds=5)
    assert queue.heartbeat(cat, job.id, "w1", lease_seconds=100)
    assert not queue.heartbeat(cat, job.id, "intruder")
    with cat.session() as s:
        assert s.get(Job, job.id).lease_expires_at > utcnow() + timedelta(seconds=50)


def test_a_worker_that_lost_its_lease_can_write_nothing(cat):
    run_id = _run(cat, n_stages=1)
    job = queue.claim(cat, "slow")
    _expire_lease(cat, job.id)
    again = queue.claim(cat, "fresh")  # re-queues the expired job and takes it
    assert again.id == job.id and again.attempts == 2 and again.lease_owner == "fresh"
    assert not queue.heartbeat(cat, job.id, "slow")
    assert not queue.finish(cat, job.id, "failed", error="late", owner="slow")
    assert not queue.set_progress(cat, job.id, {"step": 1}, owner="slow")
    assert not queue.release(cat, job.id, "slow")
    with cat.session() as s:
        j = s.get(Job, job.id)
        assert (j.status, j.lease_owner, j.error) == ("running", "fresh", None)
    assert queue.finish(cat, job.id, "done", owner="fresh")
    assert _statuses(cat, run_id) == ["done"]


def test_dead_local_owner_is_requeued_at_once_live_one_is_not(cat):
    _run(cat, n_stages=1)
    _run(cat, n_stages=1)
    host, _pid, tag = worker_id().split(":")
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"{host}:{gone.pid}:{tag}"
    assert owner_is_dead(dead) and not owner_is_dead(worker_id()) and not owner_is_dead("other-host:1:2-3-4")
    first = queue.claim(cat, dead, lease_seconds=3600)
    second = queue.claim(cat, worker_id(), lease_seconds=3600)
    got = queue.claim(cat, "w2", dead_owner=owner_is_dead)
    assert got.id == first.id and got.attempts == 2  # the live owner's job stays with it
    assert queue.get_job(cat, second.id).status == "running"


def test_release_gives_the_job_back_without_counting_an_attempt(cat):
    _run(cat, n_stages=1)
    job = queue.claim(cat, "w1")
    assert queue.release(cat, job.id, "w1", note="worker stopped")
    j = queue.get_job(cat, job.id)
    assert (j.status, j.attempts, j.lease_owner) == ("queued", 0, None)
    assert queue.claim(cat, "w2").attempts == 1


def test_failure_fails_run_and_cancels_later_stages(cat):
    run_id = _run(cat)
    job = queue.claim(cat, "w")
    queue.finish(cat, job.id, "failed", error="boom")
    with cat.session() as s:
        run = s.get(Run, run_id)
    assert _statuses(cat, run_id) == ["failed", "cancelled", "cancelled"]
    assert run.status == "failed" and run.error == "boom"
    assert queue.runnable_jobs(cat, run_id) == 0


def test_cancel_queued_at_once_running_on_request_and_dead_worker_ends_cancelled(cat):
    run_a, run_b = _run(cat, n_stages=1), _run(cat, n_stages=1)
    a = queue.claim(cat, "w1")
    b_id = a.id + 1
    assert queue.get_job(cat, b_id).run_id == run_b
    assert queue.request_cancel(cat, b_id) == "cancelled"
    assert _statuses(cat, run_b) == ["cancelled"]
    assert queue.request_cancel(cat, a.id) == "requested"
    assert queue.cancel_requested(cat, a.id) and queue.get_job(cat, a.id).status == "running"
    # its worker dies before stopping: the job ends cancelled, not re-run
    _expire_lease(cat, a.id)
    assert queue.claim(cat, "w2") is None
    assert _statuses(cat, run_a) == ["cancelled"]
    with pytest.raises(Conflict, match="already cancelled"):
        queue.request_cancel(cat, a.id)
    with pytest.raises(NotFound):
        queue.request_cancel(cat, 999)


def test_retry_and_resume(cat):
    run_id = _run(cat)
    job = queue.claim(cat, "w")
    queue.finish(cat, job.id, "done")
    second = queue.claim(cat, "w")
    queue.finish(cat, second.id, "cancelled", error="cancelled by the user")
    assert _statuses(cat, run_id) == ["done", "cancelled", "cancelled"]
    with pytest.raises(Conflict, match="job 1 is done"):
        queue.retry(cat, job.id)
    assert queue.resume_run(cat, run_id) == (run_id, [second.id, second.id + 1])
    assert _statuses(cat, run_id) == ["done", "queued", "queued"]
    with cat.session() as s:
        assert s.get(Run, run_id).status == "queued"
        assert [st.status for st in s.exec(select(Stage).where(Stage.run_id == run_id).order_by(Stage.index))][1:] \
            == ["queued", "queued"]
    assert queue.resume_run(cat, run_id) == (run_id, [])  # already queued: nothing to do
    for _ in range(2):
        queue.finish(cat, queue.claim(cat, "w").id, "done")
    with cat.session() as s:
        s.get(Run, run_id).status = "completed"
        s.add(s.get(Run, run_id))
    with pytest.raises(Conflict, match="already completed"):
        queue.resume_run(cat, run_id)
    with pytest.raises(NotFound):
        queue.resume_run(cat, "no-such-run")


def test_jobs_of_no_run_and_listing(cat):
    ids = [queue.enqueue(cat, "noop", {"n": i}) for i in range(3)]
    job = queue.claim(cat, "w")
    assert job.id == ids[0] and job.kind == "noop" and job.payload == {"n": 0}
    queue.finish(cat, job.id, "done", owner="w")
    rows = queue.list_jobs(cat)
    assert [(r["id"], r["status"]) for r in rows] == [(ids[0], "done"), (ids[1], "queued"), (ids[2], "queued")]
    assert queue.list_jobs(cat, finished=0)[0]["id"] == ids[1]


def test_busy_database_errors_are_retried_others_are_not():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE jobs", {}, Exception("database is locked"))
        return "ok"

    assert queue.with_busy_retry(flaky) == "ok" and len(calls) == 3
    with pytest.raises(OperationalError, match="no such table"):
        queue.with_busy_retry(lambda: (_ for _ in ()).throw(
            OperationalError("SELECT", {}, Exception("no such table: x"))))
    with pytest.raises(OperationalError, match="locked"):
        queue.with_busy_retry(lambda: (_ for _ in ()).throw(
            OperationalError("SELECT", {}, Exception("database is locked"))), budget=0.2)


def test_claim_waits_for_a_writer_instead_of_failing(cat):
    if cat.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    import sqlite3

    _run(cat, n_stages=1)
    other = sqlite3.connect(cat.engine.url.database, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock for a while
    timer = threading.Timer(1.0, other.rollback)
    timer.start()
    try:
        job = queue.claim(cat, "w")
    finally:
        timer.join()
        other.close()
    assert job is not None and job.lease_owner == "w"

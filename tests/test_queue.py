"""The job queue: stage order, atomic claims, lease expiry, failure cancelling later stages."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlmodel import select

from hicl_app.catalog import queue
from hicl_app.catalog.db import Catalog
from hicl_app.catalog.models import Job, Run, utcnow
from hicl_app.catalog.runs import create_run
from hicl_app.settings import Settings


def _catalog(tmp_path) -> Catalog:
    return Catalog(Settings.resolve(tmp_path / "ws"))


def _run(catalog, n_stages=3) -> int:
    with catalog.session() as s:
        run = create_run(s, name="r", method="seq-lora", base_model="m", task_order=[f"t{i}" for i in range(n_stages)],
                         stages=[[f"t{i}"] for i in range(n_stages)], config={})
        return run.id


def test_stages_claimed_in_order_only_after_predecessor(tmp_path):
    cat = _catalog(tmp_path)
    _run(cat)
    first = queue.claim(cat, "w1")
    assert first.payload["stage_index"] == 0 and first.attempts == 1
    assert queue.claim(cat, "w2") is None  # stage 1 waits for stage 0
    queue.finish(cat, first.id, "done")
    second = queue.claim(cat, "w2")
    assert second.payload["stage_index"] == 1 and second.lease_owner == "w2"


def test_concurrent_claims_never_share_a_job(tmp_path):
    cat = _catalog(tmp_path)
    for _ in range(30):
        _run(cat, n_stages=1)
    got: list[int] = []
    lock = threading.Lock()

    def worker(name):
        c = Catalog(cat.settings)
        while (job := queue.claim(c, name)) is not None:
            with lock:
                got.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(set(got)) and len(got) == 30


def test_expired_lease_is_requeued_then_failed_after_max_attempts(tmp_path):
    cat = _catalog(tmp_path)
    _run(cat, n_stages=1)
    for attempt in range(1, 4):
        job = queue.claim(cat, f"dead{attempt}")
        assert job is not None and job.attempts == attempt
        with cat.session() as s:
            j = s.get(Job, job.id)
            j.lease_expires_at = utcnow() - timedelta(seconds=1)
            s.add(j)
    assert queue.claim(cat, "w") is None
    with cat.session() as s:
        j = s.exec(select(Job)).one()
        assert j.status == "failed" and "lease expired" in j.error


def test_heartbeat_extends_only_own_lease(tmp_path):
    cat = _catalog(tmp_path)
    _run(cat, n_stages=1)
    job = queue.claim(cat, "w1", lease_seconds=5)
    assert queue.heartbeat(cat, job.id, "w1", lease_seconds=100)
    assert not queue.heartbeat(cat, job.id, "intruder")
    with cat.session() as s:
        assert s.get(Job, job.id).lease_expires_at > utcnow() + timedelta(seconds=50)


def test_failure_fails_run_and_cancels_later_stages(tmp_path):
    cat = _catalog(tmp_path)
    run_id = _run(cat)
    job = queue.claim(cat, "w")
    queue.finish(cat, job.id, "failed", error="boom")
    with cat.session() as s:
        statuses = [j.status for j in s.exec(select(Job).order_by(Job.id))]
        run = s.get(Run, run_id)
    assert statuses == ["failed", "cancelled", "cancelled"]
    assert run.status == "failed" and run.error == "boom"
    assert queue.runnable_jobs(cat, run_id) == 0

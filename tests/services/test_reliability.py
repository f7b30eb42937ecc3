"""A bad workspace or catalog is one clear line with its exit code, never a traceback (issue 27).

Each case is what a red-team pass met as a raw traceback: concurrent add-task of one name, a
damaged or foreign hicl.db, a read-only workspace, a catalog of a newer hicl, a bad HICL_DB_URL,
a full disk, the write lock held past the busy timeout. Nothing is half-written in any of them.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from hicl_app.core.errors import EXIT_CONFLICT, EXIT_FAILURE, EXIT_INVALID_INPUT


def _one_line_error(res, code: int, *phrases: str) -> str:
    """The command failed with `code`, an `error:` line naming `phrases`, and no traceback."""
    assert res.exit_code == code, (res.exit_code, res.output)
    assert res.stderr.startswith("error: ") and "Traceback" not in res.output, res.output
    for phrase in phrases:
        assert phrase in res.stderr, res.stderr
    return res.stderr


def _base(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    (base / "config.json").write_text("{}")
    return base


def _task_dirs(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "tasks").iterdir()) if (home / "tasks").is_dir() else []


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# --- concurrent add-task --------------------------------------------------------------------------
def test_concurrent_add_task_of_one_name_is_a_conflict(cli, home, llava_file, monkeypatch):
    """Another add-task records the name between this one's check and its insert (the unique
    name turns that into IntegrityError): the user reads the Conflict, exit 5."""
    from hicl_app.catalog import tasks as tasks_mod
    from hicl_app.catalog.db import Catalog
    from hicl_app.catalog.models import Task
    from hicl_app.core.settings import Settings

    assert cli("tasks").exit_code == 0  # the catalog exists
    real = tasks_mod.parse_task_file

    def parse_while_another_adds(*args, **kwargs):
        other = Catalog(Settings.resolve())
        with other.session() as s:
            s.add(Task(name="colour", source_path="x", source_sha256="0", source_format="vqa", images_dir="x",
                       n_train=1, n_test=1, scorer="exact", data_dir=str(home / "tasks" / "elsewhere")))
        other.dispose()
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks_mod, "parse_task_file", parse_while_another_adds)
    _one_line_error(cli("add-task", llava_file), EXIT_CONFLICT, "a task named 'colour' already exists")
    assert _task_dirs(home) == [] and _count(home / "hicl.db", "tasks") == 1


# --- the catalog file -----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["not-a-database", "overwritten-pages"])
def test_a_damaged_catalog_is_named_and_left_as_it_is(cli, home, llava_file, damage):
    assert cli("add-task", llava_file).exit_code == 0
    gc.collect()
    db = home / "hicl.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if damage == "not-a-database":
        db.write_text("these are my notes, not a database\n" * 200)
    else:
        data = bytearray(db.read_bytes())
        data[100:4096 * 3] = b"\xa5" * (4096 * 3 - 100)  # the schema page and the next ones
        db.write_bytes(bytes(data))
    before = db.read_bytes()
    for args in (["tasks"], ["add-task", llava_file, "--name", "again"]):
        _one_line_error(cli(*args), EXIT_FAILURE, "is not a SQLite database or is damaged", "restore hicl.db")
    assert db.read_bytes() == before and _task_dirs(home) == ["colour"]


def test_a_catalog_from_a_newer_hicl_says_so(cli, home):
    assert cli("tasks").exit_code == 0
    gc.collect()
    with sqlite3.connect(home / "hicl.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    _one_line_error(cli("tasks"), EXIT_FAILURE, "created by a newer hicl (revision 0099_from_the_future)",
                    "upgrade hicl")
    assert _count(home / "hicl.db", "tasks") == 0


def test_a_read_only_workspace_reads_and_says_why_it_cannot_write(cli, home, llava_file, monkeypatch):
    """Read commands open the catalog read-only; a write says the workspace is read-only. As
    root (who may write anyway) the workspace is made read-only in hicl's own eyes."""
    assert cli("add-task", llava_file).exit_code == 0
    gc.collect()
    before = (home / "hicl.db").read_bytes()
    if os.geteuid() == 0:
        monkeypatch.setattr("hicl_app.catalog.db._writable", lambda path: False)
    else:
        for p in (home, home / "hicl.db"):
            p.chmod(0o555)
    try:
        res = cli("tasks", "--json")
        assert res.exit_code == 0, res.output
        assert [t["name"] for t in json.loads(res.stdout)] == ["colour"]
        assert cli("task", "show", "colour").exit_code == 0
        _one_line_error(cli("add-task", llava_file, "--name", "again"), EXIT_FAILURE, "is read-only here")
    finally:
        for p in (home, home / "hicl.db"):
            p.chmod(0o755)
    gc.collect()
    assert (home / "hicl.db").read_bytes() == before and _task_dirs(home) == ["colour"]


@pytest.mark.parametrize("url,code,phrase", [
    ("::not a url", EXIT_INVALID_INPUT, "is not a database URL"),
    ("sqlite:///{tmp}/no/such/folder/hicl.db", EXIT_INVALID_INPUT, "does not exist"),
    ("mysql://me@127.0.0.1/hicl", EXIT_INVALID_INPUT, "needs a database driver that is not installed"),
    ("postgresql+psycopg://me:s3cret@127.0.0.1:1/hicl", EXIT_FAILURE, "cannot reach the catalog server"),
])
def test_a_bad_catalog_url_is_one_line(cli, tmp_path, monkeypatch, url, code, phrase):
    monkeypatch.setenv("HICL_DB_URL", url.format(tmp=tmp_path))
    err = _one_line_error(cli("tasks"), code, phrase)
    assert "s3cret" not in err
    assert not (tmp_path / "no").exists()


# --- a full disk ----------------------------------------------------------------------------------
def test_a_full_disk_during_add_task_leaves_nothing_behind(cli, home, llava_file, monkeypatch):
    assert cli("tasks").exit_code == 0

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("hicl_app.core.fsio.os.fsync", full)
    _one_line_error(cli("add-task", llava_file), EXIT_FAILURE, "no space left on the device")
    monkeypatch.undo()
    assert _task_dirs(home) == [] and _count(home / "hicl.db", "tasks") == 0


def test_a_full_disk_during_run_start_records_no_run(cli, home, llava_file, tmp_path, monkeypatch):
    """SQLite's own SQLITE_FULL, from a catalog that may not grow by a single page."""
    from hicl_app.catalog import db

    assert cli("add-task", llava_file).exit_code == 0
    real = db._sqlite_pragmas

    def no_room(dbapi_conn, record):
        real(dbapi_conn, record)
        cur = dbapi_conn.cursor()
        pages = cur.execute("PRAGMA page_count").fetchone()[0]
        cur.execute(f"PRAGMA max_page_count={pages}")
        cur.close()

    monkeypatch.setattr(db, "_sqlite_pragmas", no_room)
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "colour", "--base", _base(tmp_path), "--no-worker",
              "--name", "x" * 20_000)
    _one_line_error(res, EXIT_FAILURE, "is full; nothing was changed")
    monkeypatch.undo()
    gc.collect()
    assert _count(home / "hicl.db", "runs") == 0 and _count(home / "hicl.db", "jobs") == 0


# --- the write lock held past the busy timeout ----------------------------------------------------
def _hold_write_lock(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


@pytest.mark.parametrize("command", ["add-task", "run start"])
def test_a_held_write_lock_is_waited_for_then_named(cli, home, llava_file, tmp_path, monkeypatch, command):
    assert cli("add-task", llava_file, "--name", "first").exit_code == 0
    gc.collect()
    monkeypatch.setattr("hicl_app.catalog.db.BUSY_TIMEOUT_MS", 50)
    monkeypatch.setattr("hicl_app.catalog.queue.BUSY_RETRY_SECONDS", 0.5)
    args = (["add-task", llava_file] if command == "add-task" else
            ["run", "start", "--method", "seq-lora", "--tasks", "first", "--base", _base(tmp_path), "--no-worker"])
    lock = _hold_write_lock(home / "hicl.db")
    try:
        _one_line_error(cli(*args), EXIT_FAILURE, "stayed locked by another process", "nothing was changed")
    finally:
        lock.rollback()
    assert _task_dirs(home) == ["first"] and _count(home / "hicl.db", "runs") == 0

    # held for less than the retry budget: the command waits, then succeeds
    monkeypatch.setattr("hicl_app.catalog.queue.BUSY_RETRY_SECONDS", 30.0)
    lock = _hold_write_lock(home / "hicl.db")
    threading.Thread(target=lambda: (time.sleep(0.7), lock.rollback()), daemon=True).start()
    res = cli(*args)
    assert res.exit_code == 0, res.output
    assert _task_dirs(home) == (["colour", "first"] if command == "add-task" else ["first"])


# --- progress and status --------------------------------------------------------------------------
@pytest.fixture
def cat(home):
    from hicl_app.catalog.db import Catalog
    from hicl_app.core.settings import Settings

    catalog = Catalog(Settings.resolve())
    yield catalog
    catalog.dispose()


def _claimed_sleep_job(cat, owner: str):
    from hicl_app.catalog import queue

    job_id = queue.enqueue(cat, "sleep", {"ticks": 2})
    job = queue.claim(cat, owner)
    assert job is not None and job.id == job_id
    return job


def test_a_child_killed_by_sigkill_shows_the_tries_it_used(cli, cat, home):
    """The queue fails a job whose process was killed (it is not retried): `hicl jobs` must not
    show "1/3", which promises two more tries."""
    from hicl_app.worker.loop import Worker

    job = _claimed_sleep_job(cat, "w1")
    log = home / "logs" / f"job-{job.id}.log"
    assert Worker(cat, owner="w1")._after_child(job, -9, None, log) == "failed"
    line = next(x for x in cli("jobs").stdout.splitlines() if x.split()[:1] == [str(job.id)])
    assert line.split()[2:4] == ["failed", "1"], line
    queued = _claimed_sleep_job(cat, "w1")  # a running job still shows what it may use
    line = next(x for x in cli("jobs").stdout.splitlines() if x.split()[:1] == [str(queued.id)])
    assert "1/3" in line.split(), line


@pytest.mark.parametrize("how", ["killed-on-lost-lease", "child-saw-it-lost"])
def test_a_worker_whose_job_was_stolen_says_it_lost_it(cat, home, how):
    from sqlalchemy import update

    from hicl_app.catalog import queue
    from hicl_app.catalog.models import Job
    from hicl_app.worker.child import CHILD_LOST
    from hicl_app.worker.loop import Worker

    job = _claimed_sleep_job(cat, "w1")
    with cat.session() as s:  # w1 stalled past its lease; w2 took the job over and finished it
        s.execute(update(Job).where(Job.id == job.id).values(lease_expires_at=Job.created_at))
    assert queue.claim(cat, "w2").id == job.id
    assert queue.finish(cat, job.id, "done", owner="w2")
    rc, killed = (-9, "lease") if how == "killed-on-lost-lease" else (CHILD_LOST, None)
    assert Worker(cat, owner="w1")._after_child(job, rc, killed, home / "logs" / "x.log") == "lost"
    assert queue.get_job(cat, job.id).status == "done"


def test_progress_does_not_lag_the_checkpoint(cat, home):
    """The engine reports progress at most once a second; at a checkpoint the stored progress
    catches up with the step a resume would start from."""
    import io

    from hicl_app.catalog import queue
    from hicl_app.catalog.models import Stage
    from hicl_app.catalog.runs import create_run
    from hicl_app.worker.context import JobContext
    from hicl_app.worker.stage import _Reporter

    with cat.session() as s:
        run = create_run(s, name="r", method="seq-lora", base_model="b", task_order=["a"], stages=[["a"]], config={})
    job = queue.claim(cat, "w1")
    with cat.session() as s:
        stage = s.get(Stage, job.stage_id)
    reporter = _Reporter(JobContext(cat, job, "w1", io.StringIO()), stage, every=3600)
    reporter({"type": "progress", "step": 1, "total": 10, "loss": 2.0, "samples_per_s": 5.0, "eta_s": 9.0})
    for step in range(1, 5):
        reporter({"type": "loss", "step": step, "loss": 2.0 - step / 10, "lr": 1e-3})
    reporter({"type": "before_checkpoint", "step": 4})
    progress = queue.get_job(cat, job.id).progress
    assert (progress["step"], progress["total"], progress["loss"]) == (4, 10, pytest.approx(1.6))
    assert run.id == job.run_id


def test_a_task_file_gone_is_named_as_such(cli, home, llava_file, tmp_path):
    assert cli("add-task", llava_file).exit_code == 0
    (home / "tasks" / "colour" / "train.jsonl").unlink()
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "colour", "--base", _base(tmp_path), "--no-worker")
    err = _one_line_error(res, EXIT_INVALID_INPUT, "its task file", "train.jsonl is gone")
    assert "image(s)" not in err


# --- checkpoints fenced by the lease --------------------------------------------------------------
def _stolen_reporter(cat):
    """A stage job's reporter whose lease went to another worker."""
    import io

    from sqlalchemy import update

    from hicl_app.catalog import queue
    from hicl_app.catalog.models import Job, Stage
    from hicl_app.catalog.runs import create_run
    from hicl_app.worker.context import JobContext
    from hicl_app.worker.stage import _Reporter

    with cat.session() as s:
        create_run(s, name="r", method="seq-lora", base_model="b", task_order=["a"], stages=[["a"]], config={})
    job = queue.claim(cat, "w1")
    with cat.session() as s:
        stage = s.get(Stage, job.stage_id)
        s.execute(update(Job).where(Job.id == job.id).values(lease_owner="w2"))
    reporter = _Reporter(JobContext(cat, job, "w1", io.StringIO()), stage, every=3600)
    reporter.last_flush = time.monotonic()  # only a checkpoint flushes
    return reporter


def test_a_job_that_lost_its_lease_vetoes_its_checkpoint(cat, home):
    """In one process: the reporter raises at "before_checkpoint", which the engine lets through
    before writing anything (engine/train/loop.py)."""
    from hicl_app.catalog.queue import LeaseLost

    reporter = _stolen_reporter(cat)
    reporter({"type": "loss", "step": 1, "loss": 1.0, "lr": 1e-3})
    with pytest.raises(LeaseLost):
        reporter({"type": "before_checkpoint", "step": 1})


def test_rank0_writes_no_checkpoint_the_launcher_vetoed_or_did_not_confirm(cat, home):
    """Several ranks: the launcher answers a refused "before_checkpoint" with "veto" (not silence,
    which used to let rank 0 write once the launcher was gone), and rank 0 raises on anything but
    an "ack"."""
    import socket

    from hicl_app.catalog.queue import LeaseLost
    from hicl_app.engine.distributed import launch, rank
    from hicl_app.engine.errors import CheckpointRefused

    class Running:
        def poll(self):
            return None

    # the launcher's side: the reporter refuses, the launcher says "veto" and re-raises
    ours, theirs = socket.socketpair()
    theirs.sendall(json.dumps({"type": "event", "event": {"type": "before_checkpoint", "step": 1}}).encode() + b"\n")
    with pytest.raises(LeaseLost):
        launch._relay(ours, Running(), _stolen_reporter(cat), None)
    theirs.settimeout(5)
    assert json.loads(theirs.recv(1024).decode().splitlines()[0]) == {"type": "veto"}
    theirs.close()

    # rank 0's side: a veto, then a launcher that hangs up without an answer
    for answer in (b'{"type": "veto"}\n', b""):
        with socket.create_server(("127.0.0.1", 0)) as server:
            relay = rank.Relay(f"127.0.0.1:{server.getsockname()[1]}")
            conn, _ = server.accept()
            with conn:
                relay.send({"type": "event", "event": {"type": "loss", "step": 1}})
                threading.Thread(target=lambda c=conn, a=answer: (c.recv(4096), a and c.sendall(a), c.close()),
                                 daemon=True).start()
                with pytest.raises(CheckpointRefused, match="nothing was written"):
                    relay.event({"type": "before_checkpoint", "step": 1})
            assert relay.should_stop()

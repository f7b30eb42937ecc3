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

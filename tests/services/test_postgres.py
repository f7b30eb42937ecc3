"""The queue tests and the three-worker drain again, with the catalog on a real PostgreSQL server
(claims use FOR UPDATE SKIP LOCKED there).

The server: HICL_TEST_PG_URL (an existing server and a role that may create databases, e.g.
postgresql+psycopg://user@127.0.0.1:5432/postgres), else a throwaway cluster started here
with initdb + pg_ctl from /usr/lib/postgresql/*/bin (Debian's `postgresql` package; .ci/run
installs it), as an unprivileged user when run as root, on a free loopback port, and removed at
the end. Each test gets its own database. Skipped, with the reason, only when no server can be
had (and failed instead where HICL_TEST_PG_REQUIRED is set, as .ci/run does once it installed one).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from test_queue import (  # noqa: F401  (collected here again, with the PostgreSQL `cat` below)
    test_a_worker_that_lost_its_lease_can_write_nothing,
    test_busy_database_errors_are_retried_others_are_not,
    test_cancel_queued_at_once_running_on_request_and_dead_worker_ends_cancelled,
    test_concurrent_claims_never_share_a_job,
    test_dead_local_owner_is_requeued_at_once_live_one_is_not,
    test_expired_lease_is_requeued_then_failed_after_max_attempts,
    test_failure_fails_run_and_cancels_later_stages,
    test_heartbeat_extends_only_own_lease,
    test_jobs_of_no_run_and_listing,
    test_release_gives_the_job_back_without_counting_an_attempt,
    test_retry_and_resume,
    test_stages_claimed_in_order_only_after_predecessor,
)
from test_worker_drain import drain

from hicl_app.catalog.db import Catalog
from hicl_app.core.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user() -> list[str]:
    """Run the server's programs as `nobody` when we are root (postgres refuses root)."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "nobody", "--"]
    su = shutil.which("su")
    if su:
        return [su, "-s", "/bin/sh", "nobody", "-c", '"$0" "$@"']
    raise RuntimeError("running as root and neither runuser nor su is available to drop privileges")


def _start_cluster() -> tuple[str, callable]:
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        raise RuntimeError("no PostgreSQL server programs in /usr/lib/postgresql/*/bin "
                           "(install Debian's `postgresql` package, or set HICL_TEST_PG_URL)")
    bindir = Path(bins[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="hicl-pg-"))
    prefix = _as_user()
    if prefix:
        os.chmod(root, 0o755)
        shutil.chown(root, user="nobody")
    data, port = root / "data", _free_port()

    def run(*cmd):
        proc = subprocess.run([*prefix, *map(str, cmd)], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(str(cmd[0])).name} failed: {(proc.stderr or proc.stdout).strip()[-400:]}")

    run(bindir / "initdb", "-D", data, "-U", "hicl", "--auth=trust", "-E", "UTF8", "--no-sync")
    run(bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-t", "60", "start", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100")

    def stop() -> None:
        try:
            run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)

    return f"postgresql+psycopg://hicl@127.0.0.1:{port}/postgres", stop


@pytest.fixture(scope="module")
def pg_server() -> str:
    """An admin URL of a PostgreSQL server for this module."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests skipped: the psycopg driver is not installed (pip install -e '.[dev]')")
    external = os.environ.get("HICL_TEST_PG_URL")
    if external:
        yield external
        return
    try:
        url, stop = _start_cluster()
    except (RuntimeError, OSError, subprocess.SubprocessError, LookupError) as exc:
        if os.environ.get("HICL_TEST_PG_REQUIRED"):
            pytest.fail(f"HICL_TEST_PG_REQUIRED is set but no PostgreSQL server could be started: {exc}")
        pytest.skip(f"PostgreSQL tests skipped: no server could be started here: {exc}")
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, empty database on the server; dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"hicl_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def cat(pg_url, tmp_path) -> Catalog:
    catalog = Catalog(Settings.resolve(tmp_path / "ws", db_url=pg_url))
    assert catalog.engine.dialect.name == "postgresql"
    yield catalog
    catalog.dispose()


def test_migrations_reach_head_on_postgres(cat):
    from hicl_app.catalog import db

    assert db.current_revision(cat.engine) == db.HEAD_REVISION


def test_three_workers_drain_200_jobs_on_postgres(pg_url, tmp_path):
    drain(tmp_path / "ws", pg_url, tmp_path)

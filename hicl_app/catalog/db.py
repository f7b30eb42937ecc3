"""Opening the catalog: engine with the right SQLite pragmas, migrations run at start.

Two catalogs are refused rather than opened: an in-memory one (whatever a command records
would be gone when it ends), and a fresh one in a workspace that already holds tasks, adapters
or checkpoints (a lost or truncated hicl.db would otherwise be re-created empty, silently
orphaning that data; `hicl init --force` is the deliberate way to start over).
"""

from __future__ import annotations

from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator

from sqlalchemy import event, inspect, make_url, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from ..core.errors import Conflict, InvalidInput
from ..core.settings import Settings
from .paths import bind_workspace

# The newest Alembic revision in migrations/versions. Checked against Alembic's own head by a
# test, and used so that a catalog already at head is opened without importing Alembic.
HEAD_REVISION = "0005_job_not_before"
BUSY_TIMEOUT_MS = 30_000
DATA_DIRS = ("tasks", "adapters", "checkpoints")  # a workspace holding any of these has had a catalog


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        eng = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
        event.listen(eng, "connect", _sqlite_pragmas)
        return eng
    return create_engine(url, pool_pre_ping=True)


def migrations_dir() -> str:
    return str(resources.files("hicl_app._migrations"))


def alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", migrations_dir())
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head", *, home: Path | None = None) -> None:
    """Bring the catalog to `revision`; cheap no-op when it is already at head.

    `home` is the workspace the catalog belongs to: revisions that rewrite stored paths
    (0004_relative_paths) need it, and only the caller knows it when HICL_DB_URL points elsewhere.
    """
    if revision == "head" and current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command

    cfg = alembic_config(engine)
    cfg.attributes["home"] = home
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def refuse_in_memory(url: str) -> None:
    """An in-memory SQLite catalog lives only as long as one command: refuse it."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and (
            database in ("", ":memory:") or database.startswith("file::memory:") or parsed.query.get("mode") == "memory"):
        raise InvalidInput(f"the catalog URL {url!r} is an in-memory database: everything a command records "
                           "would be lost when it ends",
                           hint="unset HICL_DB_URL to use the workspace's hicl.db, or point it at a file "
                                "(sqlite:////path/to/hicl.db) or a server")


def _holds_no_catalog(engine: Engine) -> bool:
    """True when opening would create the catalog from nothing. A missing or zero-byte SQLite file
    is told without connecting, which would write to it."""
    if engine.url.get_backend_name() == "sqlite":
        db = Path(engine.url.database)
        wal = db.with_name(db.name + "-wal")
        if not db.exists() or (db.stat().st_size == 0 and not (wal.exists() and wal.stat().st_size)):
            return True
    return current_revision(engine) is None


def refuse_fresh_beside_data(engine: Engine, settings: Settings) -> None:
    """Refuse to create a fresh catalog in a workspace whose folders hold data."""
    if not _holds_no_catalog(engine):
        return
    full = [name for name in DATA_DIRS
            if (settings.home / name).is_dir() and any(not p.name.startswith(".") for p in (settings.home / name).iterdir())]
    if full:
        raise Conflict(f"the catalog {engine.url.render_as_string(hide_password=True)} is missing or empty, but the "
                       f"workspace {settings.home} holds data in {', '.join(f'{n}/' for n in full)}: refusing to "
                       "start an empty catalog beside it",
                       hint="restore hicl.db from a backup, or run `hicl init --force` to start an empty catalog "
                            "anyway (the files stay on disk, unknown to it)")


class Catalog:
    """A migrated catalog for one workspace; `fresh=True` allows starting an empty one beside
    existing workspace data (`hicl init --force`)."""

    def __init__(self, settings: Settings, *, migrate: bool = True, fresh: bool = False):
        self.settings = settings
        refuse_in_memory(settings.db_url)
        if settings.db_url.startswith("sqlite"):
            settings.ensure()
        self.engine = make_engine(settings.db_url)
        bind_workspace(self.engine, settings)
        if migrate:
            if not fresh:
                refuse_fresh_beside_data(self.engine, settings)
            upgrade(self.engine, home=settings.home)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        with Session(self.engine, expire_on_commit=False) as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


def open_catalog(settings: Settings | None = None) -> Catalog:
    return Catalog(settings or Settings.resolve())

"""Opening the catalog: engine with the right SQLite pragmas, migrations run at start.

Two catalogs are refused rather than opened: an in-memory one (whatever a command records
would be gone when it ends), and a fresh one in a workspace that already holds tasks, adapters
or checkpoints (a lost or truncated hicl.db would otherwise be re-created empty, silently
orphaning that data; `hicl init --force` is the deliberate way to start over).

Whatever else goes wrong when a catalog is opened or written (a URL that does not parse, a
missing driver or folder, a server that does not answer, a file that is not a database, a
catalog from a newer hicl, the write lock held too long, a full disk, a read-only workspace)
becomes a `HiclError` with one line saying what and how to fix it (`explain_db_error`). A
SQLite catalog in a workspace this process cannot write is opened read-only, so that the
commands that only read it still work there.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator

from sqlalchemy import event, exc as sa_exc, inspect, make_url, text
from sqlalchemy.engine import URL, Engine
from sqlmodel import Session, create_engine

from ..core.errors import Conflict, HiclError, InvalidInput
from ..core.settings import Settings
from .paths import bind_workspace

# The newest Alembic revision in migrations/versions. Checked against Alembic's own head by a
# test, and used so that a catalog already at head is opened without importing Alembic.
HEAD_REVISION = "0006_job_not_before"
BUSY_TIMEOUT_MS = 30_000
DATA_DIRS = ("tasks", "adapters", "checkpoints")  # a workspace holding any of these has had a catalog


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_read_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for `url`; `read_only` (SQLite) opens the file with mode=ro, and immutable=1 when
    no -shm file exists beside it (SQLite cannot create one in a read-only folder; then nothing
    can be writing the catalog either, as no write can happen without it)."""
    parsed = parse_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            args = {"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
            if read_only:
                db = Path(parsed.database)
                flags = "mode=ro" + ("" if db.with_name(db.name + "-shm").exists() else "&immutable=1")
                eng = create_engine(f"sqlite:///file:{db}?{flags}&uri=true", connect_args=args)
                event.listen(eng, "connect", _sqlite_read_pragmas)
            else:
                eng = create_engine(url, connect_args=args)
                event.listen(eng, "connect", _sqlite_pragmas)
            return eng
        return create_engine(url, pool_pre_ping=True)
    except (sa_exc.NoSuchModuleError, ImportError) as exc:
        raise InvalidInput(f"the catalog URL {_shown(parsed)} needs a database driver that is not installed "
                           f"({exc})", hint=_driver_hint(parsed)) from None


def parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except sa_exc.ArgumentError:
        raise InvalidInput(f"the catalog URL {url!r} is not a database URL",
                           hint="set HICL_DB_URL to sqlite:////path/to/hicl.db or "
                                "postgresql+psycopg://user@host/db, or unset it to use the workspace's hicl.db") from None


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _driver_hint(url: URL) -> str:
    if url.get_backend_name() == "postgresql":
        return ("install a PostgreSQL driver and name it in the URL: pip install 'psycopg[binary]' and "
                "postgresql+psycopg://...")
    return "install the driver the URL names, or fix HICL_DB_URL"


def explain_db_error(exc: BaseException, url: str) -> HiclError | None:
    """The one line a user reads for a database error a command ran into; None when `exc` is not
    one we can explain (it is then a bug, and its traceback is the useful thing)."""
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    shown = _shown(parse_url(url))
    detail = " ".join(str(getattr(exc, "orig", exc)).split()) or type(exc).__name__
    low = detail.lower()
    if "database is locked" in low or "database is busy" in low or "database table is locked" in low:
        from .queue import busy_budget

        return HiclError(f"the catalog {shown} stayed locked by another process for more than {busy_budget():.0f}s; "
                         "nothing was changed",
                         hint="a worker or another hicl command holds its write lock: try again when it is done, "
                              "or find a stuck process with `fuser` on the catalog file")
    if "file is not a database" in low or "malformed" in low or "not a database" in low:
        return HiclError(f"the catalog {shown} is not a SQLite database or is damaged ({detail})",
                         hint="restore hicl.db from a backup; or move it aside and run `hicl init --force` to "
                              "start an empty catalog (the workspace's files stay, unknown to it)")
    if "readonly database" in low or "read-only" in low:
        return HiclError(f"the catalog {shown} is read-only here (the workspace cannot be written by this "
                         "user), and this command needs to write to it",
                         hint="run it as the workspace's owner, or on a writable copy (cp -a WORKSPACE COPY "
                              "and --home COPY); commands that only read work as they are")
    if "disk is full" in low or "no space left" in low:
        return HiclError(f"the disk holding the catalog {shown} is full; nothing was changed",
                         hint="free some space and run the command again")
    if "unable to open database file" in low:
        return HiclError(f"cannot open the catalog {shown}: its folder is missing or cannot be written",
                         hint="create the folder, fix its permissions, or fix HICL_DB_URL")
    if isinstance(exc, sa_exc.OperationalError) and not shown.startswith("sqlite"):
        return HiclError(f"cannot reach the catalog server {shown}: {detail[:300]}",
                         hint="start the database server, or fix HICL_DB_URL (host, port, user, database)")
    if isinstance(exc, sa_exc.OperationalError):
        return HiclError(f"the catalog {shown} failed: {detail[:300]}")
    return None


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


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
    current = current_revision(engine)
    if revision == "head" and current == HEAD_REVISION:
        return
    from alembic import command
    from alembic.util import CommandError

    cfg = alembic_config(engine)
    cfg.attributes["home"] = home
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except CommandError as exc:
        if "can't locate revision" not in str(exc).lower():
            raise
        raise HiclError(f"the catalog {_shown(engine.url)} was created by a newer hicl (revision {current}); "
                        f"this one knows revisions up to {HEAD_REVISION}",
                        hint="upgrade hicl (pip install -U hicl) to open it; nothing was changed") from None


def refuse_in_memory(url: str) -> None:
    """An in-memory SQLite catalog lives only as long as one command: refuse it."""
    parsed = parse_url(url)
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
        url = parse_url(settings.db_url)
        #: True when the workspace's SQLite catalog can only be read here (see the module docstring)
        self.read_only = False
        if url.get_backend_name() == "sqlite":
            self.read_only = self._sqlite_folders(settings, Path(url.database))
        self.engine = make_engine(settings.db_url, read_only=self.read_only)
        bind_workspace(self.engine, settings)
        try:
            if self.read_only:
                if current_revision(self.engine) != HEAD_REVISION:
                    raise HiclError(f"the catalog {_shown(url)} is read-only here and needs migrating to this "
                                    "hicl's schema", hint="run any command once where the workspace is writable")
            elif migrate:
                if not fresh:
                    refuse_fresh_beside_data(self.engine, settings)
                upgrade(self.engine, home=settings.home)
        except sa_exc.DBAPIError as exc:
            self.engine.dispose()
            raise (explain_db_error(exc, settings.db_url) or exc) from None

    @staticmethod
    def _sqlite_folders(settings: Settings, db: Path) -> bool:
        """Create the workspace's folders where it can be written; True when the catalog file can
        only be read (it exists, but it or its folder is not writable by this process)."""
        folder = db.parent
        if not folder.is_dir() and not db.is_relative_to(settings.home):
            raise InvalidInput(f"the folder {folder} of the catalog {db} does not exist",
                               hint="create it, or fix HICL_DB_URL (unset, it uses the workspace's hicl.db)")
        if db.exists() and not (_writable(folder) and _writable(db)):
            return True
        if folder.is_dir() and not _writable(folder):
            raise HiclError(f"the folder {folder} holds no catalog and cannot be written: there is nothing to "
                            "read and nowhere to start one",
                            hint="fix its permissions, or choose another workspace with --home or HICL_HOME")
        settings.ensure()
        return False

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

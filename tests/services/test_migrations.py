"""The catalog schema: migrations reach head, match the models, and set the SQLite pragmas."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from hicl_app.catalog import db
from hicl_app.core.settings import Settings

TABLES = {"tasks", "runs", "stages", "adapters", "scores", "curve_points", "jobs", "events"}


def test_upgrade_empty_db_to_head_without_drift(tmp_path):
    catalog = db.Catalog(Settings.resolve(tmp_path))
    with catalog.engine.connect() as conn:
        assert TABLES <= set(inspect(conn).get_table_names())
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "render_as_batch": True})
        diff = compare_metadata(ctx, SQLModel.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"
    assert db.current_revision(catalog.engine) == db.HEAD_REVISION


def test_head_constant_matches_alembic_scripts(tmp_path):
    catalog = db.Catalog(Settings.resolve(tmp_path), migrate=False)
    script = ScriptDirectory.from_config(db.alembic_config(catalog.engine))
    assert script.get_current_head() == db.HEAD_REVISION


def test_sqlite_pragmas(tmp_path):
    catalog = db.Catalog(Settings.resolve(tmp_path))
    with catalog.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar().lower() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == db.BUSY_TIMEOUT_MS


def test_db_url_override(tmp_path, monkeypatch):
    other = tmp_path / "elsewhere.db"
    monkeypatch.setenv("HICL_DB_URL", f"sqlite:///{other}")
    settings = Settings.resolve(tmp_path / "ws")
    db.Catalog(settings)
    assert other.is_file() and not (tmp_path / "ws" / "hicl.db").exists()

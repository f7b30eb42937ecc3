"""relative paths: path columns pointing into the workspace are stored relative to it

Revision ID: 0004_relative_paths
Revises: 0003_cka
Create Date: 2026-11-23 10:00:00.000000

No schema change: the columns stay strings (hicl_app.catalog.paths.WorkspacePath resolves them
against the current workspace when read). This rewrites the absolute values an older hicl stored.

The workspace cannot be read off the catalog alone (HICL_DB_URL may put it anywhere, a server
included), so the conversion runs where it is known: `hicl_app.catalog.db.upgrade`, called at
open time with the workspace's Settings, hands `home` to Alembic in `config.attributes`. Run from
the bare alembic CLI, the home is the folder of the SQLite file when it is a workspace's
`hicl.db`; otherwise nothing is rewritten, which is safe: absolute values are read as they are.
A row pointing into another workspace (a catalog copied with `cp -a`) stays absolute, and
`hicl task rm` refuses to delete outside the current workspace.
"""
from pathlib import Path, PurePath

import sqlalchemy as sa
from alembic import context, op

revision = '0004_relative_paths'
down_revision = '0003_cka'
branch_labels = None
depends_on = None

# frozen here: the path columns as of this revision
COLUMNS = {
    'tasks': ('source_path', 'images_dir', 'test_source_path', 'data_dir'),
    'adapters': ('path',),
    'scores': ('predictions_path',),
    'jobs': ('log_path',),
}


def _home() -> Path | None:
    home = context.config.attributes.get('home')
    if home is not None:
        return Path(home)
    url = op.get_bind().engine.url
    if url.get_backend_name() == 'sqlite' and url.database and Path(url.database).name == 'hicl.db':
        return Path(url.database).resolve().parent
    return None


def _relative(value: str, home: Path) -> str:
    path = PurePath(value)
    return path.relative_to(home).as_posix() if path.is_absolute() and path.is_relative_to(home) else value


def _absolute(value: str, home: Path) -> str:
    return value if PurePath(value).is_absolute() else str(home / value)


def _rewrite(convert) -> None:
    home = _home()
    if home is None:
        return
    conn = op.get_bind()
    for name, columns in COLUMNS.items():
        table = sa.table(name, sa.column('id'), *(sa.column(c) for c in columns))
        for row in conn.execute(sa.select(table)).mappings().all():
            changed = {c: convert(row[c], home) for c in columns if row[c] is not None}
            changed = {c: v for c, v in changed.items() if v != row[c]}
            if changed:
                conn.execute(table.update().where(table.c.id == row['id']).values(**changed))


def upgrade() -> None:
    _rewrite(_relative)


def downgrade() -> None:
    _rewrite(_absolute)

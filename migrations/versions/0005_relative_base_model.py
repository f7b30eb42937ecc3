"""relative base model: a run's base model folder inside the workspace is stored as ./RELATIVE

Revision ID: 0005_relative_base_model
Revises: 0004_relative_paths
Create Date: 2026-12-03 06:00:00.000000

No schema change. runs.base_model holds a hub id or a folder; a folder inside the workspace (the
demo's base in cache/) was stored absolute, so a moved workspace could not resume its runs. It is
now `./` plus its path relative to the workspace (hicl_app.catalog.paths.ModelRef), a prefix no
hub id has. The workspace is found as in 0004_relative_paths; rows pointing elsewhere stay.
"""
from pathlib import Path, PurePath

import sqlalchemy as sa
from alembic import context, op

revision = '0005_relative_base_model'
down_revision = '0004_relative_paths'
branch_labels = None
depends_on = None

PREFIX = './'


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
    if path.is_absolute() and path.is_relative_to(home):
        return PREFIX + path.relative_to(home).as_posix()
    return value


def _absolute(value: str, home: Path) -> str:
    return str(home / value[len(PREFIX):]) if value.startswith(PREFIX) else value


def _rewrite(convert) -> None:
    home = _home()
    if home is None:
        return
    conn = op.get_bind()
    runs = sa.table('runs', sa.column('id'), sa.column('base_model'))
    for row in conn.execute(sa.select(runs)).mappings().all():
        value = convert(row['base_model'], home)
        if value != row['base_model']:
            conn.execute(runs.update().where(runs.c.id == row['id']).values(base_model=value))


def upgrade() -> None:
    _rewrite(_relative)


def downgrade() -> None:
    _rewrite(_absolute)

"""Path columns that follow the workspace: stored relative to it, read back absolute.

A catalog that stored absolute paths pointed a copied workspace (`cp -a ws ws2`) at the
original's files, so `hicl task rm` in the copy deleted the original's task data, and a moved
workspace lost its tasks and adapters. A `WorkspacePath` column goes through `Settings.rel` on
every write (ORM and Core statements alike) and `Settings.resolve_path` on every read, so the
code above the catalog only ever sees absolute paths of the workspace the catalog was opened for.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.types import TypeDecorator
from sqlmodel.sql.sqltypes import AutoString

from ..core.settings import Settings

_ATTR = "hicl_settings"


def bind_workspace(engine: Engine, settings: Settings) -> None:
    """Make `engine`'s WorkspacePath columns relative to `settings.home` (one dialect per engine)."""
    setattr(engine.dialect, _ATTR, settings)


class WorkspacePath(TypeDecorator):
    """A string column holding a file system path; see the module docstring. On an engine that
    `bind_workspace` was not called for, values pass through unchanged."""

    impl = AutoString
    cache_ok = True

    def process_bind_param(self, value, dialect):
        settings = getattr(dialect, _ATTR, None)
        return value if value is None or settings is None else settings.rel(value)

    def process_result_value(self, value, dialect):
        settings = getattr(dialect, _ATTR, None)
        return value if value is None or settings is None else str(settings.resolve_path(value))

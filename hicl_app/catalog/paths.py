"""Path columns that follow the workspace: stored relative to it, read back absolute.

A catalog that stored absolute paths pointed a copied workspace (`cp -a ws ws2`) at the
original's files, so `hicl task rm` in the copy deleted the original's task data, and a moved
workspace lost its tasks and adapters. A `WorkspacePath` column goes through `Settings.rel` on
every write (ORM and Core statements alike) and `Settings.resolve_path` on every read, so the
code above the catalog only ever sees absolute paths of the workspace the catalog was opened for.

A run's base model is a hub id or a folder (`ModelRef`): a folder inside the workspace (the demo's
tiny base in cache/) is stored as `./` and its workspace-relative path, a prefix no hub id has
(`hicl run start` refuses a `--base` starting with "." that is not a folder), so a moved workspace
resumes its runs on its own copy of the base.
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


WORKSPACE_PREFIX = "./"


class ModelRef(TypeDecorator):
    """A hub id or a model folder; see the module docstring."""

    impl = AutoString
    cache_ok = True

    def process_bind_param(self, value, dialect):
        settings = getattr(dialect, _ATTR, None)
        if value is None or settings is None or value.startswith(WORKSPACE_PREFIX) or not value.startswith("/"):
            return value
        stored = settings.rel(value)
        return value if stored.startswith("/") else WORKSPACE_PREFIX + stored

    def process_result_value(self, value, dialect):
        settings = getattr(dialect, _ATTR, None)
        if value is None or settings is None or not value.startswith(WORKSPACE_PREFIX):
            return value
        return str(settings.resolve_path(value[len(WORKSPACE_PREFIX):]))

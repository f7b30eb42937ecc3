"""One object that resolves the workspace: where the catalog, adapters and logs live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = Path("~/.hicl")
SUBDIRS = ("adapters", "checkpoints", "logs", "cache", "tasks", "runs")


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str

    @classmethod
    def resolve(cls, home: str | os.PathLike | None = None, db_url: str | None = None) -> "Settings":
        """`--home` beats `HICL_HOME` beats ~/.hicl; `HICL_DB_URL` overrides the SQLite file."""
        raw = home or os.environ.get("HICL_HOME") or DEFAULT_HOME
        home_path = Path(raw).expanduser().resolve()
        url = db_url or os.environ.get("HICL_DB_URL") or f"sqlite:///{home_path / 'hicl.db'}"
        return cls(home=home_path, db_url=url)

    def path(self, name: str) -> Path:
        return self.home / name

    def rel(self, path: str | os.PathLike) -> str:
        """How the catalog stores `path`: relative to the workspace when it lies inside it, so
        that a moved or copied workspace reads its own files and never the original's; a path
        outside (the user's source files) stays as given. A relative path is taken as already
        workspace-relative."""
        p = Path(path)
        if not p.is_absolute():
            return p.as_posix()
        full = Path(os.path.abspath(p))
        return full.relative_to(self.home).as_posix() if full.is_relative_to(self.home) else str(path)

    def resolve_path(self, stored: str | os.PathLike) -> Path:
        """A stored path as an absolute one in this workspace (the inverse of `rel`)."""
        p = Path(stored)
        return p if p.is_absolute() else self.home / p

    @property
    def adapters(self) -> Path:
        return self.home / "adapters"

    @property
    def checkpoints(self) -> Path:
        return self.home / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def cache(self) -> Path:
        return self.home / "cache"

    @property
    def tasks(self) -> Path:
        return self.home / "tasks"

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    def ensure(self) -> "Settings":
        """Create the workspace folders (idempotent)."""
        for name in SUBDIRS:
            (self.home / name).mkdir(parents=True, exist_ok=True)
        return self

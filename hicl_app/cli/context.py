"""What every command shares: the resolved workspace and a lazily opened catalog."""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from ..core.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    _catalog: object = field(default=None, repr=False)

    @property
    def catalog(self):
        return self.open_catalog()

    def open_catalog(self, *, fresh: bool = False):
        """The catalog, opened (and migrated) on first use; `fresh` lets an empty one be started
        beside existing workspace data (`hicl init --force`)."""
        if self._catalog is None:
            from ..catalog.db import Catalog

            self._catalog = Catalog(self.settings, fresh=fresh)
        return self._catalog


pass_app = click.make_pass_decorator(AppContext)

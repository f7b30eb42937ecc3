"""`hicl init`: create (or check) a workspace."""

from __future__ import annotations

import click

from .context import AppContext, pass_app
from .output import emit_json, info


@click.command("init")
@click.option("--json", "as_json", is_flag=True, help="Print {home, db_url}.")
@click.option("--force", is_flag=True,
              help="Start an empty catalog even though the workspace holds tasks, adapters or checkpoints "
                   "(hicl.db lost or truncated and no backup). An existing catalog is never replaced.")
@pass_app
def init(app: AppContext, as_json: bool, force: bool) -> None:
    """Create the workspace folders and migrate the catalog (safe to run again)."""
    app.settings.ensure()
    app.open_catalog(fresh=force)  # opening migrates
    data = {"home": str(app.settings.home), "db_url": app.settings.db_url}
    if as_json:
        emit_json(data)
    else:
        click.echo(str(app.settings.home))
        info(f"workspace ready: {app.settings.home} (catalog {app.settings.db_url})")


COMMANDS = [init]

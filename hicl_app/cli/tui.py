"""`hicl tui`: the dashboard. Textual is imported only when the command runs."""

from __future__ import annotations

import click

from .context import AppContext, pass_app


@click.command("tui")
@click.option("--poll", type=float, default=0.5, show_default=True,
              help="Seconds between checks of the catalog for changes (a cheap pragma, not a re-read).")
@pass_app
def tui(app: AppContext, poll: float) -> None:
    """The live dashboard: tasks, runs, jobs, accuracy heatmaps and loss curves (? for help)."""
    from ..tui.app import HiclApp

    HiclApp(app.catalog, poll_interval=poll if poll > 0 else None).run()


COMMANDS = [tui]

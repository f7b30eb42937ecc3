"""`hicl tui`: the dashboard. Textual is imported only when the command runs."""

from __future__ import annotations

import click

from .context import AppContext, pass_app


@click.command("tui")
@click.option("--poll", type=float, default=0.5, show_default=True,
              help="Seconds between checks of the catalog for changes (a cheap pragma, not a re-read).")
@click.option("--no-worker", is_flag=True,
              help="A run started from the form only queues its jobs (default: start a background worker, "
                   "as `hicl run start` does, unless one is alive).")
@pass_app
def tui(app: AppContext, poll: float, no_worker: bool) -> None:
    """The live dashboard: tasks, runs, jobs, accuracy heatmaps and loss curves (? for help)."""
    from ..tui.app import HiclApp

    HiclApp(app.catalog, poll_interval=poll if poll > 0 else None, start_worker=not no_worker).run()


COMMANDS = [tui]

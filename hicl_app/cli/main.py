"""The `hicl` command. Imports nothing heavy: each command imports what it needs when it runs."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import click

from .. import __version__
from ..core.errors import EXIT_INVALID_INPUT, HiclError
from ..core.settings import Settings
from .context import AppContext


class HiclGroup(click.Group):
    """Turns a HiclError into a clear message on stderr and its named exit code; so too a full or
    read-only disk and the catalog's database errors (cli/failures.py; HICL_DEBUG=1 keeps the
    traceback of those). Click's own usage errors (an unknown option, a bad option value, a
    missing argument: input errors like any other) get the invalid-input exit code, not 2."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _usage_is_invalid_input():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context):
        try:
            with _usage_is_invalid_input():
                return super().invoke(ctx)
        except HiclError as exc:
            self._fail(ctx, exc)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            from .failures import explain

            settings = getattr(ctx.obj, "settings", None)
            err = None if os.environ.get("HICL_DEBUG") else explain(exc, settings.db_url if settings else None)
            if err is None:
                raise
            self._fail(ctx, err)

    @staticmethod
    def _fail(ctx: click.Context, exc: HiclError):
        click.echo(f"error: {exc.render()}", err=True)
        ctx.exit(exc.exit_code)


@contextmanager
def _usage_is_invalid_input():
    try:
        yield
    except click.UsageError as exc:
        exc.exit_code = EXIT_INVALID_INPUT
        raise


@click.group(cls=HiclGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="hicl")
@click.option("--home", type=click.Path(file_okay=False), envvar="HICL_HOME",
              help="Workspace folder (default ~/.hicl; env HICL_HOME). HICL_DB_URL overrides the catalog URL.")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """Continual instruction tuning of multimodal LLMs: tasks, runs, metrics, adapters.

    \b
    Exit codes: 0 ok, 1 failure (a job or run failed), 3 invalid input (a bad option, value,
    argument or file), 4 not found, 5 conflict.
    """
    ctx.obj = AppContext(Settings.resolve(home))


def _register() -> None:
    from . import (
        analyze,
        bench,
        bench_data,
        compare,
        demo,
        estimate,
        jobs,
        metrics,
        pull,
        push,
        runs,
        suites,
        tasks,
        tui,
        worker,
        workspace,
    )

    for module in (workspace, tasks, suites, runs, metrics, compare, analyze, estimate, worker, jobs, bench_data, bench, demo,
                   push, pull, tui):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    cli.main(prog_name="hicl")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Suite commands: add-suite (every task of a published benchmark), suites (what can be added)."""

from __future__ import annotations

import click

from .context import AppContext, pass_app
from .output import emit_json, info, table


@click.command("add-suite")
@click.argument("suite")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print {suite, order, tasks: [what `tasks --json` prints per task]}.")
@pass_app
def add_suite(app: AppContext, suite: str, folder: str, as_json: bool) -> None:
    """Register every task of SUITE from DIR, laid out as the suite's release publishes it, with
    the scorer its authors use per task; `run start --order SUITE` then trains them in the
    authors' order. `hicl suites` lists the suites."""
    from ..catalog.tasks import task_dict
    from ..services.suites import add_suite as add, get_suite

    tasks = add(app.catalog, suite, folder)
    if as_json:
        emit_json({"suite": get_suite(suite).name, "order": [t.name for t in tasks], "tasks": [task_dict(t) for t in tasks]})
        return
    for t in tasks:
        click.echo(t.name)
    info(f"added {len(tasks)} task(s) of {get_suite(suite).name}: "
         + ", ".join(f"{t.name} ({t.n_train}/{t.n_test}, {t.scorer})" for t in tasks))
    info(f"train them in the suite's order with `hicl run start --order {get_suite(suite).name} ...`")


@click.command("suites")
@click.option("--json", "as_json", is_flag=True,
              help="Print [{name, title, order, scorers: {task: scorer}, unavailable: why or null}].")
def suites(as_json: bool) -> None:
    """The benchmark suites `hicl add-suite` knows, their task order, or why one cannot be added."""
    from ..core.suites import SUITES

    rows = [{"name": s.name, "title": s.title, "order": s.order, "scorers": {t.name: t.scorer for t in s.tasks},
             "unavailable": s.unavailable} for s in SUITES.values()]
    if as_json:
        emit_json(rows)
        return
    click.echo(table(["suite", "order", "note"],
                     [[r["name"], " → ".join(r["order"]) or "—", r["unavailable"] or r["title"]] for r in rows]))


COMMANDS = [add_suite, suites]

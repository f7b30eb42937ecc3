"""Task commands: add-task, tasks, task show, task rm."""

from __future__ import annotations

import click

from .context import AppContext, pass_app
from .output import emit_json, info, table

SCORER_CHOICES = click.Choice(["exact", "relaxed", "choice", "caption"])


#: the keys of a task in --json output
TASK_KEYS = ("{id, name, n_train, n_test, scorer, source_format, source_path, source_sha256, test_source_path, "
             "test_source_sha256, test_fraction, split_seed, data_dir, images_dir, created_at}")


@click.command("add-task")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--name", help="Task name (default: the file's stem, or its folder for train.jsonl).")
@click.option("--images", type=click.Path(file_okay=False), help="Folder image paths resolve against (default: the file's folder).")
@click.option("--test", "test_file", type=click.Path(dir_okay=False), help="A separate test file in the same format.")
@click.option("--test-fraction", type=float, help="Split this fraction off as the test set (default 0.1 when no --test).")
@click.option("--scorer", type=SCORER_CHOICES, help="How answers are scored (default: guessed from the answers).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/test split.")
@click.option("--json", "as_json", is_flag=True, help=f"The task added: {TASK_KEYS}.")
@pass_app
def add_task(app: AppContext, file, name, images, test_file, test_fraction, scorer, seed, as_json) -> None:
    """Validate a LLaVA-format JSON/JSONL or a VQA JSONL and record it as a task."""
    from ..catalog.tasks import add_task as add, task_dict

    warnings: list[str] = []
    task = add(app.catalog, file, name=name, images=images, test_file=test_file,
               test_fraction=test_fraction, scorer=scorer, seed=seed, warn=warnings.append)
    for message in warnings:
        info(f"warning: {message}")
    if as_json:
        emit_json({**task_dict(task), "warnings": warnings})
    else:
        click.echo(task.name)
        info(f"added task {task.name!r}: {task.n_train} train / {task.n_test} test samples, "
             f"scorer {task.scorer}{'' if scorer else ' (guessed; pass --scorer to choose)'}")


@click.command("tasks")
@click.option("--json", "as_json", is_flag=True, help=f"[{TASK_KEYS}].")
@pass_app
def tasks(app: AppContext, as_json: bool) -> None:
    """List the tasks of this workspace."""
    from ..catalog.tasks import list_tasks, task_dict

    with app.catalog.session() as s:
        rows = list_tasks(s)
    if as_json:
        emit_json([task_dict(t) for t in rows])
        return
    if not rows:
        info("no tasks yet: `hicl add-task FILE` adds one")
        return
    click.echo(table(["name", "train", "test", "scorer", "format", "source"],
                     [[t.name, t.n_train, t.n_test, t.scorer, t.source_format, t.source_path] for t in rows]))


@click.group("task")
def task() -> None:
    """Show or remove one task."""


@task.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help=f"{TASK_KEYS}.")
@pass_app
def task_show(app: AppContext, name: str, as_json: bool) -> None:
    """Everything the catalog knows about a task."""
    from ..catalog.tasks import get_task, task_dict

    with app.catalog.session() as s:
        data = task_dict(get_task(s, name))
    if as_json:
        emit_json(data)
    else:
        width = max(len(k) for k in data)
        click.echo("\n".join(f"{k.ljust(width)}  {'—' if v is None else v}" for k, v in data.items()))


@task.command("rm")
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove even when runs use the task.")
@pass_app
def task_rm(app: AppContext, name: str, force: bool) -> None:
    """Remove a task from the catalog and its normalised data from the workspace."""
    from ..catalog.tasks import remove_task

    remove_task(app.catalog, name, force=force)
    info(f"removed task {name!r}")


COMMANDS = [add_task, tasks, task]

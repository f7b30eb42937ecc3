"""Tasks in the catalog: add (validated, all or nothing), list, show, remove."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from ..core.errors import Conflict, InvalidInput, NotFound
from ..core.fsio import publish_dir, staging_dir
from ..core.taskfile import (
    check_name,
    default_name,
    guess_scorer,
    overlap_warnings,
    parse_task_file,
    relative_images,
    split_records,
    write_records,
)
from .db import Catalog
from .models import Run, Task
from .queue import with_busy_retry

SCORERS = ("exact", "relaxed", "choice", "caption")


def add_task(
    catalog: Catalog,
    file: str | Path,
    *,
    name: str | None = None,
    images: str | Path | None = None,
    test_file: str | Path | None = None,
    test_fraction: float | None = None,
    scorer: str | None = None,
    seed: int = 0,
    warn: Callable[[str], None] | None = None,
) -> Task:
    """Validate every record, then write the normalised split and the catalog row together.

    Nothing is written unless everything is valid; a failure after staging removes the staged
    files, so neither the catalog nor the workspace keep half a task. `warn` hears what is valid
    but likely a mistake (a test split overlapping the training data).
    """
    file = Path(file)
    name = check_name(name or default_name(file))
    if scorer is not None and scorer not in SCORERS:
        raise InvalidInput(f"unknown scorer {scorer!r}", hint=f"choose one of {', '.join(SCORERS)}")
    if test_file is not None and test_fraction is not None:
        raise InvalidInput("--test and --test-fraction exclude each other", hint="pass one of them")
    with catalog.session() as s:
        if s.exec(select(Task).where(Task.name == name)).first():
            raise _name_taken(name)

    train = parse_task_file(file, images)
    if test_file is not None:
        test = parse_task_file(test_file, images or Path(test_file).parent)
        train_records, test_records = train.records, test.records
    else:
        test = None
        test_fraction = 0.1 if test_fraction is None else test_fraction
        train_records, test_records = split_records(train.records, test_fraction, seed)
    several = next((r for r in train_records if isinstance(r["answer"], list)), None)
    if several is not None:
        raise InvalidInput(f"{file}: record {several['id']!r} lists several answers; a training record needs one",
                           hint="several reference answers (e.g. captions) belong in the --test file")
    scorer = scorer or guess_scorer([r["answer"] for r in test_records])
    same_file = test_file is not None and Path(test_file).resolve() == file.resolve()
    for message in overlap_warnings(train_records, test_records, same_file=same_file):
        (warn or (lambda _m: None))(message)

    final = catalog.settings.tasks / name
    if final.exists():
        raise Conflict(f"the workspace already holds a folder for task {name!r} at {final}",
                       hint="remove it or choose another --name")
    staged = staging_dir(final)
    try:
        write_records(staged / "train.jsonl", relative_images(train_records, final, catalog.settings.home))
        write_records(staged / "test.jsonl", relative_images(test_records, final, catalog.settings.home))
        row = Task(
            name=name, source_path=str(file.resolve()), source_sha256=train.sha256, source_format=train.source_format,
            images_dir=str(Path(images).resolve() if images else file.resolve().parent),
            test_source_path=str(Path(test_file).resolve()) if test else None,
            test_source_sha256=test.sha256 if test else None,
            test_fraction=None if test else test_fraction, split_seed=seed,
            n_train=len(train_records), n_test=len(test_records), scorer=scorer, data_dir=str(final),
        )

        def record() -> None:
            try:
                with catalog.session() as s:
                    s.add(row)
                    s.flush()  # a concurrent add-task of the same name fails here, on the unique name
                    publish_dir(staged, final)
            except IntegrityError:
                raise _name_taken(name) from None

        with_busy_retry(record)
        return row
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        if final.exists() and not _task_exists(catalog, name):
            shutil.rmtree(final, ignore_errors=True)
        raise


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a task named {name!r} already exists", hint="choose another --name or `hicl task rm` it first")


def _task_exists(catalog: Catalog, name: str) -> bool:
    with catalog.session() as s:
        return s.exec(select(Task).where(Task.name == name)).first() is not None


def list_tasks(session: Session) -> list[Task]:
    return list(session.exec(select(Task).order_by(Task.id)))


def get_task(session: Session, name: str) -> Task:
    task = session.exec(select(Task).where(Task.name == name)).first()
    if task is None:
        raise NotFound(f"no task named {name!r}", hint="`hicl tasks` lists the tasks of this workspace")
    return task


def remove_task(catalog: Catalog, name: str, *, force: bool = False) -> None:
    with catalog.session() as s:
        task = get_task(s, name)
        users = [r.id for r in s.exec(select(Run)) if name in (r.task_order or [])]
        if users and not force:
            raise Conflict(f"task {name!r} is used by run(s) {', '.join(map(str, users))}",
                           hint="pass --force to remove it anyway (those runs can no longer resume)")
        data_dir = _own_folder(catalog, task)
        s.delete(task)
    shutil.rmtree(data_dir, ignore_errors=True)


def _own_folder(catalog: Catalog, task: Task) -> Path:
    """The task's folder, only when it is this workspace's `tasks/<name>` once resolved (symlinks
    included): a row copied from another workspace or tampered with must not delete anything."""
    expected = catalog.settings.tasks.resolve() / task.name
    if Path(task.data_dir).resolve() != expected:
        raise Conflict(f"task {task.name!r} records its data at {task.data_dir}, which is not this workspace's "
                       f"{expected}: refusing to delete it; nothing was removed",
                       hint="the catalog row comes from another workspace or was edited; fix its data_dir "
                            "or restore the workspace's catalog")
    return expected


def data_problem(task: Task, limit: int = 5) -> tuple[str, str] | None:
    """(what is wrong, how to fix it) when a task's data is no longer usable: its normalised
    train.jsonl / test.jsonl gone, or image files gone since `add-task` (checked before a run
    trains); None when all is there."""
    from ..core.taskfile import load_records

    again = f"add the task again (`hicl task rm {task.name} --force`, then `hicl add-task`)"
    missing: list[str] = []
    for split in ("train.jsonl", "test.jsonl"):
        path = Path(task.data_dir) / split
        if not path.is_file():
            return (f"task {task.name!r}: its task file {path} is gone (the workspace's tasks/{task.name} was "
                    "removed or changed outside hicl)", f"restore it from a backup, or {again}")
        for rec in load_records(path):
            if not Path(rec["image"]).is_file():
                missing.append(rec["image"])
                if len(missing) >= limit:
                    break
        if len(missing) >= limit:
            break
    if missing:
        return (f"task {task.name!r}: {len(missing)}{'+' if len(missing) >= limit else ''} image(s) went missing "
                f"since add-task, e.g. {missing[0]}", f"restore the images, or {again}")
    return None


def task_dict(task: Task) -> dict:
    d = task.model_dump()
    d["created_at"] = task.created_at.isoformat()
    return d

"""`hicl add-suite`: every task of a published benchmark in one command, and its named order.

Each task goes through `add_task`, so it is validated record by record (images included) like a
task added by hand. The captioning tasks' test files are first given their reference captions
(from the suite's COCO-format file) as lists of answers, written under the workspace's
`cache/suites/`; that file is the task's recorded test source. All or nothing: when one task
fails, the ones added before it are removed again.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..catalog.db import Catalog
from ..catalog.models import Task
from ..catalog.tasks import add_task, get_task, remove_task
from ..core.errors import Conflict, InvalidInput, NotFound
from ..core.fsio import atomic_write_text
from ..core.suites import SUITES, Suite, TaskFiles, locate


def get_suite(name: str) -> Suite:
    suite = SUITES.get(name.lower())
    if suite is None:
        raise InvalidInput(f"unknown suite {name!r}", hint=f"choose one of {', '.join(SUITES)}")
    if suite.unavailable:
        raise InvalidInput(f"suite {suite.name!r} cannot be added by this hicl: {suite.unavailable}",
                           hint="add its tasks one by one with `hicl add-task`, choosing each --scorer")
    return suite


def named_order(name: str) -> list[str]:
    """The task order `run start --order NAME` trains: a suite's, as its authors train it."""
    suite = SUITES.get(name.lower())
    if suite is None or suite.unavailable:
        known = [s for s, v in SUITES.items() if not v.unavailable]
        raise InvalidInput(f"unknown order {name!r}", hint=f"named orders: {', '.join(known)} (`hicl add-suite` adds their tasks)")
    return suite.order


def add_suite(catalog: Catalog, name: str, root: str | Path) -> list[Task]:
    suite = get_suite(name)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InvalidInput(f"suite folder not found: {root}", hint=f"pass the folder holding {suite.name}'s instructions and datasets/")
    images, files, missing = locate(suite, root)
    if missing:
        raise InvalidInput(f"{suite.name}: {len(missing)} file(s) missing under {root}; nothing was added", missing,
                           hint="lay the release out as its README shows (instructions per task, images under datasets/)")
    with catalog.session() as s:
        taken = []
        for f in files:
            try:
                get_task(s, f.task.name)
                taken.append(f.task.name)
            except NotFound:
                pass
    if taken:
        raise Conflict(f"task(s) {', '.join(taken)} already exist; nothing was added",
                       hint="`hicl task rm` them first to add the suite again")
    added: list[Task] = []
    try:
        for f in files:
            test = _with_references(catalog, suite, f) if f.references else f.test
            added.append(add_task(catalog, f.train, name=f.task.name, images=images, test_file=test,
                                  scorer=f.task.scorer))
    except BaseException:
        for task in added:
            remove_task(catalog, task.name, force=True)
        raise
    return added


def _with_references(catalog: Catalog, suite: Suite, f: TaskFiles) -> Path:
    """The test file with each record's reference captions as its answer (COCO `image_id` k is
    the k-th test record, as the authors' caption evaluation pairs them)."""
    try:
        records = json.loads(f.test.read_text(encoding="utf-8"))
        coco = json.loads(f.references.read_text(encoding="utf-8"))
        refs: dict[int, list[str]] = {}
        for a in coco["annotations"]:
            refs.setdefault(int(a["image_id"]), []).append(str(a["caption"]))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{f.references if 'records' in locals() else f.test} does not read as the suite's format "
                           f"({type(exc).__name__}: {exc})") from None
    if not isinstance(records, list):
        raise InvalidInput(f"{f.test} is not a JSON list of records")
    lacking = [k for k in range(1, len(records) + 1) if k not in refs]
    if lacking:
        raise InvalidInput(f"{f.references} has no caption for image_id {lacking[0]} "
                           f"({len(lacking)} of the {len(records)} test records lack one)")
    out = []
    for k, rec in enumerate(records, start=1):
        rec = dict(rec) if isinstance(rec, dict) else rec
        if isinstance(rec, dict):
            rec["answer"] = refs[k]
        out.append(rec)
    path = catalog.settings.cache / "suites" / suite.name / f"{f.task.name}-test.jsonl"
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    return path

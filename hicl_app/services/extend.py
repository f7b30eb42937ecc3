"""Continuing a finished run with new tasks (`hicl run extend`), a local run or a pulled one.

The new stages are appended to the run and queued like `run start` queues them: each trains on
the stage before it (its saved state under `adapters/run-<id>/stage-<k>/`, which `hicl pull`
writes in the same layout) and is scored on every task seen so far that this workspace holds.
Only methods whose plan is one stage per task in order can be extended: a joint method's single
stage cannot grow.
"""

from __future__ import annotations

from ..catalog.db import Catalog
from ..catalog.models import Event, Job, Run, Stage
from ..catalog.runs import get_run, stages_of
from ..catalog.tasks import data_problem, get_task
from ..core.errors import Conflict, InvalidInput, NotFound


def extend_run(catalog: Catalog, run_ref: str, tasks: list[str]) -> tuple[Run, list[int]]:
    """Append stages training `tasks` to a completed run; returns the run and the new job ids."""
    from ..engine.methods import get_method

    if not tasks:
        raise InvalidInput("--tasks is empty", hint="pass the new task names in training order, e.g. --tasks d,e")
    if len(set(tasks)) != len(tasks):
        raise InvalidInput(f"a task appears twice in --tasks {','.join(tasks)}")
    with catalog.session() as s:
        run = get_run(s, run_ref)
        stages = stages_of(s, run.id)
        if run.status != "completed" or any(st.status != "done" for st in stages):
            raise Conflict(f"run {run.id} is {run.status}: only a completed run can be extended",
                           hint=f"`hicl run resume {run.id}` finishes it first" if run.status in ("failed", "cancelled")
                           else "wait for the run to end")
        again = [t for t in tasks if t in run.task_order]
        if again:
            raise InvalidInput(f"run {run.id} already trained on {', '.join(again)}", hint="extend it with new tasks")
        rows = {}
        for t in tasks:
            try:
                rows[t] = get_task(s, t)
            except NotFound:
                raise InvalidInput(f"unknown task {t!r}", hint="`hicl tasks` lists them; `hicl add-task` adds one") from None
    for row in rows.values():
        problem = data_problem(row)
        if problem:
            raise InvalidInput(problem[0], hint=problem[1])
    method = get_method(run.method, (run.config or {}).get("method_options"))
    before = [list(st.train_tasks) for st in stages]
    whole = method.plan(list(run.task_order) + tasks)
    if whole[: len(before)] != before or len(whole) != len(before) + len(method.plan(tasks)):
        raise Conflict(f"run {run.id} ({run.method}) cannot be extended: its method does not train one task after "
                       "another", hint="start a new run over all the tasks instead")
    with catalog.session() as s:
        r = s.get(Run, run.id)
        r.task_order = list(r.task_order) + tasks
        r.status, r.finished_at, r.error = "queued", None, None
        s.add(r)
        ids: list[int] = []
        for index, train_tasks in enumerate(whole[len(before):], start=len(before)):
            stage = Stage(run_id=run.id, index=index, train_tasks=train_tasks)
            s.add(stage)
            s.flush()
            job = Job(kind="stage", run_id=run.id, stage_id=stage.id, depends_on=ids[-1] if ids else None,
                      payload={"run_id": run.id, "stage_index": index})
            s.add(job)
            s.flush()
            ids.append(job.id)
        s.add(Event(run_id=run.id, message=f"run {run.id} extended with {', '.join(tasks)}: "
                                           f"stage(s) {len(before)}..{len(whole) - 1} queued"))
        s.refresh(r)
        return r, ids

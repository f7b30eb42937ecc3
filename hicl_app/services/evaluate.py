"""`hicl run eval`: score a run's stages on tasks of this workspace, e.g. a pulled run on your own
copy of its tasks. The scores replace the matrix cells they cover (the publisher's, for a pulled
run); the work is a job of the run (kind `eval`) that the worker runs like a stage."""

from __future__ import annotations

from ..catalog.db import Catalog
from ..catalog.models import Event, Job
from ..catalog.runs import adapters_of, get_run, stages_of
from ..catalog.tasks import data_problem, get_task
from ..core.errors import Conflict, InvalidInput, NotFound


def queue_eval(catalog: Catalog, run_ref: str, tasks: list[str], stage: int | None = None) -> tuple[int, int, list[int]]:
    """Check and queue the evaluation; returns (run id, job id, stage indexes)."""
    if not tasks:
        raise InvalidInput("--tasks is empty", hint="pass the tasks to score, e.g. --tasks a,b")
    with catalog.session() as s:
        run = get_run(s, run_ref)
        stages = stages_of(s, run.id)
        have = {a.stage_id for a in adapters_of(s, run.id)}
        done = [st.index for st in stages if st.status == "done" and st.id in have]
        outside = [t for t in tasks if t not in run.task_order]
        if outside:
            raise InvalidInput(f"run {run.id} has no column for {', '.join(outside)} (its tasks: "
                               f"{', '.join(run.task_order)})", hint="`run extend` trains a run on a new task")
        rows = {}
        for t in tasks:
            try:
                rows[t] = get_task(s, t)
            except NotFound:
                raise InvalidInput(f"task {t!r} is not in this workspace",
                                   hint=f"`hicl add-task FILE --name {t}` adds your copy of it") from None
        if stage is not None and stage not in done:
            raise InvalidInput(f"run {run.id} has no finished stage {stage + 1}",
                               hint=f"finished stages: {', '.join(str(k + 1) for k in done) or 'none'}")
        if not done:
            raise Conflict(f"run {run.id} has no finished stage to evaluate yet")
    for row in rows.values():
        problem = data_problem(row)
        if problem:
            raise InvalidInput(problem[0], hint=problem[1])
    indexes = [stage] if stage is not None else done
    with catalog.session() as s:
        job = Job(kind="eval", run_id=run.id, payload={"run_id": run.id, "stages": indexes, "tasks": tasks})
        s.add(job)
        s.flush()
        s.add(Event(run_id=run.id, job_id=job.id, message=f"run {run.id}: evaluation of stage(s) "
                                                          f"{', '.join(map(str, indexes))} on {', '.join(tasks)} queued"))
        return run.id, job.id, indexes

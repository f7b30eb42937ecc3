"""Plain dicts describing runs for the faces (CLI --json, TUI): one place that reads a run whole."""

from __future__ import annotations

from sqlmodel import Session, select

from ..core import clmetrics
from .models import Push, Run
from .runs import accuracy_matrix, adapters_of, jobs_of, scores_of, stages_of


def run_metrics(session: Session, run: Run) -> tuple[list[str], list, list | None, dict]:
    names, matrix, zero = accuracy_matrix(session, run)
    rows = list(matrix)
    while rows and all(v is None for v in rows[-1]):  # stages not evaluated yet
        rows.pop()
    # one row is a joint stage only when the run has one stage: the first row of a sequential
    # run in progress is not a joint matrix
    return names, matrix, zero, clmetrics.compute(rows, zero, joint=len(matrix) == 1)


def progress_of(run: Run, matrix: list) -> dict:
    """How far a run's matrix is: `rows_complete` (rows with every task trained so far scored,
    from the first), `stages`, and `in_progress` (the run has not finished every row)."""
    complete = 0
    for t, row in enumerate(matrix):
        needed = row if len(matrix) == 1 else row[: t + 1]
        if needed and all(v is not None for v in needed):
            complete = t + 1
        else:
            break
    return {"status": run.status, "stages": len(matrix), "rows_complete": complete,
            "in_progress": run.status != "completed" or complete < len(matrix)}


def general_of(session: Session, run: Run) -> dict | None:
    """The run's held-out general task (config `general_task`): its score before training (row
    -1), after each stage, and the retention over the sequence; None when the run has none."""
    name = (run.config or {}).get("general_task")
    if not name:
        return None
    n_rows = len(stages_of(session, run.id))
    base, after = None, [None] * n_rows
    for cell in scores_of(session, run.id):
        if cell.task_name == name and cell.stage_index < 0:
            base = cell.score
        elif cell.task_name == name and cell.stage_index < n_rows:
            after[cell.stage_index] = cell.score
    return {"task": name, "after": after, **clmetrics.general_retention(base, after)}


def run_summary(session: Session, run: Run) -> dict:
    stages = stages_of(session, run.id)
    _, _, _, metrics = run_metrics(session, run)
    return {"id": run.id, "name": run.name, "method": run.method, "status": run.status,
            "stages": len(stages), "stages_done": sum(st.status == "done" for st in stages),
            "created_at": run.created_at, "metrics": metrics}


def run_detail(session: Session, run: Run) -> dict:
    names, matrix, zero, metrics = run_metrics(session, run)
    jobs = {j.stage_id: j for j in jobs_of(session, run.id)}
    stages = []
    for st in stages_of(session, run.id):
        job = jobs.get(st.id)
        p = job.progress if job else {}
        stages.append({"index": st.index, "train_tasks": st.train_tasks, "status": st.status, "steps": st.steps,
                       "job_id": job.id if job else None, "job_status": job.status if job else None,
                       "progress": f"{p.get('step', 0)}/{p.get('total', '?')}" if p else "",
                       "error": st.error})
    index_of = {st.id: st.index for st in stages_of(session, run.id)}
    adapters = [{"stage_index": index_of.get(a.stage_id), "path": a.path, "sha256": a.sha256,
                 "size_bytes": a.size_bytes, "files": a.files} for a in adapters_of(session, run.id)]
    pushes = [{"id": p.id, "stage_index": p.stage_index, "repo_id": p.repo_id, "endpoint": p.endpoint,
               "revision": p.revision, "commit_oid": p.commit_oid, "commit_url": p.commit_url, "tag": p.tag,
               "private": p.private, "files": p.files, "created_at": p.created_at}
              for p in session.exec(select(Push).where(Push.run_id == run.id).order_by(Push.id))]
    return {"id": run.id, "name": run.name, "method": run.method, "base_model": run.base_model,
            "status": run.status, "error": run.error, "task_order": names, "config": run.config, "env": run.env,
            "created_at": run.created_at, "started_at": run.started_at, "finished_at": run.finished_at,
            "stages": stages, "adapters": adapters, "pushes": pushes, "matrix": matrix, "zero_shot": zero, "metrics": metrics,
            "general": general_of(session, run)}

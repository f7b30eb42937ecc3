"""Runs, their stages and the jobs that train them; the accuracy matrix read back."""

from __future__ import annotations

from sqlmodel import Session, select

from ..core.errors import NotFound
from .models import Adapter, CurvePoint, Event, Job, Run, Score, Stage, utcnow


def create_run(
    session: Session,
    *,
    name: str,
    method: str,
    base_model: str,
    task_order: list[str],
    stages: list[list[str]],
    config: dict,
) -> Run:
    """Record a run, one stage per planned step, and one queued job per stage chained in order."""
    run = Run(name=name, method=method, base_model=base_model, task_order=task_order, config=config)
    session.add(run)
    session.flush()
    previous: Job | None = None
    for index, train_tasks in enumerate(stages):
        stage = Stage(run_id=run.id, index=index, train_tasks=train_tasks)
        session.add(stage)
        session.flush()
        job = Job(kind="stage", run_id=run.id, stage_id=stage.id, depends_on=previous.id if previous else None,
                  payload={"run_id": run.id, "stage_index": index})
        session.add(job)
        session.flush()
        previous = job
    session.add(Event(run_id=run.id, message=f"run {run.id} queued: {method} over {', '.join(task_order)}"))
    return run


def get_run(session: Session, ref: str | int) -> Run:
    """A run by id, or by name (the newest with that name)."""
    run = None
    if str(ref).isdigit():
        run = session.get(Run, int(ref))
    if run is None:
        run = session.exec(select(Run).where(Run.name == str(ref)).order_by(Run.id.desc())).first()
    if run is None:
        raise NotFound(f"no run {ref!r}", hint="`hicl runs` lists the runs of this workspace")
    return run


def list_runs(session: Session, limit: int | None = None) -> list[Run]:
    q = select(Run).order_by(Run.id.desc())
    if limit:
        q = q.limit(limit)
    return list(session.exec(q))


def stages_of(session: Session, run_id: int) -> list[Stage]:
    return list(session.exec(select(Stage).where(Stage.run_id == run_id).order_by(Stage.index)))


def jobs_of(session: Session, run_id: int) -> list[Job]:
    return list(session.exec(select(Job).where(Job.run_id == run_id).order_by(Job.id)))


def adapters_of(session: Session, run_id: int) -> list[Adapter]:
    return list(session.exec(select(Adapter).where(Adapter.run_id == run_id).order_by(Adapter.id)))


def scores_of(session: Session, run_id: int) -> list[Score]:
    return list(session.exec(select(Score).where(Score.run_id == run_id).order_by(Score.stage_index, Score.id)))


def upsert_score(session: Session, run_id: int, stage_index: int, task_name: str, **values) -> Score:
    row = session.exec(select(Score).where(Score.run_id == run_id, Score.stage_index == stage_index,
                                           Score.task_name == task_name)).first()
    if row is None:
        row = Score(run_id=run_id, stage_index=stage_index, task_name=task_name, **values)
    else:
        for key, value in values.items():
            setattr(row, key, value)
        row.created_at = utcnow()
    session.add(row)
    return row


def accuracy_matrix(session: Session, run: Run) -> tuple[list[str], list[list[float | None]], list[float | None] | None]:
    """(task names, R[stage][task], zero-shot row or None) from the catalog's score cells.

    One row per stage; for methods that train one stage on all tasks (joint) that is one row.
    """
    names = list(run.task_order)
    col = {n: j for j, n in enumerate(names)}
    n_rows = len(stages_of(session, run.id))
    matrix: list[list[float | None]] = [[None] * len(names) for _ in range(n_rows)]
    zero: list[float | None] = [None] * len(names)
    has_zero = False
    for cell in scores_of(session, run.id):
        if cell.task_name not in col:
            continue
        if cell.stage_index < 0:
            zero[col[cell.task_name]] = cell.score
            has_zero = True
        elif cell.stage_index < n_rows:
            matrix[cell.stage_index][col[cell.task_name]] = cell.score
    return names, matrix, zero if has_zero else None


def curve(session: Session, run_id: int, stage_index: int | None = None, name: str = "loss") -> list[CurvePoint]:
    q = select(CurvePoint).where(CurvePoint.run_id == run_id, CurvePoint.name == name)
    if stage_index is not None:
        q = q.where(CurvePoint.stage_index == stage_index)
    return list(session.exec(q.order_by(CurvePoint.stage_index, CurvePoint.step)))


def add_event(session: Session, message: str, *, run_id: int | None = None, job_id: int | None = None,
              level: str = "info", data: dict | None = None) -> None:
    session.add(Event(run_id=run_id, job_id=job_id, level=level, message=message, data=data or {}))

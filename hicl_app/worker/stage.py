"""Running one stage job: build the engine's inputs from the catalog, write its results back.

The worker is the only place that writes the catalog during a job; the engine gets plain paths
and dataclasses and reports through a callback. A stage job that died (worker killed, machine
rebooted) is simply run again: the engine resumes from the stage's last checkpoint and follows
the same trajectory, and the catalog writes below are idempotent (curve points after the
checkpoint are replaced, scores upserted, the stage's adapter row replaced).
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import delete, update
from sqlmodel import select

from ..catalog import queue
from ..catalog.db import Catalog
from ..catalog.models import Adapter, CurvePoint, Job, Run, Stage, Task, utcnow
from ..catalog.runs import add_event, scores_of, stages_of, upsert_score
from ..catalog.tasks import data_problem, get_task
from ..core.errors import HiclError
from .context import LEASE, JobContext
from .log_lines import LogLines
from .publish import record_push_job


class PreflightError(HiclError):
    """The run cannot start: a task or the base model is not usable. Nothing was trained."""


def stage_paths(catalog: Catalog, run_id: int, index: int) -> tuple[Path, Path]:
    """(stage output folder, checkpoint folder) of a run's stage in the workspace."""
    home = catalog.settings
    return home.adapters / f"run-{run_id}" / f"stage-{index}", home.checkpoints / f"run-{run_id}" / f"stage-{index}"


def build_spec(catalog: Catalog, run: Run, stage: Stage):
    """The engine's StageSpec for `stage`, checking the tasks' data is still there."""
    from ..engine.config import EvalConfig, ModelConfig, TrainConfig, from_dict
    from ..engine.methods import get_method
    from ..engine.spec import StageSpec, TaskData

    cfg = dict(run.config)
    extra = get_method(run.method, cfg.get("method_options")).needs_tasks()
    if cfg.get("general_task") in extra:
        raise PreflightError(f"task {cfg['general_task']!r} is the run's held-out general task; a method option "
                             "cannot train on it", hint="name another task in the method options")
    with catalog.session() as s:
        stages = stages_of(s, run.id)
        names = list(run.task_order) + ([cfg["general_task"]] if cfg.get("general_task") else [])
        names += [n for n in extra if n not in names]
        if cfg.get("pulled"):  # a pulled run's earlier tasks are scored where this workspace has them
            trains = {t for st in stages for t in st.train_tasks if st.index >= stage.index}
            have = {t.name for t in s.exec(select(Task).where(Task.name.in_(names)))}
            names = [n for n in names if n in have or n in trains]
        tasks = {name: get_task(s, name) for name in names}
    for task in tasks.values():
        problem = data_problem(task)
        if problem:
            raise PreflightError(problem[0], hint=problem[1])

    def data(name: str) -> TaskData:
        t = tasks[name]
        return TaskData(name=name, train_path=Path(t.data_dir) / "train.jsonl",
                        test_path=Path(t.data_dir) / "test.jsonl", scorer=t.scorer)

    seen: list[str] = []
    for st in stages[: stage.index + 1]:
        seen += [n for n in st.train_tasks if n not in seen]
    earlier = list(dict.fromkeys(n for st in stages[: stage.index] for n in st.train_tasks))
    eval_names = list(run.task_order) if cfg.get("eval_all") else [n for n in run.task_order if n in seen]
    eval_names = [n for n in eval_names if n in tasks]
    general = cfg.get("general_task")
    if general and general not in eval_names and general in tasks:
        eval_names.append(general)
    stage_dir, ckpt_dir = stage_paths(catalog, run.id, stage.index)
    prev_dir = stage_paths(catalog, run.id, stage.index - 1)[0] if stage.index > 0 else None
    return StageSpec(
        method=run.method,
        method_options=dict(cfg.get("method_options", {})),
        stage_index=stage.index,
        n_stages=len(stages),
        train_tasks=[data(n) for n in stage.train_tasks],
        eval_tasks=[data(n) for n in eval_names],
        model=from_dict(ModelConfig, {"base": run.base_model, **cfg.get("model", {})}),
        train=from_dict(TrainConfig, cfg.get("train", {})),
        eval=from_dict(EvalConfig, cfg.get("eval", {})),
        stage_dir=stage_dir,
        prev_stage_dir=prev_dir,
        checkpoint_dir=ckpt_dir,
        extra_tasks={n: data(n) for n in extra},
        earlier_tasks=[data(n) for n in earlier if n in tasks],  # a pulled run's may be absent here
        strategy=(cfg.get("launch") or {}).get("strategy") or "ddp",
    )


class _Reporter:
    """Turns engine events into catalog rows, batching writes so the hot loop is not slowed.

    Every write is fenced by the job's lease, and so is every checkpoint: "before_checkpoint"
    flushes through the fence, whose LeaseLost vetoes the engine's write (in one process, or from
    rank 0 through the launcher's "veto"), so a job that lost its lease never writes or prunes
    the checkpoints of the worker that holds it now. Loss points up to a step are committed before the
    engine writes that step's checkpoint (it says "before_checkpoint" first, in one process or
    from rank 0, which waits for the commit), and a resumed job first deletes the points after
    its checkpoint, so a crash at any moment leaves each step's point exactly once.
    """

    def __init__(self, ctx: JobContext, stage: Stage, every: float = 1.0):
        self.ctx, self.stage = ctx, stage
        self.every = every
        self.points: list[CurvePoint] = []
        self.progress: dict | None = None
        self.last_loss: tuple[int, float | None] | None = None
        self.last_flush = 0.0
        self.lines = LogLines()

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        boundary = False
        line = self.lines.line(event)
        if line:
            self.ctx.say(line)
        if kind == "loss":
            step = int(event["step"])
            self.last_loss = (step, event.get("loss"))
            for name in ("loss", "lr"):
                if event.get(name) is not None:
                    self.points.append(CurvePoint(run_id=self.ctx.job.run_id, stage_index=self.stage.index, name=name,
                                                  step=step, value=float(event[name])))
        elif kind == "progress":
            self.progress = {k: v for k, v in event.items() if k != "type"}
            boundary = self.progress.get("step") == self.progress.get("total")
            if self.ctx.on_progress:
                self.ctx.on_progress(self.stage, self.progress)
        elif kind == "before_checkpoint":
            if self.ctx.reason == LEASE:  # known lost already: veto without asking the catalog
                raise queue.LeaseLost(f"job {self.ctx.job.id} is no longer held by {self.ctx.owner}")
            # the progress shown must not lag the checkpoint a resume starts from: the engine
            # reports progress at most once a second, so bring its step up to the checkpoint's
            step = int(event["step"])
            if self.progress is not None and int(self.progress.get("step") or 0) < step:
                self.progress = {**self.progress, "step": step,
                                 **({"loss": self.last_loss[1]} if self.last_loss and self.last_loss[0] == step else {})}
            boundary = True
        if boundary or time.monotonic() - self.last_flush >= self.every:
            self.flush()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        points, progress = list(self.points), self.progress
        job_id, owner = self.ctx.job.id, self.ctx.owner

        def write() -> None:
            with self.ctx.catalog.session() as s:
                _fence(s, job_id, owner, **({"progress": dict(progress)} if progress is not None else {}))
                s.add_all([CurvePoint(**p.model_dump(exclude={"id"})) for p in points])

        try:
            queue.with_busy_retry(write)
        except queue.LeaseLost:
            self.ctx.interrupt(LEASE)
            raise
        self.points = self.points[len(points):]

    def should_stop(self) -> bool:
        return self.ctx.should_stop()


def _fence(s, job_id: int, owner: str, **values) -> None:
    """First statement of a job's write transaction: take the write lock and check the lease
    is still ours (LeaseLost, and nothing of the transaction is kept, when it is not)."""
    stmt = update(Job).where(Job.id == job_id, Job.lease_owner == owner, Job.status == "running")
    stmt = stmt.values(**values) if values else stmt.values(heartbeat_at=Job.heartbeat_at)
    if s.execute(stmt.execution_options(synchronize_session=False)).rowcount != 1:
        raise queue.LeaseLost(f"job {job_id} is no longer held by {owner}")


def _checkpoint_step(ckpt_dir: Path) -> int:
    """The step of the newest published checkpoint (0 when there is none)."""
    steps = [int(p.name[5:]) for p in ckpt_dir.glob("step-*") if p.is_dir() and p.name[5:].isdigit()] \
        if ckpt_dir.is_dir() else []
    return max(steps, default=0)


def run_stage_job(ctx: JobContext) -> str:
    """Run a claimed stage job to the end and record its results with the job's completion, in
    one transaction fenced by the lease. `Stopped` propagates to the caller."""
    from ..engine.pipeline import run_stage

    catalog, job = ctx.catalog, ctx.job

    def begin() -> tuple[Run, Stage]:
        with catalog.session() as s:
            _fence(s, job.id, ctx.owner, progress={})
            stage = s.get(Stage, job.stage_id)
            run = s.get(Run, job.run_id)
            stage.status, stage.started_at = "running", stage.started_at or utcnow()
            if run.status == "queued":
                run.status, run.started_at = "running", run.started_at or utcnow()
            _, ckpt_dir = stage_paths(catalog, run.id, stage.index)
            resume_at = _checkpoint_step(ckpt_dir)
            # points after the checkpoint were written by an attempt that died: the engine
            # replays those steps exactly and reports them again
            s.execute(delete(CurvePoint).where(CurvePoint.run_id == run.id, CurvePoint.stage_index == stage.index,
                                               CurvePoint.step > resume_at))
            s.add_all([stage, run])
            return run, stage

    run, stage = queue.with_busy_retry(begin)
    ctx.say(f"job {job.id}: run {run.id} stage {stage.index + 1} ({run.method}, train on "
            f"{', '.join(stage.train_tasks)}), attempt {job.attempts}")
    spec = build_spec(catalog, run, stage)
    reporter = _Reporter(ctx, stage)
    nproc, launcher_args = launch_settings(run, ctx)
    if stage.index == 0:
        _zero_shot(ctx, run, spec, reporter, nproc, launcher_args)
    if nproc > 1 or launcher_args:
        from ..engine.distributed.launch import run_stage_distributed

        ctx.say(f"training on {nproc} rank(s) per node (torchrun, DDP){' with ' + ' '.join(launcher_args) if launcher_args else ''}")
        result = run_stage_distributed(spec, nproc, on_event=reporter, should_stop=reporter.should_stop,
                                       launcher_args=launcher_args)
    else:
        result = run_stage(spec, on_event=reporter, should_stop=reporter.should_stop)
    reporter.flush()
    queue.with_busy_retry(lambda: _record_result(ctx, run, stage, spec, result))
    ctx.say(f"done: {result.steps} steps, scores " +
            ", ".join(f"{k}={v['score']:.2f}" for k, v in result.scores.items()))
    return "done"


def launch_settings(run: Run, ctx: JobContext) -> tuple[int, list[str] | None]:
    """(ranks per stage, torchrun flags): the run's own, else the worker's `--nproc`, else 1."""
    launch = (run.config or {}).get("launch") or {}
    return int(launch.get("nproc") or ctx.nproc or 1), launch.get("launcher_args") or None


def _zero_shot(ctx: JobContext, run: Run, spec, reporter: _Reporter, nproc: int = 1,
               launcher_args: list[str] | None = None) -> None:
    """Score the base model before any training (row -1): the reference for FWT and for general
    retention. Only the tasks that need it: all with eval_all, the held-out general task."""
    from ..engine.pipeline import run_eval

    cfg = run.config or {}
    wanted = set(run.task_order) if cfg.get("eval_all") else set()
    if cfg.get("general_task"):
        wanted.add(cfg["general_task"])
    with ctx.catalog.session() as s:
        done = {c.task_name for c in scores_of(s, run.id) if c.stage_index == -1}
    tasks = [t for t in spec.eval_tasks if t.name in wanted - done]
    if not tasks:
        return
    out = spec.stage_dir.parent / "zero-shot"
    if nproc > 1 or launcher_args:
        from ..engine.distributed.launch import run_eval_distributed

        scores = run_eval_distributed(spec.model, tasks, spec.eval, out, nproc, on_event=reporter,
                                      should_stop=reporter.should_stop, launcher_args=launcher_args)
    else:
        scores = run_eval(spec.model, tasks, spec.eval, out, on_event=reporter, should_stop=reporter.should_stop)

    def write() -> None:
        with ctx.catalog.session() as s:
            _fence(s, ctx.job.id, ctx.owner)
            for name, cell in scores.items():
                upsert_score(s, run.id, -1, name, score=float(cell["score"]), n=int(cell["n"]),
                             scorer=next(t.scorer for t in tasks if t.name == name),
                             predictions_path=cell.get("predictions_path"), details=cell.get("details", {}))

    queue.with_busy_retry(write)


def _record_result(ctx: JobContext, run: Run, stage: Stage, spec, result) -> None:
    """Adapter, scores, stage and run status, and the job closed as done: all or nothing."""
    adapter_file = Path(result.adapter_dir) / "adapter_model.safetensors"
    with ctx.catalog.session() as s:
        queue.close_job(s, ctx.job.id, "done", owner=ctx.owner)  # first: takes the lock, checks the lease
        s.execute(delete(Adapter).where(Adapter.stage_id == stage.id))
        st = s.get(Stage, stage.id)
        st.status, st.finished_at = "done", utcnow()
        st.steps, st.train_samples = result.steps, result.train_samples
        s.add(st)
        s.add(Adapter(run_id=run.id, stage_id=stage.id, kind="peft", path=str(result.adapter_dir),
                      sha256=result.files.get(str(adapter_file.relative_to(spec.stage_dir)), "")
                      or _sha(adapter_file),
                      size_bytes=sum(p.stat().st_size for p in Path(spec.stage_dir).rglob("*") if p.is_file()),
                      files=dict(result.files)))
        scorers = {t.name: t.scorer for t in spec.eval_tasks}
        for name, cell in result.scores.items():
            upsert_score(s, run.id, stage.index, name, score=float(cell["score"]), n=int(cell["n"]),
                         scorer=scorers.get(name, ""), predictions_path=cell.get("predictions_path"),
                         details=cell.get("details", {}))
        r = s.get(Run, run.id)
        r.env = {**(r.env or {}), **(result.env or {})}
        if stage.index == spec.n_stages - 1:
            r.status, r.finished_at = "completed", utcnow()
        s.add(r)
        record_push_job(s, r, stage.index)  # with --push-to: the stage goes to the hub next
        add_event(s, f"stage {stage.index + 1} done: " + ", ".join(f"{k} {v['score']:.1f}" for k, v in result.scores.items()),
                  run_id=run.id, job_id=ctx.job.id)


def _sha(path: Path) -> str:
    from ..core.fsio import sha256_file

    return sha256_file(path) if path.is_file() else ""

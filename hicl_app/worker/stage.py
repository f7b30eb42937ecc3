"""Running one stage job: build the engine's inputs from the catalog, write its results back.

The worker is the only place that writes the catalog during a job; the engine gets plain paths
and dataclasses and reports through a callback.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..catalog import queue
from ..catalog.db import Catalog
from ..catalog.models import Adapter, CurvePoint, Job, Run, Stage, utcnow
from ..catalog.runs import add_event, scores_of, stages_of, upsert_score
from ..catalog.tasks import get_task, missing_images
from ..errors import HiclError


class PreflightError(HiclError):
    """The run cannot start: a task or the base model is not usable. Nothing was trained."""


def stage_paths(catalog: Catalog, run_id: int, index: int) -> tuple[Path, Path]:
    """(stage output folder, checkpoint folder) of a run's stage in the workspace."""
    home = catalog.settings
    return home.adapters / f"run-{run_id}" / f"stage-{index}", home.checkpoints / f"run-{run_id}" / f"stage-{index}"


def build_spec(catalog: Catalog, run: Run, stage: Stage):
    """The engine's StageSpec for `stage`, checking the tasks' data is still there."""
    from ..engine.config import EvalConfig, ModelConfig, TrainConfig, from_dict
    from ..engine.spec import StageSpec, TaskData

    cfg = dict(run.config)
    with catalog.session() as s:
        stages = stages_of(s, run.id)
        names = list(run.task_order) + ([cfg["general_task"]] if cfg.get("general_task") else [])
        tasks = {name: get_task(s, name) for name in names}
    for name, task in tasks.items():
        gone = missing_images(task)
        if gone:
            raise PreflightError(f"task {name!r}: {len(gone)}+ image(s) went missing since add-task, e.g. {gone[0]}",
                                 hint="restore the images or add the task again")

    def data(name: str) -> TaskData:
        t = tasks[name]
        return TaskData(name=name, train_path=Path(t.data_dir) / "train.jsonl",
                        test_path=Path(t.data_dir) / "test.jsonl", scorer=t.scorer)

    seen: list[str] = []
    for st in stages[: stage.index + 1]:
        seen += [n for n in st.train_tasks if n not in seen]
    eval_names = list(run.task_order) if cfg.get("eval_all") else [n for n in run.task_order if n in seen]
    general = cfg.get("general_task")
    if general and general not in eval_names:
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
    )


class _Reporter:
    """Turns engine events into catalog rows, batching writes so the hot loop is not slowed."""

    def __init__(self, catalog: Catalog, job: Job, stage: Stage, log, on_progress=None, every: float = 1.0):
        self.catalog, self.job, self.stage, self.log = catalog, job, stage, log
        self.on_progress = on_progress
        self.every = every
        self.points: list[CurvePoint] = []
        self.progress: dict | None = None
        self.last_flush = 0.0
        self.last_cancel_check = 0.0
        self.cancelled = False

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "loss":
            for name in ("loss", "lr"):
                if event.get(name) is not None:
                    self.points.append(CurvePoint(run_id=self.job.run_id, stage_index=self.stage.index, name=name,
                                                  step=int(event["step"]), value=float(event[name])))
        elif kind == "progress":
            self.progress = {k: v for k, v in event.items() if k != "type"}
            if self.on_progress:
                self.on_progress(self.stage, self.progress)
        elif kind in ("log", "checkpoint", "eval"):
            self.log.write(f"{time.strftime('%H:%M:%S')} {kind}: {event}\n")
            self.log.flush()
        if time.monotonic() - self.last_flush >= self.every:
            self.flush()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        points, self.points = self.points, []
        with self.catalog.session() as s:
            s.add_all(points)
            if self.progress is not None:
                job = s.get(Job, self.job.id)
                job.progress = dict(self.progress)
                s.add(job)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self.last_cancel_check >= 1.0:
            self.last_cancel_check = now
            self.cancelled = queue.cancel_requested(self.catalog, self.job.id)
        return self.cancelled


def run_stage_job(catalog: Catalog, job: Job, on_progress=None) -> str:
    """Run a claimed stage job to the end; returns the job's final status."""
    from ..engine.errors import Stopped
    from ..engine.pipeline import run_stage

    with catalog.session() as s:
        stage = s.get(Stage, job.stage_id)
        run = s.get(Run, job.run_id)
        stage.status, stage.started_at = "running", stage.started_at or utcnow()
        if run.status == "queued":
            run.status, run.started_at = "running", utcnow()
        s.add_all([stage, run])
    log_path = catalog.settings.logs / f"job-{job.id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with catalog.session() as s:
        j = s.get(Job, job.id)
        j.log_path = str(log_path)
        s.add(j)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} job {job.id}: run {run.id} stage {stage.index} "
                  f"({run.method}, train on {', '.join(stage.train_tasks)}), attempt {job.attempts}\n")
        reporter = _Reporter(catalog, job, stage, log, on_progress)
        spec = build_spec(catalog, run, stage)
        try:
            if stage.index == 0:
                _zero_shot(catalog, run, spec, reporter)
            result = run_stage(spec, on_event=reporter, should_stop=reporter.should_stop)
        except Stopped:
            reporter.flush()
            log.write("cancelled at a step boundary; the last checkpoint is kept\n")
            queue.finish(catalog, job.id, "cancelled", error="cancelled by the user")
            return "cancelled"
        reporter.flush()
        _record_result(catalog, run, stage, spec, result)
        log.write(f"done: {result.steps} steps, scores " +
                  ", ".join(f"{k}={v['score']:.2f}" for k, v in result.scores.items()) + "\n")
    queue.finish(catalog, job.id, "done")
    return "done"


def _zero_shot(catalog: Catalog, run: Run, spec, reporter: _Reporter) -> None:
    """Score the base model before any training (row -1): the reference for FWT and for general
    retention. Only the tasks that need it: all with eval_all, the held-out general task."""
    from ..engine.pipeline import run_eval

    cfg = run.config or {}
    wanted = set(run.task_order) if cfg.get("eval_all") else set()
    if cfg.get("general_task"):
        wanted.add(cfg["general_task"])
    with catalog.session() as s:
        done = {c.task_name for c in scores_of(s, run.id) if c.stage_index == -1}
    tasks = [t for t in spec.eval_tasks if t.name in wanted - done]
    if not tasks:
        return
    out = spec.stage_dir.parent / "zero-shot"
    scores = run_eval(spec.model, tasks, spec.eval, out, on_event=reporter, should_stop=reporter.should_stop)
    with catalog.session() as s:
        for name, cell in scores.items():
            upsert_score(s, run.id, -1, name, score=float(cell["score"]), n=int(cell["n"]),
                         scorer=next(t.scorer for t in tasks if t.name == name),
                         predictions_path=cell.get("predictions_path"), details=cell.get("details", {}))


def _record_result(catalog: Catalog, run: Run, stage: Stage, spec, result) -> None:
    adapter_file = Path(result.adapter_dir) / "adapter_model.safetensors"
    with catalog.session() as s:
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
        add_event(s, f"stage {stage.index} done: " + ", ".join(f"{k} {v['score']:.1f}" for k, v in result.scores.items()),
                  run_id=run.id)


def _sha(path: Path) -> str:
    from ..fsio import sha256_file

    return sha256_file(path) if path.is_file() else ""

"""The `eval` job: score finished stages of a run on tasks of this workspace (`hicl run eval`).

Each stage's evaluation model is rebuilt from its saved state by its method (`run_eval` with
the stage folder), on the run's base model and evaluation settings; the scores of a stage are
written, fenced by the job's lease, as soon as that stage is scored, so a resumed job redoes
only the stages it had not written.
"""

from __future__ import annotations

from pathlib import Path

from ..catalog import queue
from ..catalog.models import Run
from ..catalog.runs import add_event, scores_of, upsert_score
from ..catalog.tasks import get_task
from .context import JobContext


def run_eval_job(ctx: JobContext) -> str:
    from ..engine.config import EvalConfig, ModelConfig, from_dict
    from ..engine.pipeline import run_eval
    from ..engine.spec import TaskData
    from .stage import _fence, stage_paths

    p = ctx.job.payload
    with ctx.catalog.session() as s:
        run = s.get(Run, int(p["run_id"]))
        tasks = {n: get_task(s, n) for n in p["tasks"]}
        written = {(c.stage_index, c.task_name) for c in scores_of(s, run.id)
                   if (c.details or {}).get("eval_job") == ctx.job.id}
    cfg = run.config or {}
    model = from_dict(ModelConfig, {"base": run.base_model, **cfg.get("model", {})})
    eval_cfg = from_dict(EvalConfig, cfg.get("eval", {}))
    data = [TaskData(name=n, train_path=Path(t.data_dir) / "train.jsonl", test_path=Path(t.data_dir) / "test.jsonl",
                     scorer=t.scorer) for n, t in tasks.items()]

    def on_event(event: dict) -> None:
        if event.get("type") in ("log", "eval"):
            ctx.say(f"{event['type']}: {event.get('message', event)}")
        elif event.get("type") == "progress":
            ctx.set_progress({k: v for k, v in event.items() if k != "type"})

    for index in p["stages"]:
        if all((index, t.name) in written for t in data):
            continue
        stage_dir = stage_paths(ctx.catalog, run.id, index)[0]
        ctx.say(f"job {ctx.job.id}: scoring run {run.id} stage {index + 1} on {', '.join(tasks)}")
        scores = run_eval(model, data, eval_cfg, stage_dir / f"eval-{ctx.job.id}", method=run.method,
                          method_options=cfg.get("method_options"), stage_dir=stage_dir, on_event=on_event,
                          should_stop=ctx.should_stop)

        def write(index=index, scores=scores) -> None:
            with ctx.catalog.session() as s:
                _fence(s, ctx.job.id, ctx.owner)
                for name, cell in scores.items():
                    upsert_score(s, run.id, index, name, score=float(cell["score"]), n=int(cell["n"]),
                                 scorer=tasks[name].scorer, predictions_path=cell.get("predictions_path"),
                                 details={**cell.get("details", {}), "eval_job": ctx.job.id})
                add_event(s, f"stage {index + 1} scored: " + ", ".join(f"{k} {v['score']:.1f}" for k, v in scores.items()),
                          run_id=run.id, job_id=ctx.job.id)

        queue.with_busy_retry(write)
    return "done" if queue.finish(ctx.catalog, ctx.job.id, "done", owner=ctx.owner) else "lost"

"""Starting a run: check everything a user can get wrong before anything is recorded."""

from __future__ import annotations

from ..catalog.db import Catalog
from ..catalog.models import Run
from ..catalog.queue import with_busy_retry
from ..catalog.runs import create_run
from ..catalog.tasks import data_problem, get_task
from ..core.errors import InvalidInput
from .base_model import BaseModel, resolve_base
from .method_options import check_method


def start_run(catalog: Catalog, *, method: str, tasks: list[str], base: str | BaseModel, name: str | None,
              config: dict) -> Run:
    """Validate method, tasks and base (a name, or what `resolve_base` found for it), then record the
    run with its stages and queued jobs."""
    from ..engine.methods import get_method, method_names

    if method not in method_names():
        raise InvalidInput(f"unknown method {method!r}", hint=f"choose one of {', '.join(method_names())}")
    if not tasks:
        raise InvalidInput("--tasks is empty", hint="pass task names in training order, e.g. --tasks a,b,c")
    if len(set(tasks)) != len(tasks):
        raise InvalidInput(f"a task appears twice in --tasks {','.join(tasks)}")
    with catalog.session() as s:
        rows = {}
        unknown = []
        for t in tasks:
            try:
                rows[t] = get_task(s, t)
            except Exception:
                unknown.append(t)
        if unknown:
            raise InvalidInput(f"unknown task(s): {', '.join(unknown)}", hint="`hicl tasks` lists them; `hicl add-task` adds one")
    for row in rows.values():
        problem = data_problem(row)
        if problem:
            raise InvalidInput(problem[0], hint=problem[1])
    if not isinstance(base, BaseModel):
        base = resolve_base(base)
    base = base.ref
    _check_config(config, base)
    check_method(method, config.get("method_options") or {}, what=f"method {method!r}: ")
    stages = get_method(method, config.get("method_options")).plan(tasks)

    def record() -> Run:
        with catalog.session() as s:
            return create_run(s, name=name or f"{method}:{','.join(tasks)}", method=method, base_model=base,
                              task_order=tasks, stages=stages, config=config)

    return with_busy_retry(record)  # as the worker's writes: a busy catalog is waited for, not an error


def _check_config(config: dict, base: str) -> None:
    """Build the engine's config records now, so a bad value fails before anything is recorded."""
    from ..engine.config import EvalConfig, ModelConfig, TrainConfig, from_dict
    from ..engine.errors import EngineError

    try:
        from_dict(TrainConfig, config.get("train"))
        from_dict(EvalConfig, config.get("eval"))
        from_dict(ModelConfig, {"base": base, **config.get("model", {})})
    except EngineError as exc:
        raise InvalidInput(str(exc), hint=exc.hint) from None

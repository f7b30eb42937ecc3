"""One continual-learning stage, end to end: load, train (resumable), save, evaluate.

The worker calls `run_stage` once per stage, in a child process, with plain inputs; the engine
returns plain results and never touches the catalog. Calling it again with the same spec after
a stop or a crash resumes from the stage's checkpoint and reaches the same result. Under torchrun
(`engine/distributed`) every rank calls it: all train and answer their share, rank 0 alone writes
the stage's state and manifest and gets the result; the others get None.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..core.fsio import atomic_write_json, sha256_file
from ..core.taskfile import load_records
from .config import EvalConfig, ModelConfig, to_dict
from .distributed import comm, fsdp
from .errors import EngineError, Stopped
from .eval.evaluate import evaluate_task
from .methods import get_method
from .methods.base import Method, StageContext
from .modeling.checkpointing import enable_gradient_checkpointing
from .modeling.models import LoadedModel, env_info, load_base
from .spec import StageResult, StageSpec, TaskData
from .train.checkpoint import latest_checkpoint
from .train.loop import train

__all__ = ["StageResult", "StageSpec", "TaskData", "run_stage", "run_eval"]

EventFn = Callable[[dict], None]
StopFn = Callable[[], bool]
STAGE_MANIFEST = "stage.json"


def _records(path: Path, task: str, kind: str) -> list[dict]:
    try:
        return load_records(path)
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read the {kind} records of task {task!r} at {path}: {exc}") from None


def _fingerprint(spec: StageSpec, method: Method) -> dict[str, Any]:
    """What the trajectory depends on beyond the train config (which `train` adds itself)."""
    return {
        "method": spec.method,
        "method_options": spec.method_options,
        "stage_index": spec.stage_index,
        "base": spec.model.base,
        "tasks": [t.name for t in spec.train_tasks],
        "data": [sha256_file(t.train_path) for t in spec.train_tasks],
        "previous": method.fingerprint(spec.prev_stage_dir),
    }


def records_digest(records: list[dict]) -> str:
    """sha256 of the records' canonical JSON: what a checkpoint trained on, whatever file it came from."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, default=str).encode("utf-8") + b"\n")
    return digest.hexdigest()


def _evaluate_all(model: nn.Module, loaded: LoadedModel, tasks: list[TaskData], cfg: EvalConfig, out_dir: Path, emit: EventFn,
                  check_stop: Callable[[], None]) -> dict[str, dict[str, Any]]:
    scores = {}
    for task in tasks:
        records = _records(task.test_path, task.name, "test")
        scores[task.name] = evaluate_task(model, loaded.processor, records, task.scorer, cfg,
                                          out_dir / f"{task.name}.jsonl", device=loaded.device,
                                          dtype=loaded.dtype, task=task.name, on_event=emit,
                                          check_stop=check_stop)
    return scores


def run_stage(spec: StageSpec, on_event: EventFn | None = None,
              should_stop: StopFn | None = None) -> StageResult | None:
    """Train stage `spec.stage_index` of `spec.method`, save its state, score `spec.eval_tasks`.

    Resumes from `spec.checkpoint_dir` when it holds a checkpoint of this very stage.
    Raises `Stopped` (after checkpointing) when `should_stop()` turns true, `EngineError` for
    anything the user can fix.
    """
    emit = on_event or (lambda event: None)
    method = get_method(spec.method, spec.method_options)
    if not spec.train_tasks:
        raise EngineError(f"stage {spec.stage_index + 1} has no training task")
    records = [r for t in spec.train_tasks for r in _records(t.train_path, t.name, "training")]
    fingerprint = _fingerprint(spec, method)
    loaded = load_base(spec.model)
    seed = spec.train.seed
    random.seed(seed)
    torch.manual_seed(seed)
    ctx = StageContext(spec=spec, processor=loaded.processor, device=loaded.device, dtype=loaded.dtype,
                       records=records)
    own = records
    records = ctx.records = method.train_records(ctx)
    if records is not own:  # a method changed the data (replay): resume only on the very same records
        fingerprint["records"] = records_digest(records)
    model = method.prepare(loaded.model, ctx)
    recompute = enable_gradient_checkpointing(model, spec.train.gradient_checkpointing)
    ranks = f"{comm.world()} ranks ({spec.strategy}) of " if comm.world() > 1 else ""
    emit({"type": "log", "message": f"stage {spec.stage_index + 1}/{spec.n_stages} ({spec.method}): "
                                    f"{len(records)} samples from {', '.join(t.name for t in spec.train_tasks)} "
                                    f"on {ranks}{loaded.device} ({str(loaded.dtype).removeprefix('torch.')}"
                                    f"{', gradient checkpointing' if recompute else ''})"})
    outcome = train(model, loaded.processor, records, spec.train, device=loaded.device, dtype=loaded.dtype,
                    checkpoint_dir=spec.checkpoint_dir, fingerprint=fingerprint, on_event=emit,
                    should_stop=should_stop, extra_loss=method.extra_loss, strategy=spec.strategy)
    if outcome.trained is not None:  # FSDP: a whole model for saving and evaluation
        del model
        loaded = load_base(spec.model)
        model = fsdp.rebuild(lambda: method.prepare(loaded.model, ctx), outcome.trained)
    method.after_train(model, ctx)
    files = method.save(model, ctx) if comm.is_main() else {}
    comm.barrier()  # the others build their evaluation model from what rank 0 saved

    def check_stop() -> None:
        if should_stop is not None and should_stop():
            raise Stopped(outcome.steps, latest_checkpoint(spec.checkpoint_dir))

    eval_model = method.eval_model(model, ctx)
    scores = _evaluate_all(eval_model, loaded, spec.eval_tasks, spec.eval, spec.stage_dir / "predictions",
                           emit, check_stop)
    if not comm.is_main():
        return None
    env = {**env_info(loaded.device, loaded.dtype, seed), "world_size": comm.world()}
    manifest = {
        "method": spec.method, "method_options": spec.method_options, "stage_index": spec.stage_index,
        "n_stages": spec.n_stages, "train_tasks": [t.name for t in spec.train_tasks], "base": spec.model.base,
        "train": to_dict(spec.train), "eval": to_dict(spec.eval), "steps": outcome.steps,
        "train_samples": outcome.samples, "final_loss": outcome.final_loss, "files": files,
        "scores": {name: {"score": s["score"], "n": s["n"]} for name, s in scores.items()}, "env": env,
        "export": dataclasses.asdict(method.export(spec.stage_dir)),
    }
    atomic_write_json(spec.stage_dir / STAGE_MANIFEST, manifest)
    files = {**files, STAGE_MANIFEST: sha256_file(spec.stage_dir / STAGE_MANIFEST)}
    return StageResult(adapter_dir=spec.stage_dir / "adapter", files=files, scores=scores,
                       train_samples=outcome.samples, steps=outcome.steps, env=env)


def run_eval(model: ModelConfig, tasks: list[TaskData], eval_cfg: EvalConfig, out_dir: str | os.PathLike, *,
             method: str | None = None, method_options: dict[str, Any] | None = None,
             stage_dir: str | os.PathLike | None = None, on_event: EventFn | None = None,
             should_stop: StopFn | None = None) -> dict[str, dict[str, Any]]:
    """Score the base model (zero-shot, for FWT) or a finished stage's model on `tasks`.

    With `stage_dir`, `method` rebuilds that stage's evaluation model from its saved state.
    Predictions go to `out_dir/<task>.jsonl`. `Stopped` (step -1, no checkpoint) if stopped.
    """
    emit = on_event or (lambda event: None)
    loaded = load_base(model)
    net = loaded.model
    if stage_dir is not None:
        if method is None:
            raise EngineError("evaluating a stage needs the method that trained it")
        net = get_method(method, method_options).load(net, Path(stage_dir))

    def check_stop() -> None:
        if should_stop is not None and should_stop():
            raise Stopped(-1, None)

    return _evaluate_all(net, loaded, tasks, eval_cfg, Path(out_dir), emit, check_stop)

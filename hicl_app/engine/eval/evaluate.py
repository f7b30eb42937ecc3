"""Score a model on one task: generate, score with the task's scorer, keep every prediction.

The predictions file (JSONL: id, question, prediction, reference, score) is what a user opens
to see *why* a score is what it is, so it is written for every evaluation, atomically.
Under torchrun each rank answers its slice of the records and rank 0 writes the file; every rank
returns the same scores.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ...core.fsio import atomic_write_text
from ..config import EvalConfig
from ..distributed import comm
from ..errors import EngineError
from .generate import generate_answers


def evaluate_task(model: nn.Module, processor: Any, records: list[dict], scorer: str, cfg: EvalConfig,
                  predictions_path: str | os.PathLike, *, device: torch.device, dtype: torch.dtype,
                  task: str = "", on_event: Callable[[dict], None] | None = None,
                  check_stop: Callable[[], None] | None = None) -> dict[str, Any]:
    """Returns {"score": 0-100, "n", "predictions_path", "details"}.

    `check_stop` is called between generation batches and may raise (`Stopped`) to abandon
    the evaluation; nothing is written then.
    """
    from . import scorers  # pure Python, owned by the scorers module

    if not records:
        raise EngineError(f"task {task!r} has no test samples to evaluate")
    if scorer not in scorers.SCORERS:
        raise EngineError(f"unknown scorer {scorer!r} for task {task!r}", hint=f"use one of {', '.join(scorers.SCORERS)}")
    emit = on_event or (lambda event: None)
    total = len(records)
    emit({"type": "eval", "task": task, "done": 0, "total": total})

    mine = comm.shard(records)
    scale = total / max(len(mine), 1)

    def after_batch(done: int) -> None:
        emit({"type": "eval", "task": task, "done": min(total, round(done * scale)), "total": total})
        if check_stop is not None and done < len(mine):
            check_stop()

    answers = generate_answers(model, processor, mine, cfg, device=device, dtype=dtype, on_batch=after_batch)
    predictions = [a for part in comm.gather(answers) for a in part]  # contiguous slices, in rank order
    references = [r["answer"] for r in records]
    value, per_sample, details = scorers.score(scorer, predictions, references)
    lines = [json.dumps({"id": r["id"], "question": r["question"], "prediction": p, "reference": r["answer"],
                         "score": s}, ensure_ascii=False)
             for r, p, s in zip(records, predictions, per_sample)]
    path = Path(predictions_path)
    if comm.is_main():
        atomic_write_text(path, "".join(line + "\n" for line in lines))
    return {"score": float(value), "n": total, "predictions_path": str(path), "details": details}

"""A short continual run of one method over the workload's tasks, stage by stage, in this process.

The stages go through `pipeline.run_stage`, the function the worker calls, with few steps each:
the benchmarks that use it measure speed and memory, not accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .workload import Workload

STEPS_PER_TASK = 8


def run_method(workload: Workload, method: str, root: Path, *, evaluate: bool,
               options: dict[str, Any] | None = None, steps: int = STEPS_PER_TASK) -> list[Path]:
    """Train every stage of `method` under `root`; returns the stage folders in order.

    With `evaluate`, each stage scores the tasks seen so far, as a run does.
    """
    from ..engine.config import EvalConfig, ModelConfig, TrainConfig
    from ..engine.methods import get_method
    from ..engine.pipeline import run_stage
    from ..engine.spec import StageSpec

    by_name = {t.name: t for t in workload.tasks}
    plan = get_method(method, options).plan(list(by_name))
    seen: list[str] = []
    stage_dirs: list[Path] = []
    for index, names in enumerate(plan):
        seen += [n for n in names if n not in seen]
        stage_dir = Path(root) / f"stage-{index + 1}"
        spec = StageSpec(
            method=method, method_options=dict(options or {}), stage_index=index, n_stages=len(plan),
            train_tasks=[by_name[n] for n in names],
            eval_tasks=[by_name[n] for n in seen] if evaluate else [],
            model=ModelConfig(str(workload.base), device=workload.device, dtype=workload.dtype),
            train=TrainConfig(max_steps=steps, batch_size=8, lr=1e-3, checkpoint_every=0),
            eval=EvalConfig(batch_size=32, max_new_tokens=8),
            stage_dir=stage_dir, prev_stage_dir=stage_dirs[-1] if stage_dirs else None,
            checkpoint_dir=Path(root) / "checkpoints" / f"stage-{index + 1}",
            earlier_tasks=[by_name[n] for n in dict.fromkeys(n for stage in plan[:index] for n in stage)])
        run_stage(spec)
        stage_dirs.append(stage_dir)
    return stage_dirs

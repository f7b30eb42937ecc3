"""The plain records that cross the worker/engine boundary: what a stage is and what it gave.

Pure Python (no torch import), so the worker and catalog can build specs and read results
without loading the ML stack; `pipeline` re-exports these names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import EvalConfig, ModelConfig, TrainConfig, from_dict

STRATEGIES = ("ddp", "fsdp")


@dataclass
class TaskData:
    """One task's normalised JSONL files and the scorer for its answers."""

    name: str
    train_path: Path
    test_path: Path
    scorer: str = "exact"

    def __post_init__(self) -> None:
        self.train_path, self.test_path = Path(self.train_path), Path(self.test_path)


@dataclass
class StageSpec:
    """Everything one stage needs. `train_tasks` is this stage's slice of `Method.plan`.

    `extra_tasks` holds the tasks a method's options name beyond the run's own (see
    `Method.needs_tasks`, e.g. LLaVA-c's pretraining captions), resolved by the worker.
    `earlier_tasks` are the tasks the run's earlier stages trained on, in training order (never
    the held-out general task), for a method that revisits their data (replay).
    """

    method: str
    method_options: dict[str, Any]
    stage_index: int
    n_stages: int
    train_tasks: list[TaskData]
    eval_tasks: list[TaskData]
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    stage_dir: Path
    prev_stage_dir: Path | None
    checkpoint_dir: Path
    extra_tasks: dict[str, TaskData] = field(default_factory=dict)
    earlier_tasks: list[TaskData] = field(default_factory=list)
    #: how several ranks hold the model: "ddp" (replicated) or "fsdp" (sharded while training)
    strategy: str = "ddp"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        self.stage_dir, self.checkpoint_dir = Path(self.stage_dir), Path(self.checkpoint_dir)
        self.prev_stage_dir = Path(self.prev_stage_dir) if self.prev_stage_dir is not None else None


@dataclass
class StageResult:
    """What a finished stage produced. `files` maps paths relative to the stage folder to sha256."""

    adapter_dir: Path
    files: dict[str, str]
    scores: dict[str, dict[str, Any]]
    train_samples: int
    steps: int
    env: dict[str, Any] = field(default_factory=dict)


def spec_to_json(spec: StageSpec) -> dict[str, Any]:
    """The spec as JSON (paths as strings): how it reaches the ranks of a distributed stage."""
    return json_ready(dataclasses.asdict(spec))


def spec_from_json(data: dict[str, Any]) -> StageSpec:
    data = dict(data)
    data["train_tasks"] = [TaskData(**t) for t in data["train_tasks"]]
    data["eval_tasks"] = [TaskData(**t) for t in data["eval_tasks"]]
    data["extra_tasks"] = {k: TaskData(**t) for k, t in data.get("extra_tasks", {}).items()}
    data["earlier_tasks"] = [TaskData(**t) for t in data.get("earlier_tasks", [])]
    data["model"] = from_dict(ModelConfig, data["model"])
    data["train"] = from_dict(TrainConfig, data["train"])
    data["eval"] = from_dict(EvalConfig, data["eval"])
    return StageSpec(**data)


def json_ready(value: Any) -> Any:
    """`value` with every Path turned into a string, recursively."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value

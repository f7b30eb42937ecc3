"""The model and data every benchmark runs on, prepared once per `hicl bench`.

The model is the demo's pretrained tiny base (built once and cached in the workspace) unless
the user gives `--base`, a saved image-text-to-text model folder. The data is the built-in
six-task synthetic benchmark, small, cached in the workspace and normalised like `add-task`
would, so the engine reads exactly what a run reads.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..core.errors import InvalidInput
from ..engine.spec import TaskData

N_TASKS = 6
N_TRAIN = 32
N_TEST = 24


@dataclass
class Workload:
    base: Path
    tiny: bool
    tasks: list[TaskData]
    work: Path
    log: Callable[[str], None]
    repeats: int = 3
    device: str | None = None
    dtype: str | None = None
    clock: Callable[[], float] = time.perf_counter
    clock_name: str = "wall time"
    _hide_run: Path | None = field(default=None, repr=False)

    def records(self, split: str) -> list[dict]:
        return [r for t in self.tasks for r in self.task_records(t, split)]

    @staticmethod
    def task_records(task: TaskData, split: str) -> list[dict]:
        from ..core.taskfile import load_records

        return load_records(task.train_path if split == "train" else task.test_path)

    def load(self):
        """A fresh copy of the base model (in eval mode) with its processor."""
        from ..engine.config import ModelConfig
        from ..engine.modeling.models import load_base

        return load_base(ModelConfig(str(self.base), device=self.device, dtype=self.dtype))

    def timed_answers(self, model, loaded, records: list[dict], cfg) -> tuple[float, list[str]]:
        """(seconds on this workload's clock, answers) of batched greedy generation: one trial."""
        from ..engine.eval.generate import generate_answers

        t0 = self.clock()
        answers = generate_answers(model, loaded.processor, records, cfg, device=loaded.device, dtype=loaded.dtype)
        return self.clock() - t0, answers

    def hide_run(self) -> Path:
        """Folder of the last stage of a six-stage `hide` run on the workload (trained once)."""
        if self._hide_run is None:
            from .runs import run_method

            self.log("training a 6-stage hide run for the merged-layers benchmark")
            stages = run_method(self, "hide", self.work / "hide-run", evaluate=False)
            self._hide_run = stages[-1]
        return self._hide_run


def check_base(base: str | os.PathLike) -> Path:
    """A user's --base must be a saved model folder: say so before anything runs."""
    path = Path(base).expanduser()
    if not (path / "config.json").is_file():
        raise InvalidInput(f"--base {base}: no config.json in that folder",
                           hint="pass a folder written by save_pretrained (model and processor), "
                                "e.g. a downloaded llava-hf/llava-1.5-7b-hf")
    return path.resolve()


def _normalised_tasks(cache: Path, seed: int) -> list[TaskData]:
    """The synthetic tasks as normalised JSONL (what `add-task` stores), generated once."""
    from ..builtin.synth import generate, read_manifest
    from ..core.taskfile import parse_task_file, write_records

    folder = cache / f"bench-synth-s{seed}-t{N_TASKS}-n{N_TRAIN}x{N_TEST}"
    if not (folder / "manifest.json").is_file():
        generate(folder, tasks=N_TASKS, train=N_TRAIN, test=N_TEST, seed=seed, pretrain=0, overwrite=True)
    manifest = read_manifest(folder)
    tasks = []
    for entry in manifest["tasks"]:
        name = entry["name"]
        paths = {}
        for split in ("train", "test"):
            out = folder / "normalised" / name / f"{split}.jsonl"
            if not out.is_file():
                out.parent.mkdir(parents=True, exist_ok=True)
                write_records(out, parse_task_file(folder / name / f"{split}.jsonl").records)
            paths[split] = out
        tasks.append(TaskData(name=name, train_path=paths["train"], test_path=paths["test"], scorer=entry["scorer"]))
    return tasks


def prepare(cache: Path, work: Path, log: Callable[[str], None], base: str | None = None,
            repeats: int = 3, device: str | None = None, dtype: str | None = None) -> Workload:
    """Build (or reuse) the base and the data; `work` is a scratch folder for this run."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    if base is not None:
        base_dir, tiny = check_base(base), False
    else:
        from ..builtin import tinybase

        recipe = tinybase.BaseRecipe()
        if not tinybase.is_built(cache / recipe.key(), recipe):
            log("building the tiny base (once per workspace, about a minute and a half)")
        base_dir, _ = tinybase.ensure(cache, recipe)
        tiny = True
    tasks = _normalised_tasks(cache, seed=0)
    (Path(work) / "workload.json").write_text(json.dumps({"base": str(base_dir), "tasks": [t.name for t in tasks]}))
    from ..engine.modeling.models import resolve_device_dtype
    from .core import make_clock

    clock, clock_name = make_clock(str(resolve_device_dtype(device, dtype)[0]))
    return Workload(base=base_dir, tiny=tiny, tasks=tasks, work=Path(work), log=log, repeats=repeats,
                    device=device, dtype=dtype, clock=clock, clock_name=clock_name)

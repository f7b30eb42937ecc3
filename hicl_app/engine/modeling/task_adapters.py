"""Every task's own LoRA, kept under a stage folder beside the adapter that answers.

Methods whose answering model is built from several task LoRAs (O-LoRA sums them, `merge`
merges them) need each task's factors again at the next stage. They are kept in PEFT's own
layout, one folder per task, so each is also loadable on its own:

    tasks/manifest.json   {"format": 1, "tasks": [name of task 0, name of task 1, ...]}
    tasks/<i>/            adapter_config.json + adapter_model.safetensors of task i's LoRA

Stage t copies tasks 0..t-1 from stage t-1 and adds its own; the folder is written under a
staging name and renamed into place, so a crash leaves the old folder or the new one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from torch import nn

from ...core.fsio import atomic_write_json, publish_dir, sha256_file, staging_dir
from ..errors import EngineError

TASKS_DIR = "tasks"
MANIFEST = "manifest.json"
FORMAT = 1


def task_names(stage_dir: str | Path | None) -> list[str]:
    """The tasks whose LoRAs a finished stage keeps, in training order ([] for no stage)."""
    if stage_dir is None:
        return []
    path = Path(stage_dir) / TASKS_DIR / MANIFEST
    if not path.is_file():
        raise EngineError(f"no task adapters in {path.parent} ({MANIFEST} missing)",
                          hint="the previous stage must finish with the same method before this one starts")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read {path}: {exc}") from None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("tasks"), list):
        raise EngineError(f"{path} is not a task-adapter manifest of format {FORMAT}")
    return [str(t) for t in manifest["tasks"]]


def task_dirs(stage_dir: str | Path | None) -> list[Path]:
    """The PEFT adapter folder of each task a finished stage keeps, in training order."""
    return [Path(stage_dir) / TASKS_DIR / str(i) for i in range(len(task_names(stage_dir)))]


def attach(model: nn.Module, stage_dir: str | Path | None, prefix: str = "task-") -> list[str]:
    """Load every task LoRA of `stage_dir` into the PEFT `model` as frozen adapters named
    `<prefix><i>` (not made active); returns their names."""
    names = []
    for i, folder in enumerate(task_dirs(stage_dir)):
        name = f"{prefix}{i}"
        try:
            model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
        except Exception as exc:  # shape mismatch, bad JSON, unreadable safetensors
            raise EngineError(f"cannot load the task adapter {folder}: {type(exc).__name__}: {exc}",
                              hint="keep the same LoRA rank and targets for the whole run") from exc
        names.append(name)
    return names


def write(model: nn.Module, stage_dir: str | Path, prev_stage_dir: str | Path | None, task: str,
          adapter: str = "default") -> dict[str, str]:
    """Write `stage_dir/tasks/`: the previous stage's task LoRAs and `adapter` of `model` as the
    LoRA of `task`. Returns {path relative to stage_dir: sha256}."""
    earlier = task_names(prev_stage_dir)
    if task in earlier:
        raise EngineError(f"task {task!r} already has a LoRA in the previous stage", hint="name each task once per run")
    final = Path(stage_dir) / TASKS_DIR
    stage = staging_dir(final)
    try:
        for i, folder in enumerate(task_dirs(prev_stage_dir)):
            shutil.copytree(folder, stage / str(i))
        model.save_pretrained(str(stage / str(len(earlier))), selected_adapters=[adapter])
        if adapter != "default":  # PEFT writes a named adapter into a sub-folder of its own
            inner = stage / str(len(earlier)) / adapter
            for item in inner.iterdir():
                item.rename(inner.parent / item.name)
            inner.rmdir()
        atomic_write_json(stage / MANIFEST, {"format": FORMAT, "tasks": [*earlier, task]})
        hashes = {f"{TASKS_DIR}/{p.relative_to(stage).as_posix()}": sha256_file(p)
                  for p in sorted(stage.rglob("*")) if p.is_file()}
        publish_dir(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return hashes

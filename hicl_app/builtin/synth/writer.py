"""Write the synthetic benchmark to disk in the LLaVA format, atomically and reproducibly.

Layout under out_dir: <task>/{train,test}.jsonl with <task>/images/*.png (record image paths
are relative to the task folder), general/ likewise, pretrain/train.jsonl with its images,
and manifest.json. The same arguments give byte-identical files: PNGs are encoded with fixed
options and no metadata, JSON with fixed key order, and nothing records a time or a path.
Everything is written into a staging folder beside out_dir and renamed into place at the end.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from ...core.fsio import publish_dir, staging_dir
from .images import png_bytes, render
from .tasks import GENERAL, TASK_NAMES, TASKS, TaskSpec, get_task, make_sample, pretrain_sample

FORMAT_VERSION = 1
PRETRAIN_DESCRIPTION = ("Generic descriptions of every image domain, asked with the general "
                        "prompts; for pretraining the tiny base. No task answers.")


def record(rec_id: str, image: str, question: str, answer: str) -> dict:
    """One LLaVA-format conversation record."""
    return {
        "id": rec_id,
        "image": image,
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": answer},
        ],
    }


def _write_split(folder: Path, split: str, samples, image_size: int, prefix: str) -> str:
    """Write images and <split>.jsonl for (scene, question, answer) samples; return its sha256."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (scene, question, answer) in enumerate(samples):
        rel = f"images/{split}_{i:05d}.png"
        (folder / rel).write_bytes(png_bytes(render(scene, image_size)))
        lines.append(json.dumps(record(f"{prefix}-{split}-{i:05d}", rel, question, answer),
                                ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
    (folder / f"{split}.jsonl").write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _write_task(root: Path, spec: TaskSpec, seed: int, counts: dict[str, int], image_size: int) -> dict:
    folder = root / spec.name
    entry = {
        "name": spec.name,
        "scorer": spec.scorer,
        "description": spec.description,
        "instruction": spec.instruction,
        "answer_style": spec.answer_style,
        "answers": list(spec.answers) if spec.answers is not None else None,
        "files": {},
        "sha256": {},
    }
    for split, n in counts.items():
        samples = (make_sample(spec, seed, split, i) for i in range(n))
        entry["sha256"][split] = _write_split(folder, split, samples, image_size, spec.name)
        entry["files"][split] = f"{spec.name}/{split}.jsonl"
        entry[split] = n
    return entry


def _select(tasks: int | Sequence[str]) -> list[TaskSpec]:
    if isinstance(tasks, str):
        tasks = [tasks]
    if isinstance(tasks, int):
        if not 1 <= tasks <= len(TASKS):
            raise ValueError(f"tasks must be 1..{len(TASKS)}, got {tasks}")
        return list(TASKS[:tasks])
    specs = [get_task(name) for name in tasks]
    if any(s.name == GENERAL.name for s in specs):
        raise ValueError("'general' is always written; do not list it in tasks")
    if len({s.name for s in specs}) != len(specs):
        raise ValueError("duplicate task names")
    return specs


def generate(out_dir, tasks: int | Sequence[str] = 6, train: int = 250, test: int = 50,
             seed: int = 0, image_size: int = 64, pretrain: int = 1000,
             overwrite: bool = False) -> dict:
    """Generate the benchmark into out_dir and return the manifest (also in manifest.json).

    `tasks` is N (the first N of the UCIT-like order: shapes, chartqa, caption-scene, count,
    math, caption-style) or a list of those names. The held-out `general` task gets `test`
    test samples and `train` train samples (the latter only so every task folder has the same
    shape; it is meant for evaluation). `pretrain` samples go to pretrain/train.jsonl.
    Refuses a non-empty out_dir unless overwrite=True, which replaces it whole.
    """
    specs = _select(tasks)
    for name, value in (("train", train), ("test", test), ("pretrain", pretrain)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0")
    if image_size < 8:
        raise ValueError("image_size must be at least 8")
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a folder")
        if any(out.iterdir()) and not overwrite:
            raise FileExistsError(f"{out} is not empty (pass overwrite=True to replace it)")
    stage = staging_dir(out)
    try:
        counts = {"train": train, "test": test}
        manifest = {
            "format": "llava",
            "version": FORMAT_VERSION,
            "seed": seed,
            "image_size": image_size,
            "order": [s.name for s in specs],
            "tasks": [_write_task(stage, s, seed, counts, image_size) for s in specs],
            "general": _write_task(stage, GENERAL, seed, counts, image_size),
        }
        samples = (pretrain_sample(seed, i) for i in range(pretrain))
        manifest["pretrain"] = {
            "name": "pretrain",
            "description": PRETRAIN_DESCRIPTION,
            "train": pretrain,
            "files": {"train": "pretrain/train.jsonl"},
            "sha256": {"train": _write_split(stage / "pretrain", "train", samples, image_size,
                                             "pretrain")},
        }
        text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (stage / "manifest.json").write_text(text, encoding="utf-8")
        publish_dir(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return manifest


def read_manifest(out_dir) -> dict:
    return json.loads((Path(out_dir) / "manifest.json").read_text(encoding="utf-8"))


__all__ = ["generate", "read_manifest", "record", "TASK_NAMES"]

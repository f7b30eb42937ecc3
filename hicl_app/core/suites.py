"""Benchmark suites as their authors publish them: where each task's files lie, how it is scored,
and the order the tasks are learned in. Pure data and path checks; `services/suites.py` adds them.

UCIT (HiDe-LLaVA, ACL 2025; also MCITlib's UCIT): the instructions are the `HaiyangGuo/UCIT`
dataset repo, one folder per task (at the top of DIR, or under DIR/instructions/ as HiDe-LLaVA's
README lays them out), and the images sit under DIR/datasets/, which every record's `image` is
relative to (the `--image_folder` of the authors' scripts). Training files are LLaVA
conversations (`train*.json`); test files (`test_3000.json`) are LLaVA question files
(`question_id`, `image`, `text` holding the instruction, `answer`). The two captioning tasks are
scored against `val_coco_type_3000.json` (COCO caption format; `image_id` k is the k-th test
record), as the authors' `eval_caption.py` does. The instruction each task's records carry (e.g.
"Answer with the option's letter from the given choices directly.") is the authors' template
and is kept verbatim. Order and file names follow the authors' `Train_UCIT/Task1..6.sh`.

Scorers: the authors score the question tasks by exact match of the answer (case-insensitive)
and the captioning tasks with BLEU/ROUGE-L/CIDEr; ArxivQA's answers are option letters, so it
gets `choice` (the letter read from the prediction).

CoIN and MLLM-DCL are listed so that asking for them says why they cannot be added (yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SuiteTask:
    name: str
    folders: tuple[str, ...]  # the task's instruction folder, as the releases spell it
    train: str
    test: str
    scorer: str
    references: str | None = None  # COCO-format caption references of the test file


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    tasks: tuple[SuiteTask, ...] = ()
    images: str = "datasets"
    unavailable: str | None = None  # why this hicl cannot add it

    @property
    def order(self) -> list[str]:
        return [t.name for t in self.tasks]


SUITES: dict[str, Suite] = {
    "ucit": Suite("ucit", "UCIT (HiDe-LLaVA): ImageNet-R, ArxivQA, VizWiz-Caption, IconQA, CLEVR-Math, Flickr30k", (
        SuiteTask("ImageNet-R", ("ImageNet-R",), "train.json", "test_3000.json", "exact"),
        SuiteTask("ArxivQA", ("ArxivQA",), "train_4w.json", "test_3000.json", "choice"),
        SuiteTask("VizWiz", ("VizWiz", "VizWiz-caption"), "train.json", "test_3000.json", "caption",
                  "val_coco_type_3000.json"),
        SuiteTask("IconQA", ("IconQA",), "train.json", "test_3000.json", "exact"),
        SuiteTask("CLEVR-Math", ("CLEVR-Math", "CLEVR"), "train_4w.json", "test_3000.json", "exact"),
        SuiteTask("Flickr30k", ("Flickr30k", "Flickr30k-cap"), "train_brief_4w.json", "test_3000.json", "caption",
                  "val_coco_type_3000.json"),
    )),
    "coin": Suite("coin", "CoIN: ScienceQA, TextVQA, ImageNet, GQA, VizWiz, Grounding, VQAv2, OCR-VQA", unavailable=(
        "its Grounding task is scored by box IoU, which hicl has no scorer for, and TextVQA and VQAv2 are scored "
        "against the official annotation files (VQA accuracy over ten answers), not the instruction files")),
    "mllm-dcl": Suite("mllm-dcl", "MLLM-DCL: RS, Med, AD, Sci, Fin", unavailable=(
        "the scoring of its domain tasks (the release's per-domain evaluation scripts) could not be established "
        "from public sources here")),
}


@dataclass(frozen=True)
class TaskFiles:
    task: SuiteTask
    train: Path
    test: Path
    references: Path | None


def locate(suite: Suite, root: Path) -> tuple[Path, list[TaskFiles], list[str]]:
    """(images folder, each task's files, every missing file or folder) under `root`."""
    missing: list[str] = []
    images = root / suite.images
    if not images.is_dir():
        missing.append(f"{images}/ (the images folder every record's image path is relative to)")
    found = []
    bases = [root / "instructions", root]
    for task in suite.tasks:
        folder = next((b / f for b in bases for f in task.folders if (b / f).is_dir()), None)
        if folder is None:
            missing.append(f"{root / task.folders[0]}/ (the {task.name} instructions; also looked for "
                           + ", ".join(str(b / f) for b in bases for f in task.folders if b / f != root / task.folders[0])
                           + ")")
            continue
        files = [folder / task.train, folder / task.test] + ([folder / task.references] if task.references else [])
        missing += [str(f) for f in files if not f.is_file()]
        found.append(TaskFiles(task, files[0], files[1], files[2] if task.references else None))
    return images, found, missing

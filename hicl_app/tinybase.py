"""The demo's tiny base: a LLaVA-architecture model pretrained on CPU on generic descriptions.

A real MLLM arrives pretrained; an untrained tiny one would make every continual method look
alike. So the base learns, in about a minute, to describe the benchmark's image domains in its
own style (never the task answers), and is cached in the workspace keyed by its recipe.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .fsio import atomic_write_json

RECIPE_FILE = "hicl-tiny-base.json"
RECIPE_VERSION = 2  # 2: the vision tower is pretrained on scene attributes first, then frozen


@dataclass(frozen=True)
class BaseRecipe:
    seed: int = 0
    steps: int = 600
    samples: int = 1500
    lr: float = 2e-3
    batch_size: int = 16
    size: str = "tiny"
    #: steps of the vision tower's attribute pretraining (0: none, the tower learns from captions only)
    vision_steps: int = 600

    def key(self) -> str:
        return f"tiny-base-v{RECIPE_VERSION}-s{self.seed}-n{self.samples}-k{self.steps}-v{self.vision_steps}"


def is_built(out_dir: Path, recipe: BaseRecipe) -> bool:
    marker = Path(out_dir) / RECIPE_FILE
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text())["recipe"] == asdict(recipe)
    except (ValueError, KeyError):
        return False


def build(out_dir: str | Path, recipe: BaseRecipe = BaseRecipe(), on_event=None) -> Path:
    """Build the tokenizer and model, pretrain on synthetic descriptions, save with a recipe marker."""
    from .engine.tiny import build_tiny_base, pretrain
    from .synth import generate, vocabulary_corpus
    from .taskfile import parse_task_file

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="hicl-pretrain-") as tmp:
        data = Path(tmp) / "bench"
        generate(data, tasks=1, train=1, test=1, seed=recipe.seed + 1000, pretrain=recipe.samples)
        records = parse_task_file(data / "pretrain" / "train.jsonl").records
        build_tiny_base(out_dir, seed=recipe.seed, corpus=vocabulary_corpus(), size=recipe.size)
        try:
            if recipe.vision_steps:
                _pretrain_vision(out_dir, recipe, on_event)
            pretrain(out_dir, records, steps=recipe.steps, lr=recipe.lr, batch_size=recipe.batch_size,
                     seed=recipe.seed, on_event=on_event, freeze_vision=bool(recipe.vision_steps))
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
    atomic_write_json(out_dir / RECIPE_FILE, {"recipe": asdict(recipe), "version": RECIPE_VERSION})
    return out_dir


def _pretrain_vision(out_dir: Path, recipe: BaseRecipe, on_event=None) -> dict[str, float]:
    """The tower's "CLIP pretraining" on the attributes of the pretraining scenes (same stream)."""
    from .engine.vision_pretrain import pretrain_vision
    from .synth.attributes import CLASSES, label_columns
    from .synth.images import render
    from .synth.tasks import pretrain_sample

    scenes = [pretrain_sample(recipe.seed + 1000, i)[0] for i in range(recipe.samples)]
    images = [render(scene, 64) for scene in scenes]
    return pretrain_vision(out_dir, images, label_columns(scenes), CLASSES, steps=recipe.vision_steps,
                           seed=recipe.seed, on_event=on_event)


def ensure(cache_dir: Path, recipe: BaseRecipe = BaseRecipe(), on_event=None) -> tuple[Path, bool]:
    """(path, built_now): reuse the cached base for this recipe, or build it."""
    out = Path(cache_dir) / recipe.key()
    if is_built(out, recipe):
        return out, False
    return build(out, recipe, on_event), True

"""The demo's tiny base: a tiny model pretrained on CPU on generic descriptions.

LLaVA by default; `BaseRecipe.family` builds another family (`families.py`) at the same widths
and puts it through the same recipe.

A real MLLM arrives pretrained; an untrained tiny one would make every continual method look
alike. So the base learns, in about a minute and a half on 2 cores, to describe the benchmark's image domains in its
own style (never the task answers), and is cached in the workspace keyed by its recipe.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.fsio import atomic_write_json

RECIPE_FILE = "hicl-tiny-base.json"
#: 2: the vision tower is pretrained on scene attributes first, then frozen; 3: on many distinct
#: scenes (not the captioned ones, which it memorised) and on where the tallest and shortest bar
#: stand
RECIPE_VERSION = 3


@dataclass(frozen=True)
class BaseRecipe:
    seed: int = 0
    steps: int = 600
    samples: int = 3000
    lr: float = 2e-3
    batch_size: int = 32
    size: str = "tiny"
    #: steps of the vision tower's attribute pretraining (0: none, the tower learns from captions only)
    vision_steps: int = 2000
    #: distinct scenes the tower sees in that pretraining (its "web-scale" data; labels, no captions)
    vision_samples: int = 24000
    vision_lr: float = 5e-3
    #: the model family (`families.FAMILIES`), built at the tiny LLaVA's widths
    family: str = "llava"

    def key(self) -> str:
        family = "" if self.family == "llava" else f"{self.family}-"
        return (f"tiny-{family}base-v{RECIPE_VERSION}-s{self.seed}-n{self.samples}-k{self.steps}"
                f"-v{self.vision_steps}x{self.vision_samples}")


def _recorded(recipe: BaseRecipe) -> dict:
    """The recipe as its marker holds it (a LLaVA one as before families existed, so it stays valid)."""
    out = asdict(recipe)
    if recipe.family == "llava":
        out.pop("family")
    return out


def is_built(out_dir: Path, recipe: BaseRecipe) -> bool:
    marker = Path(out_dir) / RECIPE_FILE
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text())["recipe"] == _recorded(recipe)
    except (ValueError, KeyError):
        return False


def build(out_dir: str | Path, recipe: BaseRecipe = BaseRecipe(), on_event=None) -> Path:
    """Build the tokenizer and model, pretrain on synthetic descriptions, save with a recipe marker."""
    from ..core.taskfile import parse_task_file
    from .families import build_family_base
    from .synth import generate, vocabulary_corpus
    from .tiny import build_tiny_base, pretrain

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="hicl-pretrain-") as tmp:
        data = Path(tmp) / "bench"
        generate(data, tasks=1, train=1, test=1, seed=recipe.seed + 1000, pretrain=recipe.samples)
        records = parse_task_file(data / "pretrain" / "train.jsonl").records
        if recipe.family == "llava":
            build_tiny_base(out_dir, seed=recipe.seed, corpus=vocabulary_corpus(), size=recipe.size)
        else:  # the benchmark's 64 px images
            build_family_base(recipe.family, out_dir, seed=recipe.seed, corpus=vocabulary_corpus(), image=64,
                              size=recipe.size)
        emit = on_event or (lambda event: None)
        try:
            if recipe.vision_steps:
                emit({"kind": "base_phase", "phase": "vision", "total": recipe.vision_steps})
                _pretrain_vision(out_dir, recipe, on_event)
            emit({"kind": "base_phase", "phase": "language", "total": recipe.steps})
            pretrain(out_dir, records, steps=recipe.steps, lr=recipe.lr, batch_size=recipe.batch_size,
                     seed=recipe.seed, on_event=on_event, freeze_vision=bool(recipe.vision_steps))
            emit({"kind": "base_done"})
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
    atomic_write_json(out_dir / RECIPE_FILE, {"recipe": _recorded(recipe), "version": RECIPE_VERSION})
    return out_dir


#: scenes held out of the tower's pretraining to measure what it learnt (at most a tenth of them)
VISION_HOLDOUT = 1000


def _pretrain_vision(out_dir: Path, recipe: BaseRecipe, on_event=None) -> dict[str, float]:
    """The tower's "CLIP pretraining" on the attributes of scenes of every image domain.

    Its own stream of scenes, many more than the captioned ones: on a few thousand the tower
    learns those images by heart instead of shapes and counts. Returns the accuracy of each
    attribute on held-out scenes, also sent to `on_event`.
    """
    from .synth.attributes import CLASSES, label_columns
    from .synth.images import render
    from .synth.tasks import random_scene, sample_rng
    from .vision_pretrain import pretrain_vision

    n = recipe.vision_samples
    scenes = [random_scene(sample_rng(recipe.seed + 1000, "vision", i)) for i in range(n)]
    images = [render(scene, 64) for scene in scenes]
    accuracy = pretrain_vision(out_dir, images, label_columns(scenes), CLASSES, steps=recipe.vision_steps,
                               lr=recipe.vision_lr, seed=recipe.seed, holdout=min(VISION_HOLDOUT, n // 10),
                               on_event=on_event)
    if on_event is not None:
        on_event({"kind": "vision_accuracy", "accuracy": accuracy})
    return accuracy


def vision_summary(accuracy: dict[str, float], names: tuple[str, ...] | None = None) -> str:
    """'vision tower on held-out scenes: kind 88%, ...' for the `vision_accuracy` event's figures."""
    shown = [k for k in (names or accuracy) if k in accuracy]
    return "vision tower on held-out scenes: " + ", ".join(f"{k} {100 * accuracy[k]:.0f}%" for k in shown)


def ensure(cache_dir: Path, recipe: BaseRecipe = BaseRecipe(), on_event=None) -> tuple[Path, bool]:
    """(path, built_now): reuse the cached base for this recipe, or build it."""
    out = Path(cache_dir) / recipe.key()
    if is_built(out, recipe):
        return out, False
    return build(out, recipe, on_event), True

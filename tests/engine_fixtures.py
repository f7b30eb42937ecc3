"""Session-wide engine fixtures: a pretrained tiny LLaVA and a small synthetic continual benchmark.

Both are built once per test process: `tests/conftest.py` registers this module as a plugin, so
tests take the fixtures by name and import only its helper functions. Tasks share one pool of
images and one answer vocabulary on purpose: "What color is the shape?" and "What color is the
background?" ask about the same pictures and answer with the same words, so training on one
overwrites the other, which is the forgetting the methods fight.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

PALETTE = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 230), "yellow": (240, 210, 30)}
SHAPES = ("circle", "square")
WARM = {"red": "warm", "yellow": "warm", "green": "cool", "blue": "cool"}
QUESTIONS = {
    "color": "What color is the shape?",
    "bg": "What color is the background?",
    "tone": "Is the background warm or cool?",
}
CAPTION = "Describe the image."
IMAGE_SIZE = 32
N_TRAIN, N_TEST = 128, 32
PRETRAIN_STEPS = 200

def draw_scenes(folder: Path, n: int, seed: int) -> list[dict]:
    """n PNG scenes (one shape on a differently coloured background) and what they show."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    scenes = []
    for i in range(n):
        color, bg = rng.sample(list(PALETTE), 2)
        shape = rng.choice(SHAPES)
        im = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), PALETTE[bg])
        r = rng.randint(IMAGE_SIZE // 5, IMAGE_SIZE // 4)
        cx, cy = rng.randint(r, IMAGE_SIZE - r), rng.randint(r, IMAGE_SIZE - r)
        box = [cx - r, cy - r, cx + r, cy + r]
        draw = ImageDraw.Draw(im)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=PALETTE[color])
        path = folder / f"{i:04d}.png"
        im.save(path)
        scenes.append({"image": str(path), "color": color, "bg": bg, "shape": shape, "tone": WARM[bg]})
    return scenes


def task_records(task: str, scenes: list[dict]) -> list[dict]:
    return [{"id": f"{task}-{i}", "image": s["image"], "question": QUESTIONS[task], "answer": s[task],
             "history": []} for i, s in enumerate(scenes)]


def caption_records(scenes: list[dict]) -> list[dict]:
    return [{"id": f"cap-{i}", "image": s["image"], "question": CAPTION,
             "answer": f"a {s['color']} {s['shape']} on {s['bg']}", "history": []} for i, s in enumerate(scenes)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _build_base(root: Path) -> Path:
    from hicl_app.builtin.tiny import build_tiny_base, pretrain

    corpus = [f"USER: <image>\n{q} ASSISTANT: {a}" for q in [*QUESTIONS.values(), CAPTION]
              for a in [*PALETTE, *SHAPES, "warm", "cool"]]
    base = build_tiny_base(root / "tiny-base", seed=0, corpus=corpus)
    pretrain(base, caption_records(draw_scenes(root / "pretrain-img", 256, seed=1)), steps=PRETRAIN_STEPS)
    return base


def _build_tasks(root: Path) -> dict:
    from hicl_app.engine.spec import TaskData

    scenes = draw_scenes(root / "img", N_TRAIN + N_TEST, seed=2)
    tasks = {}
    for name in QUESTIONS:
        records = task_records(name, scenes)
        train = write_jsonl(root / name / "train.jsonl", records[:N_TRAIN])
        test = write_jsonl(root / name / "test.jsonl", records[N_TRAIN:])
        tasks[name] = TaskData(name=name, train_path=train, test_path=test, scorer="exact")
    return tasks


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    """A saved tiny LLaVA, briefly pretrained on captions so LoRA can learn questions fast."""
    return _build_base(tmp_path_factory.mktemp("engine-base"))


@pytest.fixture(scope="session")
def cl_tasks(tmp_path_factory) -> dict:
    """{"color", "bg", "tone"} -> TaskData with train.jsonl (128) / test.jsonl (32) files."""
    return _build_tasks(tmp_path_factory.mktemp("engine-tasks"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def quick_lora(base_dir: Path, records: list[dict], steps: int, seed: int = 0, **overrides):
    """Load the base, wrap a fresh LoRA and train it `steps` steps; returns (loaded, model)."""
    import torch

    from hicl_app.engine.config import ModelConfig, TrainConfig
    from hicl_app.engine.modeling.adapters import new_lora
    from hicl_app.engine.modeling.models import load_base
    from hicl_app.engine.train.loop import train

    loaded = load_base(ModelConfig(str(base_dir)))
    cfg = TrainConfig(**{"max_steps": steps, "lr": 1e-3, "checkpoint_every": 0, "seed": seed, **overrides})
    torch.manual_seed(seed)
    model = new_lora(loaded.model, cfg)
    train(model, loaded.processor, records, cfg, device=loaded.device, dtype=loaded.dtype,
          checkpoint_dir=None, fingerprint={})
    return loaded, model


def add_tasks_by_cli(cli, tmp_path: Path, tasks: dict, names=("color", "bg", "tone")) -> None:
    """Add the fixture's tasks through `hicl add-task` (VQA format, images by absolute path)."""
    for name in names:
        t = tasks[name]
        root = Path(read_jsonl(t.train_path)[0]["image"]).parent
        files = {}
        for split, path in (("train", t.train_path), ("test", t.test_path)):
            recs = [{"id": r["id"], "image": r["image"], "question": r["question"], "answer": r["answer"]}
                    for r in read_jsonl(path)]
            files[split] = write_jsonl(tmp_path / f"{name}-{split}.jsonl", recs)
        res = cli("add-task", files["train"], "--test", files["test"], "--images", root, "--name", name,
                  "--scorer", "exact")
        assert res.exit_code == 0, res.output


#: the families besides LLaVA that `builtin/families.py` builds tiny instances of
OTHER_FAMILIES = ("qwen2-vl", "llava-onevision", "idefics3")
FAMILY_TRAIN, FAMILY_TEST = 16, 6


@pytest.fixture(scope="session")
def family_base_dirs(tmp_path_factory):
    """family -> a saved tiny random base of that family, each built once, on first use."""
    from hicl_app.builtin.families import build_family_base

    root = tmp_path_factory.mktemp("family-bases")
    corpus = [f"{q} {a}" for q in [*QUESTIONS.values(), CAPTION] for a in [*PALETTE, *SHAPES, "warm", "cool"]]
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_family_base(family, root / family, seed=0, corpus=corpus)
        return built[family]

    return get


@pytest.fixture(scope="session")
def family_tasks(tmp_path_factory) -> dict:
    """Small "color" and "bg" tasks and a "caps" caption task (16 train / 6 test each) on 32 px scenes."""
    from hicl_app.engine.spec import TaskData

    root = tmp_path_factory.mktemp("family-tasks")
    scenes = draw_scenes(root / "img", FAMILY_TRAIN + FAMILY_TEST, seed=3)
    tasks = {}
    for name, records in (("color", task_records("color", scenes)), ("bg", task_records("bg", scenes)),
                          ("caps", caption_records(scenes))):
        train = write_jsonl(root / name / "train.jsonl", records[:FAMILY_TRAIN])
        test = write_jsonl(root / name / "test.jsonl", records[FAMILY_TRAIN:])
        tasks[name] = TaskData(name=name, train_path=train, test_path=test, scorer="exact")
    return tasks

"""The synthetic UCIT-like tasks: which scene each draws, what it asks and how it answers.

Six tasks in UCIT order (ImageNet-R, ArxivQA, VizWiz-Caption, IconQA, CLEVR-Math, Flickr30k
analogues) plus a held-out `general` task in the base model's own describing style. Each
task has its own instruction wording and answer style (a class word, an option letter, a
caption in one template, a digit, a digit after subtraction, a caption in another template)
while all of them draw the same colours and shapes, so the tasks interfere.

Every sample comes from its own random stream, seeded by (seed, stream name, index): sample
i of a split is the same whatever the split size or the number of tasks generated.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import dataclass
from typing import Callable

from PIL import Image

from .images import BACKGROUNDS, COLORS, SHAPES, STYLES, Obj, Scene, render

PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
ORDINALS = ("first", "second", "third", "fourth", "fifth")
LETTERS = "ABCD"
# The base model's own style: generic prompts answered by a plain description.
GENERAL_PROMPTS: tuple[str, ...] = (
    "What is in the image?",
    "Describe the image.",
    "What do you see in this picture?",
    "Tell me about the image.",
)
KINDS: tuple[str, ...] = ("single", "pair", "icons", "mixed", "chart")

# (scene, question, answer)
Sample = tuple[Scene, str, str]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    scorer: str
    description: str
    instruction: str
    answer_style: str
    answers: tuple[str, ...] | None  # the closed answer space, None for free text
    make: Callable[[random.Random], Sample]


def sample_rng(seed: int, stream: str, index: int) -> random.Random:
    """An independent, platform-stable random stream for one sample."""
    digest = hashlib.sha256(f"hicl-synth:{seed}:{stream}:{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# ---------------------------------------------------------------- scenes

_GRID = (1 / 6, 3 / 6, 5 / 6)


def _grid_objects(rng: random.Random, specs: list[tuple[str, str]]) -> tuple[Obj, ...]:
    """Place up to 9 small (shape, color) objects in distinct cells of a 3x3 grid."""
    cells = rng.sample(range(9), len(specs))
    objs = []
    for (shape, color), cell in zip(specs, cells):
        cx = _GRID[cell % 3] + rng.uniform(-0.025, 0.025)
        cy = _GRID[cell // 3] + rng.uniform(-0.025, 0.025)
        objs.append(Obj(shape, color, cx, cy, rng.uniform(0.11, 0.13)))
    return tuple(objs)


def single_scene(rng: random.Random, styles: tuple[str, ...] = ("filled",), r_min: float = 0.22,
                 r_max: float = 0.34) -> Scene:
    r = rng.uniform(r_min, r_max)
    margin = r + 0.04
    obj = Obj(rng.choice(SHAPES), rng.choice(list(COLORS)), rng.uniform(margin, 1 - margin),
              rng.uniform(margin, 1 - margin), r, rng.choice(styles))
    return Scene("single", rng.choice(list(BACKGROUNDS)), (obj,))


def pair_scene(rng: random.Random) -> Scene:
    kinds = list(itertools.product(SHAPES, COLORS))
    (s1, c1), (s2, c2) = rng.sample(kinds, 2)
    objs = []
    for (shape, color), cx in (((s1, c1), 0.27), ((s2, c2), 0.73)):
        objs.append(Obj(shape, color, cx + rng.uniform(-0.03, 0.03), 0.5 + rng.uniform(-0.15, 0.15),
                        rng.uniform(0.17, 0.21)))
    return Scene("pair", rng.choice(list(BACKGROUNDS)), tuple(objs))


def icons_scene(rng: random.Random, n: int | None = None) -> Scene:
    n = n if n is not None else rng.randint(1, 5)
    shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
    return Scene("icons", rng.choice(list(BACKGROUNDS)), _grid_objects(rng, [(shape, color)] * n))


def mixed_scene(rng: random.Random, removed: str | None = None, n_removed: int = 0,
                n_left: int | None = None) -> Scene:
    """Up to five shapes of one to three colours.

    With `removed` (the CLEVR-Math-like task): n_removed shapes of that colour and n_left of
    one other colour, so the answer is also what the base's description counts.
    """
    if removed is None:
        n_total = rng.randint(2, 5)
        palette = rng.sample(list(COLORS), rng.randint(1, 3))
        colors = [rng.choice(palette) for _ in range(n_total)]
    else:
        other = rng.choice([c for c in COLORS if c != removed])
        colors = [removed] * n_removed + [other] * (n_left or 0)
    specs = [(rng.choice(SHAPES), c) for c in colors]
    return Scene("mixed", rng.choice(list(BACKGROUNDS)), _grid_objects(rng, specs))


_BAR_LEVELS = (0.2, 0.35, 0.5, 0.65, 0.8, 0.95)


BAR_COUNTS = (2, 3, 4, 5)


def chart_scene(rng: random.Random, n: int | None = None) -> Scene:
    n = n if n is not None else rng.choice(BAR_COUNTS)
    colors = rng.sample(list(COLORS), n)
    heights = rng.sample(_BAR_LEVELS, n)
    return Scene("chart", rng.choice(list(BACKGROUNDS)), bars=tuple(zip(colors, heights)))


def random_scene(rng: random.Random) -> Scene:
    kind = rng.choice(KINDS)
    if kind == "single":
        return single_scene(rng, styles=STYLES, r_min=0.22, r_max=0.4)
    return {"pair": pair_scene, "icons": icons_scene, "mixed": mixed_scene, "chart": chart_scene}[kind](rng)


# ---------------------------------------------------------------- base-style descriptions

def _a(word: str) -> str:
    """The indefinite article for `word`."""
    return "an" if word[0] in "aeiou" else "a"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def describe(scene: Scene) -> str:
    """The generic description the base model is pretrained to give (never a task answer)."""
    where = f"on a {scene.bg} background."
    objs = scene.objects
    if scene.kind == "chart":  # which bar stands highest and lowest, counted from the left
        heights = [h for _, h in scene.bars]
        tallest, shortest = (ORDINALS[heights.index(f(heights))] for f in (max, min))
        return (f"a bar chart with {_join([c for c, _ in scene.bars])} bars {where} "
                f"the {tallest} bar is the tallest and the {shortest} the shortest.")
    if scene.kind in ("single", "pair"):
        return _join([f"{_a(o.color)} {o.color} {o.shape}" for o in objs]) + f" {where}"
    if scene.kind == "icons":
        o = objs[0]
        if len(objs) == 1:
            return f"{_a(o.color)} {o.color} {o.shape} {where}"
        return f"{NUMBER_WORDS[len(objs)]} {o.color} {PLURALS[o.shape]} {where}"
    if scene.kind == "mixed":
        counts = {c: sum(o.color == c for o in objs) for c in COLORS}
        parts = [f"{NUMBER_WORDS[k]} {c} shape{'s' if k > 1 else ''}" for c, k in counts.items() if k]
        return f"{_join(parts)} {where}"
    raise ValueError(f"unknown scene kind {scene.kind!r}")


# ---------------------------------------------------------------- the tasks

_SHAPES_Q = "What is the object in the image?\nAnswer the question using a single word or phrase."
_CHART_INSTR = "Answer with the option's letter from the given choices directly."
_SCENE_Q = "Generate a brief caption for the image."
_COUNT_INSTR = "Answer with a single digit."
_MATH_INSTR = "Answer the question using a single number."
_STYLE_Q = "Provide a one-sentence caption for the provided image."


def _make_shapes(rng: random.Random) -> Sample:
    scene = single_scene(rng, styles=STYLES, r_min=0.28, r_max=0.4)
    return scene, _SHAPES_Q, scene.objects[0].shape


_CHART_Q = ("How many bars does the chart show?\n"
             + "\n".join(f"{letter}. {k}" for letter, k in zip(LETTERS, BAR_COUNTS)) + f"\n{_CHART_INSTR}")


def _make_chart(rng: random.Random) -> Sample:
    # Which bar is tallest or shortest, with the colours as options, was the first design: the
    # tiny base's tower reads bar heights, but after its short pretraining the language model
    # names the right bar too rarely for a task trained alone to leave chance. The number of bars
    # it reads as well as icons.
    scene = chart_scene(rng)
    return scene, _CHART_Q, LETTERS[BAR_COUNTS.index(len(scene.bars))]


def _scene_caption(scene: Scene) -> str:
    o = scene.objects[0]
    return f"{scene.bg} photo of {_a(o.color)} {o.color} {o.shape}"


def _make_caption_scene(rng: random.Random) -> Sample:
    scene = single_scene(rng)
    return scene, _SCENE_Q, _scene_caption(scene)


def _make_count(rng: random.Random) -> Sample:
    scene = icons_scene(rng)
    shape = scene.objects[0].shape
    return scene, f"How many {PLURALS[shape]} are there?\n{_COUNT_INSTR}", str(len(scene.objects))


def _math_question(color: str) -> str:
    return f"Subtract all {color} objects. How many objects are left?\n{_MATH_INSTR}"


def _make_math(rng: random.Random) -> Sample:
    n_left = rng.randint(1, 4)
    n_removed = rng.randint(1, 5 - n_left)
    color = rng.choice(list(COLORS))
    scene = mixed_scene(rng, removed=color, n_removed=n_removed, n_left=n_left)
    return scene, _math_question(color), str(n_left)


def _style_caption(scene: Scene) -> str:
    a, b = scene.objects
    return f"{_a(a.color)} {a.color} {a.shape} left of {_a(b.color)} {b.color} {b.shape}"


def _make_caption_style(rng: random.Random) -> Sample:
    scene = pair_scene(rng)
    return scene, _STYLE_Q, _style_caption(scene)


def _make_general(rng: random.Random) -> Sample:
    scene = random_scene(rng)
    return scene, rng.choice(GENERAL_PROMPTS), describe(scene)


TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("shapes", "exact",
             "ImageNet-R-like: the class of one large shape drawn filled, outlined or bordered.",
             _SHAPES_Q, "one class word", SHAPES, _make_shapes),
    TaskSpec("chartqa", "choice",
             "ArxivQA-like: multiple choice (A-D) on how many bars (2-5) a bar chart shows.",
             _CHART_INSTR, "an option letter", tuple(LETTERS), _make_chart),
    TaskSpec("caption-scene", "caption",
             "VizWiz-Caption-like: a brief caption of one shape, '<bg> photo of a <color> <shape>'.",
             _SCENE_Q, "a 5-word caption", None, _make_caption_scene),
    TaskSpec("count", "relaxed",
             "IconQA-like: how many identical icons (1-5) are in a grid.",
             _COUNT_INSTR, "a digit 1-5", tuple("12345"), _make_count),
    TaskSpec("math", "relaxed",
             "CLEVR-Math-like: count the shapes left after removing those of one colour (2-5 shapes, two colours).",
             _MATH_INSTR, "a digit 1-4", tuple("1234"), _make_math),
    TaskSpec("caption-style", "caption",
             "Flickr30k-like: a caption of two shapes, 'a <color> <shape> left of a <color> <shape>'.",
             _STYLE_Q, "an 8-word caption", None, _make_caption_style),
)
GENERAL = TaskSpec("general", "caption",
                   "Held out: generic questions about every image domain, answered with the "
                   "base model's plain description; shows base-model degradation.",
                   " / ".join(GENERAL_PROMPTS), "a description sentence", None, _make_general)
TASK_NAMES: tuple[str, ...] = tuple(t.name for t in TASKS)


def get_task(name: str) -> TaskSpec:
    for spec in (*TASKS, GENERAL):
        if spec.name == name:
            return spec
    raise KeyError(f"unknown synthetic task {name!r}; known: {', '.join(TASK_NAMES)}, general")


def make_sample(spec: TaskSpec, seed: int, split: str, index: int) -> Sample:
    return spec.make(sample_rng(seed, f"{spec.name}/{split}", index))


def pretrain_sample(seed: int, index: int) -> Sample:
    """A (scene, generic prompt, description) pair for pretraining the base; disjoint stream."""
    rng = sample_rng(seed, "pretrain", index)
    scene = random_scene(rng)
    return scene, rng.choice(GENERAL_PROMPTS), describe(scene)


def pretrain_corpus(seed: int = 0, n: int = 1000, image_size: int = 64) -> list[tuple[Image.Image, str]]:
    """(image, description) pairs of every image domain, for caption pretraining of the base.

    The same samples that `generate` writes to pretrain/train.jsonl (there each is asked with
    one of GENERAL_PROMPTS). None of them is a task answer.
    """
    out = []
    for i in range(n):
        scene, _prompt, text = pretrain_sample(seed, i)
        out.append((render(scene, image_size), text))
    return out


def vocabulary_corpus() -> list[str]:
    """Every question, option, answer and description wording the tasks and pretraining emit.

    Deterministic, for training the tiny tokenizer; scene combinations are enumerated where
    small and sampled (fixed seed) where large.
    """
    lines: list[str] = list(GENERAL_PROMPTS)
    lines += [_SHAPES_Q, _SCENE_Q, _STYLE_Q, _CHART_Q, _CHART_INSTR, _COUNT_INSTR, _MATH_INSTR]
    lines += [_math_question(c) for c in COLORS]
    lines += [f"How many {PLURALS[s]} are there?\n{_COUNT_INSTR}" for s in SHAPES]
    lines += list(LETTERS) + [str(k) for k in range(0, 10)] + list(NUMBER_WORDS.values())
    lines += list(SHAPES) + list(PLURALS.values()) + list(COLORS) + list(BACKGROUNDS)
    for bg in BACKGROUNDS:
        for color in COLORS:
            for shape in SHAPES:
                one = Obj(shape, color, 0.5, 0.5, 0.3)
                lines.append(_scene_caption(Scene("single", bg, (one,))))
                lines.append(describe(Scene("single", bg, (one,))))
                for k in range(2, 6):
                    lines.append(describe(Scene("icons", bg, (one,) * k)))
    for (s1, c1), (s2, c2) in itertools.permutations(itertools.product(SHAPES, COLORS), 2):
        pair = (Obj(s1, c1, 0.27, 0.5, 0.2), Obj(s2, c2, 0.73, 0.5, 0.2))
        lines.append(_style_caption(Scene("pair", "gray", pair)))
    rng = random.Random(0)
    for _ in range(1500):
        lines.append(describe(random_scene(rng)))
    return lines

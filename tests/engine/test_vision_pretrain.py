"""The tiny base's vision-tower pretraining: scene attribute labels and the tower it trains."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from hicl_app.builtin.synth.attributes import CLASSES, IGNORE, label_columns, scene_labels
from hicl_app.builtin.synth.images import Obj, Scene, render
from hicl_app.builtin.synth.tasks import pretrain_sample


def test_labels_name_what_the_scene_shows():
    pair = Scene("pair", "dark", (Obj("cross", "red", 0.27, 0.5, 0.2), Obj("circle", "blue", 0.73, 0.6, 0.2)))
    got = scene_labels(pair)
    assert got["kind"] == 1 and got["bg"] == 0 and got["n_objects"] == 2
    assert (got["shape0"], got["shape1"]) == (3, 0)  # left cross, right circle
    assert got["n_red"] == 1 and got["n_blue"] == 1 and got["n_green"] == 0
    assert got["tallest"] == IGNORE and got["shortest"] == IGNORE and got["tallest_at"] == IGNORE

    chart = Scene("chart", "light", bars=(("green", 0.2), ("red", 0.95), ("blue", 0.5)))
    got = scene_labels(chart)
    assert got["tallest"] == 0 and got["shortest"] == 1  # red and green, in the colour order
    assert got["tallest_at"] == 1 and got["shortest_at"] == 0  # from the left
    assert got["n_objects"] == 3 and got["shape0"] == IGNORE

    # grid objects are read in reading order, whatever order the scene lists them in
    grid = Scene("icons", "gray", (Obj("square", "red", 0.83, 0.83, 0.1), Obj("triangle", "red", 0.17, 0.17, 0.1)))
    assert scene_labels(grid)["shape0"] == 2 and scene_labels(grid)["shape1"] == 1


def test_every_label_is_in_range_on_the_pretraining_stream():
    scenes = [pretrain_sample(0, i)[0] for i in range(200)]
    columns = label_columns(scenes)
    assert set(columns) == set(CLASSES)
    for name, values in columns.items():
        assert all(v == IGNORE or 0 <= v < CLASSES[name] for v in values), name
        assert any(v != IGNORE for v in values), f"{name} never applies"


@pytest.fixture(scope="module")
def fresh_base(tmp_path_factory):
    from hicl_app.builtin.tiny import build_tiny_base

    return build_tiny_base(tmp_path_factory.mktemp("vision") / "base", seed=0, corpus=["a red circle"])


def _tensors(folder, prefix):
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys() if k.startswith(prefix)}


def test_pretraining_teaches_the_tower_and_touches_nothing_else(fresh_base):
    from hicl_app.builtin.vision_pretrain import pretrain_vision

    scenes = [pretrain_sample(1, i)[0] for i in range(256)]
    images = [render(s, 64) for s in scenes]
    labels = {k: v for k, v in label_columns(scenes).items() if k in ("kind", "bg", "color0")}
    classes = {k: CLASSES[k] for k in labels}
    before_lm = _tensors(fresh_base, "language_model")
    before_tower = _tensors(fresh_base, "vision_tower")
    untrained = pretrain_vision(fresh_base, images, labels, classes, steps=1, lr=1e-9)
    trained = pretrain_vision(fresh_base, images, labels, classes, steps=120, lr=3e-3)
    # chance is 1/5, 1/3 and 1/6; a trained tower separates them (kind least: one icon looks like a single shape)
    assert all(trained[k] > 0.8 for k in labels), trained
    assert trained["color0"] > untrained["color0"] + 0.3
    after_lm = _tensors(fresh_base, "language_model")
    assert before_lm and all((before_lm[k] == after_lm[k]).all() for k in before_lm)
    after_tower = _tensors(fresh_base, "vision_tower")
    assert any(not (before_tower[k] == after_tower[k]).all() for k in before_tower)
    json.loads((fresh_base / "config.json").read_text())  # still a loadable model folder


def test_bad_labels_are_refused(fresh_base):
    from hicl_app.builtin.vision_pretrain import pretrain_vision
    from hicl_app.engine.errors import EngineError

    image = render(pretrain_sample(0, 0)[0], 64)
    with pytest.raises(EngineError, match="one label per image"):
        pretrain_vision(fresh_base, [image, image], {"kind": [0]}, {"kind": 5}, steps=1)


def test_held_out_images_are_scored_and_never_trained_on(fresh_base):
    from hicl_app.builtin.vision_pretrain import pretrain_vision
    from hicl_app.engine.errors import EngineError

    scenes = [pretrain_sample(2, i)[0] for i in range(96)]
    images = [render(s, 64) for s in scenes]
    labels = {"bg": label_columns(scenes)["bg"]}
    # the 32 held-out images carry wrong labels (each true one shifted by one): a head trained on
    # the first 64 scores near 0 on them, where a score over the training images would be near 1
    shifted = [(v + 1) % CLASSES["bg"] for v in labels["bg"][64:]]
    got = pretrain_vision(fresh_base, images, {"bg": labels["bg"][:64] + shifted}, {"bg": CLASSES["bg"]},
                          steps=80, lr=3e-3, holdout=32)
    assert got["bg"] < 0.2, got
    with pytest.raises(EngineError, match="holds out 96 of 96"):
        pretrain_vision(fresh_base, images, labels, {"bg": CLASSES["bg"]}, steps=1, holdout=96)

"""The synthetic UCIT-like benchmark: reproducible, well-formed, learnable-looking, distinct tasks."""

from __future__ import annotations

import collections
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from hicl_app.builtin.synth import generate, pretrain_corpus, read_manifest, vocabulary_corpus
from hicl_app.builtin.synth.tasks import GENERAL, GENERAL_PROMPTS, TASK_NAMES, TASKS, make_sample, pretrain_sample

SCORERS = {"exact", "relaxed", "choice", "caption"}
SMALL = dict(train=8, test=4, pretrain=6, seed=3, image_size=32)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "bench"
    manifest = generate(out, **SMALL)
    return out, manifest


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_same_arguments_give_identical_bytes(bench, tmp_path):
    out, _ = bench
    again = tmp_path / "again"
    generate(again, **SMALL)
    assert _files(out) == _files(again)
    other = tmp_path / "other"
    generate(other, **{**SMALL, "seed": 4})
    assert _files(other)["shapes/train.jsonl"] != _files(out)["shapes/train.jsonl"]


def test_samples_do_not_depend_on_split_size(tmp_path):
    generate(tmp_path / "a", tasks=1, train=3, test=1, pretrain=0, seed=1)
    generate(tmp_path / "b", tasks=2, train=5, test=2, pretrain=0, seed=1)
    a = _jsonl(tmp_path / "a" / "shapes" / "train.jsonl")
    b = _jsonl(tmp_path / "b" / "shapes" / "train.jsonl")
    assert a == b[:3]
    assert (tmp_path / "a/shapes/images/train_00002.png").read_bytes() == \
        (tmp_path / "b/shapes/images/train_00002.png").read_bytes()


def test_records_are_valid_llava(bench):
    out, manifest = bench
    folders = [t["name"] for t in manifest["tasks"]] + ["general"]
    for name in folders:
        for split, n in (("train", SMALL["train"]), ("test", SMALL["test"])):
            recs = _jsonl(out / name / f"{split}.jsonl")
            assert len(recs) == n
            assert len({r["id"] for r in recs}) == n
            for rec in recs:
                assert set(rec) == {"id", "image", "conversations"}
                assert re.fullmatch(rf"images/{split}_\d{{5}}\.png", rec["image"])
                with Image.open(out / name / rec["image"]) as img:
                    assert img.format == "PNG" and img.mode == "RGB"
                    assert img.size == (SMALL["image_size"],) * 2
                human, gpt = rec["conversations"]
                assert human["from"] == "human" and gpt["from"] == "gpt"
                assert human["value"].startswith("<image>\n")
                assert human["value"].count("<image>") == 1
                assert gpt["value"].strip() and "<image>" not in gpt["value"]
    pre = _jsonl(out / "pretrain" / "train.jsonl")
    assert len(pre) == SMALL["pretrain"]
    for rec in pre:
        assert (out / "pretrain" / rec["image"]).is_file()
        assert rec["conversations"][0]["value"].removeprefix("<image>\n") in GENERAL_PROMPTS


@pytest.mark.parametrize("spec", [*TASKS, GENERAL], ids=lambda s: s.name)
def test_answers_are_balanced_and_in_their_space(spec):
    answers = [make_sample(spec, 0, "train", i)[2] for i in range(240)]
    top, count = collections.Counter(answers).most_common(1)[0]
    assert count / len(answers) <= 0.6, (top, count)
    if spec.answers is not None:
        assert set(answers) == set(spec.answers)
    else:
        assert len(set(answers)) >= 20
        assert all(3 <= len(a.split()) <= 30 for a in answers)


def test_answers_match_the_pictures():
    charts: dict[int, int] = {}
    for i in range(100):
        scene, question, answer = make_sample(TASKS[1], 0, "test", i)  # chartqa
        assert scene.kind == "chart" and f"{answer}. {len(scene.bars)}\n" in question
        charts[len(scene.bars)] = charts.get(len(scene.bars), 0) + 1
        scene, question, answer = make_sample(TASKS[3], 0, "test", i)  # count
        assert answer == str(len(scene.objects))
        scene, question, answer = make_sample(TASKS[4], 0, "test", i)  # math
        color = re.search(r"Subtract all (\w+) objects", question).group(1)
        assert answer == str(sum(o.color != color for o in scene.objects))
        assert len(scene.objects) <= 5 and any(o.color == color for o in scene.objects)
        scene, _q, answer = make_sample(TASKS[0], 0, "test", i)  # shapes
        assert answer == scene.objects[0].shape
    assert sorted(charts) == [2, 3, 4, 5]  # every option is an answer somewhere


def test_tasks_differ_in_instruction_and_answer_style():
    questions = {}
    for spec in (*TASKS, GENERAL):
        questions[spec.name] = {make_sample(spec, 0, "train", i)[1] for i in range(40)}
    names = list(questions)
    for a in names:
        for b in names:
            if a < b:
                assert not questions[a] & questions[b], (a, b)
    instructions = [s.instruction for s in (*TASKS, GENERAL)]
    assert len(set(instructions)) == len(instructions)
    for spec in TASKS:  # every question of a task carries its task's instruction
        assert all(spec.instruction in q for q in questions[spec.name])
    caption_a = make_sample(TASKS[2], 0, "train", 0)[2]
    caption_b = make_sample(TASKS[5], 0, "train", 0)[2]
    assert "photo of" in caption_a and "left of" in caption_b


def test_manifest(bench):
    out, manifest = bench
    assert read_manifest(out) == manifest
    assert manifest["seed"] == SMALL["seed"] and manifest["image_size"] == SMALL["image_size"]
    assert [t["name"] for t in manifest["tasks"]] == list(TASK_NAMES)
    assert manifest["order"] == list(TASK_NAMES)
    for entry in [*manifest["tasks"], manifest["general"]]:
        assert entry["scorer"] in SCORERS
        assert entry["train"] == SMALL["train"] and entry["test"] == SMALL["test"]
        assert entry["description"]
        for split, rel in entry["files"].items():
            assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == entry["sha256"][split]
    assert manifest["general"]["name"] == "general"
    assert manifest["pretrain"]["train"] == SMALL["pretrain"]
    assert str(out) not in json.dumps(manifest)  # no absolute paths: manifests compare across machines


def test_task_selection_and_refusal(tmp_path):
    out = tmp_path / "b"
    manifest = generate(out, tasks=2, train=2, test=1, pretrain=0)
    assert [t["name"] for t in manifest["tasks"]] == ["shapes", "chartqa"]
    assert sorted(p.name for p in out.iterdir()) == ["chartqa", "general", "manifest.json", "pretrain", "shapes"]
    with pytest.raises(FileExistsError):
        generate(out, tasks=1, train=2, test=1, pretrain=0)
    manifest = generate(out, tasks=["count", "math"], train=2, test=1, pretrain=0, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["count", "general", "manifest.json", "math", "pretrain"]
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no staging folder left behind
    (tmp_path / "empty").mkdir()
    generate(tmp_path / "empty", tasks=1, train=1, test=1, pretrain=0)
    for bad in (0, 7):
        with pytest.raises(ValueError):
            generate(tmp_path / "x", tasks=bad)
    with pytest.raises(KeyError):
        generate(tmp_path / "x", tasks=["nope"])
    assert not (tmp_path / "x").exists()


def test_pretrain_corpus_is_descriptions_not_task_answers():
    corpus = pretrain_corpus(seed=0, n=30, image_size=32)
    assert len(corpus) == 30
    for i, (img, text) in enumerate(corpus):
        assert img.size == (32, 32)
        assert text == pretrain_sample(0, i)[2] and " background." in text
    task_answers = {make_sample(s, 0, "train", i)[2] for s in TASKS for i in range(50)}
    assert not task_answers & {t for _, t in corpus}


def test_vocabulary_covers_every_emitted_word():
    vocab = set(" ".join(vocabulary_corpus()).split())
    emitted = set()
    for spec in (*TASKS, GENERAL):
        for i in range(60):
            _scene, q, a = make_sample(spec, 2, "test", i)
            emitted |= set(q.split()) | set(a.split())
    for i in range(60):
        _scene, q, a = pretrain_sample(2, i)
        emitted |= set(q.split()) | set(a.split())
    assert emitted <= vocab, emitted - vocab
    assert vocabulary_corpus() == vocabulary_corpus()


def test_synth_imports_no_torch():
    code = "import sys, hicl_app.builtin.synth; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

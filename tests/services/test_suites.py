"""`hicl add-suite ucit` on a small synthetic copy of the UCIT release layout (a few records per
task, tiny images): six tasks with the authors' scorers, the caption tasks scored against their
COCO-format references, the suite's order usable by `run start --order ucit`, and every missing
file named at once with nothing added."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import write_images

# (folder as released, train file, scorer, answers)
LAYOUT = {
    "ImageNet-R": ("ImageNet-R", "train.json", "exact", ["goldfish", "hammerhead"]),
    "ArxivQA": ("ArxivQA", "train_4w.json", "choice", ["A", "C"]),
    "VizWiz": ("VizWiz", "train.json", "caption", None),
    "IconQA": ("IconQA", "train.json", "exact", ["3", "circle"]),
    "CLEVR-Math": ("CLEVR-Math", "train_4w.json", "exact", ["2", "5"]),
    "Flickr30k": ("Flickr30k", "train_brief_4w.json", "caption", None),
}
ORDER = ["ImageNet-R", "ArxivQA", "VizWiz", "IconQA", "CLEVR-Math", "Flickr30k"]


def make_ucit(root: Path, skip: tuple[str, ...] = ()) -> Path:
    for task, (folder, train, scorer, answers) in LAYOUT.items():
        write_images(root / "datasets" / folder, 4)
        images = [f"{folder}/{i}.png" for i in range(4)]
        answers = answers or ["a dog runs on the grass", "a man holds a red cup"]
        prompt = "Answer with the option's letter from the given choices directly." if scorer == "choice" else \
            "Describe the image briefly." if scorer == "caption" else "Answer the question using a single word or phrase."
        inst = root / folder
        inst.mkdir(parents=True, exist_ok=True)
        if f"{folder}/{train}" not in skip:
            (inst / train).write_text(json.dumps([
                {"id": f"{task}-{i}", "image": images[i], "conversations": [
                    {"from": "human", "value": f"<image>\nWhat is shown? {prompt}"},
                    {"from": "gpt", "value": answers[i % 2]}]} for i in range(3)]))
        (inst / "test_3000.json").write_text(json.dumps([
            {"question_id": f"{task}-t{i}", "image": images[3 - i], "text": f"What is shown?\n{prompt}",
             **({} if scorer == "caption" else {"answer": answers[i % 2]})} for i in range(2)]))
        if scorer == "caption" and f"{folder}/val_coco_type_3000.json" not in skip:
            (inst / "val_coco_type_3000.json").write_text(json.dumps({
                "images": [{"id": k} for k in (1, 2)],
                "annotations": [{"image_id": k, "id": 10 * k + j, "caption": f"{answers[k - 1]} {j}"}
                                for k in (1, 2) for j in range(2)]}))
    return root


def test_add_suite_ucit_registers_six_tasks_with_their_scorers_and_order(cli, home, tmp_path):
    root = make_ucit(tmp_path / "UCIT")
    res = cli("add-suite", "ucit", root, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["order"] == ORDER
    assert {t["name"]: t["scorer"] for t in out["tasks"]} == {k: v[2] for k, v in LAYOUT.items()}
    assert all((t["n_train"], t["n_test"]) == (3, 2) for t in out["tasks"])
    tasks = {t["name"]: t for t in out["tasks"]}
    assert tasks["ArxivQA"]["source_path"].endswith("ArxivQA/train_4w.json")
    test = [json.loads(line) for line in (Path(home) / tasks["Flickr30k"]["data_dir"] / "test.jsonl").read_text().splitlines()]
    assert test[0]["answer"] == ["a dog runs on the grass 0", "a dog runs on the grass 1"]  # the COCO references
    assert "single word or phrase" in [json.loads(x) for x in (Path(home) / tasks["IconQA"]["data_dir"] / "test.jsonl")
                                       .read_text().splitlines()][0]["question"]  # the authors' instruction, verbatim

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    run = cli("run", "start", "--method", "seq-lora", "--order", "ucit", "--base", base, "--no-worker", "--json")
    assert run.exit_code == 0, run.output
    shown = json.loads(cli("run", "show", json.loads(run.stdout)["run_id"], "--json").stdout)
    assert shown["task_order"] == ORDER and len(shown["stages"]) == 6

    again = cli("add-suite", "ucit", root)
    assert again.exit_code == 5 and "already exist" in again.stderr
    assert cli("run", "start", "--method", "seq-lora", "--order", "nope", "--base", base).exit_code == 3
    assert cli("run", "start", "--method", "seq-lora", "--order", "ucit", "--tasks", "ArxivQA", "--base", base).exit_code == 3


def test_missing_files_are_all_named_and_nothing_is_added(cli, tmp_path):
    root = make_ucit(tmp_path / "UCIT", skip=("ArxivQA/train_4w.json", "VizWiz/val_coco_type_3000.json"))
    res = cli("add-suite", "ucit", root)
    assert res.exit_code == 3
    assert "ArxivQA/train_4w.json" in res.stderr and "VizWiz/val_coco_type_3000.json" in res.stderr
    assert json.loads(cli("tasks", "--json").stdout) == []
    coin = cli("add-suite", "coin", root)
    assert coin.exit_code == 3 and "Grounding" in coin.stderr


def test_a_bad_record_in_a_later_task_leaves_no_task_behind(cli, tmp_path):
    root = make_ucit(tmp_path / "UCIT")
    (root / "Flickr30k" / "train_brief_4w.json").write_text(json.dumps([{"id": "x", "image": "Flickr30k/img/9.png",
                                                                        "conversations": []}]))
    res = cli("add-suite", "ucit", root)
    assert res.exit_code == 3 and "train_brief_4w.json" in res.stderr
    assert json.loads(cli("tasks", "--json").stdout) == []

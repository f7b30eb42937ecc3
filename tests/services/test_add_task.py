"""`hicl add-task`: valid files become tasks; every kind of bad input is reported and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_images, write_jsonl

from hicl_app.core.errors import EXIT_CONFLICT, EXIT_INVALID_INPUT


def _snapshot(home: Path):
    """The catalog's rows and the workspace's task folders, to prove a failure changed nothing."""
    import sqlite3

    db = home / "hicl.db"
    rows = []
    if db.exists():
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT name, n_train, n_test FROM tasks ORDER BY id").fetchall()
    files = sorted(str(p.relative_to(home)) for p in (home / "tasks").rglob("*")) if (home / "tasks").exists() else []
    return rows, files


def test_add_llava_jsonl(cli, home, llava_file):
    res = cli("add-task", llava_file, "--test-fraction", "0.2", "--json")
    assert res.exit_code == 0, res.output
    task = json.loads(res.stdout)
    assert (task["name"], task["n_train"], task["n_test"], task["source_format"]) == ("colour", 8, 2, "llava")
    assert len(task["source_sha256"]) == 64
    recs = [json.loads(line) for line in (home / "tasks" / "colour" / "train.jsonl").read_text().splitlines()]
    assert recs[0]["question"] == "What colour is it?" and recs[0]["answer"] == "blue"
    assert Path(recs[0]["image"]).is_absolute() and Path(recs[0]["image"]).is_file()
    from hicl_app.core.fsio import current_umask

    mode = (home / "tasks" / "colour" / "train.jsonl").stat().st_mode & 0o777
    assert mode == 0o666 & ~current_umask()  # the user's umask, not mkstemp's 0600


def test_add_vqa_json_list_with_separate_test_and_images_dir(cli, tmp_path):
    names = write_images(tmp_path / "pics" / "img", 6)
    recs = [{"image": n, "question": f"How many? {i}", "answer": str(i)} for i, n in enumerate(names)]
    train = tmp_path / "ann" / "count.json"
    train.parent.mkdir()
    train.write_text(json.dumps(recs[:4]))
    test = write_jsonl(tmp_path / "ann" / "count_test.jsonl", recs[4:])
    res = cli("add-task", train, "--test", test, "--images", tmp_path / "pics", "--scorer", "relaxed", "--json")
    assert res.exit_code == 0, res.output
    task = json.loads(res.stdout)
    assert (task["n_train"], task["n_test"], task["scorer"], task["source_format"]) == (4, 2, "relaxed", "vqa")
    listed = json.loads(cli("tasks", "--json").stdout)
    assert [t["name"] for t in listed] == ["count"]


def test_split_is_deterministic(cli, home, llava_file, tmp_path):
    cli("add-task", llava_file, "--name", "a", "--seed", "7")
    cli("add-task", llava_file, "--name", "b", "--seed", "7")
    a = (home / "tasks" / "a" / "test.jsonl").read_text()
    assert a == (home / "tasks" / "b" / "test.jsonl").read_text()


def test_scorer_guess(cli, tmp_path):
    names = write_images(tmp_path / "img", 4)
    recs = [{"image": n, "question": "Which?", "answer": "B"} for n in names]
    res = cli("add-task", write_jsonl(tmp_path / "mc.jsonl", recs), "--json")
    assert json.loads(res.stdout)["scorer"] == "choice"


BAD_CASES = {
    "bad_json": ('{"image": "img/0.png", "question": "q", "answer": "a"}\n{oops\n', ":2: bad JSON"),
    "empty": ("", "the file is empty"),
    "missing_field": ('{"image": "img/0.png", "question": "q"}\n', "'answer' must be a non-empty string"),
    "wrong_type": ('{"image": 5, "question": "q", "answer": "a"}\n', "'image' must be a non-empty string"),
    "no_answer": ('{"image": "img/0.png", "conversations": [{"from": "human", "value": "<image>\\nq"}]}\n',
                  "ends without an answer"),
    "missing_image": ('{"image": "img/404.png", "question": "q", "answer": "a"}\n', "file not found"),
    "not_an_image": ('{"image": "img/fake.png", "question": "q", "answer": "a"}\n', "does not open as an image"),
    "escape_dotdot": ('{"image": "../outside.png", "question": "q", "answer": "a"}\n', "outside the image folder"),
    "escape_absolute": ('{"image": "/etc/hostname", "question": "q", "answer": "a"}\n', "outside the image folder"),
    "neither_format": ('{"image": "img/0.png", "text": "hello"}\n', "neither 'conversations'"),
    "not_object": ('[1, 2]\n', "expected a JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_reported_and_changes_nothing(cli, home, tmp_path, llava_file, case):
    cli("add-task", llava_file)  # a task already there must survive untouched
    before = _snapshot(home)
    write_images(tmp_path / "img", 1)
    (tmp_path / "img" / "fake.png").write_text("not a png")
    (tmp_path / "outside.png").write_bytes((tmp_path / "img" / "0.png").read_bytes())
    content, expected = BAD_CASES[case]
    bad = tmp_path / f"{case}.jsonl"
    bad.write_text(content, encoding="utf-8")
    res = cli("add-task", bad)
    assert res.exit_code == EXIT_INVALID_INPUT, res.output
    assert expected in res.stderr and str(bad) in res.stderr
    assert res.stdout == ""
    assert _snapshot(home) == before


def test_non_utf8_names_the_line(cli, home, tmp_path):
    write_images(tmp_path / "img", 1)
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"image": "img/0.png", "question": "q", "answer": "a"}\n'
                    b'{"image": "img/0.png", "question": "caf\xe9", "answer": "a"}\n')
    res = cli("add-task", bad)
    assert res.exit_code == EXIT_INVALID_INPUT
    assert f"{bad}:2: not UTF-8" in res.stderr
    assert _snapshot(home) == ([], [])


def test_problems_are_collected_up_to_twenty(cli, tmp_path):
    write_images(tmp_path / "img", 1)
    lines = [json.dumps({"image": f"img/missing{i}.png", "question": "q", "answer": "a"}) for i in range(25)]
    bad = tmp_path / "many.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    res = cli("add-task", bad)
    assert "25 problem(s)" in res.stderr
    assert res.stderr.count("file not found") == 20
    assert "and 5 more" in res.stderr


def test_duplicate_task_name_conflicts(cli, home, llava_file):
    assert cli("add-task", llava_file).exit_code == 0
    before = _snapshot(home)
    res = cli("add-task", llava_file)
    assert res.exit_code == EXIT_CONFLICT and "already exists" in res.stderr
    assert _snapshot(home) == before


def test_duplicate_ids_rejected(cli, home, tmp_path):
    names = write_images(tmp_path / "img", 2)
    recs = [{"id": 1, "image": n, "question": "q", "answer": "a"} for n in names]
    res = cli("add-task", write_jsonl(tmp_path / "dup.jsonl", recs))
    assert res.exit_code == EXIT_INVALID_INPUT and "duplicate id '1'" in res.stderr


def test_show_and_rm(cli, home, llava_file):
    cli("add-task", llava_file, "--name", "c1")
    shown = json.loads(cli("task", "show", "c1", "--json").stdout)
    assert shown["name"] == "c1" and shown["n_train"] + shown["n_test"] == 10
    assert cli("task", "rm", "c1").exit_code == 0
    assert json.loads(cli("tasks", "--json").stdout) == []
    assert not (home / "tasks" / "c1").exists()
    res = cli("task", "show", "c1")
    assert res.exit_code == 4 and "no task named 'c1'" in res.stderr


def _png_with_corrupt_pixels(good: bytes) -> bytes:
    """`good` with its IDAT payload replaced by bytes that are not zlib data, CRC fixed: the chunk
    structure is valid (so `Image.verify()` passes) but the pixels do not decode."""
    import struct
    import zlib

    at = good.index(b"IDAT") - 4
    length = struct.unpack(">I", good[at:at + 4])[0]
    junk = bytes(range(7, 7 + length))
    chunk = struct.pack(">I", length) + b"IDAT" + junk + struct.pack(">I", zlib.crc32(b"IDAT" + junk))
    return good[:at] + chunk + good[at + 12 + length:]


@pytest.mark.parametrize("case", ["vqa_answer_image", "llava_answer_image", "corrupt_pixels", "too_many_pixels",
                                  "decompression_bomb", "nul_in_image_path", "name_newline"])
def test_more_bad_input_is_caught_at_add_task(cli, home, tmp_path, monkeypatch, case):
    names = write_images(tmp_path / "img", 2)
    good = (tmp_path / "img" / "0.png").read_bytes()
    (tmp_path / "img" / "bad.png").write_bytes(_png_with_corrupt_pixels(good))
    image, answer, args, expected = names[0], "a cat", [], ""
    if case == "vqa_answer_image":
        answer, expected = "<image> a cat", "'answer' contains <image>"
    elif case == "corrupt_pixels":
        image, expected = "img/bad.png", "does not open as an image"
    elif case == "too_many_pixels":
        monkeypatch.setattr("hicl_app.core.taskfile.MAX_PIXELS", 100)
        expected = "16x16 pixels, more than the 100 allowed"
    elif case == "decompression_bomb":  # PIL's own limit, met before ours: DecompressionBombError
        monkeypatch.setattr("PIL.Image.MAX_IMAGE_PIXELS", 100)
        expected = "is too large to decode safely"
    elif case == "nul_in_image_path":
        image, expected = "img/0.png\x00.png", "contains a NUL byte"
    elif case == "name_newline":
        args, expected = ["--name", "abc\n"], "invalid task name"
    rec = {"image": image, "question": "What is it?", "answer": answer}
    if case == "llava_answer_image":
        rec = {"image": image, "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                                 {"from": "gpt", "value": "a <image> cat"}]}
        expected = "the answer contains <image>"
    res = cli("add-task", write_jsonl(tmp_path / "t.jsonl", [rec, {**rec, "image": names[1]}]), *args)
    assert res.exit_code == EXIT_INVALID_INPUT, res.output
    assert expected in res.stderr and res.stdout == ""
    assert _snapshot(home) == ([], [])


@pytest.mark.parametrize("case", ["same_file", "shared_records", "duplicates_split", "clean"])
def test_a_test_split_that_overlaps_the_training_data_is_warned_about(cli, tmp_path, case):
    names = write_images(tmp_path / "img", 10)
    recs = [{"id": i, "image": n, "question": f"What is {i}?", "answer": "a cat"} for i, n in enumerate(names)]
    train = write_jsonl(tmp_path / "train.jsonl", recs[:6])
    args, expected = [train], None
    if case == "same_file":
        args += ["--test", train]
        expected = "--test names the training file itself"
    elif case == "shared_records":  # other ids, same image, question and answer
        test = write_jsonl(tmp_path / "test.jsonl", [{**r, "id": f"t{r['id']}"} for r in recs[4:9]])
        args += ["--test", test]
        expected = "2 of the 5 test record(s) also appear in the training data"
    elif case == "duplicates_split":  # one file holding every record twice, split at random
        args = [write_jsonl(tmp_path / "dup.jsonl", recs + [{**r, "id": f"d{r['id']}"} for r in recs]),
                "--test-fraction", "0.5"]
        expected = "test record(s) also appear in the training data"
    res = cli("add-task", *args, "--name", "t", "--json")
    assert res.exit_code == 0, res.output
    warnings = json.loads(res.stdout)["warnings"]
    if expected is None:
        assert warnings == [] and "warning" not in res.stderr
    else:
        assert len(warnings) == 1 and expected in warnings[0] and f"warning: {warnings[0]}" in res.stderr

"""A continual run from the CLI: three tasks, the tiny base, a full matrix in the catalog."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from engine_fixtures import add_tasks_by_cli

from hicl_app.core.fsio import sha256_file


def _runs(home: Path) -> int:
    with sqlite3.connect(home / "hicl.db") as conn:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def test_seq_lora_run_fills_the_matrix_and_forgets(cli, home, tmp_path, cl_tasks, tiny_base_dir):
    add_tasks_by_cli(cli, tmp_path, cl_tasks)
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "color,bg,tone", "--base", tiny_base_dir,
              "--max-steps", "60", "--lr", "1e-3", "--checkpoint-every", "30", "--wait", "--json")
    assert res.exit_code == 0, res.output
    run_id = json.loads(res.stdout)["run_id"]

    detail = json.loads(cli("run", "show", run_id, "--json").stdout)
    assert detail["status"] == "completed"
    assert [st["status"] for st in detail["stages"]] == ["done"] * 3
    matrix = detail["matrix"]
    for t in range(3):  # lower triangle evaluated, upper not (seen tasks only)
        assert all(matrix[t][j] is not None for j in range(t + 1))
        assert all(matrix[t][j] is None for j in range(t + 1, 3))
    assert matrix[0][0] >= 80 and matrix[1][1] >= 80  # each task is learnt ...
    for a in detail["adapters"]:  # ... in a PEFT-layout adapter whose hash the catalog holds
        assert sha256_file(Path(a["path"]) / "adapter_model.safetensors") == a["sha256"]
        assert (Path(a["path"]) / "adapter_config.json").is_file()

    metrics = json.loads(cli("metrics", run_id, "--json").stdout)
    assert metrics["bwt"] < -20, metrics  # colour and background answers conflict: forgetting
    assert metrics["matrix"] == matrix and metrics["tasks"] == ["color", "bg", "tone"]
    text = cli("metrics", run_id).stdout
    assert "after tone" in text and "BWT" in text

    with sqlite3.connect(home / "hicl.db") as conn:
        points = conn.execute("SELECT count(*) FROM curve_points WHERE run_id=? AND name='loss'", (run_id,)).fetchone()[0]
        preds = conn.execute("SELECT predictions_path FROM scores WHERE run_id=?", (run_id,)).fetchall()
    assert points >= 3 * 60 * 0.9
    assert len(preds) == 6 and all((home / p).is_file() for (p,) in preds)  # stored workspace-relative


@pytest.mark.parametrize("args, message", [
    (["--method", "nope", "--tasks", "color"], "unknown method 'nope'"),
    (["--method", "seq-lora", "--tasks", "color,ghost"], "unknown task(s): ghost"),
    (["--method", "seq-lora", "--tasks", "color,color"], "appears twice"),
    (["--method", "seq-lora", "--tasks", "color", "--rank", "0"], "rank must be >= 1"),
])
def test_bad_run_input_records_nothing(cli, home, tmp_path, cl_tasks, tiny_base_dir, args, message):
    add_tasks_by_cli(cli, tmp_path, cl_tasks, names=("color",))
    res = cli("run", "start", *args, "--base", tiny_base_dir)
    assert res.exit_code == 3, res.output
    assert message in res.stderr
    assert _runs(home) == 0


def test_missing_base_folder_or_images(cli, home, tmp_path, cl_tasks, tiny_base_dir):
    add_tasks_by_cli(cli, tmp_path, cl_tasks, names=("color",))
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "color", "--base", empty)
    assert res.exit_code == 3 and "has no config.json" in res.stderr
    # images that went missing since add-task are caught before anything is recorded
    data = home / "tasks" / "color" / "train.jsonl"
    moved = tmp_path / "moved.png"
    first = json.loads(data.read_text().splitlines()[0])["image"]
    shutil.copy(first, moved)
    Path(first).unlink()
    try:
        res = cli("run", "start", "--method", "seq-lora", "--tasks", "color", "--base", tiny_base_dir)
        assert res.exit_code == 3 and "went missing" in res.stderr
    finally:
        shutil.copy(moved, first)
    assert _runs(home) == 0


def test_base_that_does_not_load_fails_the_run_before_training(cli, home, tmp_path, cl_tasks):
    add_tasks_by_cli(cli, tmp_path, cl_tasks, names=("color",))
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llava", "text_config": {"hidden_size": "big"}}')
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "color", "--base", broken, "--wait")
    assert res.exit_code == 1
    detail = json.loads(cli("run", "show", "1", "--json").stdout)
    assert detail["status"] == "failed" and detail["error"]
    assert detail["adapters"] == [] and all(row == [None] for row in detail["matrix"])


@pytest.mark.parametrize("flag, recorded", [([], None), (["--gradient-checkpointing"], True),
                                            (["--no-gradient-checkpointing"], False)])
def test_gradient_checkpointing_flag_is_recorded_with_auto_by_default(cli, tmp_path, cl_tasks, tiny_base_dir,
                                                                      flag, recorded):
    add_tasks_by_cli(cli, tmp_path, cl_tasks, names=("color",))
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "color", "--base", tiny_base_dir, *flag,
              "--no-worker", "--json")
    assert res.exit_code == 0, res.output
    detail = json.loads(cli("run", "show", json.loads(res.stdout)["run_id"], "--json").stdout)
    assert detail["config"]["train"]["gradient_checkpointing"] is recorded

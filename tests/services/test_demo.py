"""`hicl demo --quick` end to end: benchmark, pretrained tiny base, every method, figures from the catalog."""

from __future__ import annotations

import json
import sqlite3

import pytest


def test_quick_demo_end_to_end(cli, tmp_path):
    home = tmp_path / "demo-home"
    # the baselines (fast), on two worker processes side by side
    res = cli("demo", "--home", home, "--quick", "--methods", "seq-lora,joint", "--workers", "2", "--json")
    assert res.exit_code == 0, res.output
    assert "on 2 workers side by side" in res.stderr
    out = json.loads(res.stdout)
    assert set(out["runs"]) == {"seq-lora", "joint"}
    assert out["general"] == "general" and len(out["tasks"]) == 3
    with sqlite3.connect(home / "hicl.db") as conn:
        for run in out["runs"].values():
            assert run["status"] == "completed"
            cells = conn.execute("SELECT stage_index, task_name, score FROM scores WHERE run_id=?", (run["id"],)).fetchall()
            by_cell = {(s, t): v for s, t, v in cells}
            for t, row in enumerate(run["matrix"]):  # the printed matrix is the catalog's
                for j, value in enumerate(row):
                    assert by_cell.get((t, out["tasks"][j])) == value
            assert (-1, "general") in by_cell  # base-model reference for general retention
    assert len(out["runs"]["seq-lora"]["matrix"]) == 3 and len(out["runs"]["joint"]["matrix"]) == 1
    # joint against seq-lora, with the paired bootstrap interval from the stored predictions
    last = out["intervals"]["joint"]["last"]
    assert last["low"] <= last["diff"] <= last["high"] and out["seeds"] == [0]
    assert last["diff"] == pytest.approx(out["runs"]["joint"]["metrics"]["last"] - out["runs"]["seq-lora"]["metrics"]["last"])
    # a second demo reuses the benchmark, the tasks and the base; two training seeds, in this process
    again = cli("demo", "--home", home, "--quick", "--methods", "seq-lora", "--seeds", "0,1", "--workers", "1", "--json")
    assert again.exit_code == 0, again.output
    assert "reusing the tiny base" in again.stderr and "added task" not in again.stderr
    assert "side by side" not in again.stderr  # drained in this process
    seeds = json.loads(again.stdout)
    # the same run in this process gives what a worker process gave
    assert seeds["runs"]["seq-lora"]["matrix"] == out["runs"]["seq-lora"]["matrix"]
    assert seeds["seeds"] == [0, 1] and set(seeds["by_seed"]["seq-lora"]) == {"0", "1"}
    assert seeds["by_seed"]["seq-lora"]["1"]["config"]["train"]["seed"] == 1
    assert seeds["across_seeds"]["seq-lora"]["last"]["n"] == 2
    assert cli("demo", "--home", home, "--quick", "--seeds", "0,x").exit_code == 3


def test_default_methods_are_fixed_and_all_is_every_method():
    from hicl_app.builtin.demo import DEFAULT_METHODS, all_methods, default_methods
    from hicl_app.engine.methods import method_names

    assert default_methods() == DEFAULT_METHODS and len(DEFAULT_METHODS) == 4
    assert all_methods()[:4] == DEFAULT_METHODS
    assert {label.split(":")[0] for label in all_methods()} == set(method_names())


def test_gains_over_seq_lora_seed_by_seed():
    from hicl_app.builtin.demo_summary import across_seeds, gains

    def report(last, forgetting):
        return {"status": "completed", "metrics": {"mft": 50.0, "last": last, "avg": 40.0, "bwt": -forgetting,
                                                   "forgetting": forgetting}, "general": None}

    by_seed = {"seq-lora": {0: report(20.0, 30.0), 1: report(30.0, 20.0)},
               "hide": {0: report(40.0, 0.0), 1: report(25.0, 25.0)}}
    g = gains(by_seed)["hide"]
    assert g["last"]["per_seed"] == [20.0, -5.0] and g["last"]["holds"] is False and g["last"]["better"] == 1
    assert g["forgetting"]["per_seed"] == [30.0, -5.0]  # sign flipped: less forgetting is a gain
    assert g["mft"]["holds"] is False and g["mft"]["per_seed"] == [0.0, 0.0]
    assert g["general"]["holds"] is None  # no general task
    stats = across_seeds(by_seed)["seq-lora"]["last"]
    assert stats["mean"] == 25.0 and stats["n"] == 2 and stats["std"] == pytest.approx(7.0710678)


def test_demo_progress_lines(capsys):
    from hicl_app.cli.demo_progress import BaseBar, RunsBoard

    bar = BaseBar()
    bar({"kind": "base_phase", "phase": "vision", "total": 100})
    bar({"kind": "vision_step", "step": 0, "total": 100, "loss": None})
    bar({"kind": "vision_step", "step": 50, "total": 100, "loss": 1.5})
    bar({"kind": "vision_accuracy", "accuracy": {}})
    bar({"kind": "base_phase", "phase": "language", "total": 10})
    bar({"type": "progress", "step": 5, "total": 10, "loss": 2.0, "eta_s": 65.0})
    err = capsys.readouterr().err
    assert "base 1/2: vision tower [############............] 50/100 loss 1.500 eta" in err
    assert "base 2/2: language model" in err and "5/10" in err and "eta 1m05s" in err
    board = RunsBoard()
    status = {"runs": [{"label": "seq-lora", "run_id": 1, "status": "running", "stages": 3, "done": 1, "stage": 1,
                        "step": 6, "total": 12, "fraction": 0.5, "eta_s": 30.0},
                       {"label": "joint", "run_id": 2, "status": "queued", "stages": 1, "done": 0, "stage": None,
                        "step": 0, "total": 0, "fraction": 0.0, "eta_s": None}],
              "fraction": 0.25, "eta_s": 90.0}
    board(status)
    board(status)
    err = capsys.readouterr().err
    assert "seq-lora" in err and "stage 2/3 eta 30s" in err and "queued" in err and "eta 1m30s" in err
    assert "\x1b[3F" in err  # the second drawing goes back over the first's three lines

"""`hicl demo --quick` end to end: benchmark, pretrained tiny base, every method, figures from the catalog."""

from __future__ import annotations

import json
import sqlite3


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
    # a second demo reuses the benchmark, the tasks and the base
    again = cli("demo", "--home", home, "--quick", "--methods", "seq-lora", "--workers", "1", "--json")
    assert again.exit_code == 0, again.output
    assert "reusing the tiny base" in again.stderr and "added task" not in again.stderr
    assert "side by side" not in again.stderr  # one run: drained in this process
    # the same run in this process gives what a worker process gave
    assert json.loads(again.stdout)["runs"]["seq-lora"]["matrix"] == out["runs"]["seq-lora"]["matrix"]

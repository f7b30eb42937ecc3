"""`hicl analyze cka` end to end: a tiny two-task hide run, CKA stored in the catalog and shown."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from engine_fixtures import read_jsonl

# The first test of a process also builds the session's tiny base; on a shared CPU that alone can
# take minutes.
pytestmark = pytest.mark.timeout(1800)


def _add(cli, tmp_path: Path, cl_tasks, names=("color", "bg")) -> None:
    for name in names:
        t = cl_tasks[name]
        root = Path(read_jsonl(t.train_path)[0]["image"]).parent
        files = {}
        for split, path in (("train", t.train_path), ("test", t.test_path)):
            recs = [{"id": r["id"], "image": r["image"], "question": r["question"], "answer": r["answer"]}
                    for r in read_jsonl(path)[: 48 if split == "train" else 8]]
            files[split] = tmp_path / f"{name}-{split}.jsonl"
            files[split].write_text("".join(json.dumps(r) + "\n" for r in recs))
        res = cli("add-task", files["train"], "--test", files["test"], "--images", root, "--name", name,
                  "--scorer", "exact")
        assert res.exit_code == 0, res.output


def test_analyze_cka_of_a_hide_run(cli, home, tmp_path, cl_tasks, tiny_base_dir):
    from hicl_app.catalog.db import Catalog
    from hicl_app.core.settings import Settings
    from hicl_app.tui.data import load_cka

    _add(cli, tmp_path, cl_tasks)
    res = cli("run", "start", "--method", "hide", "--tasks", "color,bg", "--base", tiny_base_dir, "--max-steps", "6",
              "--lr", "2e-3", "--probe-samples", "4", "--expand", "auto", "--cka-threshold", "0.999", "--wait", "--json")
    assert res.exit_code == 0, res.output
    run_id = json.loads(res.stdout)["run_id"]
    assert json.loads(cli("run", "show", run_id, "--json").stdout)["status"] == "completed"
    # expand=auto measured CKA between the two experts at the end of stage 2 and chose from it
    from hicl_app.engine.methods.hide.state import load_state

    stage_dir = Path(json.loads(cli("run", "show", run_id, "--json").stdout)["adapters"][-1]["path"]).parent
    state = load_state(stage_dir)
    assert state.cka["kernel"] == "linear" and state.cka["n_probe"] == 8 and len(state.cka["mean_cross"]) == 4
    assert state.expanded_layers == sorted(int(k) for k, v in state.cka["mean_cross"].items() if v < 0.999)
    catalog = Catalog(Settings.resolve(home))
    assert load_cka(catalog, run_id) == {}  # nothing until analysed

    res = cli("analyze", "cka", run_id, "--layers", "0,-1", "--probes", "5", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["labels"] == ["color", "bg"] and out["n_probe"] == 10 and out["kernel"] == "linear"
    assert [row["layer"] for row in out["layers"]] == [0, 3]
    for row in out["layers"]:
        m = row["matrix"]
        assert m[0][0] == 1.0 or math.isclose(m[0][0], 1.0, abs_tol=1e-9)
        assert m[0][1] == m[1][0] and 0.0 <= m[0][1] <= 1.0
        assert math.isclose(row["mean_cross"], m[0][1])
    # the experts differ, and the difference shows more at the top than at the bottom
    assert out["layers"][1]["mean_cross"] < 1.0

    panels = load_cka(catalog, run_id)  # the TUI's run screen reads what the command stored
    assert set(panels) == {"layer 0", "layer 3"}
    assert panels["layer 3"] == [row["matrix"] for row in out["layers"] if row["layer"] == 3][0]

    text = cli("analyze", "cka", run_id, "--layers", "3", "--kernel", "rbf", "--probes", "5")
    assert text.exit_code == 0, text.output
    assert "layer 3" in text.stdout and "color" in text.stdout and "mean cross-task CKA per layer" in text.stdout
    assert set(load_cka(catalog, run_id)) == {"layer 0", "layer 3", "layer 3 (rbf)"}

    queued = cli("run", "start", "--method", "seq-lora", "--tasks", "color,bg", "--base", tiny_base_dir,
                 "--no-worker", "--json")
    res = cli("analyze", "cka", json.loads(queued.stdout)["run_id"])
    assert res.exit_code == 3 and "no finished stage" in res.stderr


def test_analyze_cka_refuses_bad_input(cli, home):
    res = cli("analyze", "cka", "nope")
    assert res.exit_code == 4 and "no run 'nope'" in res.stderr
    res = cli("analyze", "cka", "1", "--layers", "top")
    assert res.exit_code == 3 and "--layers" in res.stderr
